"""Ablations: train a list or grid of config overrides, then tabulate and plot them.

  ./launch.sh ablate experiments/ablations/<name>.py [--seeds=N] [--workdir=DIR]
      [--report_dir=DIR] [--only=RUN,...] [--shard=i/n | --merge=DIR,...]

An ablation file's `get_config()` returns a ConfigDict with
  base      experiment config every run starts from ("path.py" or "path.py:variant")
  overrides {key: value} applied to every run; keys are dotted ("model.depth") or nested
            dicts ({"model": {"depth": 3}}: ConfigDict fields cannot hold dots)
  runs      list of {"name", "overrides", optional "base" (this run's own experiment
            config, e.g. another model), optional "evaluate_checkpoint_of": run name,
            optional "tags": {attribute: value} for the plot, e.g. {"meta": "ssd",
            "backbone": "resnet18"}; tags change no config}
  grid      or {key: [values]} (keys as in overrides): one run per combination, named
            "key=value,..."
  metrics   the columns of the table (eval metrics such as mIoU or iou/circle, and the
            profile figures of `profile`: params, gflops_per_image, train_gflops,
            train_memory_mb, ms_per_step, infer_ms_per_image, receptive_field)
  plot      {"x": column or "run", "y": [columns], "kind": "bar" | "line" | "scatter"
            (labelled points, x on a log scale: e.g. speed vs accuracy); a scatter may
            add "marker_by": tag (one marker shape per value), "colour_by": tag (one
            colour per value), with a legend, and "pareto": True (the points no other
            point beats in both lower x and higher y, as a step line, labelled)}
  receptive_field_scale  the receptive field is measured on inputs this many times the
            image size (default 4): it can be no larger
  claims    list of {"text", "check"}: `check` is a Python expression over `r`, the
            dict run name -> {metric: value}; the report says whether each claim
            holds, does not hold or is inconclusive by CLAIM_RULE (over the seeds)
  seeds     how many seeds each run is trained with (default 1; `--seeds` overrides it):
            config.seed = the base config's seed + k, k = 0..N-1, which changes the
            initialisation and the data order
Every (run, seed) is an ordinary, resumable workdir `<workdir>/<run name>/seed_<seed>`; one
whose `result.json` exists is not repeated. A single-seed run of the older layout
(`<workdir>/<run name>/result.json` or `checkpoints/` directly in it) is still read and
resumed there as the base seed. A run with `evaluate_checkpoint_of` trains nothing: it
evaluates that run's final checkpoint (of the same seed) under its own overrides (e.g.
the same weights with a different inference mode). The report (results.md with per-metric
mean, std, min and max, claims and provenance; results.csv, one row per run and seed;
plot.png with std error bars) goes into the workdir and into `--report_dir` (default
docs/ablations/<name> when --workdir is the default, else nowhere). A report that replaces
an earlier results.md lists under "Verdict changes" each claim whose verdict differs from
the earlier report's, with the code of each, and keeps the earlier report's own list, so
a re-run study says what it overturned (`earlier_report`, `verdict_change_lines`).

Many hosts: `--shard=i/n` runs only shard i's (run, seed) pairs (`shard_of`: round-robin
over groups, a run evaluating another's checkpoint in its group, the same on every host
given the same file and --seeds) in its --workdir, and keeps `shard_<i>_of_<n>.json` there
(its pairs, finished, failed, status, wall time, provenance); a shard writes its partial
report into its workdir only. Shards may share one workdir. `--merge=DIR,...` trains
nothing: it reads every (run, seed) result in those workdirs and writes the whole report
(into --report_dir, default docs/ablations/<name>, and --workdir if given), naming each
pair found nowhere ("missing: RUN seed S", with its shard and state from a manifest) and
each pair found twice with different results (the first DIR listed wins); a claim that
needs a missing result is not checked or inconclusive. `--merge=DIR` alone rebuilds the
report of one workdir without training. A SLURM job array of 4:

  #SBATCH --array=0-3
  srun ./launch.sh ablate rcnn_family --shard=${SLURM_ARRAY_TASK_ID}/4 \\
      --workdir=/shared/runs/rcnn_family/shard_${SLURM_ARRAY_TASK_ID}
  # then, once all have ended (a shard that did not finish is named in the report):
  ./launch.sh ablate rcnn_family \\
      --merge=$(echo /shared/runs/rcnn_family/shard_{0..3} | tr ' ' ,)

Timing: each run's `infer_ms_per_image` / `test_ms_per_image` is measured when it ends,
under whatever else the machine (or another shard) is doing then. `--merge=DIR,...
--retime=N` measures them again, all in one process: every run's final checkpoint is
restored and its jitted prediction timed once per round in turn, best of N rounds, so a
busy moment slows every run alike (`retime`); the report says so.
"""
from __future__ import annotations

from jaxseg import signals  # first: SIGTERM during start-up ends the command cleanly

if __name__ == "__main__":
  signals.exit_on_sigterm()

import csv
import datetime
import glob
import hashlib
import importlib.util
import itertools
import json
import math
import operator
import os
import platform
import re
import shlex
import shutil
import sys
import time
from collections.abc import Sequence

from absl import flags
import numpy as np

from jaxseg import cli
from jaxseg.errors import ConfigError, JaxsegError, NonFiniteLossError

if __name__ == "__main__":  # a library import (tests) leaves the process's hooks alone
  cli.quiet_startup()
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
    r["tags"] = dict(r.get("tags") or {})
  return runs


def run_config(ablation, run: dict, seed_index: int = 0):
  """The config of `run` (its seed: the base config's seed + `seed_index`)."""
  config = load_config(run.get("base") or ablation.base)
  apply_overrides(config, ablation.get("overrides", None))
  config = apply_overrides(config, run["overrides"])
  config.seed = int(config.seed) + seed_index
  return config


def load_ablation(path: str):
  """An ablation file's ConfigDict (its `get_config()`, as --ablation reads it)."""
  if not os.path.isfile(path):
    raise ConfigError(f"ablation file {path!r} does not exist")
  module_spec = importlib.util.spec_from_file_location("jaxseg_ablation", path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
    return module.get_config()
  except (AttributeError, ValueError, TypeError, SyntaxError) as e:
    raise ConfigError(f"cannot load ablation {path!r}: {e}") from None


def num_seeds(ablation, seeds=None) -> int:
  """`seeds` (the flag) if given, else the ablation's `seeds`, else 1."""
  n = ablation.get("seeds", 1) if seeds is None else seeds
  if isinstance(n, bool) or not isinstance(n, int) or n < 1:
    raise ConfigError(f"seeds={n!r}: expected a whole number of seeds, at least 1")
  return n


def seed_dir(workdir: str, run_name: str, seed: int, base_seed: int) -> str:
  """`<workdir>/<run>/seed_<seed>`; the base seed of a run made in the older single-seed
  layout (result.json or checkpoints directly in `<workdir>/<run>`) stays there."""
  run_dir = os.path.join(workdir, _safe(run_name))
  legacy = any(os.path.exists(os.path.join(run_dir, f)) for f in ("result.json", "checkpoints"))
  return run_dir if seed == base_seed and legacy else os.path.join(run_dir, f"seed_{seed}")


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

  def loss_of(params, batch):
    return task.loss_fn({**variables, "params": params}, batch, jax.random.key(0), True)[0]

  train = jax.jit(jax.grad(loss_of)).lower(state.params, batch).compile()
  predict = jax.jit(task.predict_batch)
  # Timed on real eval inputs: a detector's proposals are part of them.
  sample = next(iter(task.eval_data()), None) or batch
  sample = {k: np.asarray(v)[:config.eval_batch_size] for k, v in sample.items()}
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
      "params": param_count(state.params),
      "gflops_per_image": inference_gflops(task, variables, sample),
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


def param_count(params) -> int:
  """The number of parameters (arrays or their abstract shapes)."""
  import jax  # pylint: disable=g-import-not-at-top
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


def inference_gflops(task, variables, batch) -> float:
  """XLA's FLOP count (GFLOP) of the compiled `task.predict_batch` on the first image of
  `batch` (and its other inputs, e.g. proposals); `variables` may be abstract
  (ShapeDtypeStructs): only the compiled program's cost analysis is read. It compiles
  with LLVM optimisation off (`xla_backend_optimization_level=0`): the count comes from
  the optimised HLO, which that flag leaves alone (the same count, 2-2.5x faster to
  compile; the committed tables' checks would fail otherwise)."""
  import jax  # pylint: disable=g-import-not-at-top
  one = {k: np.asarray(v)[:1] for k, v in batch.items()}
  lowered = jax.jit(task.predict_batch).lower(variables, one)
  key = hashlib.sha256(lowered.as_text().encode()).hexdigest()
  if key not in _GFLOPS:  # the same program (e.g. runs that differ in the loss) compiles once
    compiled = lowered.compile(compiler_options={"xla_backend_optimization_level": 0})
    _GFLOPS[key] = _flops(compiled) / 1e9
  return _GFLOPS[key]


_GFLOPS = {}  # sha256 of the lowered program -> its GFLOP


def code_figures(config) -> dict:
  """`params` and `gflops_per_image` of `config` as today's code gives them, without
  training or data: the trainer's abstract initial state and `inference_gflops` on an
  example image, i.e. what `profile` records for a run of this config."""
  import jax  # pylint: disable=g-import-not-at-top
  from jaxseg import tasks  # pylint: disable=g-import-not-at-top
  from jaxseg.train import loop  # pylint: disable=g-import-not-at-top
  task = tasks.get_task(config)
  _, _, _, abstract = loop.build_state(config, task, loop.make_mesh(jax.devices()[:1]))
  return {"params": param_count(abstract.params),
          "gflops_per_image": inference_gflops(task, abstract.variables,
                                               task.example_batch(1))}


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
def parse_shard(text: str) -> tuple[int, int]:
  """`--shard=i/n` as (i, n), 0 <= i < n; anything else is a ConfigError."""
  match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
  if not match or not int(match[1]) < int(match[2]):
    raise ConfigError(f"--shard={text!r}: expected i/n with 0 <= i < n (this shard's "
                      "index and the number of shards), e.g. --shard=0/4")
  return int(match[1]), int(match[2])


def shard_of(runs: list[dict], n_seeds: int, count: int) -> dict:
  """(run name, seed index k) -> the shard (0..count-1) that runs it. A run and the runs
  that evaluate its checkpoint (`evaluate_checkpoint_of`, followed to the run that trains)
  form a group per seed; groups go round-robin over the shards in run order, seeds
  ascending. A function of the ablation (and the seed count) alone: the same on every host."""
  by_name = {r["name"]: r for r in runs}

  def root(run):
    while run.get("evaluate_checkpoint_of") is not None:
      run = by_name[run["evaluate_checkpoint_of"]]
    return run["name"]

  roots = list(dict.fromkeys(root(r) for r in runs))
  group = {(name, k): (i * n_seeds + k) % count for i, name in enumerate(roots)
           for k in range(n_seeds)}
  return {(r["name"], k): group[root(r), k] for r in runs for k in range(n_seeds)}


def plan(ablation, seeds=None, shard=None) -> list[dict]:
  """The (run, seed) pairs in run order, seeds ascending: {"run", "k", "config", "seed",
  "base_seed", "shard"}; with `shard` = (i, n) only shard i's pairs."""
  runs = expand_runs(ablation)
  n_seeds = num_seeds(ablation, seeds)
  owner = shard_of(runs, n_seeds, shard[1]) if shard else {}
  pairs = []
  for run in runs:
    base_seed = run_config(ablation, run).seed
    for k in range(n_seeds):
      if shard and owner[run["name"], k] != shard[0]:
        continue
      config = run_config(ablation, run, k)
      pairs.append({"run": run, "k": k, "config": config, "seed": config.seed,
                    "base_seed": base_seed, "shard": owner.get((run["name"], k))})
  return pairs


def read_result(workdir: str, pair: dict):
  """The result.json of a (run, seed) pair in `workdir` (with its `seed`), or None; one
  made with another config than `pair`'s is a ConfigError."""
  run_dir = seed_dir(workdir, pair["run"]["name"], pair["seed"], pair["base_seed"])
  path = os.path.join(run_dir, "result.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    result = json.load(f)
  if result.get("config") != _jsonable(pair["config"].to_dict()):
    raise ConfigError(f"run {pair['run']['name']!r} in {run_dir} was made with another "
                      "config than the ablation now gives; delete that directory to re-run it")
  result.setdefault("seed", pair["seed"])  # the older single-seed layout
  return result


def run_all(ablation, workdir: str, only=(), seeds=None, shard=None,
            on_pair=None) -> list[dict]:
  """Train and profile every (run, seed) not yet done; return all results (each with its
  `seed`) in run order, seeds ascending. With `shard` = (i, n): only shard i's pairs
  (`shard_of`). `on_pair(run name, seed, result or None)` is called as each pair starts
  (None) and ends.

  A run that fails with a user-level error (e.g. a non-finite loss) is recorded as
  failed and the ablation goes on. A finished run whose recorded config differs from
  what the ablation now asks for is an error: delete its directory to re-run it.
  """
  from jaxseg import tasks  # pylint: disable=g-import-not-at-top
  from jaxseg.train import checkpoint as ckpt_lib, loop  # pylint: disable=g-import-not-at-top

  runs = expand_runs(ablation)
  n_seeds = num_seeds(ablation, seeds)
  unknown = set(only) - {r["name"] for r in runs}
  if unknown:
    raise ConfigError(f"--only names runs the ablation does not have: {sorted(unknown)}")
  on_pair = on_pair or (lambda *_: None)
  results = []
  for pair in plan(ablation, seeds, shard):
    run, k, config = pair["run"], pair["k"], pair["config"]
    i = runs.index(run) + 1
    label = f"run {i}/{len(runs)} {run['name']!r}" + (
        f" seed {config.seed} ({k + 1}/{n_seeds})" if n_seeds > 1 else "")
    run_dir = seed_dir(workdir, run["name"], config.seed, pair["base_seed"])
    result = read_result(workdir, pair)
    if result is not None:
      results.append(result)
      on_pair(run["name"], config.seed, result)
      _progress(f"{label}: done before, not repeated")
      continue
    if only and run["name"] not in only:
      continue
    on_pair(run["name"], config.seed, None)
    _progress(f"{label}: {run['overrides'] or 'base config'}")
    source = run.get("evaluate_checkpoint_of")
    if source is not None:
      _copy_checkpoints(seed_dir(workdir, source, config.seed, pair["base_seed"]), run_dir)
    t0 = time.time()
    origin = provenance()
    result = {"name": run["name"], "seed": config.seed, "overrides": run["overrides"],
              "evaluated_checkpoint_of": source, "commit": origin["commit"],
              "provenance": origin, "config": config.to_dict()}
    try:
      summary = loop.train_and_evaluate(config, run_dir, train=source is None)
    except NonFiniteLossError as e:
      result.update(error=" ".join(str(e).split()), wall_seconds=time.time() - t0)
      _progress(f"{label} FAILED: {result['error']}")
    else:
      if summary["interrupted"]:
        raise AblationInterrupted()
      task = tasks.get_task(config)
      result.update(final_step=summary["final_step"], **summary["eval"],
                    **profile(task, config, summary["state"], run_dir,
                              ablation.get("receptive_field_scale", 4)))
      result["wall_seconds"] = time.time() - t0
      _progress(f"{label} finished in {time.time() - t0:.0f} s")
    result = _jsonable(result)
    ckpt_lib.write_json_atomic(os.path.join(run_dir, "result.json"), result)
    results.append(result)
    on_pair(run["name"], config.seed, result)
  return results


class ShardManifest:
  """`<workdir>/shard_<i>_of_<n>.json`: the (run, seed) pairs a shard owns, which finished,
  which failed (a recorded error, or the pair it was running when the command stopped
  with an error), its status, wall time, command and provenance; rewritten as each pair
  starts and ends."""

  def __init__(self, ablation, workdir: str, shard, pairs, n_seeds: int, command: str):
    self.path = os.path.join(workdir, f"shard_{shard[0]}_of_{shard[1]}.json")
    self.t0 = time.time()
    self.data = {"ablation": ablation.name, "shard": f"{shard[0]}/{shard[1]}",
                 "seeds": n_seeds, "pairs": [[p["run"]["name"], p["seed"]] for p in pairs],
                 "finished": [], "failed": [], "running": None, "status": "running",
                 "started": datetime.datetime.now().isoformat(timespec="seconds"),
                 "wall_seconds": 0.0, "command": command, "provenance": provenance()}
    self._write()

  def on_pair(self, name: str, seed: int, result):
    self.data["running"] = [name, seed] if result is None else None
    if result is not None and "error" in result:
      self.data["failed"].append([name, seed, result["error"]])
    elif result is not None:
      self.data["finished"].append([name, seed])
    self._write()

  def close(self, status: str):
    """Record how the shard ended ("done", "interrupted" or "error: ..."): a pair still
    running after an error is failed."""
    if self.data["running"] and status.startswith("error"):
      self.data["failed"].append([*self.data["running"], status[len("error: "):]])
    self.data.update(status=status, running=None)
    self._write()

  def _write(self):
    from jaxseg.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
    os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
    self.data["wall_seconds"] = time.time() - self.t0
    ckpt_lib.write_json_atomic(self.path, _jsonable(self.data))


def read_manifests(dirs) -> dict:
  """(run name, seed) -> (shard "i/n", "failed: <error>" | "finished" | "not finished")
  from the shard manifests in `dirs` (the first listed wins)."""
  out = {}
  for d in dirs:
    for path in sorted(glob.glob(os.path.join(d, "shard_*_of_*.json"))):
      with open(path) as f:
        m = json.load(f)
      failed = {(n, s): e for n, s, e in m.get("failed", [])}
      finished = {tuple(p) for p in m.get("finished", [])}
      for name, seed in m.get("pairs", []):
        state = (f"failed: {failed[name, seed]}" if (name, seed) in failed else
                 "finished" if (name, seed) in finished else "not finished")
        out.setdefault((name, seed), (m.get("shard", "?"), state))
  return out


def merge_results(ablation, dirs, seeds=None) -> tuple[list[dict], dict]:
  """Every (run, seed) result found in the workdirs `dirs`, in run order, seeds ascending,
  and what the report says about the merge: {"dirs", "missing": [(run, seed)], "lines"}.
  A pair in no dir is missing (with its shard and state if a manifest names it); a pair
  in several dirs with different results is taken from the first dir listed (one without
  an error first); one made with another config than the ablation gives is not used.
  The seed count: `seeds`, else the manifests' (if they agree), else the ablation's."""
  absent = [d for d in dirs if not os.path.isdir(d)]
  if absent:
    raise ConfigError(f"--merge: no such directory: {', '.join(absent)}")
  if seeds is None:
    counts = set()
    for d in dirs:
      for path in glob.glob(os.path.join(d, "shard_*_of_*.json")):
        with open(path) as f:
          counts.add(json.load(f).get("seeds"))
    seeds = counts.pop() if len(counts) == 1 and None not in counts else None
  manifests = read_manifests(dirs)
  results, missing, lines = [], [], []
  for pair in plan(ablation, seeds):
    name, seed = pair["run"]["name"], pair["seed"]
    found = []
    for d in dirs:
      try:
        result = read_result(d, pair)
      except ConfigError:
        lines.append(f"- not used: {name} seed {seed} in {d} was made with another config "
                     "than the ablation now gives")
        continue
      if result is not None:
        found.append((d, result))
    if not found:
      missing.append((name, seed))
      shard, state = manifests.get((name, seed), (None, None))
      owner = f"shard {shard}, {state}" if shard else "no shard manifest names it"
      lines.append(f"- missing: {name} seed {seed} ({owner})")
      continue
    ordered = [f for f in found if "error" not in f[1]] + [f for f in found if "error" in f[1]]
    d, result = ordered[0]
    others = [o for o, r in found if r != result]
    if others:
      differ = [m for m in ablation.metrics
                if any(r.get(m) != result.get(m) for o, r in found)]
      lines.append(f"- {name} seed {seed} is in {', '.join([d, *others])} with different "
                   f"results (metrics differing: {', '.join(differ) or 'none'}); used {d} "
                   "(the first listed, one without an error first)")
    results.append(result)
  return results, {"dirs": list(dirs), "missing": missing, "lines": lines}


def retime(ablation, results: list[dict], dirs, seeds=None, rounds: int = 7):
  """`results` with `infer_ms_per_image` (and a detector's `test_ms_per_image`,
  `proposal_share`) measured again round-robin in this process: each (run, seed)'s newest
  checkpoint restored from the first of `dirs` holding its result, its jitted
  `task.predict_batch` on the eval batch `profile` times (the first eval_batch_size
  examples), timed once per round in turn after a warm-up, best of `rounds` per image."""
  import jax  # pylint: disable=g-import-not-at-top
  from jaxseg import tasks  # pylint: disable=g-import-not-at-top
  from jaxseg.train import checkpoint as ckpt_lib, loop  # pylint: disable=g-import-not-at-top
  by_pair = {(r["name"], r.get("seed", 0)): r for r in results if "error" not in r}
  mesh = loop.make_mesh()
  timed = []
  for pair in plan(ablation, seeds):
    result = by_pair.get((pair["run"]["name"], pair["seed"]))
    if result is None:
      continue
    run_dir = next(seed_dir(d, pair["run"]["name"], pair["seed"], pair["base_seed"])
                   for d in dirs if _same_result(d, pair, result))
    config = pair["config"]
    task = tasks.get_task(config, run_dir)
    abstract = loop.build_state(config, task, mesh)[3]
    ckpt = ckpt_lib.Checkpointer(os.path.join(run_dir, "checkpoints"), config.keep_checkpoints,
                                 config.best_metric, config.best_mode, read_only=True,
                                 clean_up=False)
    try:
      if not ckpt.steps():
        raise ConfigError(f"--retime: {run_dir} has no checkpoint to time")
      variables = ckpt.restore(abstract).variables
    finally:
      ckpt.close()
    sample = next(iter(task.eval_data()))
    sample = {k: np.asarray(v)[:config.eval_batch_size] for k, v in sample.items()}
    predict = jax.jit(task.predict_batch)
    jax.block_until_ready(predict(variables, sample))
    timed.append((result, lambda p=predict, v=variables, b=sample: p(v, b),
                  len(sample["image"])))
    _progress(f"retime: {pair['run']['name']} seed {pair['seed']} compiled")
  best = [math.inf] * len(timed)
  for _ in range(rounds):
    for i, (_, run, _) in enumerate(timed):
      t0 = time.perf_counter()
      jax.block_until_ready(run())
      best[i] = min(best[i], time.perf_counter() - t0)
  retimed = {id(result): (1e3 * b / n) for (result, _, n), b in zip(timed, best)}
  out = []
  for result in results:
    if id(result) in retimed:
      result = dict(result, infer_ms_per_image=retimed[id(result)])
      if "test_ms_per_image" in result:
        proposal_ms = result.get("proposal_ms_per_image") or 0.0
        result["test_ms_per_image"] = result["infer_ms_per_image"] + proposal_ms
        result["proposal_share"] = proposal_ms / result["test_ms_per_image"]
    out.append(result)
  return out


def _same_result(workdir: str, pair: dict, result: dict) -> bool:
  try:
    return read_result(workdir, pair) == result
  except ConfigError:
    return False


class AblationInterrupted(Exception):
  """SIGTERM during a run: its checkpoint is saved; the same command resumes."""


# Changed files that cannot change a result: reports (a study's own results.md, csv and
# plot, written into docs/ablations/ and committed later) and prose.
_NOT_CODE = (":(top,exclude)docs", ":(top,exclude)README.md")


def _commit(here: str | None = None) -> str:
  """The git commit of the code (with '+dirty' for uncommitted changes to tracked files
  outside docs/ and README.md: the report of a study just run, not committed yet, does
  not make the next study's code dirty), or 'unknown'. `here`: a folder in the checkout
  (default: this module's)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  here = here or os.path.dirname(os.path.abspath(__file__))
  try:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, text=True,
                          capture_output=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                            ":(top)", *_NOT_CODE], cwd=here,
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
CLAIM_RULE = (
    "Each claim's check is evaluated with every r[run][metric] standing for that metric's "
    "values over the seeds, paired by seed (seed s of every run has the same "
    "config.seed); arithmetic is per seed. Each comparison is decided on the per-seed "
    "differences d of its two sides: with mean m and standard error SE = std(d) / sqrt(n) "
    "(0 with one seed), `a > b` is true when m - 2 SE > 0, false when m + 2 SE <= 0 and "
    "undecided in between (likewise <, >=, <=); `a == b` is true when every d is 0, false "
    "when 0 lies outside m +- 2 SE, else undecided. A claim **holds** or **does not "
    "hold** when its check comes out true or false with every comparison decided; it is "
    "**inconclusive** when a comparison it needs is undecided. With one seed this is the "
    "plain comparison of the values.")
CSV_FIGURES = ("params", "gflops_per_image")  # in every results.csv: the staleness test


class _Inconclusive(Exception):
  """A comparison in a claim's check is within two standard errors."""


class _Missing(dict):
  """A run with no result at all in a claim check: any metric of it is a KeyError."""

  def __init__(self, name: str):
    super().__init__()
    self.name = name

  def __missing__(self, key):
    raise KeyError(self.name)


class _Seeds:
  """A metric's values over seeds {seed: value} in a claim check (see CLAIM_RULE);
  `missing`: seeds of the study without a result (comparisons are then undecided)."""

  def __init__(self, values: dict, missing=()):
    self.values = values
    self.missing = frozenset(missing)

  def _map(self, other, op):
    if isinstance(other, _Seeds):
      seeds = sorted(self.values.keys() & other.values.keys())
      if not seeds:
        raise ValueError("the compared runs share no seed")
      return _Seeds({s: op(self.values[s], other.values[s]) for s in seeds},
                    self.missing | other.missing)
    return _Seeds({s: op(v, other) for s, v in self.values.items()}, self.missing)

  def _interval(self, other):
    diff = self._map(other, lambda a, b: a - b)
    if diff.missing:
      raise _Inconclusive()
    d = np.asarray(list(diff.values.values()), float)
    if not np.all(np.isfinite(d)):
      raise ValueError("a compared value is not finite")
    se = float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    m = float(np.mean(d))
    return d, m - 2 * se, m + 2 * se

  def _decide(self, other, op):
    _, lo, hi = self._interval(other)
    if op(lo, 0) and op(hi, 0):
      return True
    if not op(lo, 0) and not op(hi, 0):
      return False
    raise _Inconclusive()

  def __gt__(self, other):
    return self._decide(other, operator.gt)

  def __ge__(self, other):
    return self._decide(other, operator.ge)

  def __lt__(self, other):
    return self._decide(other, operator.lt)

  def __le__(self, other):
    return self._decide(other, operator.le)

  def __eq__(self, other):
    d, lo, hi = self._interval(other)
    if np.all(d == 0):
      return True
    if lo > 0 or hi < 0:
      return False
    raise _Inconclusive()

  def __ne__(self, other):
    return not self.__eq__(other)

  __hash__ = None

  def __add__(self, other):
    return self._map(other, operator.add)

  def __radd__(self, other):
    return self._map(other, lambda a, b: b + a)

  def __sub__(self, other):
    return self._map(other, operator.sub)

  def __rsub__(self, other):
    return self._map(other, lambda a, b: b - a)

  def __mul__(self, other):
    return self._map(other, operator.mul)

  def __rmul__(self, other):
    return self._map(other, lambda a, b: b * a)

  def __truediv__(self, other):
    return self._map(other, operator.truediv)

  def __rtruediv__(self, other):
    return self._map(other, lambda a, b: b / a)

  def __pow__(self, other):
    return self._map(other, operator.pow)

  def __neg__(self):
    return _Seeds({s: -v for s, v in self.values.items()}, self.missing)

  def __abs__(self):
    return _Seeds({s: abs(v) for s, v in self.values.items()}, self.missing)


def _number(value):
  """A metric value as a float (JSON's "nan"/"inf" strings too), else None."""
  if isinstance(value, bool):
    return None
  if isinstance(value, (int, float)):
    return float(value)
  if isinstance(value, str) and value in ("nan", "inf", "-inf"):
    return float(value)
  return None


def _by_run(results) -> dict:
  """run name -> its results (seeds ascending), in run order."""
  groups = {}
  for res in results:
    groups.setdefault(res["name"], []).append(res)
  return {k: sorted(v, key=lambda res: res.get("seed", 0)) for k, v in groups.items()}


def check_claims(ablation, results: list[dict], missing=()) -> list[tuple[str, str]]:
  """(claim text, verdict) per claim: 'holds', 'does not hold', 'inconclusive' (CLAIM_RULE)
  or why it could not be checked. `missing`: (run, seed) pairs without a result (a merge
  of shards): a claim needing a run with no result is not checked, one comparing a run
  with a missing seed is inconclusive."""
  lost = {}
  for name, seed in missing:
    lost.setdefault(name, set()).add(seed)
  r = {name: _Missing(name) for name in lost}
  for name, group in _by_run(results).items():
    values = {}
    for res in group:
      for key, value in res.items():
        v = _number(value)
        if v is not None and key not in ("seed", "wall_seconds"):
          values.setdefault(key, {})[res.get("seed", 0)] = v
    r[name] = {k: _Seeds(v, lost.get(name, ())) for k, v in values.items()}
  verdicts = []
  for claim in ablation.get("claims", None) or []:
    try:
      # One namespace (globals) so that comprehensions inside a check also see `r`.
      namespace = {"__builtins__": {}, "min": min, "max": max, "abs": abs, "all": all,
                   "any": any, "sum": sum, "r": r}
      held = bool(eval(claim["check"], namespace))  # pylint: disable=eval-used
      verdicts.append((claim["text"], "holds" if held else "does not hold"))
    except _Inconclusive:
      verdicts.append((claim["text"], "inconclusive"))
    except KeyError as e:
      verdicts.append((claim["text"], f"not checked: run or metric {e} missing"))
    except Exception as e:  # pylint: disable=broad-except  (e.g. a failed run's "nan")
      verdicts.append((claim["text"], f"not checked: {type(e).__name__}: {e}"))
  return verdicts


def spread(values: list) -> dict:
  """n, mean, std (sample, n - 1; nan for one value), min and max of numbers; a figure
  equal in every seed (e.g. params) keeps its type."""
  n = len(values)
  if n == 0:
    return {"n": 0, "mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan}
  if all(v == values[0] for v in values):
    return {"n": n, "mean": values[0], "std": 0.0 if n > 1 else math.nan,
            "min": values[0], "max": values[0]}
  a = np.asarray(values, float)
  return {"n": n, "mean": float(a.mean()), "std": float(a.std(ddof=1)) if n > 1 else math.nan,
          "min": float(a.min()), "max": float(a.max())}


def run_spread(group: list[dict], metric: str) -> dict:
  """`spread` of a metric over a run's seeds (those that recorded it)."""
  values = []
  for res in group:
    v = res.get(metric)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
      values.append(v)
    elif _number(v) is not None:
      values.append(_number(v))
  return spread(values)


def _cell(value) -> str:
  if isinstance(value, float):
    if math.isnan(value):
      return "nan"
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"
  return "" if value is None else str(value)


def _mean_cell(s: dict) -> str:
  if s["n"] == 0:
    return ""
  if s["n"] == 1 or s["std"] == 0:
    return _cell(s["mean"])
  return f"{_cell(s['mean'])} ± {_cell(s['std'])}"


def _commit_text(commit: str) -> str:
  if commit == "unrecorded":
    return "commit unrecorded (made by older code)"
  if commit.endswith("+dirty"):
    return f"commit {commit[:-6]} with uncommitted changes"
  return f"commit {commit} (clean tree)"


def _grouped(results, what) -> list[tuple[str, list[str]]]:
  """(value, ["run@seed", ...]) for each distinct `what(result)`, first seen first."""
  out = {}
  for res in results:
    out.setdefault(what(res), []).append(f"{res['name']}@seed {res.get('seed', 0)}")
  return list(out.items())


def _commit_of(res) -> str:
  return _commit_text(res.get("provenance", {}).get("commit") or res.get("commit")
                      or "unrecorded")


def _code_text(results) -> str:
  """The code the results came from, as the report's provenance names it."""
  groups = _grouped(results, _commit_of)
  if len(groups) == 1:
    return groups[0][0]
  return "; ".join(f"{value}: {', '.join(runs)}" for value, runs in groups)


VERDICT_CHANGES = "## Verdict changes"
_CLAIM_LINE = re.compile(r"^- (.+): \*\*(.+?)\*\*")
_VERDICT_ALIASES = {"does not reproduce": "does not hold"}  # the wording of older reports


def _verdict_key(verdict: str) -> str:
  v = verdict.strip().lower()
  return _VERDICT_ALIASES.get(v, v)


def earlier_report(path: str) -> dict | None:
  """What an existing results.md says, for the report that replaces it: {"verdicts":
  {claim text: verdict}, "code": its provenance's code (e.g. "commit 4fa1599"),
  "changes": the lines of its own verdict-changes section}; None without a readable file.
  Reads every report format jaxseg has written (older ones say "Code: commit X." and
  "does NOT reproduce")."""
  try:
    with open(path, encoding="utf-8") as f:
      lines = f.read().splitlines()
  except (OSError, UnicodeDecodeError):
    return None
  out, section = {"verdicts": {}, "code": "code unrecorded", "changes": []}, None
  for i, line in enumerate(lines):
    if line.startswith("#"):
      section = line.strip()
      continue
    if section == "## Claims" and (m := _CLAIM_LINE.match(line)):
      out["verdicts"][m.group(1)] = m.group(2)
    elif section == VERDICT_CHANGES and line.startswith("- "):
      out["changes"].append(line)
    elif m := re.match(r"^(?:- )?Code:\s*(.*?)\.?\s*$", line):
      items = itertools.takewhile(lambda l: l.startswith("  - "), lines[i + 1:])
      out["code"] = m.group(1) or "; ".join(item[4:] for item in items)
  return out


def verdict_change_lines(earlier: dict | None, verdicts, code: str) -> list[str]:
  """The report's verdict-changes section: the earlier report's own changes, kept, and
  each claim whose verdict differs from the earlier report's (same claim text)."""
  if not earlier:
    return []
  changes = list(earlier["changes"])
  for text, verdict in verdicts:
    was = earlier["verdicts"].get(text)
    if was is not None and _verdict_key(was) != _verdict_key(verdict):
      line = (f"- {text}: **{_verdict_key(was)}** with {earlier['code']} -> **{verdict}** "
              f"with {code}")
      if line not in changes:
        changes.append(line)
  if not changes:
    return []
  return ["", VERDICT_CHANGES, "", "Claims whose verdict differs from the report this one "
          "replaced (earlier changes are kept from report to report):", "", *changes]


def provenance_lines(results, command: str, seconds) -> list[str]:
  """A report's "## Provenance" section: code, versions and machine of each result (by
  its "name" and "seed"), the command, and the wall time per run."""
  def versions(res):
    v = res.get("provenance", {}).get("versions")
    return ", ".join(f"{k} {x}" for k, x in v.items()) if v else "unrecorded"

  def where(res):
    return res.get("provenance", {}).get("machine") or "unrecorded"

  lines = ["", "## Provenance", ""]
  for title, what in (("Code", _commit_of), ("Versions", versions), ("Machine", where)):
    groups = _grouped(results, what)
    if len(groups) == 1:
      lines.append(f"- {title}: {groups[0][0]}")
    else:
      lines.append(f"- {title}:")
      lines += [f"  - {value}: {', '.join(runs)}" for value, runs in groups]
  lines.append(f"- Command: `{command}`")
  total = sum(_number(res.get("wall_seconds")) or 0.0 for res in results)
  lines.append(f"- Wall time: {total:.0f} s over all runs and seeds (training, evaluation "
               "and profiling as each run recorded it; a resumed run: its last part)"
               + (f"; this command took {seconds:.0f} s" if seconds is not None else ""))
  lines += ["", "| run | wall time per seed (s) | total (s) |", "|---|---|---|"]
  for name, group in _by_run(results).items():
    walls = [(res.get("seed", 0), _number(res.get("wall_seconds"))) for res in group]
    per = ", ".join(f"seed {s}: {w:.0f}" if w is not None else f"seed {s}: unrecorded"
                    for s, w in walls)
    lines.append(f"| {name} | {per} | {sum(w or 0.0 for _, w in walls):.0f} |")
  return lines


def write_report(ablation, results: list[dict], out_dir: str, command: str,
                 seconds: float | None = None, merge: dict | None = None) -> str:
  """results.md (mean ± std per metric, spread, claim verdicts, provenance), results.csv
  (one row per run and seed, with params, GFLOP per image, wall time and commit) and
  plot.png (std error bars with several seeds); the verdict changes against the
  results.md it replaces. `merge`: what `merge_results` says (its dirs, missing pairs and
  notes), for a report merged from workdirs."""
  missing = merge["missing"] if merge else []
  os.makedirs(out_dir, exist_ok=True)
  earlier = earlier_report(os.path.join(out_dir, "results.md"))
  metrics = list(ablation.metrics)
  figures = [m for m in CSV_FIGURES if m not in metrics]
  columns = ["run", "seed", *metrics, *figures, "wall_seconds", "commit", "error"]
  with open(os.path.join(out_dir, "results.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(columns)
    for res in results:
      writer.writerow([res["name"], res.get("seed", 0),
                       *(res.get(m) for m in [*metrics, *figures, "wall_seconds"]),
                       res.get("provenance", {}).get("commit") or res.get("commit"),
                       res.get("error")])
  groups = _by_run(results)
  seeds = sorted({res.get("seed", 0) for res in results} | {s for _, s in missing})
  lines = [f"# Ablation: {ablation.name}", "", ablation.get("description", "") or "", "",
           f"Command: `{command}`  ", f"Date: {datetime.date.today().isoformat()}  ", f"Base config: `{ablation.base}` "
           f"with {flatten(ablation.get('overrides', None)) or 'no overrides'}  ",
           f"Seeds: {len(seeds)} (config.seed {', '.join(map(str, seeds))}; the seed sets "
           "initialisation and data order); cells are mean ± std over the seeds", "",
           "| run | seeds | " + " | ".join(metrics) + " |", "|" + "---|" * (len(metrics) + 2)]
  for name, group in groups.items():
    ok = [res for res in group if "error" not in res]
    lines.append(f"| {name} | {len(ok)} | "
                 + " | ".join(_mean_cell(run_spread(ok, m)) for m in metrics) + " |")
  if any(len(g) > 1 for g in groups.values()):
    lines += ["", "## Spread over seeds", "", "| run | metric | n | mean | std | min | max |",
              "|---|---|---|---|---|---|---|"]
    for name, group in groups.items():
      for m in metrics:
        s = run_spread(group, m)
        if s["n"]:
          lines.append(f"| {name} | {m} | {s['n']} | " + " | ".join(
              _cell(s[k]) for k in ("mean", "std", "min", "max")) + " |")
  if merge:
    lines += ["", "## Merged from", ""] + [f"- `{d}`" for d in merge["dirs"]]
    if merge["lines"]:
      lines += ["", f"{len(missing)} (run, seed) pairs have no result:" if missing
                else "Notes:", ""] + merge["lines"]
  failed = [res for res in results if "error" in res]
  if failed:
    lines += ["", "## Failed runs", ""]
    lines += [f"- {res['name']} (seed {res.get('seed', 0)}): {res['error']}" for res in failed]
  verdicts = check_claims(ablation, results, missing)
  if verdicts:
    lines += ["", "## Claims", "", f"Rule: {CLAIM_RULE}", ""]
    if missing:
      lines += ["Some (run, seed) pairs have no result (see above): a claim that needs a "
                "run without any result is not checked; a comparison with a run that "
                "misses a seed is undecided.", ""]
    checks = [c["check"] for c in ablation.claims]
    lines += [f"- {text}: **{verdict}** (`{check}`)"
              for (text, verdict), check in zip(verdicts, checks)]
    lines += verdict_change_lines(earlier, verdicts, _code_text(results))
  lines += provenance_lines(results, command, seconds)
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
  kind = plot.get("kind", "bar")
  ys = list(plot.get("y", ablation.metrics[:1]))
  tagged = kind == "scatter" and any(plot.get(k) for k in ("marker_by", "colour_by", "pareto"))
  fig, axes = plt.subplots(1, len(ys), figsize=((7 if tagged else 4.5) * len(ys) + 2 * tagged,
                                                 5 if tagged else 3.6), squeeze=False)
  legend = []
  x_key = plot.get("x", "run")
  groups = {k: [res for res in g if "error" not in res] or g
            for k, g in _by_run(results).items()}
  several = any(len(g) > 1 for g in groups.values())
  tags = ({r["name"]: r["tags"] for r in expand_runs(ablation)}
          if plot.get("marker_by") or plot.get("colour_by") else {})

  def stats(key):
    s = [run_spread(g, key) for g in groups.values()]
    return ([v["mean"] if v["n"] else math.nan for v in s],
            [v["std"] if v["n"] > 1 else 0.0 for v in s])

  if x_key == "run":
    xs, xerr = list(groups), None
  elif all(x_key in g[0]["overrides"] for g in groups.values()):
    xs, xerr = [g[0]["overrides"][x_key] for g in groups.values()], None
  else:  # a metric on x (e.g. test time): its mean, with its spread
    xs, xerr = stats(x_key)
  for ax, y in zip(axes[0], ys):
    values, err = stats(y)
    yerr = err if several else None
    if kind == "line":
      ax.errorbar(xs, values, yerr=yerr, marker="o", capsize=3)
      ax.set_xlabel(x_key)
    elif kind == "scatter":  # e.g. speed vs accuracy, each run a point
      legend = _scatter(ax, plot, tags, list(groups), xs, values, xerr if several else None,
                        yerr)
      ax.set_xscale("log")
      ax.set_xlabel(f"{x_key} (log scale)")
    else:
      ax.bar(range(len(xs)), values, yerr=yerr, capsize=3)
      ax.set_xticks(range(len(xs)), [str(x) for x in xs], rotation=30, ha="right",
                    fontsize=8)
    ax.set_title(y + (" (mean ± std)" if several else ""))
    ax.grid(alpha=0.3)
  fig.suptitle(ablation.name)
  if legend:  # one legend for all panels, right of them
    fig.legend(handles=legend, loc="center right", fontsize=8)
  fig.tight_layout(rect=(0, 0, 1 - 2 / fig.get_figwidth(), 1) if legend else None)
  fig.savefig(path, dpi=100)
  plt.close(fig)


MARKERS = "os^Dvp*<>hX"


def _scatter(ax, plot, tags, names, xs, ys, xerr, yerr):
  """One point per run: labelled; or with `marker_by` / `colour_by` one marker shape per
  value of that tag and one colour per value of the other; `pareto` draws the front
  (`pareto_front`) as a step line and labels its points. Returns the legend's handles."""
  from matplotlib.lines import Line2D  # pylint: disable=g-import-not-at-top
  from matplotlib.patches import Patch  # pylint: disable=g-import-not-at-top
  marker_by, colour_by, pareto = (plot.get(k) for k in ("marker_by", "colour_by", "pareto"))
  colours = [f"C{i}" for i in range(10)]  # matplotlib's default colour cycle

  def style(key, choices, default):
    kinds = list(dict.fromkeys(str(tags.get(n, {}).get(key, "-")) for n in names))
    pick = [choices[kinds.index(str(tags.get(n, {}).get(key, "-"))) % len(choices)]
            if key else default for n in names]
    return kinds if key else [], pick

  marker_kinds, markers = style(marker_by, MARKERS, "o")
  colour_kinds, point_colours = style(colour_by, colours, "C0")
  for i in range(len(names)):
    ax.errorbar([xs[i]], [ys[i]], xerr=None if xerr is None else [xerr[i]],
                yerr=None if yerr is None else [yerr[i]], fmt=markers[i],
                color=point_colours[i], capsize=3)
  labelled = range(len(names))
  handles = [Line2D([], [], marker=MARKERS[j % len(MARKERS)], color="0.4", linestyle="",
                    label=f"{marker_by}: {v}") for j, v in enumerate(marker_kinds)]
  handles += [Patch(color=colours[j % len(colours)], label=f"{colour_by}: {v}")
              for j, v in enumerate(colour_kinds)]
  if pareto:
    labelled = pareto_front(list(zip(xs, ys)))
    ax.step([xs[i] for i in labelled], [ys[i] for i in labelled], where="post", color="k",
            linewidth=1, alpha=0.7)
    handles.append(Line2D([], [], color="k", linewidth=1, label="Pareto front"))
  elif marker_by or colour_by:
    labelled = []  # the legend says what each point is
  for i in labelled:
    ax.annotate(names[i], (xs[i], ys[i]), fontsize=7, textcoords="offset points",
                xytext=(4, 4))
  return handles


def pareto_front(points) -> list[int]:
  """Indices of the points (x, y) that no other point dominates, by ascending x: lower x
  (e.g. test time) and higher y (e.g. AP) are better, and a point is dominated by one at
  least as good in both and better in one. Points with a nan are left out."""
  ok = [i for i, p in enumerate(points) if all(math.isfinite(float(v)) for v in p)]
  front = [i for i in ok if not any(
      points[j][0] <= points[i][0] and points[j][1] >= points[i][1]
      and tuple(points[j]) != tuple(points[i]) for j in ok)]
  return sorted(front, key=lambda i: (points[i][0], points[i][1]))


def provenance() -> dict:
  """Where a result comes from: the code's commit, the package versions, the machine."""
  return {"commit": _commit(), "versions": versions(), "machine": machine()}


def versions() -> dict:
  """The installed versions of jax, jaxlib, flax, optax and Python."""
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  out = {}
  for name in ("jax", "jaxlib", "flax", "optax"):
    try:
      out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      out[name] = "not installed"
  out["Python"] = platform.python_version()
  return out


def machine() -> str:
  """The CPU model and core count, the accelerator kind and the device count."""
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  return (f"{_cpu_model()}, {os.cpu_count()} CPU cores; {device.platform.upper()} "
          f"({device.device_kind}) x{jax.device_count()}")


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


# -- staleness ----------------------------------------------------------------------------
def is_provenance_csv(path: str) -> bool:
  """Whether a results.csv has this runner's format (run, seed, ..., commit): made by the
  code that records seeds and provenance, so its figures must match today's code."""
  with open(path, newline="") as f:
    header = next(csv.reader(f), [])
  return header[:2] == ["run", "seed"] and "commit" in header


def table_mismatches(ablation, csv_path: str, rtol: float = 1e-4,
                     only: Sequence[str] | None = None) -> list[str]:
  """Where a results.csv's params (exactly) and GFLOP per image (to `rtol`) differ from
  what the code gives now for the ablation's runs (`code_figures`, nothing trained);
  `only`: the rows of these runs alone."""
  runs = {r["name"]: r for r in expand_runs(ablation)}
  figures, wrong = {}, []
  with open(csv_path, newline="") as f:
    rows = [r for r in csv.DictReader(f) if only is None or r["run"] in only]
  for row in rows:
    name = row["run"]
    if name not in runs:
      wrong.append(f"{name!r}: not a run of the ablation")
      continue
    if name not in figures:
      figures[name] = code_figures(run_config(ablation, runs[name]))
    now = figures[name]
    params, gflops = row.get("params") or "", row.get("gflops_per_image") or ""
    if params and int(float(params)) != now["params"]:
      wrong.append(f"{name!r} seed {row['seed']}: params {params} recorded, "
                   f"{now['params']} now")
    if gflops and not math.isclose(float(gflops), now["gflops_per_image"], rel_tol=rtol):
      wrong.append(f"{name!r} seed {row['seed']}: gflops_per_image {gflops} recorded, "
                   f"{now['gflops_per_image']:.9g} now")
  return wrong


# -- command line -------------------------------------------------------------------------
def main(argv):
  cli.no_positional_arguments(argv)
  try:
    ablation = FLAGS.ablation
    name = ablation.name
  except (OSError, AttributeError) as e:
    cli.fail(f"cannot load --ablation: {e}")
  flags_given = [a for a in sys.argv[1:] if not a.startswith("--ablation=")]
  command = " ".join(shlex.quote(a) for a in [FLAGS["ablation"].config_filename, *flags_given])
  command = f"./launch.sh ablate {command}"
  report_dir = FLAGS.report_dir
  if report_dir is None:  # the committed tables only come from the default workdir
    default = not FLAGS.workdir and not FLAGS.shard
    report_dir = os.path.join("docs", "ablations", name) if default else ""
  t0 = time.time()
  try:
    if FLAGS.merge:
      if FLAGS.shard or FLAGS.only:
        raise ConfigError("--merge trains nothing: it takes no --shard or --only")
      results, merge = merge_results(ablation, FLAGS.merge, FLAGS.seeds)
      if FLAGS.retime:
        results = retime(ablation, results, FLAGS.merge, FLAGS.seeds, FLAGS.retime)
        merge["lines"].append(
            f"- inference and test times re-measured by `--retime={FLAGS.retime}`: every "
            "run's checkpoint timed round-robin in one process, best of "
            f"{FLAGS.retime} rounds ({machine()}); the other figures are each run's own")
      outs = [FLAGS.workdir] if FLAGS.workdir else []
    else:
      if FLAGS.retime:
        raise ConfigError("--retime re-measures a finished study: use it with --merge=DIR")
      shard = parse_shard(FLAGS.shard) if FLAGS.shard is not None else None
      workdir = FLAGS.workdir or os.path.join("runs", "ablations", name)
      cli.enable_compilation_cache()
      results = run_command(ablation, workdir, command, FLAGS.only, FLAGS.seeds, shard)
      merge, outs = None, [workdir]
  except JaxsegError as e:
    cli.fail(str(e))
  for out in outs + ([report_dir] if report_dir else []):
    path = write_report(ablation, results, out, command, time.time() - t0, merge)
    print(f"report: {path}")


def run_command(ablation, workdir: str, command: str, only=(), seeds=None,
                shard=None) -> list[dict]:
  """`run_all` as the command runs it: a shard keeps its manifest up to date."""
  manifest = None
  if shard:
    n_seeds = num_seeds(ablation, seeds)
    manifest = ShardManifest(ablation, workdir, shard, plan(ablation, n_seeds, shard),
                             n_seeds, command)
  try:
    results = run_all(ablation, workdir, only, seeds, shard, manifest and manifest.on_pair)
  except AblationInterrupted:
    if manifest:
      manifest.close("interrupted")
    print("jaxseg: ablation stopped (SIGTERM): the current run saved a checkpoint; run the "
          "same command to resume", file=sys.stderr)
    sys.exit(128 + 15)
  except Exception as e:
    if manifest:
      manifest.close(f"error: {' '.join(str(e).split())}")
    raise
  if manifest:
    manifest.close("done")
  return results


def define_flags():
  """The command's flags: defined when it runs, so that importing this module (the
  HyperQuest agents' study, tests) leaves the flag namespace to the importer."""
  cli.define_config_file("ablation", "Ablation file (get_config).", lock_config=False)
  flags.DEFINE_string("workdir", None, "Where the runs go (default runs/ablations/<name>).")
  flags.DEFINE_string("report_dir", None, "Where the table, CSV and plot are also written "
                      "(default docs/ablations/<name> when --workdir is the default, else "
                      "nowhere; '' to skip).")
  flags.DEFINE_list("only", [], "Run only these runs (names); the report covers all done.")
  flags.DEFINE_integer("seeds", None,
                       "Seeds per run (default: the ablation's `seeds`, else 1).")
  flags.DEFINE_string("shard", None, "i/n: run only shard i of n of the (run, seed) pairs "
                      "(a SLURM array task or a host); writes shard_<i>_of_<n>.json into "
                      "the workdir and no report into docs/ unless --report_dir says so.")
  flags.DEFINE_list("merge", [], "DIR,...: train nothing; write the report of the results "
                    "found in these workdirs (shards, or one workdir to rebuild its report).")
  flags.DEFINE_integer("retime", 0, "With --merge: re-measure every run's inference time "
                       "from its checkpoint, round-robin in one process, best of N rounds "
                       "(runs timed at different moments of a busy machine compare badly).")
  flags.mark_flags_as_required(["ablation"])


def run():
  define_flags()
  cli.run(main)


if __name__ == "__main__":
  run()
