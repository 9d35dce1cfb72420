"""Where a train step's time goes: a jax.profiler trace of the jitted step, summed per op class.

Not part of the tests. Builds the same train step as bench/train_step.py (same models,
batch and XLA settings), traces a few steps with `jax.profiler.trace` (the trace can be
opened in xprof / Perfetto: `--trace_dir`), and sums the duration of every XLA thunk in
the trace per class of operation, read from the compiled HLO (opcode, fused ops and the
jax source op of each instruction):

  conv forward / conv input-grad / conv filter-grad   Eigen convolutions (XLA:CPU;
                                                       "YNNPACK, fused": in a YNNPACK fusion)
  dot (YNNPACK) / reduce (YNNPACK) / ynn other          YNNPACK library fusions
  layout (transpose / copy)                            transposes and copies XLA inserts
  reduce (XLA) / elementwise (XLA)                     XLA's own fused loops
  other: the opcode

  ./launch.sh bench profile_step                      # U-Net shapes config
  ./launch.sh bench profile_step --suite              # U-Net, FCN-8s, DeepLab v3+
  ./launch.sh bench profile_step --models=unet --model=dtype=bfloat16 --top=15

Thunks of one step may run at once (on two cores, a few do): each gets an equal part of
the wall time they share, so the classes add up to the step's busy time, shown beside the
step's wall time. `--top` lists the most expensive single instructions with their jax source.
"""
from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_step  # pylint: disable=g-import-not-at-top,wrong-import-position

_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%(\S+) = (\S+?(?:\{[^}]*\})?|\([^=]*?\)) (\S+?)\(")
_CALLS = re.compile(r"calls=%([\w.\-]+)")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_COMPUTATION = re.compile(r"^(?:ENTRY )?%([\w.\-]+) ")
_WINDOW = re.compile(r"window=\{size=([\dx]+)")


def parse_hlo(text: str) -> tuple[dict, dict]:
  """(instructions: name -> {opcode, shape, calls, op_name}, computations: name -> set of
  the opcodes in it) of an HLO module's text."""
  instructions, computations, current = {}, collections.defaultdict(set), None
  for line in text.splitlines():
    match = _COMPUTATION.match(line)
    if match and line.rstrip().endswith("{"):
      current = match.group(1)
      continue
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    name, shape, opcode = match.groups()
    calls = _CALLS.search(line)
    op_name = _OP_NAME.search(line)
    window = _WINDOW.search(line)
    instructions[name] = dict(opcode=opcode, shape=shape,
                              window=int(np.prod([int(w) for w in window.group(1).split("x")]))
                              if window else 0,
                              calls=calls.group(1) if calls else None,
                              op_name=op_name.group(1) if op_name else "")
    if current:
      computations[current].add(opcode)
  return instructions, computations


def op_class(name: str, instructions: dict, computations: dict) -> str:
  """The class of the thunk `name` (see the module docstring)."""
  base = name.split(":")[0]
  inst = instructions.get(base)
  if inst is None:
    return "other"
  opcode, fused = inst["opcode"], computations.get(inst["calls"], set())
  backward = "transpose(" in inst["op_name"]
  ynn = "ynn" in base or "ynn" in (inst["calls"] or "")
  if opcode == "convolution" or (opcode == "fusion" and "convolution" in fused):
    # A filter gradient is a convolution whose window is the activations' spatial extent
    # (a 3 x 3 layer's input gradient has a 3 x 3 window).
    kind = ("forward" if not backward else
            "filter-grad" if inst["window"] > 49 else "input-grad")
    return f"conv {kind}" + (" (YNNPACK, fused)" if ynn else "")
  if ynn:
    if "dot" in fused:
      return "dot (YNNPACK)"
    return "reduce (YNNPACK)" if "reduce" in fused else "ynn other"
  if opcode == "dot" or "dot" in fused:
    return "dot (Eigen)"
  if opcode in ("transpose", "copy") or (opcode == "fusion" and (
      "transpose" in base or "copy" in base) and "reduce" not in fused):
    return "layout (transpose / copy)"
  if opcode in ("reduce-window", "select-and-scatter"):
    return "pooling windows"
  if opcode == "reduce" or "reduce" in fused:
    return "reduce (XLA)"
  if opcode == "fusion":
    return "elementwise (XLA)"
  return opcode


def thunk_times(trace_dir: str) -> dict[str, float]:
  """Seconds of wall time per thunk in the trace. XLA:CPU's thunk runtime records a
  thunk's launch as an event named after its HLO instruction and its completion as
  "end: NAME" (the work runs asynchronously in the Eigen / YNNPACK pools): a thunk runs
  from the start of the first to the end of the second. Where several run at once, each
  gets an equal part of that time, so the thunks' times add up to the step's busy time."""
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
  path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))[-1]
  space = xplane_pb2.XSpace()
  with open(path, "rb") as f:
    space.ParseFromString(f.read())
  edges, started = [], {}
  for plane in space.planes:
    names = {k: v.name for k, v in plane.event_metadata.items()}
    events = sorted(((line.timestamp_ns * 1000 + e.offset_ps, e.duration_ps,
                      names.get(e.metadata_id, "")) for line in plane.lines
                     if line.name.startswith("tf_XLA") for e in line.events))
    for start, duration, name in events:
      if name.startswith("end: "):
        begin = started.pop(name[5:], None)
        if begin is not None:
          edges += [(begin, 1, name[5:]), (start + duration, -1, name[5:])]
      elif name and not name.startswith(("ThunkExecutor", "Threadpool", "Slinky")):
        started.setdefault(name, start)
  times, active, last = collections.Counter(), collections.Counter(), None
  for t, step, name in sorted(edges, key=lambda e: (e[0], -e[1])):
    if active and last is not None:
      share = (t - last) * 1e-12 / sum(active.values())
      for running, count in active.items():
        times[running] += share * count
    active[name] += step
    if active[name] <= 0:
      del active[name]
    last = t
  return times


def profile_model(args, config, applied):
  """Traces `args.steps` steps of one config; prints its table; returns {class: ms/step}."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jaxseg import tasks  # pylint: disable=g-import-not-at-top
  task = tasks.get_task(config)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.random((args.batch, args.size, args.size, 3), dtype=np.float32))
  labels = jnp.asarray(rng.integers(0, task.num_classes, (args.batch, args.size,
                                                           args.size)).astype(np.int32))
  runner = train_step.build_jax_step(task.model, args.variant, images, labels)
  runner["run"](args.warmup)
  trace_dir = args.trace_dir or tempfile.mkdtemp(prefix="jaxseg_profile_")
  label = train_step.model_label(config)
  trace_dir = os.path.join(trace_dir, label)
  with jax.profiler.trace(trace_dir):
    wall = runner["run"](args.steps)
  instructions, computations = parse_hlo(runner["hlo"])
  per_class = collections.Counter()
  per_inst = collections.Counter()
  for name, seconds in thunk_times(trace_dir).items():
    per_class[op_class(name, instructions, computations)] += seconds
    per_inst[name] += seconds
  total = sum(per_class.values())
  step_ms = float(np.median(wall)) * 1e3
  print(f"\n== {label} {applied or ''}: step {step_ms:.0f} ms (median of {args.steps}, "
        f"traced), thunks busy {total / args.steps * 1e3:.0f} ms/step; "
        f"{runner['flops'] / 1e9:.2f} GFLOP/step; trace {trace_dir}")
  print(f"| op class | ms/step | share |\n|---|---|---|")
  for cls, seconds in per_class.most_common():
    print(f"| {cls} | {seconds / args.steps * 1e3:.1f} | {seconds / total:.0%} |")
  if args.top:
    print(f"\ntop {args.top} instructions (ms/step, class, jax source):")
    for name, seconds in per_inst.most_common(args.top):
      inst = instructions.get(name.split(":")[0], {})
      print(f"  {seconds / args.steps * 1e3:7.1f}  {name:32s} "
            f"{op_class(name, instructions, computations):26s} "
            f"{inst.get('shape', '')[:28]:28s} {inst.get('op_name', '')[-70:]}")
  return {cls: s / args.steps * 1e3 for cls, s in per_class.items()}, step_ms


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default=os.path.join(train_step.CONFIG_DIR, "unet_shapes.py"))
  p.add_argument("--models", default=None)
  p.add_argument("--suite", action="store_true")
  p.add_argument("--model", action="append", default=[], metavar="KEY=VALUE")
  p.add_argument("--width", type=int, default=None)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--size", type=int, default=128)
  p.add_argument("--steps", type=int, default=5, help="traced steps")
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--variant", default="jaxseg", help="see bench/train_step.py")
  p.add_argument("--trace_dir", default=None, help="keep the traces here (xprof/Perfetto)")
  p.add_argument("--top", type=int, default=10, help="list the N most expensive ops")
  args = p.parse_args()
  for config, applied in train_step.load_configs(args):
    profile_model(args, config, applied)


if __name__ == "__main__":
  main()
