"""Anchor / prior / default boxes on feature-map grids, as host-side NumPy constants.

Every function returns float32 xyxy boxes in absolute pixels, [num_cells * A, 4], in
one order: cell-major (row y, then column x, row-major over the grid), then the A boxes
of the cell in the order documented per function; several levels are concatenated in
the order given. The arrays are computed once from the config (NumPy), so under `jit`
they are constants; a prediction head's output reshaped from [H, W, A, C] to
[H * W * A, C] lines up with them.

Aspect ratio means `width / height` everywhere in this module (SSD's a_r). Detectron's
`aspect_ratios` are height / width; with the usual reciprocal-closed sets such as
(0.5, 1, 2) only the order of the boxes within a cell differs.

torchvision's `AnchorGenerator` (Faster R-CNN, RetinaNet) differs from the defaults in
four ways, each an option of `anchor_shapes` / `grid_anchors` / `multilevel_anchors`
(`TORCHVISION` holds them all, e.g. ``grid_anchors(..., **TORCHVISION)``):
- ``height_over_width=True``: aspect ratios read as height / width;
- ``ratio_major=True``: a cell's anchors ordered ratio-major, then size;
- ``round_to_pixels=True``: a cell's anchor corners, relative to its centre, rounded to
  whole pixels (half to even, in float32 as torch does: ``round([-w, -h, w, h] / 2)``);
- ``offset=0.0``: cell (y, x) centred at (x * stride, y * stride), not the cell centre.

Anchors are not clipped to the image; `boxes.clip_boxes` does that where wanted.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from jaxseg.errors import ConfigError


def _pair(value, name):
  """An int or a (height, width) pair of positive ints -> (h, w)."""
  if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
    value = (value, value)
  if (not isinstance(value, Sequence) or len(value) != 2
      or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)):
    raise ConfigError(f"{name}={value!r}; expected a positive int or a (height, width) pair "
                      "of positive ints")
  if min(value) <= 0:
    raise ConfigError(f"{name}={tuple(value)!r}; expected positive values")
  return int(value[0]), int(value[1])


def _positive_list(values, name):
  """A number or a non-empty sequence of positive finite numbers -> list of floats."""
  if isinstance(values, (int, float, np.number)) and not isinstance(values, bool):
    values = [values]
  try:
    out = [float(v) for v in values]
  except (TypeError, ValueError):
    raise ConfigError(f"{name}={values!r}; expected a positive number or a sequence of "
                      "positive numbers") from None
  if not out or not all(math.isfinite(v) and v > 0 for v in out):
    raise ConfigError(f"{name}={values!r}; expected a non-empty sequence of positive, "
                      "finite numbers")
  return out


TORCHVISION = {"offset": 0.0, "height_over_width": True, "ratio_major": True,
               "round_to_pixels": True}  # torchvision's AnchorGenerator (module docstring)


def _cell_boxes(grid_h, grid_w, cell_h, cell_w, offset, widths, heights,
                round_to_pixels=False):
  """Boxes of sizes (widths[a], heights[a]) centred at ((x + offset) cell_w,
  (y + offset) cell_h) for every cell (y, x) -> [grid_h * grid_w * A, 4] float32.
  round_to_pixels: the corners relative to the centre rounded (half to even)."""
  cy = (np.arange(grid_h, dtype=np.float64) + offset) * cell_h
  cx = (np.arange(grid_w, dtype=np.float64) + offset) * cell_w
  cy, cx = np.meshgrid(cy, cx, indexing="ij")  # [H, W], row-major cells
  centres = np.stack([cx, cy, cx, cy], axis=-1)[:, :, None, :]  # [H, W, 1, 4]
  if round_to_pixels:  # torchvision: float32 widths, round(stack([-w, -h, w, h]) / 2)
    w = np.asarray(widths, np.float32)
    h = np.asarray(heights, np.float32)
    half = np.round(np.stack([-w, -h, w, h], axis=-1) / np.float32(2)).astype(np.float64)
  else:
    w = np.asarray(widths, np.float64)
    h = np.asarray(heights, np.float64)
    half = np.stack([-w / 2, -h / 2, w / 2, h / 2], axis=-1)  # [A, 4]
  return (centres + half).reshape(-1, 4).astype(np.float32)


def anchor_shapes(sizes, aspect_ratios, *, height_over_width=False, ratio_major=False):
  """(widths, heights) of the anchors of one cell: for each size s (in order), for each
  aspect ratio a = w / h (in order), the box of area s**2: w = s sqrt(a), h = s / sqrt(a)
  (Ren et al. 2015, Faster R-CNN).

  height_over_width: read a as h / w (torchvision, Detectron): h = s sqrt(a), w = s /
  sqrt(a), computed in float32 as torchvision does. ratio_major: for each ratio, for each
  size (torchvision's order) instead of size-major.
  """
  sizes = _positive_list(sizes, "sizes")
  ratios = _positive_list(aspect_ratios, "aspect_ratios")
  pairs = ([(s, a) for a in ratios for s in sizes] if ratio_major
           else [(s, a) for s in sizes for a in ratios])
  if height_over_width:  # torchvision: h_ratios = sqrt(a), w_ratios = 1 / h_ratios (float32)
    s = np.asarray([p[0] for p in pairs], np.float32)
    h_ratio = np.sqrt(np.asarray([p[1] for p in pairs], np.float32))
    w_ratio = np.float32(1) / h_ratio
    return [float(v) for v in w_ratio * s], [float(v) for v in h_ratio * s]
  widths = [s * math.sqrt(a) for s, a in pairs]
  heights = [s / math.sqrt(a) for s, a in pairs]
  return widths, heights


def _grid(height, width, stride, feature_size):
  """(cells down, cells across, step down, step across) of a map of the given stride."""
  if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride <= 0:
    raise ConfigError(f"stride={stride!r}; expected a positive int")
  if feature_size is None:
    if height % stride or width % stride:
      raise ConfigError(f"stride {stride} does not divide the image size {height}x{width}; "
                        "pad or resize the image to a multiple of the largest stride")
    return height // stride, width // stride, stride, stride
  fh, fw = _pair(feature_size, "feature_size")
  if (fh, fw) != (-(-height // stride), -(-width // stride)):
    raise ConfigError(f"feature_size {fh}x{fw} is not the size of a stride-{stride} map of "
                      f"a {height}x{width} image; expected ceil(image / stride) = "
                      f"{-(-height // stride)}x{-(-width // stride)}")
  return fh, fw, height // fh, width // fw


def grid_anchors(image_size, stride, sizes, aspect_ratios=(0.5, 1.0, 2.0), offset=0.5, *,
                 height_over_width=False, ratio_major=False, round_to_pixels=False,
                 feature_size=None):
  """Faster R-CNN anchors (Ren et al. 2015) of one feature map of the given stride.

  image_size: int or (height, width) in pixels; the stride must divide both. The map has
  (height / stride) x (width / stride) cells; cell (y, x) holds len(sizes) *
  len(aspect_ratios) anchors centred at ((x + offset) stride, (y + offset) stride)
  (offset 0.5: the cell centre), size-major then ratio (see `anchor_shapes`).
  height_over_width, ratio_major, round_to_pixels: torchvision's conventions (module
  docstring; `TORCHVISION` sets them all with offset 0).
  feature_size: the map's (height, width) = ceil(image_size / stride), for a stride that
  does not divide the image (e.g. FPN's stride-64 level of a 32-divisible image); the
  cells then lie image_size // feature_size apart on each axis, as torchvision's
  AnchorGenerator places them (its strides are those integer divisions).
  Returns [H * W * A, 4] float32 xyxy, cell-major then anchor.
  """
  height, width = _pair(image_size, "image_size")
  grid_h, grid_w, step_h, step_w = _grid(height, width, stride, feature_size)
  if not 0 <= offset < 1:
    raise ConfigError(f"offset={offset!r}; expected 0 <= offset < 1 (0.5 centres anchors "
                      "on cells)")
  widths, heights = anchor_shapes(sizes, aspect_ratios, height_over_width=height_over_width,
                                  ratio_major=ratio_major)
  return _cell_boxes(grid_h, grid_w, step_h, step_w, offset, widths, heights,
                     round_to_pixels)


def multilevel_anchors(image_size, strides, sizes, aspect_ratios=(0.5, 1.0, 2.0),
                       offset=0.5, *, height_over_width=False, ratio_major=False,
                       round_to_pixels=False, feature_sizes=None):
  """Anchors of a feature pyramid (Lin et al. 2017, FPN): `grid_anchors` of every stride,
  concatenated in the order of `strides`.

  sizes: one entry per stride, each a size or a sequence of sizes; e.g. FPN's
  strides (4, 8, 16, 32, 64) with sizes (32, 64, 128, 256, 512) and ratios (0.5, 1, 2).
  aspect_ratios: shared by all levels, or one sequence per level.
  offset, height_over_width, ratio_major, round_to_pixels: as in `grid_anchors`.
  feature_sizes: None, or one `grid_anchors` feature_size (or None) per stride.
  Returns [sum_l H_l W_l A_l, 4] float32 xyxy; `level_sizes` gives the split points.
  """
  strides, sizes, ratios = _levels(strides, sizes, aspect_ratios)
  return np.concatenate([grid_anchors(image_size, s, z, r, offset,
                                      height_over_width=height_over_width,
                                      ratio_major=ratio_major,
                                      round_to_pixels=round_to_pixels, feature_size=f)
                         for s, z, r, f in zip(strides, sizes, ratios,
                                               _feature_sizes(feature_sizes, strides))],
                        axis=0)


def _feature_sizes(feature_sizes, strides):
  if feature_sizes is None:
    return [None] * len(strides)
  feature_sizes = list(feature_sizes)
  if len(feature_sizes) != len(strides):
    raise ConfigError(f"feature_sizes has {len(feature_sizes)} entries; expected one per "
                      f"stride of {list(strides)}")
  return feature_sizes


def level_sizes(image_size, strides, sizes, aspect_ratios=(0.5, 1.0, 2.0),
                feature_sizes=None):
  """Number of anchors of each level of `multilevel_anchors` (same arguments)."""
  height, width = _pair(image_size, "image_size")
  strides, sizes, ratios = _levels(strides, sizes, aspect_ratios)
  counts = []
  for s, z, r, f in zip(strides, sizes, ratios, _feature_sizes(feature_sizes, strides)):
    grid_h, grid_w, _, _ = _grid(height, width, s, f)
    counts.append(grid_h * grid_w * len(_positive_list(z, "sizes"))
                  * len(_positive_list(r, "aspect_ratios")))
  return counts


def _levels(strides, sizes, aspect_ratios):
  if isinstance(strides, (int, np.integer)):
    strides = [strides]
  strides = list(strides)
  if not strides:
    raise ConfigError("strides=[]; expected at least one feature stride")
  if isinstance(sizes, (int, float, np.number)) or len(sizes) != len(strides):
    raise ConfigError(f"sizes={sizes!r}; expected one entry (a size or a sequence of "
                      f"sizes) per stride of {strides}")
  ratios = list(aspect_ratios)
  if ratios and all(isinstance(r, Sequence) for r in ratios):
    if len(ratios) != len(strides):
      raise ConfigError(f"aspect_ratios has {len(ratios)} levels; expected one per stride "
                        f"of {strides} (or one sequence shared by all levels)")
  else:
    ratios = [aspect_ratios] * len(strides)
  return strides, list(sizes), ratios


def yolo_grid_boxes(image_size, grid_size, box_sizes):
  """YOLO grid boxes (Redmon et al. 2016): the image is split into an S x S grid (or
  (Sy, Sx)); each cell holds B boxes centred in the cell, of sizes `box_sizes`, a
  sequence of B (width, height) pairs in pixels (e.g. one cell's size, or YOLOv2-style
  priors). Cells need not be whole pixels. Returns [Sy * Sx * B, 4] float32 xyxy,
  cell-major then box.
  """
  height, width = _pair(image_size, "image_size")
  grid_h, grid_w = _pair(grid_size, "grid_size")
  try:
    pairs = [(float(w), float(h)) for w, h in box_sizes]
  except (TypeError, ValueError):
    raise ConfigError(f"box_sizes={box_sizes!r}; expected a sequence of (width, height) "
                      "pairs") from None
  if not pairs or not all(math.isfinite(v) and v > 0 for p in pairs for v in p):
    raise ConfigError(f"box_sizes={box_sizes!r}; expected a non-empty sequence of positive "
                      "(width, height) pairs")
  return _cell_boxes(grid_h, grid_w, height / grid_h, width / grid_w, 0.5,
                     [w for w, _ in pairs], [h for _, h in pairs])


def ssd_scales(num_maps, s_min=0.2, s_max=0.9):
  """SSD scales (Liu et al. 2016, eq. 4): s_k = s_min + (s_max - s_min) (k - 1) / (m - 1)
  for k = 1..m, plus s_{m+1} = s_max + (s_max - s_min) / (m - 1) (extrapolated; the paper
  leaves it open) for the last map's extra box. With one map: [s_min, s_max]."""
  if isinstance(num_maps, bool) or not isinstance(num_maps, (int, np.integer)) or num_maps < 1:
    raise ConfigError(f"num_maps={num_maps!r}; expected a positive int")
  if not 0 < s_min <= s_max:
    raise ConfigError(f"s_min={s_min!r}, s_max={s_max!r}; expected 0 < s_min <= s_max")
  if num_maps == 1:
    return [float(s_min), float(s_max)]
  step = (s_max - s_min) / (num_maps - 1)
  return [float(s_min + step * k) for k in range(num_maps + 1)]


def ssd_default_boxes(image_size, feature_sizes, s_min=0.2, s_max=0.9,
                      aspect_ratios=(1.0, 2.0, 3.0, 1 / 2, 1 / 3), extra_box=True, *,
                      scales=None, steps=None, clip=False, convention="jaxseg"):
  """SSD default boxes (Liu et al. 2016). Map k (of m, sizes `feature_sizes`, each an int
  or (h, w)) has scale s_k (`ssd_scales`); each cell (i, j) holds, centred at
  ((j + 0.5) / |f_k| W, (i + 0.5) / |f_k| H), a box of width s_k sqrt(a) W and height
  s_k / sqrt(a) H for each aspect ratio a (in order; shared, or one sequence per map),
  then, with `extra_box`, the square-ish box of scale sqrt(s_k s_{k+1}) (ratio 1).
  Returns [sum_k |f_k| A_k, 4] float32 xyxy in pixels, map by map, cell-major then box.

  scales: the m + 1 scales s_1..s_{m+1} instead of `ssd_scales(m, s_min, s_max)`;
  steps: one centre spacing in pixels per map (cell centres (j + 0.5) step);
  clip: relative widths and heights clamped to [0, 1];
  convention="torchvision" (its DefaultBoxGenerator, with scales / steps / clip as given):
  `aspect_ratios` per map lists ratios r > 1 only, and a cell's boxes are (s_k, s_k),
  (s'_k, s'_k), then (s_k sqrt(r), s_k / sqrt(r)), (s_k / sqrt(r), s_k sqrt(r)) per r
  (`extra_box` ignored: always there). `ssd_boxes_per_cell` counts them.
  """
  if convention not in SSD_CONVENTIONS:
    raise ConfigError(f"convention={convention!r}; expected one of {SSD_CONVENTIONS}")
  height, width = _pair(image_size, "image_size")
  if isinstance(feature_sizes, (int, np.integer)):
    feature_sizes = [feature_sizes]
  feature_sizes = [_pair(f, "feature_sizes entry") for f in feature_sizes]
  if not feature_sizes:
    raise ConfigError("feature_sizes=[]; expected at least one feature map size")
  _, _, ratios = _levels(list(range(len(feature_sizes))), [1] * len(feature_sizes),
                         aspect_ratios)
  m = len(feature_sizes)
  if scales is None:
    scales = ssd_scales(m, s_min, s_max)
  scales = _positive_list(scales, "scales")
  if len(scales) != m + 1:
    raise ConfigError(f"scales={scales!r}; expected {m + 1} (one per map and one more)")
  if steps is not None:
    steps = _positive_list(steps, "steps")
    if len(steps) != m:
      raise ConfigError(f"steps={steps!r}; expected one per feature map ({m})")
  out = []
  for k, ((fh, fw), rs) in enumerate(zip(feature_sizes, ratios)):
    rs = _positive_list(rs, "aspect_ratios") if len(rs) else []
    extra = math.sqrt(scales[k] * scales[k + 1])
    if convention == "torchvision":
      rel_w, rel_h = [scales[k], extra], [scales[k], extra]
      for a in rs:
        rel_w += [scales[k] * math.sqrt(a), scales[k] / math.sqrt(a)]
        rel_h += [scales[k] / math.sqrt(a), scales[k] * math.sqrt(a)]
    else:
      rel_w = [scales[k] * math.sqrt(a) for a in rs]
      rel_h = [scales[k] / math.sqrt(a) for a in rs]
      if extra_box:
        rel_w.append(extra)
        rel_h.append(extra)
    if clip:
      rel_w = [min(max(v, 0.0), 1.0) for v in rel_w]
      rel_h = [min(max(v, 0.0), 1.0) for v in rel_h]
    step_h, step_w = (steps[k], steps[k]) if steps is not None else (height / fh, width / fw)
    out.append(_cell_boxes(fh, fw, step_h, step_w, 0.5,
                           [w * width for w in rel_w], [h * height for h in rel_h]))
  return np.concatenate(out, axis=0)


SSD_CONVENTIONS = ("jaxseg", "torchvision")


def ssd_boxes_per_cell(aspect_ratios, num_maps, extra_box=True, convention="jaxseg"):
  """Default boxes per cell of each of `num_maps` maps of `ssd_default_boxes`."""
  _, _, ratios = _levels(list(range(num_maps)), [1] * num_maps, aspect_ratios)
  if convention == "torchvision":
    return [2 + 2 * len(r) for r in ratios]
  return [len(r) + int(bool(extra_box)) for r in ratios]
