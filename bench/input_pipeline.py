"""Input pipeline against train step: does the data keep up with the fastest step?

Not part of the tests. Issue 19, target (4): the training input pipeline delivers at least
3x the batches per second that the train step consumes, for the segmentation and the
detection pipelines. For each config (default: the segmentation main job
experiments/segmentation/unet_shapes.py and the detection main job
experiments/detection/faster_rcnn_shapes.py):

  pipeline    the task's own training pipeline, built by the trainer's code
              (`task.train_data(0)`, i.e. jaxseg.data.pipeline.train_batches with the
              config's dataset keys); each timed batch is what the trainer does per step on
              the host: `next(it)`, `task.validate_batch`, `pipeline.to_global` (blocked
              until the arrays are on the devices). Warm-up: --warmup_epochs whole epochs
              (default 1: with `dataset.cache` on, later epochs read the in-memory cache;
              the first epoch's rate, from building the pipeline on, is its own column),
              then --batches batches. Every epoch starts a new tf.data iterator (the
              trainer's order is a function of (seed, epoch)), so the steady rate
              includes that restart, amortized over the epoch's batches.
  train step  the trainer's jitted step (`loop.build_state` + `loop.jit_train_step`, the
              same function `train_and_evaluate` runs) on batches from that pipeline,
              --step_warmup steps (compilation), then --steps timed steps, each blocked
              until done; steps/s = 1 / median step time.
  ratio       pipeline batches/s / train steps/s; PASS if >= 3 (--target).

The pipeline's config switches are reported too: `config.dataset.cache` (tf.data
`.cache()` of the decoded examples before shuffling; default True) is measured on and off
(`--cache=both|on|off`). The prefetch depth (2 batches) and the parallel map (AUTOTUNE) are
fixed in jaxseg.data.pipeline, not config keys; `dataset.shuffle_buffer` changes the order,
not the throughput, and is left as configured. The train step is timed once per config
(the cache switch does not change it).

  ./launch.sh bench input_pipeline
  ./launch.sh bench input_pipeline --configs=experiments/segmentation/unet_shapes.py
  ./launch.sh bench input_pipeline --configs=experiments/segmentation/unet_shapes.py:tiny,experiments/detection/faster_rcnn_shapes.py:tiny --batches=20 --steps=3
  ./launch.sh bench input_pipeline --cache=on --data_dir=/tmp/tfds

`--data_dir` sets config.dataset.data_dir (default: the config's, i.e. TFDS's default
directory); a generated dataset missing there is built first (not timed).
Prints one table: config, cache, epoch-1 batches/s, batches/s, images/s, train steps/s,
ratio, PASS/FAIL.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # `python bench/input_pipeline.py` from anywhere
DEFAULT_CONFIGS = ("experiments/segmentation/unet_shapes.py,"
                   "experiments/detection/faster_rcnn_shapes.py")


def parse_args():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--configs", default=DEFAULT_CONFIGS,
                 help="comma-separated experiment configs PATH[:VARIANT]")
  p.add_argument("--cache", default="both", choices=["both", "on", "off"],
                 help="config.dataset.cache values to measure")
  p.add_argument("--data_dir", default=None, help="config.dataset.data_dir")
  p.add_argument("--warmup_epochs", type=int, default=1,
                 help="whole epochs read before timing (the first fills the cache)")
  p.add_argument("--batches", type=int, default=200, help="timed pipeline batches")
  p.add_argument("--step_warmup", type=int, default=2, help="untimed train steps")
  p.add_argument("--steps", type=int, default=5, help="timed train steps")
  p.add_argument("--target", type=float, default=3.0, help="ratio to PASS")
  return p.parse_args()


def load_config(spec: str):
  """The config of `PATH[:VARIANT]` (get_config(VARIANT)), as the trainer loads it."""
  path, arg = spec, None
  if ":" in os.path.basename(spec):
    path, arg = spec.rsplit(":", 1)
  if not os.path.isabs(path):
    path = os.path.join(REPO, path)
  module_spec = importlib.util.spec_from_file_location("bench_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg)


def make_task(config, mesh):
  from jaxseg import tasks  # pylint: disable=g-import-not-at-top
  from jaxseg import config_schema  # pylint: disable=g-import-not-at-top
  from jaxseg.train import loop  # pylint: disable=g-import-not-at-top
  config_schema.validate(config)
  loop.check_batch_sizes(config, mesh)
  # Tasks that keep files in the workdir (dense captioning's vocabulary) get a scratch one.
  return tasks.get_task(config, tempfile.mkdtemp(prefix="bench_input_pipeline_"))


def steps_per_epoch(task, config) -> int:
  """Training batches per epoch (the train split's size // batch size)."""
  from jaxseg.data import image_sources, sources  # pylint: disable=g-import-not-at-top
  if hasattr(task, "_load"):  # detection tasks read their splits through _load
    _, n = task._load("train")  # pylint: disable=protected-access
  elif hasattr(task, "REQUIRE"):  # image-level tasks (classification, localization, pose)
    _, n = image_sources.load_split(config.dataset, "train", require=task.REQUIRE)
  else:
    _, n = sources.load_split(config.dataset, "train")
  return max(1, n // config.batch_size)


def time_pipeline(task, config, mesh, args):
  """(epoch-1 batches/s, steady batches/s) of the trainer's per-step host work."""
  import jax  # pylint: disable=g-import-not-at-top
  from jaxseg.data import pipeline  # pylint: disable=g-import-not-at-top

  def one(it):
    batch = next(it)
    task.validate_batch(batch)
    jax.block_until_ready(pipeline.to_global(batch, mesh))

  epoch = steps_per_epoch(task, config)
  t0 = time.perf_counter()
  it = task.train_data(0)
  for _ in range(epoch):  # from the pipeline's start: what a run's first epoch sees
    one(it)
  first = epoch / (time.perf_counter() - t0)
  for _ in range(max(0, args.warmup_epochs - 1) * epoch):
    one(it)
  t0 = time.perf_counter()
  for _ in range(args.batches):
    one(it)
  return first, args.batches / (time.perf_counter() - t0)


def time_train_step(task, config, mesh, args) -> float:
  """Train steps/s: 1 / median time of the trainer's jitted step."""
  import jax  # pylint: disable=g-import-not-at-top
  from jaxseg.data import pipeline  # pylint: disable=g-import-not-at-top
  from jaxseg.train import loop  # pylint: disable=g-import-not-at-top

  tx, schedule, init, abstract = loop.build_state(config, task, mesh)
  state = init(jax.random.key(config.seed))
  step_fn = loop.jit_train_step(task, tx, schedule, abstract, mesh)
  it = task.train_data(0)
  batches = [pipeline.to_global(next(it), mesh) for _ in range(min(4, args.steps))]
  times = []
  for i in range(args.step_warmup + args.steps):
    t = time.perf_counter()
    state, metrics = step_fn(state, batches[i % len(batches)])
    jax.block_until_ready((state, metrics))
    if i >= args.step_warmup:
      times.append(time.perf_counter() - t)
  return 1.0 / statistics.median(times)


def main():
  args = parse_args()
  from jaxseg import cli  # pylint: disable=g-import-not-at-top
  cli.quiet_startup()
  cli.enable_compilation_cache()  # as the trainer: a second run skips the step's compile
  import jax  # pylint: disable=g-import-not-at-top
  from jaxseg.train import loop  # pylint: disable=g-import-not-at-top

  mesh = loop.make_mesh()
  caches = {"both": (True, False), "on": (True,), "off": (False,)}[args.cache]
  rows = []
  print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind} "
        f"({jax.default_backend()}); {os.cpu_count()} CPUs", flush=True)
  for spec in [s.strip() for s in args.configs.split(",") if s.strip()]:
    step_rate = None
    for cache in caches:
      config = load_config(spec)
      config.dataset.cache = cache
      if args.data_dir:
        config.dataset.data_dir = args.data_dir
      task = make_task(config, mesh)
      first, rate = time_pipeline(task, config, mesh, args)
      if step_rate is None:
        step_rate = time_train_step(task, config, mesh, args)
      ratio = rate / step_rate
      row = dict(config=spec, cache="on" if cache else "off", first=first, rate=rate,
                 images=rate * config.batch_size, steps=step_rate, ratio=ratio,
                 verdict="PASS" if ratio >= args.target else "FAIL")
      rows.append(row)
      print(f"{spec} cache={row['cache']}: pipeline {rate:.1f} batches/s "
            f"(epoch 1: {first:.1f}), train step {step_rate:.2f} steps/s, "
            f"ratio {ratio:.1f}", flush=True)

  print()
  print(f"| config | dataset.cache | epoch-1 batches/s | batches/s | images/s | "
        f"train steps/s | pipeline / step | >= {args.target:g} |")
  print("|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['config']} | {r['cache']} | {r['first']:.1f} | {r['rate']:.1f} | "
          f"{r['images']:.0f} | {r['steps']:.2f} | {r['ratio']:.1f} | {r['verdict']} |")


if __name__ == "__main__":
  main()
