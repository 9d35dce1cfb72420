"""Benchmark one train step (forward, softmax CE, backward, Adam) of a segmentation config.

Not part of the tests. Prints compile time, median step time, images/s and achieved
GFLOP/s (XLA cost analysis) of each jax variant, and, when torch is installed, the same
U-Net in PyTorch eager on the same inputs with the ratio torch_time / jax_time (>= 1.0:
jaxseg is at least as fast). Variants and torch run in interleaved rounds on the same
data, so a noisy machine affects them alike.

  ./launch.sh bench                                  # U-Net shapes config, batch 8, 128x128
  ./launch.sh bench --width=32 --variants=jaxseg,xla_default

Variants (XLA:CPU compile options; identical elsewhere):
  jaxseg       as jaxseg configures XLA (jaxseg.platform: no YNNPACK convolutions)
  xla_default  XLA's default (YNNPACK also for convolutions)
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default=os.path.join(REPO, "experiments", "segmentation",
                                                  "unet_shapes.py"))
  p.add_argument("--width", type=int, default=None, help="override config.model.base_width")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--size", type=int, default=128)
  p.add_argument("--steps", type=int, default=3, help="timed steps per round")
  p.add_argument("--rounds", type=int, default=4, help="interleaved timing rounds")
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--variants", default="jaxseg", help="comma-separated, see above")
  p.add_argument("--torch", default="auto", choices=["auto", "on", "off"])
  p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
  return p.parse_args()


def load_task(args):
  """The segmentation task (and so the model) of the config file."""
  spec = importlib.util.spec_from_file_location("bench_config", args.config)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  if args.width:
    config.model.base_width = args.width
  from jaxseg import tasks  # pylint: disable=g-import-not-at-top
  return config, tasks.get_task(config)


def build_jax_step(model, variant, images, labels):
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from jaxseg import platform as jaxseg_platform  # pylint: disable=g-import-not-at-top

  variables = model.init(jax.random.key(0), images[:1], train=False)
  tx = optax.adam(1e-3)
  state = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))

  def train_step(params, batch_stats, opt_state, images, labels):
    def loss_fn(params):
      logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, images,
                                    train=True, mutable=["batch_stats"])
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, updates["batch_stats"]
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss

  options = {"jaxseg": None, "xla_default": jaxseg_platform.cpu_compiler_options(
      jaxseg_platform.XLA_DEFAULT_YNN_FUSION_TYPES)}[variant]
  if jax.default_backend() != "cpu":
    options = None
  t0 = time.perf_counter()
  lowered = jax.jit(train_step, donate_argnums=(0, 1, 2)).lower(*state, images, labels)
  compiled = lowered.compile(compiler_options=options) if options else lowered.compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  holder = {"state": state}

  def run(n):
    times = []
    for _ in range(n):
      t = time.perf_counter()
      *new_state, loss = compiled(*holder["state"], images, labels)
      loss.block_until_ready()
      times.append(time.perf_counter() - t)
      holder["state"] = tuple(new_state)
    return times

  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state[0]))
  return dict(run=run, compile_s=compile_s, flops=float(cost.get("flops", np.nan)),
              num_params=num_params)


def make_torch_trainer(args, config, num_classes, images_np, labels_np):
  if args.torch == "off":
    return None
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    if args.torch == "on":
      raise
    print(f"torch not installed ({e}); no PyTorch reference (pip install torch==2.13.0)")
    return None
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  from torch_unet import TorchTrainer  # pylint: disable=g-import-not-at-top
  return TorchTrainer(images_np, labels_np, num_classes, config.model.base_width,
                      config.model.depth, channels_last=True, threads=args.threads)


def main():
  args = parse_args()
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  config, task = load_task(args)
  model = task.model
  rng = np.random.default_rng(0)
  images_np = rng.random((args.batch, args.size, args.size, 3), dtype=np.float32)
  labels_np = rng.integers(0, task.num_classes, (args.batch, args.size, args.size)).astype(
      np.int32)
  images, labels = jnp.asarray(images_np), jnp.asarray(labels_np)
  cpu = platform.processor() or platform.machine()
  try:
    import cpuinfo  # pylint: disable=g-import-not-at-top
    cpu = cpuinfo.get_cpu_info().get("brand_raw", cpu)
  except ImportError:
    pass
  print(f"{config.model.name} width={config.model.base_width} depth={config.model.depth} "
        f"batch={args.batch} size={args.size}; jax {jax.__version__} on "
        f"{jax.default_backend()} ({os.cpu_count()} cores, {cpu})", flush=True)

  runners = {}
  for variant in args.variants.split(","):
    r = build_jax_step(model, variant, images, labels)
    print(f"[jax {variant}] compile {r['compile_s']:.1f} s, {r['num_params']:,} params, "
          f"{r['flops'] / 1e9:.1f} GFLOP/step", flush=True)
    r["run"](args.warmup)
    runners[variant] = r
  torch_trainer = make_torch_trainer(args, config, task.num_classes, images_np, labels_np)
  if torch_trainer is not None:
    from torch_unet import num_params  # pylint: disable=g-import-not-at-top
    jax_params = next(iter(runners.values()))["num_params"]
    assert num_params(torch_trainer.model) == jax_params, "the PyTorch twin differs"
    for _ in range(args.warmup):
      torch_trainer.timed_step()

  times = {k: [] for k in runners}
  torch_times = []
  for rnd in range(args.rounds):
    for variant, r in runners.items():
      times[variant] += r["run"](args.steps)
    if torch_trainer is not None:
      torch_times += [torch_trainer.timed_step() for _ in range(args.steps)]
    line = " ".join(f"{k}={np.median(v[-args.steps:]) * 1e3:.0f}" for k, v in times.items())
    if torch_times:
      line += f" torch={np.median(torch_times[-args.steps:]) * 1e3:.0f}"
    print(f"round {rnd + 1}/{args.rounds}: median step ms: {line}", flush=True)

  t_torch = float(np.median(torch_times)) if torch_times else None
  print("\nmedian over all rounds:")
  for variant, r in runners.items():
    t = float(np.median(times[variant]))
    line = (f"jax[{variant}]: compile {r['compile_s']:.1f} s, step {t * 1e3:.0f} ms, "
            f"{args.batch / t:.1f} img/s, {r['flops'] / t / 1e9:.1f} GFLOP/s")
    if t_torch:
      line += f", torch/jax = {t_torch / t:.2f}"
    print(line)
  if t_torch:
    print(f"torch eager: step {t_torch * 1e3:.0f} ms, {args.batch / t_torch:.1f} img/s")


if __name__ == "__main__":
  main()
