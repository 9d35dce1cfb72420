"""Down- and upsampling of NHWC feature maps.

Each op keeps its implementation choice behind one function so a backend can pick the
fastest lowering. On XLA:CPU the generic lowerings are slow to differentiate (see
DESIGN.md): `lax.reduce_window` max pooling backpropagates through select-and-scatter,
so non-overlapping windows use a reshape + max instead (same values, same gradient up to
tie splitting).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def max_pool(x: jax.Array, window: int = 2, stride: int | None = None) -> jax.Array:
  """Max pooling with a square `window` and `stride` (default: window), VALID padding."""
  stride = window if stride is None else stride
  n, h, w, c = x.shape
  if stride == window and h % window == 0 and w % window == 0:
    x = x.reshape(n, h // window, window, w // window, window, c)
    return x.max(axis=(2, 4))
  return jax.lax.reduce_window(
      x, -jnp.inf, jax.lax.max, (1, window, window, 1), (1, stride, stride, 1), "VALID")


def space_to_depth(x: jax.Array, block: int) -> jax.Array:
  """[N, H, W, C] -> [N, H/b, W/b, b*b*C]; inverse of `depth_to_space`."""
  n, h, w, c = x.shape
  x = x.reshape(n, h // block, block, w // block, block, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, h // block, w // block, block * block * c)


def depth_to_space(x: jax.Array, block: int) -> jax.Array:
  """[N, H, W, b*b*C] -> [N, H*b, W*b, C] (sub-pixel shuffle, Shi et al. CVPR 2016).

  Channel index (i * b + j) * C + c lands at output pixel (H*b + i, W*b + j), channel c.
  """
  n, h, w, c = x.shape
  out_c = c // (block * block)
  x = x.reshape(n, h, w, block, block, out_c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, h * block, w * block, out_c)


def resize(x: jax.Array, size: tuple[int, int], method: str = "bilinear") -> jax.Array:
  """Resize the spatial dims of an NHWC array (half-pixel centres, like tf.image.resize)."""
  n, _, _, c = x.shape
  return jax.image.resize(x, (n, size[0], size[1], c), method=method)
