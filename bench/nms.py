"""Benchmark jitted `jaxseg.ops.nms.nms` against greedy NMS in NumPy.

Not part of the tests. Random boxes in a 1000 x 1000 image (sizes 16..256 px), uniform
scores; for each (N, max_outputs): compile time, then median wall time over `--repeats`
calls of each implementation, in interleaved rounds so a noisy machine affects both
alike, and the ratio numpy / jax (> 1: jax is faster). Every run checks that both keep the
same boxes.

  .venv/bin/python bench/nms.py                       # N = 1000, 5000; max_outputs 100, 300
  .venv/bin/python bench/nms.py --n=200,1000,5000 --max_outputs=100 --iou=0.7
  .venv/bin/python bench/nms.py --batch=8             # also vmap over 8 images per call

The NumPy baseline is the usual vectorised greedy loop (take the best remaining box,
drop the rest that overlap it); the test suite has its own plainly written reference
(tests/test_nms.py), so this script and the tests depend on nothing of each other.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def nms_numpy(boxes, scores, iou_threshold, max_outputs):
  """Greedy NMS in NumPy (float32, the same IoU formula and tie rule as jaxseg)."""
  boxes = boxes.astype(np.float32)
  area = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
  order = np.argsort(-scores, kind="stable")
  keep = []
  while order.size and len(keep) < max_outputs:
    i, rest = order[0], order[1:]
    keep.append(i)
    lo = np.maximum(boxes[rest, :2], boxes[i, :2])
    hi = np.minimum(boxes[rest, 2:], boxes[i, 2:])
    inter = np.prod(np.maximum(hi - lo, 0), axis=1)
    union = area[rest] + area[i] - inter
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0)
    order = rest[iou <= iou_threshold]
  return np.asarray(keep, np.int64)


def random_inputs(rng, n, image=1000.0):
  wh = rng.uniform(16, 256, (n, 2))
  xy = rng.uniform(0, 1, (n, 2)) * (image - wh)
  boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
  return boxes, rng.random(n).astype(np.float32)


# Timing rounds per implementation. Calls run in blocks, not alternating one by one: the
# first jax call after a NumPy call is several times slower here (XLA:CPU thread wake-up),
# which would bias an alternating scheme against whichever runs second.
ROUNDS = 3


def timings(fn, repeats):
  """Wall times in ms of `repeats` calls of fn."""
  times = []
  for _ in range(max(repeats, 1)):
    t0 = time.perf_counter()
    fn()
    times.append(1e3 * (time.perf_counter() - t0))
  return times


def median_ms(fn, repeats):
  return float(np.median(timings(fn, repeats)))


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--n", default="1000,5000", help="comma-separated box counts")
  p.add_argument("--max_outputs", default="100,300", help="comma-separated")
  p.add_argument("--iou", type=float, default=0.5)
  p.add_argument("--repeats", type=int, default=30)
  p.add_argument("--batch", type=int, default=0, help="also time vmap over B images")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args()

  import jax  # pylint: disable=g-import-not-at-top
  from jaxseg.ops import nms as nms_lib  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(args.seed)
  rows = []
  for n in [int(v) for v in args.n.split(",")]:
    for k in [int(v) for v in args.max_outputs.split(",")]:
      boxes, scores = random_inputs(rng, n)
      fn = jax.jit(lambda b, s, k=k: nms_lib.nms(b, s, args.iou, k))
      bj, sj = jax.device_put(boxes), jax.device_put(scores)
      t0 = time.perf_counter()
      idx, count = jax.block_until_ready(fn(bj, sj))
      compile_s = time.perf_counter() - t0
      expected = nms_numpy(boxes, scores, args.iou, k)
      got = np.asarray(idx)[:int(count)]
      if not np.array_equal(got, expected):
        raise SystemExit(f"N={n}, max_outputs={k}: jax and numpy differ")
      for _ in range(3):
        jax.block_until_ready(fn(bj, sj))
      np_t, jax_t = [], []
      for _ in range(ROUNDS):  # interleaved rounds of repeats / ROUNDS calls each
        np_t += timings(lambda: nms_numpy(boxes, scores, args.iou, k), args.repeats // ROUNDS)
        jax_t += timings(lambda: jax.block_until_ready(fn(bj, sj)), args.repeats // ROUNDS)
      row = [n, k, int(count), np.median(np_t), np.median(jax_t), compile_s, ""]
      if args.batch:
        bb, sb = zip(*(random_inputs(rng, n) for _ in range(args.batch)))
        bb, sb = jax.device_put(np.stack(bb)), jax.device_put(np.stack(sb))
        vfn = jax.jit(jax.vmap(lambda b, s, k=k: nms_lib.nms(b, s, args.iou, k)))
        jax.block_until_ready(vfn(bb, sb))
        row[-1] = f"{median_ms(lambda: jax.block_until_ready(vfn(bb, sb)), args.repeats):.2f}"
      rows.append(row)
      print(f"N={n} max_outputs={k}: done", flush=True)

  print(f"\nGreedy NMS, iou {args.iou}, jax {jax.__version__} on {jax.devices()[0].platform}, "
        f"median of {args.repeats}\n")
  batch_col = f" | jax vmap x{args.batch} ms" if args.batch else ""
  print(f"| N | max_outputs | kept | numpy ms | jax ms | numpy/jax | jax compile s{batch_col} |")
  print("|---|---|---|---|---|---|---|" + ("---|" if args.batch else ""))
  for n, k, kept, np_ms, jax_ms, comp, vm in rows:
    extra = f" | {vm}" if args.batch else ""
    print(f"| {n} | {k} | {kept} | {np_ms:.2f} | {jax_ms:.2f} | {np_ms / jax_ms:.1f} | "
          f"{comp:.2f}{extra} |")


if __name__ == "__main__":
  main()
