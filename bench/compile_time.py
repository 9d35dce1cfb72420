"""Compile time of the embedded-data configs, cold and from the persistent cache.

Not part of the tests. Issue 19, target (5): each shapes config compiles in <= 30 s cold
and <= 3 s from the persistent compilation cache (the cache `./launch.sh train` keeps in
$JAXSEG_CACHE_DIR, default ~/.cache/jaxseg/xla).

For each config, two fresh processes share one new, empty cache directory:
  cold    the first process compiles with the empty cache (and fills it);
  cached  a second process compiles the same programs again: what a user's second run
          (or a resumed one) sees.
Each process builds the config's task, mesh and train state as the trainer does
(`loop.build_state`, `loop.jit_train_step`, `loop.jit_eval_step`, the functions
`train_and_evaluate` runs), reads one real training batch and one eval batch through the
task's pipelines (untimed; a generated dataset missing from the data_dir is built first),
and times `jitted.lower(args).compile()` of three programs:
  init   the jitted initialization of the train state (`build_state`'s `init`);
  train  the train step (forward, loss, backward, optimizer update);
  eval   the eval step (predictions + eval statistics).
Each figure is trace + lower + XLA compile (cold) or trace + lower + cache read (cached):
the host time before the program can run, without running it. This is more accurate than
"first step minus a later step", which also counts the first execution (buffer allocation,
autotuning) and needs a real state. The persistent cache keys programs by their HLO, so
these ahead-of-time compiles and the trainer's own calls share cache entries (the `hits`
column counts the cache hits jax reports in the cached process; checked: a
`./launch.sh train` of unet_shapes:tiny on the cache this script filled added no entry).
Programs that compile in under 0.5 s (jaxseg's `jax_persistent_cache_min_compile_time_secs`)
are not cached and compile again. The cached figure includes tracing and lowering, which
no cache skips (its own column). The first program (init) also pays the process's
one-time compiler start-up, as in a training run, where it also compiles first.
Note (jax 0.10): the cache key includes the cache directory's path (through
`xla_gpu_per_fusion_autotune_cache_dir` in the compile options), so a cache copied or
moved to another path misses; both processes here use the same path.

Verdict: PASS if cold init + train + eval <= 30 s (--cold_target) and cached init +
train + eval <= 3 s (--cached_target).

  ./launch.sh bench compile_time                     # every config, one table
  ./launch.sh bench compile_time --configs=unet_shapes,faster_rcnn_shapes
  ./launch.sh bench compile_time --configs=unet_shapes --variant=tiny

Configs: experiments/**/*shapes*.py (segmentation, detection, instance, classification,
localization, dense captioning on shapes / shapes_captions) and
experiments/**/*stick_figures*.py (pose, keypoint R-CNN). `--configs=A,B` keeps the
configs named A and B (file name without .py), else those whose path contains A or B,
or takes A, B as config paths. `--variant` (small, tiny) applies to every config.
`--data_dir` sets config.dataset.data_dir (default: each config's, TFDS's default
directory); R-CNN's first run also computes its region proposals there (minutes,
untimed). `--scratch` holds the cache directories (default: a new temporary directory,
deleted at the end unless `--keep`).
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # `python bench/compile_time.py` from anywhere
PATTERNS = ("experiments/**/*shapes*.py", "experiments/**/*stick_figures*.py")
PROGRAMS = ("init", "train", "eval")


def parse_args():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--configs", default="",
                 help="comma-separated path substrings or config paths (default: all)")
  p.add_argument("--variant", default="", help="config variant of every config (small, tiny)")
  p.add_argument("--data_dir", default=None, help="config.dataset.data_dir")
  p.add_argument("--scratch", default=None, help="where the cache directories go")
  p.add_argument("--keep", action="store_true", help="keep the cache directories")
  p.add_argument("--cold_target", type=float, default=30.0)
  p.add_argument("--cached_target", type=float, default=3.0)
  p.add_argument("--timeout", type=int, default=1800, help="seconds per process")
  # internal: one measurement in this process
  p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  return p.parse_args()


def find_configs(selection: str) -> list[str]:
  found = sorted({os.path.relpath(f, REPO) for pattern in PATTERNS
                  for f in glob.glob(os.path.join(REPO, pattern), recursive=True)})
  found = [f for f in found if not f.startswith("experiments/ablations/")]
  if not selection:
    return found
  chosen = []
  for item in [s.strip() for s in selection.split(",") if s.strip()]:
    if os.path.isfile(item) or os.path.isfile(os.path.join(REPO, item)):
      matches = [os.path.relpath(os.path.abspath(os.path.join(REPO, item)), REPO)]
    else:  # a config's name (unet_shapes) exactly, else every path containing item
      matches = ([f for f in found if os.path.basename(f) in (item, item + ".py")]
                 or [f for f in found if item in f])
    if not matches:
      raise SystemExit(f"--configs: {item!r} matches none of {', '.join(found)}")
    chosen += [m for m in matches if m not in chosen]
  return chosen


def load_config(path: str, variant: str):
  module_spec = importlib.util.spec_from_file_location("bench_config",
                                                       os.path.join(REPO, path))
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant or None)


def worker(path: str, args) -> dict:
  """Time the compiles of one config in this process (JAXSEG_CACHE_DIR from the parent)."""
  from jaxseg import cli  # pylint: disable=g-import-not-at-top
  cli.quiet_startup()
  cli.enable_compilation_cache()
  import jax  # pylint: disable=g-import-not-at-top
  from jaxseg import config_schema, tasks  # pylint: disable=g-import-not-at-top
  from jaxseg.data import pipeline  # pylint: disable=g-import-not-at-top
  from jaxseg.train import loop  # pylint: disable=g-import-not-at-top

  hits = []
  jax.monitoring.register_event_listener(
      lambda event, **kw: hits.append(1) if event == "/jax/compilation_cache/cache_hits"
      else None)
  config = load_config(path, args.variant)
  if args.data_dir:
    config.dataset.data_dir = args.data_dir
  config_schema.validate(config)
  mesh = loop.make_mesh()
  loop.check_batch_sizes(config, mesh)
  task = tasks.get_task(config, tempfile.mkdtemp(prefix="bench_compile_"))
  tx, schedule, init, abstract = loop.build_state(config, task, mesh)
  t0 = time.perf_counter()
  train_batch = pipeline.to_global(next(task.train_data(0)), mesh)
  eval_batch = pipeline.to_global(next(iter(task.eval_data())), mesh)
  data_s = time.perf_counter() - t0
  train_fn = loop.jit_train_step(task, tx, schedule, abstract, mesh)
  eval_fn = loop.jit_eval_step(task, mesh)
  calls = {"init": (init, (jax.random.key(config.seed),)),
           "train": (train_fn, (abstract, train_batch)),
           "eval": (eval_fn, (abstract.variables, eval_batch))}
  result = {"config": path, "data_s": data_s}
  for name in PROGRAMS:
    fn, fn_args = calls[name]
    before = len(hits)
    t = time.perf_counter()
    lowered = fn.lower(*fn_args)
    result[f"{name}_lower"] = time.perf_counter() - t
    lowered.compile()
    result[name] = time.perf_counter() - t
    result[f"{name}_hits"] = len(hits) - before
  return result


def run_worker(path: str, which: str, cache_dir: str, args) -> dict:
  command = [sys.executable, os.path.abspath(__file__), f"--worker={path}"]
  if args.variant:
    command.append(f"--variant={args.variant}")
  if args.data_dir:
    command.append(f"--data_dir={args.data_dir}")
  env = {**os.environ, "JAXSEG_CACHE_DIR": cache_dir}
  try:
    proc = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=args.timeout, check=False)
  except subprocess.TimeoutExpired:
    return {"error": f"{which}: timed out after {args.timeout} s"}
  for line in proc.stdout.splitlines():
    if line.startswith("RESULT "):
      return json.loads(line[len("RESULT "):])
  tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
  return {"error": f"{which}: exit {proc.returncode}: {tail}"}


def fmt(x) -> str:
  return "-" if x is None else f"{x:.1f}"


def main():
  args = parse_args()
  if args.worker:
    print("RESULT " + json.dumps(worker(args.worker, args)), flush=True)
    return
  configs = find_configs(args.configs)
  scratch = args.scratch or tempfile.mkdtemp(prefix="jaxseg_compile_time_")
  os.makedirs(scratch, exist_ok=True)
  spec = f":{args.variant}" if args.variant else ""
  print(f"{len(configs)} configs{' (variant ' + args.variant + ')' if args.variant else ''}; "
        f"cache directories under {scratch}", flush=True)
  rows = []
  for path in configs:
    cache_dir = os.path.join(scratch, os.path.splitext(path.replace("/", "_"))[0] +
                             (f"_{args.variant}" if args.variant else ""))
    shutil.rmtree(cache_dir, ignore_errors=True)
    os.makedirs(cache_dir)
    cold = run_worker(path, "cold", cache_dir, args)
    cached = run_worker(path, "cached", cache_dir, args) if "error" not in cold else {}
    row = {"config": path + spec}
    if "error" in cold or "error" in cached:
      row["error"] = cold.get("error") or cached.get("error")
      print(f"{row['config']}: {row['error']}", flush=True)
    else:
      row.update({f"cold_{k}": cold[k] for k in PROGRAMS})
      row.update({f"cached_{k}": cached[k] for k in PROGRAMS})
      row["cold"] = sum(cold[k] for k in PROGRAMS)
      row["cached"] = sum(cached[k] for k in PROGRAMS)
      row["hits"] = sum(cached[f"{k}_hits"] for k in PROGRAMS)
      row["cached_lower"] = sum(cached[f"{k}_lower"] for k in PROGRAMS)
      ok = row["cold"] <= args.cold_target and row["cached"] <= args.cached_target
      row["verdict"] = "PASS" if ok else "FAIL"
      print(f"{row['config']}: cold {row['cold']:.1f} s (init {cold['init']:.1f}, train "
            f"{cold['train']:.1f}, eval {cold['eval']:.1f}); cached {row['cached']:.1f} s "
            f"({row['hits']} cache hits; trace + lower {row['cached_lower']:.1f} s); "
            f"first batches {cold['data_s']:.1f} s (untimed)",
            flush=True)
    rows.append(row)
  if not args.keep and not args.scratch:
    shutil.rmtree(scratch, ignore_errors=True)

  print()
  print(f"| config | cold init s | cold train s | cold eval s | cold total s | "
        f"cached init s | cached train s | cached eval s | cached total s | "
        f"of which trace + lower s | cache hits | "
        f"<= {args.cold_target:g} s / {args.cached_target:g} s |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    if "error" in r:
      print(f"| {r['config']} | {r['error']} ||||||||||| ERROR |")
      continue
    print(f"| {r['config']} | " + " | ".join(
        fmt(r[k]) for k in ("cold_init", "cold_train", "cold_eval", "cold", "cached_init",
                            "cached_train", "cached_eval", "cached", "cached_lower")) +
          f" | {r['hits']} | {r['verdict']} |")
  if any("error" in r for r in rows):
    sys.exit(1)


if __name__ == "__main__":
  main()
