"""Region proposals without a network, for R-CNN: selective search and sliding windows.

* `selective_search` (Uijlings, van de Sande, Gevers & Smeulders, IJCV 2013): initial
  regions from the graph-based segmentation of Felzenszwalb & Huttenlocher (IJCV 2004,
  `skimage.segmentation.felzenszwalb`), then hierarchical grouping: repeatedly merge the
  most similar pair of adjacent regions, similarity = sum of the selected measures colour
  (C), texture (T), size (S) and fill (F); every region of the hierarchy gives a box.
  Diversified over colour spaces, segmentation scales k and similarity sets; ranked as in
  the paper. Used by R-CNN (Girshick et al. CVPR 2014) in its 'fast' mode.
* `sliding_windows`: every window of the given sizes and aspect ratios on a regular grid,
  the exhaustive baseline of the lecture ("huge number of locations and scales").

Host-side NumPy, not `jit`-able: selective search is data-dependent graph work (a heap
of region pairs whose size changes with every merge). Call it on the host, e.g. while
preparing a dataset, and pad its `[P, 4]` output to `config.max_boxes` before it enters a
jitted step. `sliding_windows` is NumPy too, but its output shape is a pure function of
its arguments (`num_sliding_windows`), so it can be computed once and used as a constant.

Boxes are absolute pixel xyxy float32, x2/y2 exclusive-continuous (DESIGN.md): a box over
pixel columns c0..c1 has x1 = c0, x2 = c1 + 1; every box here has integer coordinates.
Errors are `jaxseg.errors.ConfigError` (bad parameters) and `DataError` (bad image); that
leaf module is the only jaxseg import of this op.
"""
from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from jaxseg.errors import ConfigError, DataError

# The two settings of Uijlings et al. (IJCV 2013, section 5.2 and table 5): 'fast'
# (8 strategies, used by R-CNN) and 'quality' (80 strategies).
MODES = {
    "fast": dict(colour_spaces=("hsv", "lab"), scales=(50, 100),
                 similarities=("CTSF", "TSF")),
    "quality": dict(colour_spaces=("hsv", "lab", "rgi", "h", "i"),
                    scales=(50, 100, 150, 300), similarities=("CTSF", "TSF", "F", "S")),
}
COLOUR_SPACES = ("rgb", "hsv", "lab", "rgi", "h", "i")
COLOUR_BINS = 25  # per channel (paper, section 3.2)
TEXTURE_BINS = 10  # per orientation and channel
TEXTURE_ORIENTATIONS = 8
TEXTURE_SIGMA = 1.0
# CIE Lab ranges over the sRGB gamut (D65), to map L, a, b onto [0, 1].
_LAB_RANGE = np.array([[0.0, 100.0], [-86.2, 98.3], [-107.9, 94.5]], np.float32)


# ----------------------------------------------------------------------------
# Validation.


def _check_image(image) -> np.ndarray:
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise DataError(f"selective_search needs an RGB image of shape [H, W, 3] and dtype "
                    f"uint8, got shape {image.shape} and dtype {image.dtype}")
  if image.shape[0] < 1 or image.shape[1] < 1:
    raise DataError(f"selective_search needs a non-empty image, got shape {image.shape}")
  return image


def _positive_int(value, name: str, minimum: int = 1) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ConfigError(f"{name}={value!r}; expected an integer >= {minimum}")
  return int(value)


def _positive_number(value, name: str) -> float:
  try:
    number = float(value)
  except (TypeError, ValueError):
    number = math.nan
  if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
    raise ConfigError(f"{name}={value!r}; expected a finite number > 0")
  return number


def _numbers(values, name: str) -> tuple[float, ...]:
  if isinstance(values, (int, float, np.integer, np.floating)):
    values = (values,)
  try:
    values = tuple(values)
  except TypeError:
    raise ConfigError(f"{name}={values!r}; expected a number or a sequence of numbers") \
        from None
  if not values:
    raise ConfigError(f"{name} is empty; expected at least one value")
  return tuple(_positive_number(v, name) for v in values)


def parse_similarity(similarity: str) -> frozenset[str]:
  """'CTSF' -> {'C', 'T', 'S', 'F'}: which of colour, texture, size and fill are summed
  (each with weight 1, as in the paper's combinations)."""
  if not isinstance(similarity, str) or not similarity:
    raise ConfigError(f"similarity={similarity!r}; expected a non-empty string of the "
                      f"letters C (colour), T (texture), S (size), F (fill), e.g. 'CTSF'")
  letters = similarity.upper()
  if set(letters) - set("CTSF") or len(set(letters)) != len(letters):
    raise ConfigError(f"similarity={similarity!r}; expected distinct letters of C (colour), "
                      f"T (texture), S (size), F (fill), e.g. 'CTSF' or 'TSF'")
  return frozenset(letters)


# ----------------------------------------------------------------------------
# Colour spaces and region features.


def colour_space(image: np.ndarray, name: str) -> np.ndarray:
  """uint8 RGB [H, W, 3] -> float32 [H, W, C] in [0, 1] in colour space `name`:
  'rgb', 'hsv', 'lab' (L, a, b rescaled by their sRGB ranges), 'rgi' (normalized r, g and
  intensity), 'h' (hue) or 'i' (intensity); C = 1 for 'h' and 'i'."""
  from skimage import color  # pylint: disable=g-import-not-at-top
  image = _check_image(image)
  rgb = image.astype(np.float32) / 255
  if name == "rgb":
    out = rgb
  elif name in ("hsv", "h"):
    out = color.rgb2hsv(image).astype(np.float32)
    out = out[..., :1] if name == "h" else out
  elif name == "lab":
    lab = color.rgb2lab(image).astype(np.float32)
    out = (lab - _LAB_RANGE[:, 0]) / (_LAB_RANGE[:, 1] - _LAB_RANGE[:, 0])
  elif name in ("rgi", "i"):
    total = rgb.sum(-1, keepdims=True)
    intensity = total / 3
    if name == "i":
      out = intensity
    else:
      safe = np.where(total > 0, total, 1)
      rg = np.where(total > 0, rgb[..., :2] / safe, 1 / 3)
      out = np.concatenate([rg, intensity], -1)
  else:
    raise ConfigError(f"colour space {name!r}; expected one of {COLOUR_SPACES}")
  return np.clip(out, 0, 1).astype(np.float32)


def _colour_bins(space: np.ndarray, bins: int) -> np.ndarray:
  """[C, H*W] feature index (channel c's bins at c*bins ...) of every pixel."""
  c = space.shape[-1]
  b = np.minimum((space.reshape(-1, c).T * bins).astype(np.int32), bins - 1)
  return b + (np.arange(c, dtype=np.int32) * bins)[:, None]


def _texture_bins(space: np.ndarray, bins: int, orientations: int, sigma: float) -> np.ndarray:
  """[C*O, H*W] feature index of every pixel's oriented Gaussian-derivative response.

  Per channel: gx, gy = first Gaussian derivatives (sigma); orientation o (angle 2 pi o/O)
  responds max(0, cos gx + sin gy), so opposite orientations differ by their sign;
  responses are divided by the channel's maximum and quantized into `bins` bins.
  """
  h, w, c = space.shape
  theta = 2 * np.pi * np.arange(orientations) / orientations
  cos = np.cos(theta).astype(np.float32)[:, None]
  sin = np.sin(theta).astype(np.float32)[:, None]
  out = np.empty((c * orientations, h * w), np.int32)
  offsets = (np.arange(c * orientations, dtype=np.int32) * bins)[:, None]
  for ch in range(c):
    plane = space[..., ch].astype(np.float32)
    gy = ndimage.gaussian_filter(plane, sigma, order=(1, 0)).ravel()
    gx = ndimage.gaussian_filter(plane, sigma, order=(0, 1)).ravel()
    resp = np.maximum(cos * gx + sin * gy, 0)  # [O, H*W]
    top = resp.max()
    scale = np.float32(bins / top if top > 0 else 0)
    rows = slice(ch * orientations, (ch + 1) * orientations)
    out[rows] = np.minimum((resp * scale).astype(np.int32), bins - 1) + offsets[rows]
  return out


def _region_histograms(labels: np.ndarray, feature_bins: np.ndarray, num_features: int,
                       num_regions: int) -> np.ndarray:
  """L1-normalized [R, num_features] histograms of the pixels of every label
  (`feature_bins` [K, H*W]: K feature indices per pixel)."""
  idx = (labels.reshape(1, -1) * num_features).astype(np.int64) + feature_bins
  counts = np.bincount(idx.ravel(), minlength=num_regions * num_features)
  counts = counts.reshape(num_regions, num_features).astype(np.float64)
  return counts / np.maximum(counts.sum(1, keepdims=True), 1)


def _check_labels(labels) -> tuple[np.ndarray, int]:
  labels = np.asarray(labels)
  if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer) or labels.size == 0:
    raise DataError(f"labels must be a non-empty [H, W] integer array, got shape "
                    f"{labels.shape} and dtype {labels.dtype}")
  num = int(labels.max()) + 1
  if labels.min() < 0 or np.bincount(labels.ravel(), minlength=num).min() == 0:
    raise DataError("labels must be 0..R-1 with every label present (as felzenszwalb gives)")
  return labels.astype(np.int64), num


def colour_histograms(labels, space, bins: int = COLOUR_BINS) -> np.ndarray:
  """Colour histogram of every region (paper, section 3.2): `bins` bins per channel of
  `space` ([H, W, C] in [0, 1], e.g. `colour_space(...)`), concatenated, L1-normalized
  -> [R, C*bins]; `labels` [H, W] holds the regions 0..R-1."""
  labels, num = _check_labels(labels)
  space = np.asarray(space, np.float32)
  return _region_histograms(labels, _colour_bins(space, bins), space.shape[-1] * bins, num)


def texture_histograms(labels, space, bins: int = TEXTURE_BINS,
                       orientations: int = TEXTURE_ORIENTATIONS,
                       sigma: float = TEXTURE_SIGMA) -> np.ndarray:
  """Texture histogram of every region (paper, section 3.2, SIFT-like): Gaussian
  derivatives (sigma 1) in 8 orientations per channel, 10 bins each, concatenated,
  L1-normalized -> [R, C*orientations*bins]."""
  labels, num = _check_labels(labels)
  space = np.asarray(space, np.float32)
  feats = _texture_bins(space, bins, orientations, sigma)
  return _region_histograms(labels, feats, space.shape[-1] * orientations * bins, num)


# ----------------------------------------------------------------------------
# Similarities (paper, section 3.2); all broadcast over leading axes.


def histogram_intersection(a, b):
  """sum_k min(a_k, b_k) over the last axis: 1 for equal L1-normalized histograms, 0 for
  disjoint ones (s_colour and s_texture of the paper)."""
  return np.minimum(a, b).sum(-1)


def size_similarity(size_i, size_j, image_size):
  """1 - (size_i + size_j) / size_im: merge small regions first."""
  return 1 - (np.asarray(size_i, np.float64) + size_j) / image_size


def _union_box_area(box_i, box_j):
  box_i, box_j = np.asarray(box_i), np.asarray(box_j)
  lo = np.minimum(box_i[..., :2], box_j[..., :2])
  hi = np.maximum(box_i[..., 2:], box_j[..., 2:])
  return np.prod((hi - lo).astype(np.float64), -1)


def fill_similarity(box_i, box_j, size_i, size_j, image_size):
  """1 - (BBsize_ij - size_i - size_j) / size_im, BBsize_ij the area of the box around
  both regions (xyxy boxes): merge regions that fill each other's gaps first."""
  return 1 - (_union_box_area(box_i, box_j) - size_i - size_j) / image_size


def merge_histograms(hist_i, size_i, hist_j, size_j):
  """Histogram of the union of two regions: (size_i h_i + size_j h_j) / (size_i + size_j),
  exact for L1-normalized counts (paper, section 3.2)."""
  return (size_i * np.asarray(hist_i) + size_j * np.asarray(hist_j)) / (size_i + size_j)


# ----------------------------------------------------------------------------
# Hierarchical grouping.


def _region_boxes(labels: np.ndarray, num: int) -> np.ndarray:
  slices = ndimage.find_objects(labels + 1, max_label=num)
  return np.array([(sx.start, sy.start, sx.stop, sy.stop) for sy, sx in slices],
                  np.int64).reshape(-1, 4)


def _adjacent_pairs(labels: np.ndarray, num: int) -> np.ndarray:
  a = np.concatenate([labels[:, :-1].ravel(), labels[:-1, :].ravel()])
  b = np.concatenate([labels[:, 1:].ravel(), labels[1:, :].ravel()])
  diff = a != b
  lo, hi = np.minimum(a[diff], b[diff]), np.maximum(a[diff], b[diff])
  keys = np.unique(lo * num + hi)
  return np.stack([keys // num, keys % num], -1)


def region_boxes(labels) -> np.ndarray:
  """xyxy box [R, 4] (int64) of every region 0..R-1 of `labels` [H, W]."""
  return _region_boxes(*_check_labels(labels))


def adjacent_pairs(labels) -> np.ndarray:
  """[E, 2] (i < j, sorted) pairs of regions that touch horizontally or vertically
  (distinct labels of neighbouring pixels, deduplicated with np.unique)."""
  return _adjacent_pairs(*_check_labels(labels))


def hierarchical_grouping(labels, colour_hist=None, texture_hist=None,
                          similarity: str = "CTSF") -> tuple[np.ndarray, np.ndarray]:
  """Hierarchical grouping (paper, algorithm 1) of the regions 0..R-1 of `labels`.

  Repeatedly merges the most similar pair of adjacent regions (ties: the lowest region
  ids) into a new region R, R+1, ...; its histograms are the size-weighted averages
  (`merge_histograms`), its box the union box, and its neighbours those of both parts.
  The similarities of the new region to its neighbours are computed at once (vectorized)
  and pushed on a heap; pairs with a merged-away region are skipped when popped.
  `colour_hist` [R, .] and `texture_hist` [R, .] are needed only if `similarity`
  contains C or T. Returns (boxes [2R-1, 4] float32 of every region in creation order,
  the last being the whole image; merges [R-1, 2] int64, row m = the two regions merged
  into region R+m). Fewer merges if the region adjacency graph is disconnected (never
  the case for a segmentation of one image).
  """
  use = parse_similarity(similarity)
  labels, num = _check_labels(labels)
  sizes = np.bincount(labels.ravel(), minlength=num)
  return _group(num, labels.size, sizes, _region_boxes(labels, num),
                _adjacent_pairs(labels, num), colour_hist, texture_hist, use, similarity)


def _group(num, image_size, sizes, region_box, pairs, colour_hist, texture_hist, use,
           similarity):
  """`hierarchical_grouping` on precomputed region sizes, boxes and adjacent pairs."""
  image_size = float(image_size)
  total = 2 * num - 1
  size = np.zeros(total, np.float64)
  size[:num] = sizes
  boxes = np.zeros((total, 4), np.int64)
  boxes[:num] = region_box
  hists = []
  for letter, hist in (("C", colour_hist), ("T", texture_hist)):
    if letter in use:
      if hist is None or np.ndim(hist) != 2 or np.shape(hist)[0] != num:
        raise DataError(f"similarity {similarity!r} needs the {letter} histograms of all "
                        f"{num} regions, got {None if hist is None else np.shape(hist)}")
      full = np.zeros((total, np.shape(hist)[1]), np.float64)
      full[:num] = hist
      hists.append(full)

  def similarities(i, js):
    """Similarity of region(s) i with regions js (vectorized)."""
    s = np.zeros(len(js))
    for h in hists:
      s += histogram_intersection(h[i], h[js])
    if "S" in use:
      s += size_similarity(size[i], size[js], image_size)
    if "F" in use:
      s += fill_similarity(boxes[i], boxes[js], size[i], size[js], image_size)
    return s

  neighbours = [set() for _ in range(num)]
  for i, j in pairs.tolist():
    neighbours[i].add(j)
    neighbours[j].add(i)
  heap = list(zip((-similarities(pairs[:, 0], pairs[:, 1])).tolist(),
                  pairs[:, 0].tolist(), pairs[:, 1].tolist()))
  heapq.heapify(heap)
  alive = [True] * num + [False] * (num - 1)
  merges = []
  t = num
  while heap:
    _, i, j = heapq.heappop(heap)
    if not (alive[i] and alive[j]):
      continue
    size[t] = size[i] + size[j]
    boxes[t, :2] = np.minimum(boxes[i, :2], boxes[j, :2])
    boxes[t, 2:] = np.maximum(boxes[i, 2:], boxes[j, 2:])
    for h in hists:
      h[t] = merge_histograms(h[i], size[i], h[j], size[j])
    alive[i] = alive[j] = False
    alive[t] = True
    near = neighbours[i] | neighbours[j]
    near.discard(i)
    near.discard(j)
    neighbours[i] = neighbours[j] = None
    for n in near:
      other = neighbours[n]
      other.discard(i)
      other.discard(j)
      other.add(t)
    neighbours.append(near)
    if near:
      js = np.fromiter(sorted(near), np.int64, len(near))
      for s, n in zip((-similarities(t, js)).tolist(), js.tolist()):
        heapq.heappush(heap, (s, n, t))
    merges.append((i, j))
    t += 1
  return boxes[:t].astype(np.float32), np.array(merges, np.int64).reshape(-1, 2)


# ----------------------------------------------------------------------------
# Selective search.


def selective_search(image, mode: str = "fast", *, scales=None, sigma: float = 0.8,
                     min_size: int | None = None, colour_spaces: Sequence[str] | None = None,
                     similarities: Sequence[str] | None = None, max_proposals: int = 2000,
                     min_box_size: int = 0, seed: int = 0) -> np.ndarray:
  """Selective search (Uijlings et al. IJCV 2013) -> boxes [P, 4] xyxy float32, P <=
  max_proposals, best-ranked first, no duplicates.

  One strategy per (colour space, k, similarity set): segment the image in that colour
  space with Felzenszwalb & Huttenlocher (k = `scale`, `sigma`, min_size = `min_size` or
  k as in the authors' code), then `hierarchical_grouping`. `mode` picks the paper's
  diversification: 'fast' = HSV, Lab x k 50, 100 x CTSF, TSF (8 strategies, R-CNN's);
  'quality' = HSV, Lab, rgI, H, I x k 50, 100, 150, 300 x CTSF, TSF, F, S (80). Explicit
  `scales`, `colour_spaces` (see `colour_space`) or `similarities` (e.g. ('CTSF',))
  replace that part of the mode.

  Ranking (paper, section 3.3): in each hierarchy the region created last (the whole
  image) has position 1, the one before 2, ...; each position is multiplied by an
  independent uniform [0, 1) number (`seed`); boxes of all strategies are sorted by that
  value and later duplicates dropped. Boxes narrower or lower than `min_box_size` px are
  dropped (R-CNN's code used 20 on PASCAL; default 0 keeps all). Deterministic for a seed.
  Host-side NumPy (not jit-able); measured 0.7-2.3 s per VOC-sized (~500x375) image in
  'fast' mode and 3-8 s in 'quality' mode on one core of a 2-core CPU, more when the
  machine is busy (docs/proposals.md); three quarters of it is scikit-image's
  Felzenszwalb segmentation.
  """
  from skimage.segmentation import felzenszwalb  # pylint: disable=g-import-not-at-top
  image = _check_image(image)
  if mode not in MODES:
    raise ConfigError(f"mode={mode!r}; expected one of {tuple(MODES)}")
  max_proposals = _positive_int(max_proposals, "max_proposals")
  min_box_size = _positive_int(min_box_size, "min_box_size", 0)
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
    raise ConfigError(f"seed={seed!r}; expected an integer")
  settings = MODES[mode]
  scales = _numbers(settings["scales"] if scales is None else scales, "scales")
  sigma_ok = isinstance(sigma, (int, float, np.number)) and math.isfinite(sigma) and sigma >= 0
  if isinstance(sigma, bool) or not sigma_ok:
    raise ConfigError(f"sigma={sigma!r}; expected a finite number >= 0")
  if min_size is not None:
    min_size = _positive_int(min_size, "min_size", 0)
  colour_spaces = settings["colour_spaces"] if colour_spaces is None else colour_spaces
  if isinstance(colour_spaces, str):
    colour_spaces = (colour_spaces,)
  colour_spaces = tuple(colour_spaces)
  for name in colour_spaces:
    if name not in COLOUR_SPACES:
      raise ConfigError(f"colour space {name!r}; expected one of {COLOUR_SPACES}")
  if not colour_spaces:
    raise ConfigError("colour_spaces is empty; expected at least one colour space")
  similarities = settings["similarities"] if similarities is None else similarities
  if isinstance(similarities, str):
    similarities = (similarities,)
  similarities = tuple(similarities)
  if not similarities:
    raise ConfigError("similarities is empty; expected e.g. ('CTSF', 'TSF')")
  uses = [parse_similarity(s) for s in similarities]
  need_colour = any("C" in u for u in uses)
  need_texture = any("T" in u for u in uses)

  rng = np.random.default_rng(seed)
  all_boxes, all_values = [], []
  for name in colour_spaces:
    space = colour_space(image, name)
    channels = space.shape[-1]
    colour_bins = _colour_bins(space, COLOUR_BINS) if need_colour else None
    texture_bins = (_texture_bins(space, TEXTURE_BINS, TEXTURE_ORIENTATIONS, TEXTURE_SIGMA)
                    if need_texture else None)
    seg_input = space if channels > 1 else space[..., 0]
    for k in scales:
      labels = felzenszwalb(seg_input, scale=k, sigma=sigma,
                            min_size=int(k) if min_size is None else min_size,
                            channel_axis=-1 if channels > 1 else None)
      num = int(labels.max()) + 1
      sizes = np.bincount(labels.ravel(), minlength=num)
      region_box = _region_boxes(labels, num)
      pairs = _adjacent_pairs(labels, num)
      colour_hist = texture_hist = None
      if need_colour:
        colour_hist = _region_histograms(labels, colour_bins, channels * COLOUR_BINS, num)
      if need_texture:
        texture_hist = _region_histograms(
            labels, texture_bins, channels * TEXTURE_ORIENTATIONS * TEXTURE_BINS, num)
      for sim, use in zip(similarities, uses):
        boxes, _ = _group(num, labels.size, sizes, region_box, pairs, colour_hist,
                          texture_hist, use, sim)
        position = np.arange(len(boxes), 0, -1, dtype=np.float64)  # last created: 1
        all_boxes.append(boxes)
        all_values.append(position * rng.random(len(boxes)))
  boxes = np.concatenate(all_boxes)
  values = np.concatenate(all_values)
  if min_box_size:
    keep = ((boxes[:, 2] - boxes[:, 0]) >= min_box_size) & (
        (boxes[:, 3] - boxes[:, 1]) >= min_box_size)
    boxes, values = boxes[keep], values[keep]
  boxes = boxes[np.argsort(values, kind="stable")]
  _, first = np.unique(boxes, axis=0, return_index=True)
  return boxes[np.sort(first)][:max_proposals]


# ----------------------------------------------------------------------------
# Sliding windows.


def _window_grid(height: int, width: int, scales, aspect_ratios, stride_fraction, strides,
                 placement: str):
  """Validated [(w, h, sx, sy, nx, ny)] per (scale, aspect ratio)."""
  height = _positive_int(height, "image_height")
  width = _positive_int(width, "image_width")
  scales = _numbers(scales, "scales")
  aspect_ratios = _numbers(aspect_ratios, "aspect_ratios")
  if placement not in ("inside", "clip"):
    raise ConfigError(f"placement={placement!r}; expected 'inside' or 'clip'")
  if strides is None:
    stride_fraction = _positive_number(stride_fraction, "stride_fraction")
    per_scale = [None] * len(scales)
  else:
    per_scale = [int(_positive_int(s, "strides")) for s in (
        (strides,) * len(scales) if isinstance(strides, (int, np.integer)) else strides)]
    if len(per_scale) != len(scales):
      raise ConfigError(f"strides={strides!r}; expected one int or one per scale "
                        f"({len(scales)})")
  grid = []
  for scale, stride in zip(scales, per_scale):
    for ratio in aspect_ratios:
      w = max(1, math.floor(scale * math.sqrt(ratio) + 0.5))
      h = max(1, math.floor(scale / math.sqrt(ratio) + 0.5))
      if stride is None:
        sx = max(1, math.floor(stride_fraction * w + 0.5))
        sy = max(1, math.floor(stride_fraction * h + 0.5))
      else:
        sx = sy = stride
      if placement == "inside":
        nx = (width - w) // sx + 1 if w <= width else 0
        ny = (height - h) // sy + 1 if h <= height else 0
      else:
        # Enough windows to reach the far edge, none starting outside the image.
        nx = min(-(-max(width - w, 0) // sx) + 1, -(-width // sx))
        ny = min(-(-max(height - h, 0) // sy) + 1, -(-height // sy))
      grid.append((w, h, sx, sy, nx, ny))
  return grid, height, width


def num_sliding_windows(image_height: int, image_width: int, scales,
                        aspect_ratios=(1.0,), stride_fraction: float = 0.5, strides=None,
                        placement: str = "inside") -> int:
  """Number of windows `sliding_windows` gives: sum over (scale, ratio) of nx * ny, with
  per axis (window w, stride s, image W): 'inside': floor((W - w) / s) + 1 if w <= W,
  else 0; 'clip': min(ceil(max(W - w, 0) / s) + 1, ceil(W / s)) (the second term only
  matters for strides larger than the window)."""
  grid, _, _ = _window_grid(image_height, image_width, scales, aspect_ratios,
                            stride_fraction, strides, placement)
  return sum(nx * ny for *_, nx, ny in grid)


def sliding_windows(image_height: int, image_width: int, scales, aspect_ratios=(1.0,),
                    stride_fraction: float = 0.5, strides=None,
                    placement: str = "inside") -> np.ndarray:
  """Every sliding window -> [N, 4] xyxy float32, N = `num_sliding_windows(...)` (a pure
  function of the arguments, so the shape is static).

  A window of scale s (px) and aspect ratio a (= width / height) is w = round(s sqrt(a))
  by h = round(s / sqrt(a)) px (area about s^2). Stride per axis: `strides` (one int for
  all scales or one per scale, in px) or round(stride_fraction * w) resp. h (at least 1).
  placement='inside': only windows entirely inside the image, the grid centred (equal
  margins left and right, up to a pixel); windows larger than the image are omitted.
  placement='clip': the grid starts at (0, 0) and continues until the image is covered;
  windows are clipped to the image (a window larger than the image becomes the whole
  extent along that axis), so clipped windows can coincide. Order: scales, then aspect
  ratios, then rows (y), then columns (x).
  """
  grid, height, width = _window_grid(image_height, image_width, scales, aspect_ratios,
                                     stride_fraction, strides, placement)
  out = []
  for w, h, sx, sy, nx, ny in grid:
    if nx == 0 or ny == 0:
      continue
    if placement == "inside":
      x0 = (width - w - (nx - 1) * sx) // 2
      y0 = (height - h - (ny - 1) * sy) // 2
    else:
      x0 = y0 = 0
    x1 = x0 + sx * np.arange(nx)
    y1 = y0 + sy * np.arange(ny)
    yy, xx = np.meshgrid(y1, x1, indexing="ij")
    box = np.stack([xx, yy, xx + w, yy + h], -1).reshape(-1, 4)
    if placement == "clip":
      box = np.minimum(box, [width, height, width, height])
    out.append(box)
  if not out:
    return np.zeros((0, 4), np.float32)
  return np.concatenate(out).astype(np.float32)
