"""One 3 x 3 convolution's kernels on XLA:CPU against PyTorch, and the lecture's
"convolution as matrix multiplication" formulations against lax.conv.

Not part of the tests. Two tables (batch 8, 'SAME' 3 x 3, C -> C channels, best of
--rounds interleaved rounds, ms):
  kernels   forward / forward + input gradient / forward + filter gradient, for Eigen and
            YNNPACK convolutions (XLA:CPU compile options, jaxseg.platform) in float32 and
            bfloat16 (float32 accumulation), and PyTorch eager (oneDNN; bf16 by autocast)
  as matmul forward and forward + both gradients of lax.conv against im2col (concatenated
            patches, one matmul), per-tap (nine shifted matmuls summed) and row im2col
            (three matmuls over a 3-tap column im2col, K = 3C); each checked equal to
            lax.conv (relative 1e-4) before timing

  ./launch.sh bench conv_kernels                       # C, size = 12,128 24,64 48,32
  ./launch.sh bench conv_kernels --shapes=12,128 --tables=kernels
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from jaxseg import platform as jaxseg_platform  # noqa: E402  (XLA:CPU flags before jax)
from jaxseg.weights import torchvision as tvw  # noqa: E402

tvw.hide_triton()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

BATCH = 8
FUSIONS = {"eigen": jaxseg_platform.JAXSEG_YNN_FUSION_TYPES,
           "ynnpack": jaxseg_platform.XLA_DEFAULT_YNN_FUSION_TYPES}


def lax_conv(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      preferred_element_type=jnp.float32)


def _shifted(x, rows, cols):
  """The padded input's 3 x 3 taps (rows x cols offsets) as [B, H, W, C] views."""
  h, w = x.shape[1:3]
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return [xp[:, i:i + h, j:j + w, :] for i in rows for j in cols]


def im2col(x, w):
  patches = jnp.concatenate(_shifted(x, range(3), range(3)), -1)
  return jnp.einsum("bhwk,kd->bhwd", patches, w.reshape(-1, w.shape[-1]))


def per_tap(x, w):
  taps = _shifted(x, range(3), range(3))
  return sum(jnp.einsum("bhwc,cd->bhwd", t, w[k // 3, k % 3]) for k, t in enumerate(taps))


def row_im2col(x, w):
  h = x.shape[1]
  xp = jnp.pad(x, ((0, 0), (1, 1), (0, 0), (0, 0)))
  cols = jnp.concatenate(_shifted(xp, [1], range(3)), -1)  # [B, H + 2, W, 3C]
  return sum(jnp.einsum("bhwk,kd->bhwd", cols[:, i:i + h], w[i].reshape(-1, w.shape[-1]))
             for i in range(3))


def _squared(f, dtype):
  return lambda x, w: jnp.sum(f(x.astype(dtype), w.astype(dtype)).astype(jnp.float32) ** 2)


def kernel_candidates(x, w) -> dict:
  out = {}
  for dtype in (jnp.float32, jnp.bfloat16):
    for fusion, types in FUSIONS.items():
      options = jaxseg_platform.cpu_compiler_options(types)
      for mode, f in (("fwd", lambda x, w, d=dtype: lax_conv(x.astype(d), w.astype(d))),
                      ("+dx", jax.grad(_squared(lax_conv, dtype), argnums=0)),
                      ("+dw", jax.grad(_squared(lax_conv, dtype), argnums=1))):
        compiled = jax.jit(f).lower(x, w).compile(compiler_options=options)
        out[(jnp.dtype(dtype).name, fusion, mode)] = lambda c=compiled: c(x, w)
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return out
  torch.set_num_threads(os.cpu_count())
  tx = torch.from_numpy(np.array(x)).permute(0, 3, 1, 2).contiguous(
      memory_format=torch.channels_last).requires_grad_(True)
  tw = torch.from_numpy(np.array(w)).permute(3, 2, 0, 1).contiguous().requires_grad_(True)

  def torch_run(dtype, mode):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
      y = torch.nn.functional.conv2d(tx, tw, padding=1)
    if mode == "fwd":
      return y
    return torch.autograd.grad((y.float() ** 2).sum(), [tx if mode == "+dx" else tw])
  for dtype in ("float32", "bfloat16"):
    for mode in ("fwd", "+dx", "+dw"):
      out[(dtype, "torch", mode)] = lambda d=dtype, m=mode: torch_run(d, m)
  return out


def matmul_candidates(x, w) -> dict:
  out, reference = {}, {}
  for name, f in (("lax.conv", lax_conv), ("im2col", im2col), ("per-tap", per_tap),
                  ("row im2col", row_im2col)):
    for mode, g in (("fwd", jax.jit(f)),
                    ("fwd+bwd", jax.jit(jax.grad(_squared(f, jnp.float32), argnums=(0, 1))))):
      result = jax.tree.leaves(g(x, w))
      reference.setdefault(mode, result)
      for a, b in zip(result, reference[mode]):
        error = float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-12))
        assert error < 1e-4, f"{name} {mode} differs from lax.conv: {error:.2e}"
      out[(name, mode)] = lambda g=g: g(x, w)
  return out


def best_ms(candidates: dict, rounds: int) -> dict:
  times = {k: [] for k in candidates}
  for _ in range(rounds + 1):  # the first round warms up
    for key, run in candidates.items():
      start = time.perf_counter()
      jax.block_until_ready(run())
      times[key].append(time.perf_counter() - start)
  return {k: 1e3 * min(v[1:]) for k, v in times.items()}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--shapes", default="12,128 24,64 48,32",
                 help="space-separated CHANNELS,SIZE pairs")
  p.add_argument("--tables", default="kernels,as_matmul")
  p.add_argument("--rounds", type=int, default=5)
  args = p.parse_args(argv)
  rng = np.random.default_rng(0)
  results = {}
  for shape in args.shapes.split():
    channels, size = (int(v) for v in shape.split(","))
    x = jnp.asarray(rng.standard_normal((BATCH, size, size, channels), np.float32))
    w = jnp.asarray(0.1 * rng.standard_normal((3, 3, channels, channels), np.float32))
    for table in args.tables.split(","):
      make = {"kernels": kernel_candidates, "as_matmul": matmul_candidates}[table]
      ms = best_ms(make(x, w), args.rounds)
      results[(table, shape)] = ms
      print(f"\n{table}: {channels} channels, {size} x {size}, batch {BATCH} (ms, best of "
            f"{args.rounds})")
      for key, value in ms.items():
        print(f"  {' '.join(key):28s} {value:8.1f}")
  return results


if __name__ == "__main__":
  main()
