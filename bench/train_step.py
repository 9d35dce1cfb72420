"""Benchmark one train step (forward, softmax CE, backward, Adam) of segmentation configs.

Not part of the tests. For each config: compile time, median step time, images/s and
achieved GFLOP/s (XLA cost analysis of the compiled step) of each jax variant, and, when
torch is installed and the model has one, the same network in PyTorch eager
(bench/torch_models.py, channels_last, `--threads`) on the same inputs, with the ratio
torch_time / jax_time (>= 1.0: jaxseg is at least as fast). The twin's parameter count is
asserted equal to jaxseg's. Variants and torch run in interleaved rounds on the same data,
so a noisy machine affects them alike; configs run one after another, then one summary
table (model, params, GFLOP/step, jax ms/step, GFLOP/s, torch ms/step, torch/jax).

  ./launch.sh bench                                  # U-Net shapes config, batch 8, 128x128
  ./launch.sh bench --width=32 --variants=jaxseg,xla_default
  ./launch.sh bench --config=experiments/segmentation/fcn_shapes.py            # FCN-8s
  ./launch.sh bench --config=experiments/segmentation/deeplabv3plus_shapes.py  # DeepLab v3+
  ./launch.sh bench --suite                          # = --models=unet,fcn8s,deeplabv3plus
  ./launch.sh bench --models=unet,fcn8s --model=norm=False --batch=4

Models: `--config=PATH[:VARIANT]` (any segmentation experiment config; VARIANT small or
tiny), or `--models=A,B,...` with each a config path or a name: unet, fcn8s (also fcn16s,
fcn32s), deeplabv3plus (the experiments/segmentation/*_shapes.py configs).
`--model=KEY=VALUE` (repeatable) overrides config.model.KEY (VALUE a Python literal or a
string) in every benchmarked config that has KEY; `--width=W` is `--model=base_width=W`
(U-Net only). A KEY that none of the configs has is an error.

PyTorch twins (`--torch=auto|on|off`; auto: if torch imports): U-Net / encoder-decoder,
FCN-32s/16s/8s and DeepLab v3+ (ResNet basic or bottleneck blocks, atrous, ASPP with image
pooling, depthwise-separable convs, decoder), each mirroring the flax model layer by layer.
Settings without a twin (e.g. upsample other than 'transpose', bfloat16, other models) show
"n/a" in the torch columns.

Variants (XLA:CPU compile options; identical elsewhere):
  jaxseg       as jaxseg configures XLA (jaxseg.platform: no YNNPACK convolutions)
  xla_default  XLA's default (YNNPACK also for convolutions)
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import platform
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO, "experiments", "segmentation")
# --models names -> (config file, config.model overrides).
MODELS = {
    "unet": ("unet_shapes.py", {}),
    "fcn8s": ("fcn_shapes.py", {"variant": "8s"}),
    "fcn16s": ("fcn_shapes.py", {"variant": "16s"}),
    "fcn32s": ("fcn_shapes.py", {"variant": "32s"}),
    "deeplabv3plus": ("deeplabv3plus_shapes.py", {}),
}
SUITE = "unet,fcn8s,deeplabv3plus"


def parse_args():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default=os.path.join(CONFIG_DIR, "unet_shapes.py"),
                 help="experiment config PATH[:VARIANT] (ignored with --models / --suite)")
  p.add_argument("--models", default=None,
                 help=f"comma-separated names ({', '.join(MODELS)}) or config paths")
  p.add_argument("--suite", action="store_true", help=f"= --models={SUITE}")
  p.add_argument("--model", action="append", default=[], metavar="KEY=VALUE",
                 help="override config.model.KEY where the config has it (repeatable)")
  p.add_argument("--width", type=int, default=None,
                 help="= --model=base_width=W (models with base_width: U-Net)")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--size", type=int, default=128)
  p.add_argument("--steps", type=int, default=3, help="timed steps per round")
  p.add_argument("--rounds", type=int, default=4, help="interleaved timing rounds")
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--variants", default="jaxseg", help="comma-separated, see above")
  p.add_argument("--torch", default="auto", choices=["auto", "on", "off"])
  p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
  return p.parse_args()


def parse_overrides(args) -> dict:
  overrides = {}
  for item in args.model:
    key, sep, value = item.partition("=")
    if not sep or not key:
      raise SystemExit(f"--model expects KEY=VALUE, got {item!r}")
    try:
      overrides[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      overrides[key] = value
  if args.width:
    overrides["base_width"] = args.width
  return overrides


def load_config(spec: str):
  """The config of `PATH[:VARIANT]` (get_config(VARIANT))."""
  path, arg = spec, None
  if ":" in os.path.basename(spec):
    path, arg = spec.rsplit(":", 1)
  module_spec = importlib.util.spec_from_file_location("bench_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg)


def load_configs(args):
  """[(config, applied overrides)] of the benchmarked configs."""
  if args.suite:
    args.models = SUITE
  specs = []
  for entry in (args.models.split(",") if args.models else [args.config]):
    entry = entry.strip()
    if entry in MODELS:
      filename, fixed = MODELS[entry]
      specs.append((os.path.join(CONFIG_DIR, filename), fixed))
    elif entry:
      specs.append((entry, {}))
  overrides, used = parse_overrides(args), set()
  configs = []
  for spec, fixed in specs:
    config = load_config(spec)
    applied = {}
    for key, value in {**fixed, **overrides}.items():
      if key in config.model:
        config.model[key] = value
        applied[key] = value
        used.add(key)
    configs.append((config, applied))
  unused = sorted(set(overrides) - used)
  if unused:
    names = ", ".join(c.model.name for c, _ in configs)
    raise SystemExit(f"config.model of {names} has no key {', '.join(unused)} "
                     f"(--model / --width override)")
  return configs


def model_label(config) -> str:
  name = config.model.name
  return f"fcn{config.model.variant}" if name == "fcn" else name


def build_jax_step(model, variant, images, labels):
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from jaxseg import platform as jaxseg_platform  # pylint: disable=g-import-not-at-top

  variables = model.init(jax.random.key(0), images[:1], train=False)
  tx = optax.adam(1e-3)
  state = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))

  # Dropout masks (models with dropout_rate > 0; otherwise unused and compiled away) from a
  # runtime key, not a constant XLA could fold; the same key each step costs the same.
  dropout_key = jax.random.key(1)

  def train_step(params, batch_stats, opt_state, images, labels, dropout_key):
    def loss_fn(params):
      logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, images,
                                    train=True, mutable=["batch_stats"],
                                    rngs={"dropout": dropout_key})
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
  lowered = jax.jit(train_step, donate_argnums=(0, 1, 2)).lower(
      *state, images, labels, dropout_key)
  compiled = lowered.compile(compiler_options=options) if options else lowered.compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  holder = {"state": state}

  def run(n):
    times = []
    for _ in range(n):
      t = time.perf_counter()
      *new_state, loss = compiled(*holder["state"], images, labels, dropout_key)
      loss.block_until_ready()
      times.append(time.perf_counter() - t)
      holder["state"] = tuple(new_state)
    return times

  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state[0]))
  return dict(run=run, compile_s=compile_s, flops=float(cost.get("flops", np.nan)),
              num_params=num_params, hlo=compiled.as_text())


def import_torch(args):
  """bench/torch_models, or None (--torch=off, or auto without torch)."""
  if args.torch == "off":
    return None
  from jaxseg.weights import torchvision as tvw  # pylint: disable=g-import-not-at-top
  tvw.hide_triton()  # the CUDA torch wheel's triton crashes next to TensorFlow
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    if args.torch == "on":
      raise
    print(f"torch not installed ({e}); no PyTorch reference (pip install torch==2.13.0)")
    return None
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import torch_models  # pylint: disable=g-import-not-at-top
  return torch_models


def make_torch_trainer(args, torch_models, model, jax_params, images_np, labels_np):
  """The twin's trainer, or None with the reason printed (no twin for these settings)."""
  if torch_models is None:
    return None
  try:
    twin = torch_models.build_twin(model)
  except NotImplementedError as e:
    print(f"[torch] n/a: {e}", flush=True)
    return None
  torch_params = torch_models.num_params(twin)
  assert torch_params == jax_params, (
      f"the PyTorch twin differs: {torch_params:,} parameters, jaxseg {jax_params:,}")
  print(f"[torch] twin {type(twin).__name__}, {torch_params:,} params (= jaxseg), "
        f"{args.threads} threads", flush=True)
  return torch_models.TorchTrainer(twin, images_np, labels_np, channels_last=True,
                                   threads=args.threads)


def bench_model(args, config, applied, torch_models, cpu):
  """Times one config; returns its summary rows."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jaxseg import tasks  # pylint: disable=g-import-not-at-top
  task = tasks.get_task(config)
  model = task.model
  rng = np.random.default_rng(0)
  images_np = rng.random((args.batch, args.size, args.size, 3), dtype=np.float32)
  labels_np = rng.integers(0, task.num_classes, (args.batch, args.size, args.size)).astype(
      np.int32)
  images, labels = jnp.asarray(images_np), jnp.asarray(labels_np)
  label = model_label(config)
  fields = " ".join(f"{k}={v}" for k, v in config.model.items() if k != "name")
  print(f"\n== {label}: {fields}\n   overrides {applied or 'none'}; batch={args.batch} "
        f"size={args.size}; jax {jax.__version__} on {jax.default_backend()} "
        f"({os.cpu_count()} cores, {cpu})", flush=True)

  runners = {}
  for variant in args.variants.split(","):
    r = build_jax_step(model, variant, images, labels)
    print(f"[jax {variant}] compile {r['compile_s']:.1f} s, {r['num_params']:,} params, "
          f"{r['flops'] / 1e9:.2f} GFLOP/step", flush=True)
    r["run"](args.warmup)
    runners[variant] = r
  jax_params = next(iter(runners.values()))["num_params"]
  torch_trainer = make_torch_trainer(args, torch_models, model, jax_params, images_np,
                                     labels_np)
  if torch_trainer is not None:
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
  print(f"{label}, median over all rounds:")
  rows = []
  for variant, r in runners.items():
    t = float(np.median(times[variant]))
    line = (f"jax[{variant}]: compile {r['compile_s']:.1f} s, step {t * 1e3:.0f} ms, "
            f"{args.batch / t:.1f} img/s, {r['flops'] / t / 1e9:.1f} GFLOP/s")
    if t_torch:
      line += f", torch/jax = {t_torch / t:.2f}"
    print(line)
    rows.append(dict(model=label, variant=variant, params=r["num_params"],
                     gflop=r["flops"] / 1e9, jax_ms=t * 1e3, gflops=r["flops"] / t / 1e9,
                     torch_ms=t_torch * 1e3 if t_torch else None,
                     ratio=t_torch / t if t_torch else None))
  if t_torch:
    print(f"torch eager: step {t_torch * 1e3:.0f} ms, {args.batch / t_torch:.1f} img/s",
          flush=True)
  return rows


def print_table(rows, show_variant: bool):
  header = ["model"] + (["variant"] if show_variant else []) + [
      "params", "GFLOP/step", "jax ms/step", "GFLOP/s", "torch ms/step", "torch/jax"]
  na = "n/a"
  lines = []
  for r in rows:
    lines.append([r["model"]] + ([r["variant"]] if show_variant else []) + [
        f"{r['params']:,}", f"{r['gflop']:.2f}", f"{r['jax_ms']:.1f}", f"{r['gflops']:.1f}",
        f"{r['torch_ms']:.1f}" if r["torch_ms"] is not None else na,
        f"{r['ratio']:.2f}" if r["ratio"] is not None else na])
  widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(header)]
  fmt = lambda cells: "| " + " | ".join(
      c.ljust(w) if i < (2 if show_variant else 1) else c.rjust(w)
      for i, (c, w) in enumerate(zip(cells, widths))) + " |"
  print(fmt(header))
  print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
  for l in lines:
    print(fmt(l))


def main():
  args = parse_args()
  configs = load_configs(args)
  cpu = platform.processor() or platform.machine()
  try:
    import cpuinfo  # pylint: disable=g-import-not-at-top
    cpu = cpuinfo.get_cpu_info().get("brand_raw", cpu)
  except ImportError:
    pass
  torch_models = import_torch(args)
  rows = []
  for config, applied in configs:
    rows += bench_model(args, config, applied, torch_models, cpu)
  torch_note = (f"PyTorch eager {args.threads} threads, channels_last" if torch_models
                else "no PyTorch")
  print(f"\nsummary: batch {args.batch}, {args.size}x{args.size}, median of "
        f"{args.rounds}x{args.steps} steps; {torch_note}")
  print_table(rows, show_variant=len(args.variants.split(",")) > 1)


if __name__ == "__main__":
  main()
