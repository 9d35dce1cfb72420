"""Ablations: train a list or grid of config overrides, then tabulate and plot them.

  ./launch.sh ablate experiments/ablations/<name>.py [--workdir=DIR] [--report_dir=DIR]

An ablation file's `get_config()` returns a ConfigDict with
  base      experiment config every run starts from ("path.py" or "path.py:variant")
  overrides {key: value} applied to every run; keys are dotted ("model.depth") or nested
            dicts ({"model": {"depth": 3}}: ConfigDict fields cannot hold dots)
  runs      list of {"name", "overrides", optional "base" (this run's own experiment
            config, e.g. another model), optional "evaluate_checkpoint_of": run name}
  grid      or {key: [values]} (keys as in overrides): one run per combination, named
            "key=value,..."
  metrics   the columns of the table (eval metrics such as mIoU or iou/circle, and the
            profile figures of `profile`: params, gflops_per_image, train_gflops,
            train_memory_mb, ms_per_step, infer_ms_per_image, receptive_field)
  plot      {"x": column or "run", "y": [columns], "kind": "bar" | "line" | "scatter"
            (labelled points, x on a log scale: e.g. speed vs accuracy)}
  receptive_field_scale  the receptive field is measured on inputs this many times the
            image size (default 4): it can be no larger
  claims    list of {"text", "check"}: `check` is a Python expression over `r`, the
            dict run name -> {metric: value}; the table says whether each claim held.
Every run is an ordinary, resumable workdir `<workdir>/<run name>`; a run whose
`result.json` exists is not repeated. A run with `evaluate_checkpoint_of` trains nothing:
it evaluates that run's final checkpoint under its own overrides (e.g. the same weights
with a different inference mode). The report (results.md, results.csv, plot.png) goes
into the workdir and into `--report_dir` (default docs/ablations/<name>).
"""
from __future__ import annotations

from jaxseg import signals  # first: SIGTERM during start-up ends the command cleanly

if __name__ == "__main__":
  signals.exit_on_sigterm()

import csv
import datetime
import importlib.util
import itertools
import json
import math
import os
import platform
import shutil
import sys
import time

from absl import flags

from jaxseg import cli
from jaxseg.errors import ConfigError, JaxsegError, NonFiniteLossError

if __name__ == "__main__":  # a library import (tests) leaves the process's hooks alone
  cli.quiet_startup()
cli.define_config_file("ablation", "Ablation file (get_config).", lock_config=False)
flags.DEFINE_string("workdir", None, "Where the runs go (default runs/ablations/<name>).")
flags.DEFINE_string("report_dir", None, "Where the table, CSV and plot are also written "
                    "(default docs/ablations/<name> when --workdir is the default, else "
                    "nowhere; '' to skip).")
flags.DEFINE_list("only", [], "Run only these runs (names); the report covers all done.")
flags.mark_flags_as_required(["ablation"])
FLAGS = flags.FLAGS

PROFILE_METRICS = ("params", "gflops_per_image", "train_gflops", "train_memory_mb",
                   "ms_per_step", "infer_ms_per_image", "receptive_field")


# -- configs ------------------------------------------------------------------------------
def load_config(spec: str):
  """The ConfigDict of an experiment file, `path.py` or `path.py:variant` (unlocked)."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise ConfigError(f"config file {path!r} does not exist")
  module_spec = importlib.util.spec_from_file_location("jaxseg_experiment", path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
    config = module.get_config(arg or None)
  except (AttributeError, ValueError, TypeError, SyntaxError) as e:
    raise ConfigError(f"cannot load config {spec!r}: {e}") from None
  config.unlock()
  return config


def flatten(overrides, prefix: str = "") -> dict:
  """{"a": {"b": 1}, "c.d": 2} -> {"a.b": 1, "c.d": 2} (nested ConfigDicts too)."""
  flat = {}
  for key, value in (overrides or {}).items():
    if hasattr(value, "items"):
      flat.update(flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def apply_overrides(config, overrides: dict):
  """Set each (dotted or nested) key of `overrides` in `config`; an unknown key is a
  ConfigError."""
  for key, value in flatten(overrides).items():
    *parents, leaf = key.split(".")
    node = config
    try:
      for p in parents:
        node = getattr(node, p)
      if leaf not in node:
        raise AttributeError(leaf)
      setattr(node, leaf, tuple(value) if isinstance(value, list) else value)
    except (AttributeError, KeyError, TypeError) as e:
      raise ConfigError(f"ablation override {key}={value!r} does not fit the base config: "
                        f"{e}") from None
  return config


def _value_name(value) -> str:
  if isinstance(value, (list, tuple)):
    return "-".join(_value_name(v) for v in value)
  return str(value)


def expand_runs(ablation) -> list[dict]:
  """The runs of an ablation as [{"name", "overrides", "base"?, "evaluate_checkpoint_of"?}]."""
  runs = [dict(r) for r in ablation.get("runs", None) or []]
  grid = flatten(ablation.get("grid", None))
  if runs and grid:
    raise ConfigError("an ablation has either `runs` or `grid`, not both")
  if grid:
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
      name = ",".join(f"{k.split('.')[-1]}={_value_name(v)}" for k, v in zip(keys, values))
      runs.append({"name": name, "overrides": dict(zip(keys, values))})
  if not runs:
    raise ConfigError("the ablation lists no runs (set `runs` or `grid`)")
  names = [r["name"] for r in runs]
  if len({_safe(n) for n in names}) != len(names):
    raise ConfigError(f"ablation run names must be unique (as directory names); got {names}")
  for r in runs:
    source = r.get("evaluate_checkpoint_of")
    if source is not None and (source not in names or names.index(source) >= names.index(
        r["name"])):
      raise ConfigError(f"run {r['name']!r}: evaluate_checkpoint_of={source!r} must name an "
                        "earlier run")
    r["overrides"] = flatten(r.get("overrides"))
  return runs


def run_config(ablation, run: dict):
  config = load_config(run.get("base") or ablation.base)
  apply_overrides(config, ablation.get("overrides", None))
  return apply_overrides(config, run["overrides"])


# -- profile ------------------------------------------------------------------------------
def profile(task, config, state, workdir: str, field_scale: int = 4) -> dict:
  """Cost figures of a trained run: parameter count, XLA's FLOP count of inference on one
  image and of one training step, the training step's temporary (activation) memory, the
  median training step time of the run, and timed inference per image."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxseg.train import logging as log_lib  # pylint: disable=g-import-not-at-top

  variables = state.variables
  batch = task.example_batch(config.batch_size)
  params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state.params))

  def loss_of(params, batch):
    return task.loss_fn({**variables, "params": params}, batch, jax.random.key(0), True)[0]

  train = jax.jit(jax.grad(loss_of)).lower(state.params, batch).compile()
  predict = jax.jit(task.predict_batch)
  # Timed on real eval inputs: a detector's proposals are part of them.
  sample = next(iter(task.eval_data()), None) or batch
  sample = {k: np.asarray(v)[:config.eval_batch_size] for k, v in sample.items()}
  one = predict.lower(variables, {k: v[:1] for k, v in sample.items()}).compile()
  jax.block_until_ready(predict(variables, sample))
  times = []
  for _ in range(5):
    t0 = time.perf_counter()
    jax.block_until_ready(predict(variables, sample))
    times.append(time.perf_counter() - t0)
  records = log_lib.read_metrics(workdir)
  rates = [m["steps_per_second"] for m in records
           if m["split"] == "train" and isinstance(m.get("steps_per_second"), float)]
  rates = rates[1:] or rates  # the first window includes compilation
  images = sample["image"]
  figures = {
      "params": params,
      "gflops_per_image": _flops(one) / 1e9,
      "train_gflops": _flops(train) / 1e9,
      "train_memory_mb": train.memory_analysis().temp_size_in_bytes / 2**20,
      "ms_per_step": 1e3 / float(np.median(rates)) if rates else math.nan,
      "infer_ms_per_image": 1e3 * min(times) / len(images),
  }
  if hasattr(task, "proposal_time"):  # detection: host-side proposals and post-hoc stages
    figures.update(detection_costs(task, config, figures, records))
  model = getattr(task, "model", None)
  dense = model is not None and not getattr(model, "needs_proposals", False)
  out = None if not dense else jax.eval_shape(
      lambda x: model.apply(variables, x, train=False), images[:1])
  if getattr(out, "shape", ())[1:3] == images.shape[1:3]:  # dense (per-pixel) outputs only
    size = tuple(field_scale * n for n in images.shape[1:3])
    figures["receptive_field"] = receptive_field(model, variables, size)
  return figures


def detection_costs(task, config, figures, records) -> dict:
  """A detector's whole test and train cost per image: the network's inference plus its
  precomputed proposals (R-CNN, Fast R-CNN: host seconds per image of the eval split),
  with the proposals' share; training: the steps, R-CNN's post-hoc stages and the
  training split's proposals, per training image seen (num_steps x batch_size)."""
  seconds, n = task.proposal_time("eval")
  proposal_ms = 1e3 * seconds / max(n, 1)
  test_ms = figures["infer_ms_per_image"] + proposal_ms
  post = [m for m in records if m["split"] == "post_training"]
  post_seconds = sum(v for k, v in post[-1].items() if k.endswith("_seconds")) if post else 0
  seen = config.num_steps * config.batch_size
  train_seconds = (figures["ms_per_step"] / 1e3 * config.num_steps + post_seconds
                   + task.proposal_time("train")[0])
  return {"proposal_ms_per_image": proposal_ms, "test_ms_per_image": test_ms,
          "proposal_share": proposal_ms / test_ms if test_ms else math.nan,
          "post_training_seconds": post_seconds, "train_ms_per_image": 1e3 * train_seconds / seen}


def receptive_field(model, variables, size) -> int:
  """Side of the bounding box of input pixels that change the centre output pixel's
  logits (non-zero gradient) of a dense model, at input size `size` (so at most that:
  global pooling reaches all of it)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  h, w = size
  image = jax.random.uniform(jax.random.key(0), (1, h, w, 3))

  def centre(image):
    return model.apply(variables, image, train=False)[0, h // 2, w // 2].sum()

  grad = np.abs(np.asarray(jax.jit(jax.grad(centre))(image)))[0].sum(-1)
  rows, cols = np.nonzero(grad)
  if rows.size == 0:
    return 0
  return int(max(rows.max() - rows.min(), cols.max() - cols.min()) + 1)


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", math.nan))


# -- running ------------------------------------------------------------------------------
def run_all(ablation, workdir: str, only=()) -> list[dict]:
  """Train and profile every run not yet done; return all results in run order.

  A run that fails with a user-level error (e.g. a non-finite loss) is recorded as
  failed and the ablation goes on. A finished run whose recorded config differs from
  what the ablation now asks for is an error: delete its directory to re-run it.
  """
  from jaxseg import tasks  # pylint: disable=g-import-not-at-top
  from jaxseg.train import checkpoint as ckpt_lib, loop  # pylint: disable=g-import-not-at-top

  runs = expand_runs(ablation)
  unknown = set(only) - {r["name"] for r in runs}
  if unknown:
    raise ConfigError(f"--only names runs the ablation does not have: {sorted(unknown)}")
  results = []
  for i, run in enumerate(runs, 1):
    run_dir = os.path.join(workdir, _safe(run["name"]))
    result_path = os.path.join(run_dir, "result.json")
    config = run_config(ablation, run)
    if os.path.exists(result_path):
      with open(result_path) as f:
        result = json.load(f)
      if result.get("config") != _jsonable(config.to_dict()):
        raise ConfigError(f"run {run['name']!r} in {run_dir} was made with another config "
                          "than the ablation now gives; delete that directory to re-run it")
      results.append(result)
      _progress(f"run {i}/{len(runs)} {run['name']!r}: done before, not repeated")
      continue
    if only and run["name"] not in only:
      continue
    _progress(f"run {i}/{len(runs)} {run['name']!r}: {run['overrides'] or 'base config'}")
    source = run.get("evaluate_checkpoint_of")
    if source is not None:
      _copy_checkpoints(os.path.join(workdir, _safe(source)), run_dir)
    t0 = time.time()
    result = {"name": run["name"], "overrides": run["overrides"],
              "evaluated_checkpoint_of": source, "commit": _commit(),
              "config": config.to_dict()}
    try:
      summary = loop.train_and_evaluate(config, run_dir, train=source is None)
    except NonFiniteLossError as e:
      result.update(error=" ".join(str(e).split()), wall_seconds=time.time() - t0)
      _progress(f"run {i}/{len(runs)} {run['name']!r} FAILED: {result['error']}")
    else:
      if summary["interrupted"]:
        raise AblationInterrupted()
      task = tasks.get_task(config)
      result.update(wall_seconds=time.time() - t0, final_step=summary["final_step"],
                    **summary["eval"], **profile(task, config, summary["state"], run_dir,
                                                      ablation.get("receptive_field_scale", 4)))
      _progress(f"run {i}/{len(runs)} {run['name']!r} finished in {time.time() - t0:.0f} s")
    result = _jsonable(result)
    ckpt_lib.write_json_atomic(result_path, result)
    results.append(result)
  return results


class AblationInterrupted(Exception):
  """SIGTERM during a run: its checkpoint is saved; the same command resumes."""


def _commit() -> str:
  """The git commit of the code (with '+dirty' for uncommitted changes), or 'unknown'."""
  import subprocess  # pylint: disable=g-import-not-at-top
  here = os.path.dirname(os.path.abspath(__file__))
  try:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, text=True,
                          capture_output=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                           text=True, capture_output=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"
  return head + ("+dirty" if dirty else "")


def _copy_checkpoints(source_dir: str, run_dir: str):
  """Copy a finished run's checkpoints (atomically: a half copy is never reused)."""
  if not os.path.exists(os.path.join(source_dir, "result.json")):
    raise ConfigError(f"evaluate_checkpoint_of: the run in {source_dir} has not finished")
  dst = os.path.join(run_dir, "checkpoints")
  if os.path.isdir(dst):
    return
  tmp = dst + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  shutil.copytree(os.path.join(source_dir, "checkpoints"), tmp)
  os.replace(tmp, dst)


def _safe(name: str) -> str:
  return "".join(ch if ch.isalnum() or ch in "-_.=," else "_" for ch in name)


def _jsonable(value):
  """`value` as JSON would give it back (non-finite floats as strings, tuples as lists)."""
  if isinstance(value, dict):
    return {k: _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


def _progress(message: str):
  print(f"ablate: {message}", file=sys.stderr, flush=True)


# -- report -------------------------------------------------------------------------------
def check_claims(ablation, results: list[dict]) -> list[tuple[str, str]]:
  """(claim text, verdict) per claim; verdict 'holds', 'does NOT reproduce' or why it
  could not be checked."""
  r = {res["name"]: res for res in results}
  verdicts = []
  for claim in ablation.get("claims", None) or []:
    try:
      # One namespace (globals) so that comprehensions inside a check also see `r`.
      namespace = {"__builtins__": {}, "min": min, "max": max, "abs": abs, "all": all,
                   "any": any, "r": r}
      held = bool(eval(claim["check"], namespace))  # pylint: disable=eval-used
      verdicts.append((claim["text"], "holds" if held else "does NOT reproduce"))
    except KeyError as e:
      verdicts.append((claim["text"], f"not checked: run or metric {e} missing"))
    except Exception as e:  # pylint: disable=broad-except  (e.g. a failed run's "nan")
      verdicts.append((claim["text"], f"not checked: {type(e).__name__}: {e}"))
  return verdicts


def _cell(value) -> str:
  if isinstance(value, float):
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"
  return "" if value is None else str(value)


def write_report(ablation, results: list[dict], out_dir: str, command: str) -> str:
  """results.md (with command, machine and claim verdicts), results.csv and plot.png."""
  os.makedirs(out_dir, exist_ok=True)
  columns = ["run", *ablation.metrics]
  rows = [[res["name"], *(res.get(m) for m in ablation.metrics)] for res in results]
  with open(os.path.join(out_dir, "results.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(columns)
    writer.writerows(rows)
  lines = [f"# Ablation: {ablation.name}", "", ablation.get("description", "") or "", "",
           f"Command: `{command}`  ", f"Machine: {machine()}  ",
           f"Date: {datetime.date.today().isoformat()}  ", f"Base config: `{ablation.base}` "
           f"with {flatten(ablation.get('overrides', None)) or 'no overrides'}", "",
           "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
  failed = [res for res in results if "error" in res]
  if failed:
    lines += ["", "## Failed runs", ""]
    lines += [f"- {res['name']}: {res['error']}" for res in failed]
  commits = sorted({res.get("commit", "unrecorded") for res in results})
  lines += ["", f"Code: commit {', '.join(commits)}."]
  verdicts = check_claims(ablation, results)
  if verdicts:
    lines += ["", "## Claims", ""]
    lines += [f"- {text}: **{verdict}**" for text, verdict in verdicts]
  notes = ablation.get("notes", None)
  if notes:
    lines += ["", "## Notes", "", notes]
  lines += ["", "![plot](plot.png)", ""]
  path = os.path.join(out_dir, "results.md")
  with open(path, "w") as f:
    f.write("\n".join(lines))
  _plot(ablation, results, os.path.join(out_dir, "plot.png"))
  return path


def _plot(ablation, results, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  plot = dict(ablation.get("plot", None) or {})
  ys = list(plot.get("y", ablation.metrics[:1]))
  fig, axes = plt.subplots(1, len(ys), figsize=(4.5 * len(ys), 3.6), squeeze=False)
  x_key = plot.get("x", "run")
  xs = [res["name"] if x_key == "run" else res["overrides"].get(x_key, res.get(x_key))
        for res in results]
  for ax, y in zip(axes[0], ys):
    values = [res.get(y, math.nan) for res in results]
    values = [v if isinstance(v, (int, float)) else math.nan for v in values]
    if plot.get("kind", "bar") == "line":
      ax.plot(xs, values, marker="o")
      ax.set_xlabel(x_key)
    elif plot["kind"] == "scatter":  # e.g. speed vs accuracy, each run a labelled point
      ax.scatter(xs, values)
      for x, v, res in zip(xs, values, results):
        ax.annotate(res["name"], (x, v), fontsize=8, textcoords="offset points",
                    xytext=(4, 4))
      ax.set_xscale("log")
      ax.set_xlabel(f"{x_key} (log scale)")
    else:
      ax.bar(range(len(xs)), values)
      ax.set_xticks(range(len(xs)), [str(x) for x in xs], rotation=30, ha="right",
                    fontsize=8)
    ax.set_title(y)
    ax.grid(alpha=0.3)
  fig.suptitle(ablation.name)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def machine() -> str:
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
          f"{device.platform.upper()} ({device.device_kind}) x{jax.device_count()}, "
          f"jax {jax.__version__}, Python {platform.python_version()}")


# -- command line -------------------------------------------------------------------------
def main(argv):
  cli.no_positional_arguments(argv)
  try:
    ablation = FLAGS.ablation
    name = ablation.name
  except (OSError, AttributeError) as e:
    cli.fail(f"cannot load --ablation: {e}")
  cli.enable_compilation_cache()
  workdir = FLAGS.workdir or os.path.join("runs", "ablations", name)
  report_dir = FLAGS.report_dir
  if report_dir is None:  # the committed tables only come from the default workdir
    report_dir = "" if FLAGS.workdir else os.path.join("docs", "ablations", name)
  flags_given = [a for a in sys.argv[1:] if not a.startswith("--ablation=")]
  command = " ".join(["./launch.sh ablate", FLAGS["ablation"].config_filename, *flags_given])
  try:
    results = run_all(ablation, workdir, FLAGS.only)
  except JaxsegError as e:
    cli.fail(str(e))
  except AblationInterrupted:
    print("jaxseg: ablation stopped (SIGTERM): the current run saved a checkpoint; run the "
          "same command to resume", file=sys.stderr)
    sys.exit(128 + 15)
  for out in [workdir] + ([report_dir] if report_dir else []):
    path = write_report(ablation, results, out, command)
    print(f"report: {path}")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
