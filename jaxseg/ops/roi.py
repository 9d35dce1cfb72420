"""RoI pooling, RoIAlign and FPN multi-level RoIAlign with static shapes (jit, vmap, grad).

Box layouts (static, decided by the shapes; boxes are absolute pixel xyxy float32 in
image coordinates, DESIGN.md; `spatial_scale` = 1 / stride maps them onto the map):
  features [H, W, C],    boxes [R, 4]                      -> [R, oh, ow, C]
  features [B, H, W, C], boxes [B, R, 4]  (per image)       -> [B, R, oh, ow, C]
  features [B, H, W, C], boxes [K, 4], box_indices [K] int  -> [K, oh, ow, C]
The per-image layout is DESIGN's padded one (rows of -1, a `valid` mask kept by the
caller); the indexed layout is torchvision's / crop_and_resize's. Padded rows give
finite values the caller masks. box_indices are clipped to [0, B - 1].

`roi_pool` (Fast R-CNN, Girshick ICCV 2015) follows Caffe / torchvision RoIPool exactly:
  x1' = round(x1 * scale), x2' = round(x2 * scale) (half away from zero), likewise y;
  roi_w = max(x2' - x1' + 1, 1): x2' is the last cell *included* (so a box on the stride
  grid, x2 = one past its last pixel per DESIGN, covers one extra cell at its far side;
  this is the reference behaviour, kept for parity); bin_w = roi_w / ow (float32);
  bin j covers cells [x1' + floor(j bin_w), x1' + ceil((j + 1) bin_w)) clipped to [0, W];
  output = max over the bin's cells, 0 for an empty bin. Gradient: all of a bin's to its
  first maximum in row-major order (torchvision's argmax, ties included).
Implementation: a range-max table along W (level a: the max of every run of 2^a
columns, and the column of its first occurrence; floor(log2 W) + 1 copies of the map)
covers a bin's columns with two overlapping windows; a loop over rows, as many as the
tallest bin has (a data-dependent trip count, shapes stay static), folds the max. The
backward pass (custom_vjp) repeats the scan for the first argmax, then one scatter-add.

`roi_align` (Mask R-CNN, He et al. ICCV 2017) follows torchvision / Detectron2 ROIAlign:
  start = x1 * scale - o, end = x2 * scale - o, o = 0.5 if aligned else 0 (aligned: the
  half-pixel correction of Detectron2, the map's cell (i, j) is centred at (j, i) in
  map coordinates); size = end - start, at least 1 if not aligned (the original
  Mask R-CNN); bin = size / ow; sample points start + j bin + (i + 0.5) bin / s for
  i < s, s = sampling_ratio per axis (s x s per bin), averaged. A point is bilinear
  in the map: 0 if y < -1 or y > H (likewise x); otherwise y is clamped to [0, H - 1]
  and interpolated between floor(y) and floor(y) + 1 (clamped), exactly as the
  reference kernels do. Adaptive sampling (sampling_ratio <= 0: s = ceil(bin) per roi
  and axis) needs a static `max_sampling_ratio` cap: points are laid out for the cap
  and the unused ones masked, so it is exact for every roi whose adaptive s <= cap;
  larger rois are sampled at the cap.
The average over a bin of bilinear weights is separable, so per roi
  roi_align = Wy [oh, H] @ F [H, W, C] @ Wx [ow, W]^T  (exact),
with Wy, Wx of at most 2 s non-zeros per row. Two lowerings of the same taps:
  "gather": sums the 4 s^2 weighted corner C-vectors of each bin, one tap at a time so
            that XLA fuses all the gathers into one loop (cost independent of H W; no
            intermediate); backward (custom_vjp): one scatter-add per tap;
  "matmul": dense Wy, Wx and two matrix products, 2 K o H W C flops and a
            K o min(H, W) C intermediate (with box_indices the B images are stacked
            along H: cost x B); its transpose, the backward pass, is matmuls too.
"auto" is gather except on TPU (matmul; unmeasured). On XLA:CPU the gather forward is
~50x faster and its forward + backward ~3x (bench/roi_align.py).
Gradients flow to `features` (and, through the bilinear weights, to `boxes`; the
reference kernels return none for boxes: wrap them in stop_gradient to match Mask R-CNN).

`bilinear_sample` (DenseCap, Johnson et al. CVPR 2016): the Spatial-Transformer grid of
DenseCap's BilinearRoiPooling, oh x ow single bilinear reads spanning the box edge to
edge (its docstring gives the exact placement); gradients to features and boxes.

`multilevel_roi_align` (FPN, Lin et al. CVPR 2017, eq. 1): roi of size w x h goes to
level k = floor(k0 + log2(sqrt(w h) / 224)), clamped to the levels given. Two level
mappers (`level_mapper`): "detectron2" (default; ROIPooler, 1e-8 inside the log) and
"torchvision" (MultiScaleRoIAlign's LevelMapper, floor(k0 + log2(sqrt(w h) / 224) + 1e-6));
they differ only for boxes a fraction of a ppm below 112, 224, 448 px (k0 = 4), which
torchvision puts one level up. The gather lowering reads every roi from its
own level in one gather over the concatenated levels (cost of one level, no per-level
masks); the matmul lowering computes each level with the other levels' rois' weights
zeroed and sums (cost of all levels, dominated by the finest).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.errors import ConfigError

_IMPLS = ("auto", "matmul", "gather")


def _pair(value, name):
  if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
    value = (value, value)
  if (not isinstance(value, Sequence) or len(value) != 2
      or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
      or min(value) <= 0):
    raise ConfigError(f"{name}={value!r}; expected a positive int or a (height, width) pair "
                      "of positive ints")
  return int(value[0]), int(value[1])


def _prepare(features, boxes, box_indices):
  """-> (features [B, H, W, C], boxes [K, 4] float32, batch index [K] int32, out prefix,
  per_image: bool)."""
  features = jnp.asarray(features)
  boxes = jnp.asarray(boxes, jnp.float32)
  if boxes.shape[-1:] != (4,):
    raise ValueError(f"boxes {boxes.shape}; expected [..., 4] xyxy")
  if features.ndim == 3:
    if box_indices is not None or boxes.ndim != 2:
      raise ValueError(f"features {features.shape} (one image) take boxes [R, 4] and no "
                       f"box_indices; got boxes {boxes.shape}")
    k = boxes.shape[0]
    return features[None], boxes, jnp.zeros((k,), jnp.int32), (k,), True
  if features.ndim != 4:
    raise ValueError(f"features {features.shape}; expected [B, H, W, C] or [H, W, C]")
  b = features.shape[0]
  if box_indices is None:
    if boxes.ndim != 3 or boxes.shape[0] != b:
      raise ValueError(f"features {features.shape} take per-image boxes [{b}, R, 4] or "
                       f"boxes [K, 4] with box_indices [K]; got boxes {boxes.shape}")
    r = boxes.shape[1]
    index = jnp.repeat(jnp.arange(b, dtype=jnp.int32), r)
    return features, boxes.reshape(b * r, 4), index, (b, r), True
  box_indices = jnp.asarray(box_indices)
  if boxes.ndim != 2 or box_indices.shape != boxes.shape[:1]:
    raise ValueError(f"boxes {boxes.shape} and box_indices {box_indices.shape}; expected "
                     "[K, 4] and [K]")
  index = jnp.clip(box_indices.astype(jnp.int32), 0, b - 1)
  return features, boxes, index, boxes.shape[:1], False


def _round_half_away(x):
  """C round(): half away from zero (jnp.round rounds half to even)."""
  a = jnp.abs(x)
  fa = jnp.floor(a)
  return jnp.sign(x) * (fa + (a - fa >= 0.5))


def _div(x, n):
  """x / n as a true float32 division, as the reference kernels compute it. XLA rewrites
  a division by a constant into a multiply by its rounded reciprocal (3 / 7 then differs
  in the last bit, which moves RoIPool's floor/ceil bin edges); a divisor depending on x
  (x * 0 + n: not folded for floats) keeps the division."""
  return x / (x * 0 + n)


# ----------------------------------------------------------------------------- RoIPool


_ROWS = 2  # bin rows per step of the RoIPool row loop


def _row_max_tables(f):
  """Range-max tables along W of f [B, H, W, C]: level a holds, for w < W - 2^a + 1, the
  maximum of row h over columns [w, w + 2^a) and the column of its first occurrence.
  Returns (values [N, C], columns [N, C] int32, offsets, widths): level a starts at row
  offsets[a] of the flat tables and is [B, H, widths[a]] row-major."""
  b, height, width, c = f.shape
  values = [f]
  columns = [jnp.broadcast_to(jnp.arange(width, dtype=jnp.int32)[:, None], f.shape)]
  for a in range(1, width.bit_length()):
    step, v, i = 1 << (a - 1), values[-1], columns[-1]
    va, vb, ia, ib = v[:, :, :-step], v[:, :, step:], i[:, :, :-step], i[:, :, step:]
    values.append(jnp.maximum(va, vb))
    columns.append(jnp.where(vb > va, ib, ia))  # ties: the left window, first occurrence
  widths = np.array([width - (1 << a) + 1 for a in range(len(values))])
  offsets = np.concatenate([[0], np.cumsum(b * height * widths)[:-1]])
  flat = lambda ts: jnp.concatenate([t.reshape(-1, c) for t in ts])
  return flat(values), flat(columns), offsets, widths


def _bin_edges(lo, hi, n_out, size):
  """RoIPool bin edges along one axis: [K, n_out] int32 starts and ends in [0, size]."""
  roi = jnp.maximum(hi - lo + 1, 1).astype(jnp.float32)
  bin_size = _div(roi, n_out)
  p = jnp.arange(n_out, dtype=jnp.float32)
  start = jnp.floor(p * bin_size[:, None]).astype(jnp.int32) + lo[:, None]
  end = jnp.ceil((p + 1) * bin_size[:, None]).astype(jnp.int32) + lo[:, None]
  return jnp.clip(start, 0, size), jnp.clip(end, 0, size)


def roi_pool(features, boxes, output_size=(7, 7), spatial_scale=1.0, *, box_indices=None):
  """Fast R-CNN RoI max pooling (Girshick 2015), Caffe/torchvision conventions.

  Layouts, rounding and bin edges: see the module docstring. output_size: int or
  (oh, ow); spatial_scale: python float (1 / feature stride). Jitted (static: sizes).
  """
  return _roi_pool(features, boxes, box_indices, _pair(output_size, "output_size"),
                   float(spatial_scale))


@functools.partial(jax.jit, static_argnames=("output_size", "spatial_scale"))
def _roi_pool(features, boxes, box_indices, output_size, spatial_scale):
  oh, ow = output_size
  f, bxs, index, prefix, _ = _prepare(features, boxes, box_indices)
  height, width, c = f.shape[1:]
  q = _round_half_away(bxs * jnp.float32(spatial_scale)).astype(jnp.int32)
  hs, he = _bin_edges(q[:, 1], q[:, 3], oh, height)  # [K, oh]
  ws, we = _bin_edges(q[:, 0], q[:, 2], ow, width)  # [K, ow]
  out = _bin_max(f, index, hs, he, ws, we)
  return out.reshape(*prefix, oh, ow, c)


def _bin_scan(f, index, hs, he, ws, we, combine, init):
  """Folds combine(acc, h, inside [K, oh, 1, 1], value, column) over every row h of every
  bin and the two overlapping power-of-2 column windows covering the bin's columns (a
  range-max table along W), in a loop over the tallest bin's rows (a data-dependent
  trip count, _ROWS rows per step)."""
  height, width, c = f.shape[1:]
  values, columns, offsets, widths = _row_max_tables(f)
  level = 31 - jax.lax.clz(jnp.maximum(we - ws, 1))  # [K, ow]
  row_width = jnp.asarray(widths)[level]
  base = jnp.asarray(offsets)[level]
  starts = [jnp.clip(ws, 0, row_width - 1), jnp.clip(we - (1 << level), 0, row_width - 1)]
  k, oh, ow = hs.shape[0], hs.shape[1], ws.shape[1]

  def rows(step, acc):
    for dy in range(_ROWS):
      h = hs + step * _ROWS + dy  # [K, oh]
      inside = (h < he)[:, :, None, None]
      hc = jnp.clip(h, 0, height - 1)
      for w0 in starts:
        r = (base[:, None, :] + (index[:, None] * height + hc)[:, :, None] * row_width[:, None, :]
             + w0[:, None, :]).reshape(-1)
        take = lambda t: jnp.take(t, r, axis=0, mode="clip").reshape(k, oh, ow, c)
        acc = combine(acc, hc, inside, take(values), lambda: take(columns))
    return acc

  tallest = jnp.max(he - hs, initial=0)
  return jax.lax.fori_loop(0, (tallest + _ROWS - 1) // _ROWS, rows, init)


def _lowest(dtype):
  return jnp.asarray(-jnp.inf if jnp.issubdtype(dtype, jnp.floating) else
                     jnp.iinfo(dtype).min, dtype)


def _empty(hs, he, ws, we):
  return ((he <= hs)[:, :, None] | (we <= ws)[:, None, :])[..., None]  # [K, oh, ow, 1]


@jax.custom_vjp
def _bin_max(f, index, hs, he, ws, we):
  """Max of f [B, H, W, C] over each RoIPool bin -> [K, oh, ow, C]; 0 for empty bins.
  Backward: each bin's gradient goes to its first maximum in row-major order."""
  shape = (hs.shape[0], hs.shape[1], ws.shape[1], f.shape[-1])
  low = _lowest(f.dtype)
  best = _bin_scan(f, index, hs, he, ws, we,
                   lambda acc, h, inside, v, col: jnp.maximum(acc, jnp.where(inside, v, low)),
                   jnp.full(shape, low, f.dtype))
  return jnp.where(_empty(hs, he, ws, we), jnp.zeros((), f.dtype), best)


def _bin_max_fwd(f, index, hs, he, ws, we):
  return _bin_max(f, index, hs, he, ws, we), (f, index, hs, he, ws, we)


def _bin_max_bwd(res, g):
  f, index, hs, he, ws, we = res
  b, height, width, c = f.shape
  best = _bin_max(f, index, hs, he, ws, we)  # again: cheaper than keeping it
  never = height * width

  def first(acc, h, inside, v, col):  # smallest row-major cell attaining the max
    cell = jnp.where(inside & (v == best), (h * width)[:, :, None, None] + col(), never)
    return jnp.minimum(acc, cell)

  cell = _bin_scan(f, index, hs, he, ws, we, first, jnp.full(best.shape, never, jnp.int32))
  g = jnp.where(_empty(hs, he, ws, we) | (cell == never), jnp.zeros((), g.dtype), g)
  cell = jnp.minimum(cell, never - 1) + (index * never)[:, None, None, None]
  grad = jnp.zeros((b * height * width, c), g.dtype).at[
      cell.reshape(-1, c), jnp.arange(c)].add(g.reshape(-1, c))
  return (grad.reshape(f.shape).astype(f.dtype), None, None, None, None, None)


_bin_max.defvjp(_bin_max_fwd, _bin_max_bwd)


# ---------------------------------------------------------------------------- RoIAlign


def _axis_taps(lo, hi, n_out, scale, size, sampling_ratio, aligned, max_sampling_ratio):
  """Bilinear taps of the RoIAlign sample points along one axis.

  lo, hi: [K] box edges in pixels; scale, size: python numbers or [K] arrays (per-roi
  levels). Returns (index [K, n_out, s, 2] int32 in [0, size), weight [K, n_out, s, 2]
  float32); the weights include 1 / s and are 0 for points that contribute nothing.
  """
  offset = 0.5 if aligned else 0.0
  scale = jnp.asarray(scale, jnp.float32)
  size_f = jnp.asarray(size, jnp.float32)
  start = lo * scale - offset
  length = hi * scale - offset - start
  if not aligned:
    length = jnp.maximum(length, 1.0)
  bin_size = _div(length, n_out)
  if sampling_ratio > 0:
    s = sampling_ratio
    grid = jnp.full_like(bin_size, s)
  else:
    s = max_sampling_ratio
    grid = jnp.clip(jnp.ceil(bin_size), 0, s)
  p = jnp.arange(n_out, dtype=jnp.float32)[None, :, None]
  i = jnp.arange(s, dtype=jnp.float32)[None, None, :]
  bs = bin_size[:, None, None]
  g = jnp.maximum(grid, 1)[:, None, None]
  coord = start[:, None, None] + p * bs + _div((i + 0.5) * bs, g)  # torchvision's order
  size_k = size_f.reshape(-1, 1, 1) if size_f.ndim else size_f
  use = (coord >= -1.0) & (coord <= size_k) & (i < grid[:, None, None])
  cc = jnp.clip(coord, 0.0, size_k - 1)
  low_f = jnp.floor(cc)
  frac = cc - low_f
  low = low_f.astype(jnp.int32)
  high = jnp.minimum(low + 1, size_k.astype(jnp.int32) - 1)
  weight = jnp.where(use, 1.0 / g, 0.0)[..., None] * jnp.stack([1.0 - frac, frac], -1)
  return jnp.stack([low, high], -1), weight


def _dense(index, weight, size):
  """Taps [K, n, s, 2] -> the bin-averaged interpolation matrix [K, n, size]."""
  onehot = index[..., None] == jnp.arange(size)
  return jnp.einsum("knst,knstx->knx", weight, onehot.astype(weight.dtype))


def _separable(f, wy, wx, precision):
  """f [H, W, C], wy [K, oh, H], wx [K, ow, W] -> [K, oh, ow, C]; larger axis first."""
  if f.shape[0] <= f.shape[1]:
    t = jnp.einsum("kqw,hwc->kqhc", wx, f, precision=precision)
    return jnp.einsum("kph,kqhc->kpqc", wy, t, precision=precision)
  t = jnp.einsum("kph,hwc->kpwc", wy, f, precision=precision)
  return jnp.einsum("kqw,kpwc->kpqc", wx, t, precision=precision)


def _gather(table, base, rows, yw, cols, xw, row_width):
  """Weighted sum of the (2 s)^2 corner rows per bin, read from table [N, C] at row
  base + row * row_width + col, for rows [K, oh, s, 2] and cols [K, ow, s, 2] (base,
  row_width: ints or [K]) -> [K, oh, ow, C]. The taps are summed one at a time so that
  XLA fuses every gather into one loop (no [K, oh, ow, taps, C] intermediate)."""
  k, oh, ow = rows.shape[0], rows.shape[1], cols.shape[1]
  per_roi = lambda v: jnp.reshape(v, (-1, 1, 1, 1, 1)) if jnp.ndim(v) else v
  index = (per_roi(base) + rows.reshape(k, oh, 1, -1, 1) * per_roi(row_width)
           + cols.reshape(k, 1, ow, 1, -1)).reshape(k, oh, ow, -1)
  weight = (yw.reshape(k, oh, 1, -1, 1) * xw.reshape(k, 1, ow, 1, -1)).reshape(k, oh, ow, -1)
  return _tap_sum(table, index, weight)


_UNROLL = 36  # taps summed in one unrolled fusion (s <= 3); beyond, a loop over taps


def _over_taps(taps, fn, init):
  """fn(j, acc) folded over j < taps: unrolled up to _UNROLL taps, else a fori_loop."""
  if taps <= _UNROLL:
    for j in range(taps):
      init = fn(j, init)
    return init
  return jax.lax.fori_loop(0, taps, fn, init)


def _tap(a, j):
  return jax.lax.dynamic_index_in_dim(a, j, axis=3, keepdims=False)


@jax.custom_vjp
def _tap_sum(table, index, weight):
  """sum_j weight[..., j] * table[index[..., j]]: table [N, C], index / weight [K, oh, ow,
  T] -> [K, oh, ow, C] (float32 or wider). Its backward pass is written out: one
  scatter-add per tap for the table and one gather-dot per tap for the weights (the
  default transpose of the fused forward was 2-3x slower on XLA:CPU)."""
  dtype = jnp.promote_types(table.dtype, jnp.float32)

  def tap(j, out):
    v = jnp.take(table, _tap(index, j), axis=0, mode="clip").astype(dtype)
    return out + _tap(weight, j)[..., None].astype(dtype) * v

  return _over_taps(index.shape[-1], tap, jnp.zeros((*index.shape[:-1], table.shape[1]), dtype))


def _tap_sum_fwd(table, index, weight):
  return _tap_sum(table, index, weight), (table, index, weight)


def _tap_sum_bwd(res, g):
  table, index, weight = res
  c = table.shape[1]

  def table_tap(j, acc):
    update = (_tap(weight, j)[..., None] * g).astype(acc.dtype).reshape(-1, c)
    return acc.at[_tap(index, j).reshape(-1)].add(update, mode="promise_in_bounds")

  d_table = _over_taps(index.shape[-1], table_tap, jnp.zeros(table.shape, table.dtype))

  def weight_tap(j, acc):
    v = jnp.take(table, _tap(index, j), axis=0, mode="clip").astype(g.dtype)
    return jax.lax.dynamic_update_index_in_dim(acc, jnp.sum(v * g, axis=-1), j, axis=3)

  d_weight = _over_taps(index.shape[-1], weight_tap, jnp.zeros(weight.shape, g.dtype))
  return d_table, None, d_weight.astype(weight.dtype)


_tap_sum.defvjp(_tap_sum_fwd, _tap_sum_bwd)


def _auto_impl():
  """The lowering of impl="auto": gather (fastest forward and backward on XLA:CPU, see
  bench/roi_align.py; bandwidth-bound on GPU), matmul on TPU (slow gathers and scatters,
  fast matrix units; not measured here)."""
  return "matmul" if jax.default_backend() == "tpu" else "gather"


def _check_align_args(sampling_ratio, aligned, max_sampling_ratio, impl):
  if not isinstance(sampling_ratio, (int, np.integer)) or isinstance(sampling_ratio, bool):
    raise ConfigError(f"sampling_ratio={sampling_ratio!r}; expected an int (> 0 fixed, "
                      "<= 0 adaptive with max_sampling_ratio)")
  if sampling_ratio <= 0 and (not isinstance(max_sampling_ratio, (int, np.integer))
                              or max_sampling_ratio <= 0):
    raise ConfigError(f"sampling_ratio={sampling_ratio} (adaptive) needs a static cap "
                      f"max_sampling_ratio > 0 under static shapes; got {max_sampling_ratio!r}")
  if not isinstance(aligned, bool):
    raise ConfigError(f"aligned={aligned!r}; expected a bool")
  if impl not in _IMPLS:
    raise ConfigError(f"impl={impl!r}; expected one of {_IMPLS}")


def roi_align(features, boxes, output_size=(7, 7), spatial_scale=1.0, sampling_ratio=2,
              aligned=True, *, box_indices=None, max_sampling_ratio=None, impl="auto",
              precision=jax.lax.Precision.HIGHEST):
  """Mask R-CNN RoIAlign (He et al. 2017), torchvision/Detectron2 conventions.

  Layouts, sampling, border rule and lowerings: see the module docstring. output_size:
  int or (oh, ow); spatial_scale: python float; sampling_ratio: int > 0, or <= 0 for
  adaptive with `max_sampling_ratio` (static cap); aligned: half-pixel offset; impl:
  "auto" | "gather" | "matmul"; precision: of the matmul lowering (HIGHEST: float32
  products on accelerators too). Jitted (static: all but features, boxes, box_indices).
  """
  _check_align_args(sampling_ratio, aligned, max_sampling_ratio, impl)
  return _roi_align(features, boxes, box_indices, _pair(output_size, "output_size"),
                    float(spatial_scale), int(sampling_ratio), aligned,
                    None if sampling_ratio > 0 else int(max_sampling_ratio), impl, precision)


@functools.partial(jax.jit, static_argnames=(
    "output_size", "spatial_scale", "sampling_ratio", "aligned", "max_sampling_ratio", "impl",
    "precision"))
def _roi_align(features, boxes, box_indices, output_size, spatial_scale, sampling_ratio,
               aligned, max_sampling_ratio, impl, precision):
  oh, ow = output_size
  f, bxs, index, prefix, per_image = _prepare(features, boxes, box_indices)
  b, height, width, c = f.shape
  args = (spatial_scale, sampling_ratio, aligned, max_sampling_ratio)
  yi, yw = _axis_taps(bxs[:, 1], bxs[:, 3], oh, args[0], height, *args[1:])
  xi, xw = _axis_taps(bxs[:, 0], bxs[:, 2], ow, args[0], width, *args[1:])
  if impl == "auto":
    impl = _auto_impl()
  if impl == "gather":
    rows = index[:, None, None, None] * height + yi
    out = _gather(f.reshape(-1, c), 0, rows, yw, xi, xw, width)
  elif per_image:
    k = bxs.shape[0] // b
    wy = _dense(yi, yw, height).reshape(b, k, oh, height).astype(f.dtype)
    wx = _dense(xi, xw, width).reshape(b, k, ow, width).astype(f.dtype)
    out = jax.vmap(lambda *a: _separable(*a, precision))(f, wy, wx)
  else:  # the B images stacked along H: row b * H + y
    wy = _dense(index[:, None, None, None] * height + yi, yw, b * height).astype(f.dtype)
    wx = _dense(xi, xw, width).astype(f.dtype)
    out = _separable(f.reshape(b * height, width, c), wy, wx, precision)
  return out.astype(f.dtype).reshape(*prefix, oh, ow, c)


# ----------------------------------------------------------------- bilinear (DenseCap)


def bilinear_sample(features, boxes, output_size=(7, 7), spatial_scale=1.0, *,
                    box_indices=None, image_size=None):
  """DenseCap's bilinear RoI pooling (Johnson, Karpathy & Fei-Fei, CVPR 2016, Sec. 3.1):
  a Spatial-Transformer affine grid of oh x ow points spanning each box, one bilinear
  read per point; differentiable with respect to `features` and to `boxes`.

  Point placement, exactly jcjohnson/densecap's BilinearRoiPooling (BoxToAffine ->
  stnbhwd's AffineGridGeneratorBHWD -> BilinearSamplerBHWD), written in jaxseg's pixel
  coordinates (pixel i spans [i, i + 1]; DenseCap's 1-based (xc, yc, w, h) is
  (cx + 0.5, cy + 0.5, x2 - x1, y2 - y1) here): for an image W pixels wide, a map Wf
  cells wide, box centre cx = (x1 + x2) / 2 and width w = x2 - x1, output column j
  reads the map at (0-based cell index)
      x(j) = (Wf - 1) / (W - 1) * (cx - 0.5) + u_j * w * (Wf - 1) / (2 W),
      u_j = -1 + 2 j / (ow - 1)   (linspace(-1, 1, ow); u = 0 when ow = 1),
  likewise rows with H, Hf, cy, h. So the centre lands on the box centre, the outer
  points on its edges (within a factor (W - 1) / W), the image and map normalised
  coordinates [-1, 1] being the centres of their first and last pixels (stnbhwd's
  align-corners convention). Each read is bilinear between floor(x) and floor(x) + 1;
  a corner outside the map contributes 0 (stnbhwd's zero padding), so points beyond the
  border fade to 0 instead of being clamped.
  `image_size` (H, W) of the image the boxes refer to; None: the map's size /
  spatial_scale. Layouts as the module docstring (per image [B, R, 4] or box_indices).
  Gradients: to `features` (a scatter-add of the weights) and to `boxes` through the
  point positions (piecewise linear, as the reference's gradGrids).
  """
  oh, ow = _pair(output_size, "output_size")
  f, bxs, index, prefix, _ = _prepare(features, boxes, box_indices)
  b, height, width, c = f.shape
  if image_size is None:
    image_h, image_w = height / float(spatial_scale), width / float(spatial_scale)
  else:
    image_h, image_w = (float(v) for v in image_size)
  ys = _affine_axis(bxs[:, 1], bxs[:, 3], oh, image_h, height)  # [K, oh]
  xs = _affine_axis(bxs[:, 0], bxs[:, 2], ow, image_w, width)  # [K, ow]
  y0, x0 = jnp.floor(ys), jnp.floor(xs)
  fy, fx = ys - y0, xs - x0
  y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)
  table = f.reshape(-1, c)
  out = 0.0
  for dy, wy in ((0, 1.0 - fy), (1, fy)):
    for dx, wx in ((0, 1.0 - fx), (1, fx)):
      yy, xx = y0 + dy, x0 + dx  # [K, oh], [K, ow]
      inside = (((yy >= 0) & (yy < height))[:, :, None]
                & ((xx >= 0) & (xx < width))[:, None, :])
      rows = (index[:, None] * height + jnp.clip(yy, 0, height - 1))[:, :, None]
      flat = rows * width + jnp.clip(xx, 0, width - 1)[:, None, :]  # [K, oh, ow]
      weight = jnp.where(inside, wy[:, :, None] * wx[:, None, :], 0.0)
      out = out + weight[..., None].astype(f.dtype) * jnp.take(table, flat, axis=0)
  return out.astype(f.dtype).reshape(*prefix, oh, ow, c)


def _affine_axis(lo, hi, n, image, size):
  """[K, n] 0-based map coordinates of DenseCap's affine grid along one axis."""
  u = jnp.linspace(-1.0, 1.0, n) if n > 1 else jnp.zeros((1,))
  centre = 0.5 * (lo + hi)
  extent = hi - lo
  norm = (extent / image)[:, None] * u + ((2.0 * (centre + 0.5) - image - 1.0)
                                          / (image - 1.0))[:, None]
  return (norm + 1.0) * 0.5 * (size - 1.0)


# ------------------------------------------------------------------------------- FPN


LEVEL_MAPPERS = ("detectron2", "torchvision")


def fpn_level(boxes, min_level=2, max_level=5, canonical_level=4, canonical_size=224.0,
              level_mapper="detectron2"):
  """FPN level of each xyxy box (Lin et al. 2017, eq. 1), int32 [...], clamped to
  [min_level, max_level]; w, h clipped at 0 (empty boxes go to min_level). float32:
    "detectron2":  floor(canonical_level + log2(sqrt(w h) / canonical_size + 1e-8))
    "torchvision": floor(canonical_level + log2(sqrt(w h) / canonical_size) + 1e-6)."""
  if level_mapper not in LEVEL_MAPPERS:
    raise ConfigError(f"level_mapper={level_mapper!r}; expected one of {LEVEL_MAPPERS}")
  boxes = jax.lax.stop_gradient(jnp.asarray(boxes, jnp.float32))
  w = jnp.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
  h = jnp.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
  if level_mapper == "torchvision":
    k = jnp.floor(canonical_level + jnp.log2(jnp.sqrt(w * h) / canonical_size)
                  + jnp.float32(1e-6))
  else:
    k = jnp.floor(canonical_level + jnp.log2(jnp.sqrt(w * h) / canonical_size + 1e-8))
  return jnp.clip(k, min_level, max_level).astype(jnp.int32)


def _levels_of(strides, n):
  if strides is None or len(strides) != n:
    raise ConfigError(f"strides={strides!r}; expected one stride per feature level ({n})")
  levels = []
  for s in strides:
    lv = math.log2(s) if isinstance(s, (int, float, np.integer)) and s > 0 else None
    if lv is None or lv != int(lv):
      raise ConfigError(f"strides={tuple(strides)!r}; expected powers of 2")
    levels.append(int(lv))
  if levels != list(range(levels[0], levels[0] + n)):
    raise ConfigError(f"strides={tuple(strides)!r}; expected consecutive levels, fine to "
                      "coarse (e.g. 4, 8, 16, 32 for P2-P5)")
  return levels


def multilevel_roi_align(features, boxes, output_size=(7, 7), strides=(4, 8, 16, 32),
                         sampling_ratio=2, aligned=True, *, box_indices=None,
                         canonical_level=4, canonical_size=224.0, max_sampling_ratio=None,
                         impl="auto", precision=jax.lax.Precision.HIGHEST,
                         level_mapper="detectron2"):
  """RoIAlign of each roi from its FPN level (Lin et al. 2017; Mask R-CNN's pooler).

  features: a sequence (or a mapping, taken in its order) of maps fine to coarse, each
  [B, H_l, W_l, C] or [H_l, W_l, C] with one layout for all; strides: their strides
  (consecutive powers of 2; level = log2 stride). Layouts of boxes as in `roi_align`.
  impl: "auto" (= "gather") | "gather" | "matmul" (see the module docstring). Jitted.
  level_mapper: "detectron2" | "torchvision" (`fpn_level`).
  """
  maps = list(features.values()) if isinstance(features, Mapping) else list(features)
  if not maps:
    raise ValueError("features: expected at least one level")
  levels = _levels_of(strides, len(maps))
  _check_align_args(sampling_ratio, aligned, max_sampling_ratio, impl)
  if level_mapper not in LEVEL_MAPPERS:
    raise ConfigError(f"level_mapper={level_mapper!r}; expected one of {LEVEL_MAPPERS}")
  return _multilevel_roi_align(
      tuple(maps), boxes, box_indices, _pair(output_size, "output_size"),
      tuple(int(s) for s in strides), tuple(levels), int(sampling_ratio), aligned,
      None if sampling_ratio > 0 else int(max_sampling_ratio), float(canonical_level),
      float(canonical_size), impl, precision, level_mapper)


@functools.partial(jax.jit, static_argnames=(
    "output_size", "strides", "levels", "sampling_ratio", "aligned", "max_sampling_ratio",
    "canonical_level", "canonical_size", "impl", "precision", "level_mapper"))
def _multilevel_roi_align(maps, boxes, box_indices, output_size, strides, levels,
                          sampling_ratio, aligned, max_sampling_ratio, canonical_level,
                          canonical_size, impl, precision, level_mapper):
  oh, ow = output_size
  prepared = [_prepare(m, boxes, box_indices) for m in maps]
  _, bxs, index, prefix, per_image = prepared[0]
  maps = [p[0] for p in prepared]
  if len({m.shape[0] for m in maps}) != 1 or len({m.shape[-1] for m in maps}) != 1:
    raise ValueError(f"features {[m.shape for m in maps]}; expected the same batch size and "
                     "channels at every level")
  b, c = maps[0].shape[0], maps[0].shape[-1]
  level = fpn_level(bxs, levels[0], levels[-1], canonical_level, canonical_size,
                    level_mapper) - levels[0]
  rest = (sampling_ratio, aligned, max_sampling_ratio)
  if impl == "auto":
    impl = _auto_impl()
  if impl == "gather":
    hs = np.array([m.shape[1] for m in maps])
    ws = np.array([m.shape[2] for m in maps])
    offsets = np.concatenate([[0], np.cumsum(b * hs * ws)[:-1]])
    scale = jnp.asarray([1.0 / s for s in strides], jnp.float32)[level]
    height, width = jnp.asarray(hs)[level], jnp.asarray(ws)[level]
    yi, yw = _axis_taps(bxs[:, 1], bxs[:, 3], oh, scale, height, *rest)
    xi, xw = _axis_taps(bxs[:, 0], bxs[:, 2], ow, scale, width, *rest)
    # table row of (b, y, x) at level l: offset_l + (b H_l + y) W_l + x
    rows = (index * height)[:, None, None, None] + yi
    table = jnp.concatenate([m.reshape(-1, c) for m in maps])
    out = _gather(table, jnp.asarray(offsets)[level], rows, yw, xi, xw, width)
    return out.astype(maps[0].dtype).reshape(*prefix, oh, ow, c)
  out = 0
  for lv, (m, stride) in enumerate(zip(maps, strides)):
    height, width = m.shape[1], m.shape[2]
    yi, yw = _axis_taps(bxs[:, 1], bxs[:, 3], oh, 1.0 / stride, height, *rest)
    xi, xw = _axis_taps(bxs[:, 0], bxs[:, 2], ow, 1.0 / stride, width, *rest)
    yw = jnp.where((level == lv)[:, None, None, None], yw, 0.0)
    if per_image:
      k = bxs.shape[0] // b
      wy = _dense(yi, yw, height).reshape(b, k, oh, height).astype(m.dtype)
      wx = _dense(xi, xw, width).reshape(b, k, ow, width).astype(m.dtype)
      o = jax.vmap(lambda *a: _separable(*a, precision))(m, wy, wx).reshape(-1, oh, ow, c)
    else:
      wy = _dense(index[:, None, None, None] * height + yi, yw, b * height).astype(m.dtype)
      wx = _dense(xi, xw, width).astype(m.dtype)
      o = _separable(m.reshape(b * height, width, c), wy, wx, precision)
    out = out + o
  return out.astype(maps[0].dtype).reshape(*prefix, oh, ow, c)


# -- paste-back (host side) -----------------------------------------------------------------
PASTE_CONVENTIONS = ("jaxseg", "torchvision")


def _paste_axis(lo: float, hi: float, cells: int, pixels: int, convention: str) -> np.ndarray:
  """[pixels, cells]: how much each cell of a mask row spread over [lo, hi] gives each
  image pixel along that axis (see `paste_masks`)."""
  out = np.zeros((pixels, cells))
  if convention == "jaxseg":
    index = np.arange(pixels)
    src = (index + 0.5 - lo) * cells / max(hi - lo, 1e-6) - 0.5
  else:  # torchvision: padded mask of cells + 2, box widened by that, truncated to ints
    half = (hi - lo) * 0.5 * (cells + 2) / cells
    centre = (hi + lo) * 0.5
    start, stop = int(centre - half), int(centre + half)  # .to(int64): toward zero
    side = max(stop - start + 1, 1)
    index = np.arange(max(start, 0), min(stop + 1, pixels))
    src = np.maximum((index - start + 0.5) * (cells + 2) / side - 0.5, 0.0) - 1.0
  base = np.floor(src).astype(np.int64)
  frac = src - base
  if convention == "torchvision":  # the padded mask's last tap is clamped, not past it
    frac = np.where(base + 1 > cells, 0.0, frac)
  for tap, weight in ((base, 1 - frac), (base + 1, frac)):
    ok = (tap >= 0) & (tap < cells)  # taps on the zero border (or past it) add nothing
    np.add.at(out, (index[ok], tap[ok]), weight[ok])
  return out


def paste_masks(masks, boxes, height: int, width: int, convention: str = "jaxseg"):
  """Mask R-CNN's paste-back, host side (numpy): RoI masks [D, S, S] (probabilities) laid
  over their boxes [D, 4] (pixel xyxy) in a height x width image -> [D, height, width]
  float (threshold at 0.5 for binary masks).
  - "jaxseg": bilinear at every pixel centre, cell (i, j) of the mask centred at
    (x1 + (j + 0.5) w / S, ...) as RoIAlign (aligned) sampled it, zero beyond the
    outer cell centres' half cell (Detectron2's grid_sample paste);
  - "torchvision": its paste_masks_in_image: the mask padded by one zero cell per side,
    the box widened by (S + 2) / S and truncated to ints, the padded mask resized
    bilinearly (align_corners=False) to (y2 - y1 + 1) x (x2 - x1 + 1) pixels there."""
  if convention not in PASTE_CONVENTIONS:
    raise ConfigError(f"paste convention {convention!r}; expected one of {PASTE_CONVENTIONS}")
  masks = np.asarray(masks, np.float64)
  boxes = np.asarray(boxes, np.float64)
  out = np.zeros((len(masks), height, width), np.float32)
  for d, (mask, (x1, y1, x2, y2)) in enumerate(zip(masks, boxes)):
    wy = _paste_axis(y1, y2, mask.shape[0], height, convention)
    wx = _paste_axis(x1, x2, mask.shape[1], width, convention)
    out[d] = wy @ mask @ wx.T
  return out
