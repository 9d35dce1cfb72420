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


def crop_and_resize(images, boxes, box_indices, size: tuple[int, int]):
  """Bilinear crops of `images` [N, H, W, C] resampled to `size` = (h, w).

  `boxes` [M, 4] are absolute pixel xyxy in continuous coordinates (pixel (i, j) has
  centre (j + 0.5, i + 0.5)); crop m is taken from image `box_indices[m]`. Output cell
  (i, j) samples the box at its cell centre, x = x1 + (j + 0.5) (x2 - x1) / w (the
  half-pixel convention of RoIAlign with aligned=True and one sample per cell), by
  bilinear interpolation of the image zero-padded beyond its border. Differentiable
  with respect to `images` and `boxes`. Returns [M, h, w, C].
  """
  images, boxes = jnp.asarray(images), jnp.asarray(boxes, jnp.float32)
  n, height, width, _ = images.shape
  h, w = size
  x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
  ys = y1[:, None] + (jnp.arange(h) + 0.5)[None] * ((y2 - y1) / h)[:, None] - 0.5  # [M, h]
  xs = x1[:, None] + (jnp.arange(w) + 0.5)[None] * ((x2 - x1) / w)[:, None] - 0.5  # [M, w]
  y0, x0 = jnp.floor(ys), jnp.floor(xs)
  wy, wx = ys - y0, xs - x0
  y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)
  b = jnp.clip(box_indices, 0, n - 1)[:, None, None]
  out = jnp.zeros((boxes.shape[0], h, w, images.shape[-1]), images.dtype)
  for dy, fy in ((0, 1 - wy), (1, wy)):
    for dx, fx in ((0, 1 - wx), (1, wx)):
      yi, xi = y0 + dy, x0 + dx
      inside = (((yi >= 0) & (yi < height))[:, :, None]
                & ((xi >= 0) & (xi < width))[:, None, :])
      v = images[b, jnp.clip(yi, 0, height - 1)[:, :, None],
                 jnp.clip(xi, 0, width - 1)[:, None, :]]
      weight = jnp.where(inside, fy[:, :, None] * fx[:, None, :], 0.0)
      out = out + v * weight[..., None].astype(images.dtype)
  return out
