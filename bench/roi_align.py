"""Benchmark jaxseg.ops.roi (RoIAlign, RoIPool, FPN multi-level RoIAlign) against the NumPy
loop references. Not part of the tests.

  .venv/bin/python bench/roi_align.py                     # 1x50x68x256, 512 rois, 7x7, s=2
  .venv/bin/python bench/roi_align.py --rois=1000 --repeats=10 --no-multilevel

Default problem: an 800x1088 image at stride 16 (features 1x50x68x256), 512 proposal-like
boxes (sides 16-512 px, some partly outside), output 7x7, sampling_ratio 2, aligned.
Each jitted op is timed forward, and forward + backward (the output and the VJP of a
cotangent g w.r.t. the features, as a training step needs them): median and min of
--repeats runs after a warm-up (compile excluded; min is the steadier figure on a shared
machine). The NumPy references are the loop transcriptions of the torchvision CPU
kernels in tests/test_roi.py (the one copy, loaded by path: a reference belongs with the
tests that trust it; the bench only reads it). They are slow, so they run on the first
--ref-rois boxes and their time is scaled linearly to --rois (rois are independent; the
scale is approximate, since cost grows with roi size; no reference backward timing).
The jax result on those boxes is checked against the reference (max |diff| column).
ratio = reference ms / jax forward ms.
FPN rows: P2-P5 of the same image (200x272 ... 25x34), boxes of sides up to 800 px.
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
sys.path.insert(0, REPO)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxseg.ops import roi  # noqa: E402


def load_reference():
  """tests/test_roi.py as a module (its NumPy references; the tests are not run)."""
  spec = importlib.util.spec_from_file_location("roi_reference",
                                                os.path.join(REPO, "tests", "test_roi.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def proposal_boxes(rng, n, height, width, min_side=16, max_side=512):
  """Proposal-like image-space xyxy boxes: log-uniform sides, centres in the image."""
  side = np.exp(rng.uniform(np.log(min_side), np.log(max_side), n))
  ar = np.exp(rng.uniform(np.log(0.5), np.log(2.0), n))
  w, h = side * np.sqrt(ar), side / np.sqrt(ar)
  cx, cy = rng.uniform(0, width, n), rng.uniform(0, height, n)
  return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1).astype(np.float32)


def timeit(fn, *args, repeats):
  """(median, min) ms of fn(*args) over `repeats` runs after a warm-up (compile)."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return 1e3 * float(np.median(times)), 1e3 * float(np.min(times))


def forward_backward(op):
  """jit of (features, boxes, g) -> (op(features, boxes), g^T d op / d features): the
  forward output and the vector-Jacobian product, as a training step needs them."""
  def fn(features, boxes, g):
    out, vjp = jax.vjp(lambda f: op(f, boxes), features)
    return out, vjp(g)[0]
  return jax.jit(fn)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--height", type=int, default=50)
  p.add_argument("--width", type=int, default=68)
  p.add_argument("--channels", type=int, default=256)
  p.add_argument("--stride", type=int, default=16)
  p.add_argument("--rois", type=int, default=512)
  p.add_argument("--output", type=int, default=7)
  p.add_argument("--sampling", type=int, default=2)
  p.add_argument("--ref-rois", type=int, default=16)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--multilevel", action=argparse.BooleanOptionalAction, default=True)
  args = p.parse_args(argv)
  ref = load_reference()
  rng = np.random.default_rng(0)
  h, w, c, stride = args.height, args.width, args.channels, args.stride
  o, s = (args.output, args.output), args.sampling
  features = rng.normal(size=(1, h, w, c)).astype(np.float32)
  boxes = proposal_boxes(rng, args.rois, h * stride, w * stride)
  g = rng.normal(size=(1, args.rois, *o, c)).astype(np.float32)
  sub = boxes[:args.ref_rois]
  zeros = np.zeros(len(sub), np.int32)
  scale = args.ref_rois and args.rois / args.ref_rois
  rows, references = [], {}

  def add(name, op, reference, feats=features, bxs=boxes, grad_out=g):
    fwd = jax.jit(op)
    fwd_ms = timeit(fwd, feats, bxs, repeats=args.repeats)
    bwd_ms = timeit(forward_backward(op), feats, bxs, grad_out, repeats=args.repeats)
    if reference not in references:  # each reference runs once (rows share them)
      t = time.perf_counter()
      references[reference] = reference(), 1e3 * (time.perf_counter() - t) * scale
    expected, ref_ms = references[reference]
    got = np.asarray(fwd(feats, bxs[:, :args.ref_rois]))
    diff = float(np.abs(got.reshape(expected.shape) - expected).max())
    rows.append((name, fwd_ms, bwd_ms, ref_ms, diff))
    print(f"  {name}: fwd {fwd_ms[0]:.1f} ms, fwd+bwd {bwd_ms[0]:.1f} ms, reference "
          f"{ref_ms:.0f} ms (scaled), max |diff| {diff:.1e}", flush=True)

  per_image = boxes[None]  # [1, R, 4]: the per-image layout
  align_ref = lambda: ref.roi_align_reference(features, sub, zeros, o, 1 / stride, s, True)
  for impl in ("matmul", "gather"):
    add(f"roi_align {impl}",
        lambda f, b, impl=impl: roi.roi_align(f, b, o, 1 / stride, s, True, impl=impl),
        align_ref, bxs=per_image)
  add("roi_pool", lambda f, b: roi.roi_pool(f, b, o, 1 / stride),
      lambda: ref.roi_pool_reference(features, sub, zeros, o, 1 / stride)[0], bxs=per_image)
  if args.multilevel:
    strides = (4, 8, 16, 32)
    ih, iw = h * stride, w * stride
    maps = tuple(rng.normal(size=(1, -(-ih // t), -(-iw // t), c)).astype(np.float32)
                 for t in strides)
    fboxes = proposal_boxes(rng, args.rois, ih, iw, max_side=800)[None]
    fsub = fboxes[0, :args.ref_rois]
    levels = np.asarray(roi.fpn_level(fsub))

    def fpn_ref():
      return np.concatenate([ref.roi_align_reference(maps[lv - 2], fsub[k:k + 1], [0], o,
                                                     1 / strides[lv - 2], s, True)
                             for k, lv in enumerate(levels)])
    for impl in ("gather", "matmul"):
      add(f"multilevel P2-P5 {impl}",
          lambda f, b, impl=impl: roi.multilevel_roi_align(f, b, o, strides, s, impl=impl),
          fpn_ref, feats=maps, bxs=fboxes)

  dev = jax.devices()[0]
  print(f"\njax {jax.__version__}, {dev.platform} ({dev.device_kind}), {os.cpu_count()} cpus, "
        f"{platform.processor() or platform.machine()}; features 1x{h}x{w}x{c} "
        f"(stride {stride}), {args.rois} rois, {o[0]}x{o[1]}, sampling {s}, aligned; "
        f"{args.repeats} runs; reference on {args.ref_rois} rois, time scaled x{scale:g}\n")
  print("| op | jax fwd ms | jax fwd+bwd ms | NumPy reference fwd ms (scaled) | ratio "
        "reference / jax fwd | max abs diff |")
  print("|---|---|---|---|---|---|")
  for name, (fwd_ms, fwd_min), (bwd_ms, bwd_min), ref_ms, diff in rows:
    print(f"| {name} | {fwd_ms:.1f} (min {fwd_min:.1f}) | {bwd_ms:.1f} (min {bwd_min:.1f}) | "
          f"{ref_ms:.0f} | {ref_ms / fwd_ms:.0f}x | {diff:.1e} |")
  print("\njax ms: median (and min) of the runs; fwd+bwd returns the output and the VJP.")


if __name__ == "__main__":
  main()
