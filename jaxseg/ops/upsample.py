"""Upsampling ("unpooling") ops, max pooling with switches, and convolution / its adjoint.

All ops take and return NHWC arrays; kernels are HWIO. They follow the lecture's list of
upsampling methods (Long et al. CVPR 2015; Noh et al. ICCV 2015; Zeiler & Fergus 2014):
nearest neighbour, bed of nails, max unpooling, bilinear interpolation (not learnable), and
the learnable ones: transpose convolution, resize-convolution (Odena et al., Distill 2016)
and sub-pixel convolution (Shi et al. CVPR 2016). Where XLA:CPU's generic lowering is slow,
an op picks a faster exact formulation for the common case (non-overlapping windows) and
keeps the general one for the rest; both live in the same function.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.ops.resample import depth_to_space, max_pool

_DIMS = ("NHWC", "HWIO", "NHWC")
Pair = int | Sequence[int]


def _pair(value: Pair, name: str) -> tuple[int, int]:
  """An int or a (height, width) pair of ints -> a pair."""
  pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
  if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) for v in pair):
    raise ValueError(f"{name}={value!r}; expected an int or a (height, width) pair of ints")
  return int(pair[0]), int(pair[1])


def _check_geometry(kernel: int, stride: int, padding: int, dilation: int) -> None:
  if kernel < 1 or stride < 1 or dilation < 1 or padding < 0:
    raise ValueError(f"kernel={kernel}, stride={stride}, dilation={dilation} must be >= 1 "
                     f"and padding={padding} >= 0")


def output_size(n: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
  """Output length of a convolution or pooling: floor((N - d(F-1) - 1 + 2P) / S) + 1.

  With dilation 1 this is the lecture's (N - F + 2P)/S + 1, e.g. (4 - 3 + 2)/1 + 1 = 4.
  """
  _check_geometry(kernel, stride, padding, dilation)
  span = dilation * (kernel - 1) + 1
  if n + 2 * padding < span:
    raise ValueError(f"kernel {kernel} (dilation {dilation}, spanning {span} pixels) does not "
                     f"fit an input of size {n} with padding {padding}")
  return (n + 2 * padding - span) // stride + 1


def transpose_output_size(n: int, kernel: int, stride: int, padding: int,
                          output_padding: int = 0, dilation: int = 1) -> int:
  """Output length of a transpose convolution: (N-1)S - 2P + d(F-1) + output_padding + 1.

  `output_padding` in [0, S) picks one of the S input sizes that a stride-S convolution maps
  to N (it adds rows at the bottom/right only), e.g. 3x3, stride 2, pad 1: 2 -> 3 + 1 = 4.
  """
  _check_geometry(kernel, stride, padding, dilation)
  if not 0 <= output_padding < stride:
    raise ValueError(f"output_padding={output_padding}; expected 0 <= output_padding < "
                     f"stride={stride}")
  size = (n - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1
  if n < 1 or size < 1:
    raise ValueError(f"transpose convolution of size {n} with kernel {kernel}, stride {stride}, "
                     f"padding {padding} gives output size {size}; expected >= 1 (less padding)")
  return size


def nearest_upsample(x: jax.Array, factor: int = 2) -> jax.Array:
  """Nearest neighbour: copy each pixel into a factor x factor block."""
  n, h, w, c = x.shape
  x = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, factor, w, factor, c))
  return x.reshape(n, h * factor, w * factor, c)


def bed_of_nails_upsample(x: jax.Array, factor: int = 2) -> jax.Array:
  """Bed of nails: each pixel at the top-left of its factor x factor block, zeros elsewhere."""
  n, h, w, c = x.shape
  pad = (0, factor - 1)
  x = jnp.pad(x[:, :, None, :, None, :], ((0, 0), (0, 0), pad, (0, 0), pad, (0, 0)))
  return x.reshape(n, h * factor, w * factor, c)


def _blocks_max_argmax(x: jax.Array, window: int, ho: int, wo: int):
  """Non-overlapping windows: reshape + max, then the first position equal to the max."""
  n, _, _, c = x.shape
  blocks = x[:, :ho * window, :wo * window].reshape(n, ho, window, wo, window, c)
  pooled = blocks.max(axis=(2, 4))
  position = jnp.arange(window * window).reshape(window, 1, window, 1)  # i * window + j
  first = jnp.where(blocks == pooled[:, :, None, :, None], position, window * window)
  return pooled, first.min(axis=(2, 4))


def _slices_max_argmax(x: jax.Array, window: int, stride: int, ho: int, wo: int):
  """Any stride: `max_pool` for the values (its gradient is cheaper than that of the
  slices); the argmax over one strided slice per window offset (i, j), in row-major order."""
  last_h, last_w = stride * (ho - 1) + 1, stride * (wo - 1) + 1
  windows = jnp.stack([x[:, i:i + last_h:stride, j:j + last_w:stride]
                       for i in range(window) for j in range(window)])
  return max_pool(x, window, stride), jnp.argmax(windows, axis=0)


def max_pool_with_argmax(x: jax.Array, window: int = 2,
                         stride: int | None = None) -> tuple[jax.Array, jax.Array]:
  """VALID max pooling that also returns the switches (Zeiler & Fergus 2014; SegNet).

  Returns `(pooled, switches)`: `pooled` equals `max_pool(x, window, stride)`; `switches`
  [N, h, w, C] int32 holds the flat input position `row * W + col` of each maximum (the
  first in row-major window order on ties), for `max_unpool`. Non-overlapping windows
  use a reshape (no select-and-scatter in the gradient).
  """
  stride = window if stride is None else stride
  h, w = x.shape[1:3]
  ho, wo = output_size(h, window, stride, 0), output_size(w, window, stride, 0)
  if stride == window:
    pooled, arg = _blocks_max_argmax(x, window, ho, wo)
  else:
    pooled, arg = _slices_max_argmax(x, window, stride, ho, wo)
  rows = jnp.arange(ho)[:, None, None] * stride + arg // window
  cols = jnp.arange(wo)[:, None] * stride + arg % window
  return pooled, (rows * w + cols).astype(jnp.int32)


def max_unpool(x: jax.Array, switches: jax.Array, output_size: tuple[int, int],
               window: int | None = None) -> jax.Array:
  """Max unpooling: each value back at its switch position, zeros elsewhere.

  `switches` come from `max_pool_with_argmax` on a map of spatial size `output_size`.
  Pass that pooling's `window` when its stride was the window (non-overlapping) to use a
  one-hot compare inside each block (much faster than a scatter on CPU); otherwise values
  are scatter-added, so positions that were the max of several windows receive the sum
  (the adjoint of reading the pooled values at the switches).
  """
  n, h, w, c = x.shape
  out_h, out_w = output_size
  if switches.shape != x.shape:
    raise ValueError(f"switches shape {switches.shape} != values shape {x.shape}")
  if window is not None:
    if (out_h // window, out_w // window) != (h, w):
      raise ValueError(f"window={window} pooling of {output_size} does not give ({h}, {w})")
    i = switches // out_w - jnp.arange(h)[:, None, None] * window
    j = switches % out_w - jnp.arange(w)[:, None] * window
    hit = (i * window + j)[:, :, None, :, None] == jnp.arange(window * window).reshape(
        window, 1, window, 1)
    y = jnp.where(hit, x[:, :, None, :, None], 0).reshape(n, h * window, w * window, c)
    return jnp.pad(y, ((0, 0), (0, out_h - h * window), (0, out_w - w * window), (0, 0)))
  flat = jnp.zeros((n, out_h * out_w, c), x.dtype)
  flat = flat.at[jnp.arange(n)[:, None, None, None], switches, jnp.arange(c)].add(x)
  return flat.reshape(n, out_h, out_w, c)


def conv(x: jax.Array, kernel: jax.Array, stride: Pair = 1, padding: Pair | str = 0,
         dilation: Pair = 1) -> jax.Array:
  """Cross-correlation (deep-learning "convolution"), kernel HWIO, zero `padding` on both
  sides (int, (ph, pw), or 'SAME'/'VALID'), `dilation` > 1 = atrous (Chen et al., DeepLab).

  Output size per axis: `output_size(N, F, S, P, d)`.
  """
  stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
  if not isinstance(padding, str):
    padding = _pair(padding, "padding")
    for a in range(2):  # clear errors for impossible geometry
      output_size(x.shape[1 + a], kernel.shape[a], stride[a], padding[a], dilation[a])
    padding = [(p, p) for p in padding]
  return jax.lax.conv_general_dilated(x, kernel, stride, padding, rhs_dilation=dilation,
                                      dimension_numbers=_DIMS)


def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: Pair = 1,
                   dilation: Pair = 1) -> jax.Array:
  """Depthwise convolution with 'SAME' padding: channel c of `x` is correlated with its
  own filter kernel[..., c] ([kh, kw, C] or the grouped-conv layout [kh, kw, 1, C]); the
  first half of a depthwise-separable convolution (MobileNet, Howard et al. 2017).

  Equals `lax.conv_general_dilated(..., 'SAME', feature_group_count=C)`, computed as
  kh * kw shifted multiply-adds, which XLA fuses: XLA:CPU's grouped convolution is
  several times slower, its gradient most of all.
  """
  stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
  kh, kw = kernel.shape[:2]
  kernel = kernel.reshape(kh, kw, x.shape[-1])
  pads, outs = [], []
  for a, k in enumerate((kh, kw)):  # XLA's 'SAME' rule
    n, s, d = x.shape[1 + a], stride[a], dilation[a]
    out = -(-n // s)
    total = max((out - 1) * s + d * (k - 1) + 1 - n, 0)
    pads.append((total // 2, total - total // 2))
    outs.append(out)
  xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
  y = 0
  for i in range(kh):
    for j in range(kw):
      start = (0, i * dilation[0], j * dilation[1], 0)
      limit = (xp.shape[0], start[1] + (outs[0] - 1) * stride[0] + 1,
               start[2] + (outs[1] - 1) * stride[1] + 1, xp.shape[3])
      y = y + jax.lax.slice(xp, start, limit, (1, *stride, 1)) * kernel[i, j]
  return y


def conv_transpose(x: jax.Array, kernel: jax.Array, stride: Pair = 1, padding: Pair = 0,
                   output_padding: Pair = 0, dilation: Pair = 1,
                   impl: str = "auto") -> jax.Array:
  """Transpose convolution (learnable upsampling; "deconvolution", Long et al. 2015).

  kernel [kh, kw, I, O] with I = channels of `x`, O = output channels (PyTorch's
  ConvTranspose2d weight [I, O, kh, kw], transposed): input pixel (h, w) adds
  `x[h, w] @ kernel[i, j]` at output pixel (h*S - P + i*d, w*S - P + j*d); overlaps sum.
  This is exactly the adjoint (VJP w.r.t. the input) of
  `conv(., kernel.transpose(0, 1, 3, 2), stride, padding, dilation)`, the same matrix X
  transposed. Output size per axis: `transpose_output_size(N, F, S, P, output_padding, d)`.
  `impl`: 'auto'; 'depth_to_space' (needs a square kernel == stride, no padding or
  dilation: a matmul then depth-to-space, 5x faster to differentiate on XLA:CPU than
  'lax'); 'lax' (a stride-1 conv of the S-dilated input with the flipped kernel).
  """
  stride, padding = _pair(stride, "stride"), _pair(padding, "padding")
  output_padding, dilation = _pair(output_padding, "output_padding"), _pair(dilation, "dilation")
  kh, kw, cin, cout = kernel.shape
  if x.shape[-1] != cin:
    raise ValueError(f"kernel {kernel.shape} expects {cin} input channels; x has {x.shape[-1]}")
  for a in range(2):
    transpose_output_size(x.shape[1 + a], kernel.shape[a], stride[a], padding[a],
                          output_padding[a], dilation[a])
  blocks = (kh == kw == stride[0] == stride[1] and padding == output_padding == (0, 0)
            and dilation == (1, 1))
  if impl not in ("auto", "depth_to_space", "lax"):
    raise ValueError(f"unknown impl {impl!r}; expected 'auto', 'depth_to_space' or 'lax'")
  if impl == "depth_to_space" or (impl == "auto" and blocks):
    if not blocks:
      raise ValueError("impl='depth_to_space' needs a square kernel equal to the stride, "
                       f"no padding or dilation; got kernel {(kh, kw)}, stride {stride}")
    return depth_to_space(x @ kernel.transpose(2, 0, 1, 3).reshape(cin, kh * kw * cout), kh)
  pads = [(d * (k - 1) - p, d * (k - 1) - p + op) for k, p, op, d in
          zip((kh, kw), padding, output_padding, dilation)]
  return jax.lax.conv_general_dilated(x, kernel[::-1, ::-1], (1, 1), pads, lhs_dilation=stride,
                                      rhs_dilation=dilation, dimension_numbers=_DIMS)


def _linear_upsample_axis(x: jax.Array, axis: int, factor: int, convention: str) -> jax.Array:
  """1-D linear interpolation along `axis` from two gathered neighbours per output."""
  n = x.shape[axis]
  out = np.arange(n * factor, dtype=np.float64)
  if convention == "half_pixel":
    src = np.clip((out + 0.5) / factor - 0.5, 0, n - 1)
  elif convention == "align_corners":
    src = out * (n - 1) / max(n * factor - 1, 1)
  elif convention == "asymmetric":
    src = out / factor
  else:
    raise ValueError(f"unknown convention {convention!r}; expected 'half_pixel', "
                     "'align_corners' or 'asymmetric'")
  lo = np.clip(np.floor(src), 0, max(n - 2, 0)).astype(np.int32)
  hi = np.minimum(lo + 1, n - 1)
  frac = (src - lo).reshape((-1,) + (1,) * (x.ndim - axis - 1)).astype(x.dtype)
  return jnp.take(x, lo, axis) * (1 - frac) + jnp.take(x, hi, axis) * frac


def bilinear_upsample(x: jax.Array, factor: int = 2, convention: str = "half_pixel") -> jax.Array:
  """Bilinear interpolation by an integer factor, separably along H then W (not learnable).

  Output pixel o samples the source coordinate
  - 'half_pixel': (o + 0.5)/factor - 0.5, clamped to the edge samples (== jax.image.resize
    'bilinear' and tf.image.resize);
  - 'align_corners': o (N-1)/(N*factor - 1), corner pixels aligned;
  - 'asymmetric': o / factor, extrapolating linearly past the last sample: the lecture's
    example 1, 2 -> 1, 1.5, 2, 2.5.
  """
  for axis in (1, 2):
    x = _linear_upsample_axis(x, axis, factor, convention)
  return x


def resize_conv(x: jax.Array, kernel: jax.Array, factor: int = 2,
                method: str = "nearest") -> jax.Array:
  """Resize-convolution: 'nearest' or 'bilinear' (half-pixel) upsampling, then a SAME
  stride-1 convolution; avoids the checkerboard artifacts of transpose convolutions
  (Odena, Dumoulin & Olah, "Deconvolution and checkerboard artifacts", Distill 2016)."""
  if method == "nearest":
    x = nearest_upsample(x, factor)
  elif method == "bilinear":
    x = bilinear_upsample(x, factor)
  else:
    raise ValueError(f"unknown method {method!r}; expected 'nearest' or 'bilinear'")
  return conv(x, kernel, padding="SAME")


def subpixel_conv(x: jax.Array, kernel: jax.Array, factor: int = 2) -> jax.Array:
  """Sub-pixel convolution (Shi et al. CVPR 2016): a SAME stride-1 convolution to
  factor^2 * C_out channels, then `depth_to_space` (channel (i*factor + j)*C_out + c goes to
  sub-pixel (i, j), channel c)."""
  if kernel.shape[-1] % (factor * factor):
    raise ValueError(f"kernel has {kernel.shape[-1]} output channels; expected a multiple of "
                     f"factor**2 = {factor * factor}")
  return depth_to_space(conv(x, kernel, padding="SAME"), factor)
