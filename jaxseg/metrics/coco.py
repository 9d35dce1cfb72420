"""COCO detection, segmentation and keypoint evaluation, equal to pycocotools' COCOeval.

The metric of the COCO detection challenge (Lin et al., "Microsoft COCO: Common Objects in
Context", ECCV 2014, and cocodataset.org/#detection-eval) and of its keypoint challenge
(object keypoint similarity, OKS: cocodataset.org/#keypoints-eval), reimplemented from the
definitions with NumPy. `evaluate(gt, dt, iou_type)` gives the same numbers as
``COCOeval(...).evaluate(); .accumulate(); .summarize()`` (tested to 1e-6; in practice
bit for bit), without its Python loops over images x categories x area ranges:

- IoUs (bbox, `jaxseg.metrics.boxes`), mask IoUs (segm, via `jaxseg.formats.rle`) or OKS
  (keypoints) are computed for every (detection, ground truth) pair of the same image (and
  category) at once;
- the greedy matching runs once for all images, categories, area ranges and IoU
  thresholds, one step per detection rank (a detection is matched after the higher-scored
  detections of its image and category);
- accumulation sorts all detections once (category, score, image, rank: what COCOeval's
  ``np.argsort(-scores, kind='mergesort')`` over the images' concatenation gives) and
  works on the true positives only (see `_accumulate`), with cumulative sums,
  `searchsorted` and segmented maxima instead of loops over categories x area ranges x
  max_dets x thresholds.

What COCOeval does, and this module therefore does too:
- Boxes are COCO ``[x, y, w, h]`` here (this is the IO boundary); IoU of a crowd ground
  truth is intersection / detection area. A ground truth is *ignored* if it is a crowd
  (keypoints: or has ``num_keypoints == 0``) or its ``area`` field lies outside the area
  range. Detections matched to an ignored ground truth are ignored, crowds can absorb any
  number of detections and are tried only when no regular ground truth matches. Unmatched
  detections whose area lies outside the area range are ignored.
- A ground truth's ``ignore`` key has no effect (COCOeval overwrites it with ``iscrowd``).
- Matches are stored as ground-truth ids, 0 meaning "none": a ground truth with id 0 can be
  matched (and so used up) but never counts as a true positive.
- Per image and category only the ``max_dets[-1]`` best-scored detections count (stable
  sort on score); ties between images are broken by image id, then rank.
- Detection areas follow COCO.loadRes, decided by the *first* detection: if it has a
  ``bbox``, every area is ``w * h`` of the box (also for segm); else, if it has a
  ``segmentation``, the mask area; else the extent of the keypoints. A segm detection
  without ``segmentation`` is its box as a polygon; a bbox detection without ``bbox`` is
  the bounding box of its mask.
- precision / recall / scores are -1 for categories (and area ranges) without regular
  ground truth; summary entries with nothing to average are -1.

Where COCOeval would crash or silently drop data, this module raises `DataError`
(detections or ground truths on images that are not in the ground truth, unknown category
ids, malformed boxes, missing or non-finite scores, duplicate ground-truth ids) or
`ConfigError` (a bbox/segm summary without 3 max_dets, keypoints with use_cats=False),
or chooses: an empty detection list is valid and scores AP = AR = 0 for
every category with ground truth; a ground truth without ``iscrowd`` is not a crowd; one
without ``area`` gets its box area (segm: its mask area); a keypoint ground truth without
``num_keypoints`` counts its labelled keypoints.
"""
from __future__ import annotations

import dataclasses
import itertools
import operator
from typing import Any, Sequence

import numpy as np

from jaxseg.errors import ConfigError, DataError
from jaxseg.formats import rle as masks
from jaxseg.metrics.boxes import box_iou

IOU_TYPES = ("bbox", "segm", "keypoints")

# The 17 per-keypoint OKS sigmas of the COCO keypoint challenge (nose, eyes, ears,
# shoulders, elbows, wrists, hips, knees, ankles).
COCO_KEYPOINT_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62,
                                 1.07, 1.07, .87, .87, .89, .89]) / 10.0

DETECTION_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                        "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
KEYPOINT_STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl",
                       "AR", "AR50", "AR75", "ARm", "ARl")


def _thresholds(lo: float, hi: float, step: float) -> np.ndarray:
  """COCOeval's thresholds (linspace, not arange, so 0.75 is exactly 0.75)."""
  return np.linspace(lo, hi, int(np.round((hi - lo) / step)) + 1, endpoint=True)


@dataclasses.dataclass
class Params:
  """Evaluation settings, as COCOeval's Params (snake_case names).

  ``img_ids`` / ``cat_ids`` None = all images / categories of the ground truth.
  ``area_rng`` are inclusive ``(lo, hi)`` ranges of the ``area`` field, labelled by
  ``area_rng_lbl`` (the summary looks ranges up by label). ``kpt_oks_sigmas`` has one
  sigma per keypoint (default: the 17 COCO ones; pass others for other skeletons).
  """
  iou_type: str = "bbox"
  iou_thrs: Any = None
  rec_thrs: Any = None
  max_dets: Sequence[int] = None
  area_rng: Sequence[Sequence[float]] = None
  area_rng_lbl: Sequence[str] = None
  use_cats: bool = True
  kpt_oks_sigmas: Any = None
  img_ids: Sequence[Any] | None = None
  cat_ids: Sequence[Any] | None = None

  def __post_init__(self):
    if self.iou_type not in IOU_TYPES:
      raise ConfigError(f"unknown iou_type {self.iou_type!r}; expected one of {IOU_TYPES}")
    kp = self.iou_type == "keypoints"
    if self.iou_thrs is None:
      self.iou_thrs = _thresholds(.5, .95, .05)
    if self.rec_thrs is None:
      self.rec_thrs = _thresholds(.0, 1.0, .01)
    if self.max_dets is None:
      self.max_dets = [20] if kp else [1, 10, 100]
    if self.area_rng is None:
      self.area_rng = ([[0 ** 2, 1e5 ** 2], [32 ** 2, 96 ** 2], [96 ** 2, 1e5 ** 2]] if kp
                       else [[0 ** 2, 1e5 ** 2], [0 ** 2, 32 ** 2], [32 ** 2, 96 ** 2],
                             [96 ** 2, 1e5 ** 2]])
    if self.area_rng_lbl is None:
      self.area_rng_lbl = (["all", "medium", "large"] if kp
                           else ["all", "small", "medium", "large"])
    if kp and self.kpt_oks_sigmas is None:
      self.kpt_oks_sigmas = COCO_KEYPOINT_SIGMAS
    self.iou_thrs = np.asarray(self.iou_thrs, np.float64).reshape(-1)
    self.rec_thrs = np.asarray(self.rec_thrs, np.float64).reshape(-1)
    self.max_dets = sorted(int(m) for m in self.max_dets)
    self.area_rng = [[float(lo), float(hi)] for lo, hi in self.area_rng]
    self.area_rng_lbl = list(self.area_rng_lbl)
    if self.kpt_oks_sigmas is not None:
      self.kpt_oks_sigmas = np.asarray(self.kpt_oks_sigmas, np.float64).reshape(-1)
    if not (len(self.iou_thrs) and len(self.rec_thrs) and self.max_dets and self.area_rng):
      raise ConfigError("iou_thrs, rec_thrs, max_dets and area_rng must not be empty")
    if np.any(np.diff(self.rec_thrs) < 0):
      raise ConfigError(f"rec_thrs must be ascending, got {self.rec_thrs.tolist()}")
    if min(self.max_dets) < 0:
      raise ConfigError(f"max_dets must be >= 0, got {self.max_dets}")
    if len(self.area_rng_lbl) != len(self.area_rng):
      raise ConfigError(f"{len(self.area_rng)} area_rng but {len(self.area_rng_lbl)} "
                        "area_rng_lbl")
    if kp and not self.use_cats:
      raise ConfigError("use_cats=False is not supported for keypoints (COCOeval "
                        "computes no OKS then)")


@dataclasses.dataclass
class COCOEvalResult:
  """What COCOeval.accumulate and .summarize give.

  ``precision`` / ``scores`` ``[T, R, K, A, M]`` and ``recall`` ``[T, K, A, M]`` (IoU
  thresholds, recall thresholds, categories ``cat_ids``, area ranges, max_dets), -1 where
  a category has no regular ground truth. ``stats``: the 12 summary numbers (keypoints: 10).
  """
  params: Params
  img_ids: list
  cat_ids: list  # [-1] if not params.use_cats
  precision: np.ndarray
  recall: np.ndarray
  scores: np.ndarray
  stats: np.ndarray
  _lines: list

  def summary_lines(self) -> list[str]:
    """The lines COCOeval.summarize() prints."""
    return list(self._lines)

  def summary(self) -> str:
    return "\n".join(self._lines)

  def stats_dict(self) -> dict[str, float]:
    names = (KEYPOINT_STAT_NAMES if self.params.iou_type == "keypoints"
             else DETECTION_STAT_NAMES)
    return {n: float(s) for n, s in zip(names, self.stats)}

  def per_category_ap(self, area: str = "all", max_dets: int | None = None,
                      iou_thr: float | None = None) -> dict:
    """AP per category id (mean precision over IoU and recall thresholds, as the summary
    computes it); NaN for a category without regular ground truth."""
    p = self.params
    a = p.area_rng_lbl.index(area)
    m = p.max_dets.index(p.max_dets[-1] if max_dets is None else max_dets)
    s = self.precision[..., a, m]
    if iou_thr is not None:
      s = s[np.where(iou_thr == p.iou_thrs)[0]]
    out = {}
    for k, cat in enumerate(self.cat_ids):
      v = s[:, :, k]
      out[cat] = float(np.mean(v[v > -1])) if np.any(v > -1) else float("nan")
    return out


def evaluate(gt: dict, dt: Sequence[dict], iou_type: str = "bbox",
             params: Params | None = None, **overrides) -> COCOEvalResult:
  """Evaluate COCO results ``dt`` against COCO ground truth ``gt``, as COCOeval.

  Args:
    gt: a COCO instances (or person keypoints) dict with ``images``, ``annotations`` and
      ``categories``.
    dt: detections in the COCO results format: dicts with ``image_id``, ``category_id``,
      ``score`` and ``bbox`` [x, y, w, h] / ``segmentation`` (RLE or polygons) /
      ``keypoints`` [x1, y1, v1, ...].
    iou_type: 'bbox', 'segm' or 'keypoints'.
    params: a `Params`; or pass its fields as keywords (``max_dets=(1, 10, 50)``,
      ``use_cats=False``, ``kpt_oks_sigmas=...``).
  Returns:
    a `COCOEvalResult`.
  Raises:
    DataError: malformed ground truth or detections; ConfigError: bad params.
  """
  if params is None:
    params = Params(iou_type=iou_type, **overrides)
  elif params.iou_type != iou_type:
    raise ConfigError(f"params are for iou_type {params.iou_type!r}, not {iou_type!r}")
  elif overrides:
    params = dataclasses.replace(params, **overrides)
  p = params
  g = _Gt(gt, p)
  d = _Dt(dt, g, p)
  ious = _pair_ious(g, d, p)
  matches = _match(g, d, ious, p)
  precision, recall, scores = _accumulate(g, d, matches, p)
  lines, stats = _summarize(p, precision, recall)
  cat_ids = g.cat_ids.tolist() if p.use_cats else [-1]
  return COCOEvalResult(p, g.img_ids.tolist(), cat_ids, precision, recall, scores, stats,
                        lines)


# ---------------------------------------------------------------------------- parsing


def _field(items: Sequence[dict], key: str, what: str, src=None) -> list:
  """``[a[key] for a in items]``; ``src`` maps positions to those reported in errors."""
  try:
    return list(map(operator.itemgetter(key), items))
  except KeyError:
    i = next(i for i, a in enumerate(items) if key not in a)
  except TypeError:
    i = next(i for i, a in enumerate(items) if not isinstance(a, dict))
    raise DataError(f"{what} {i if src is None else int(src[i])} is "
                    f"{type(items[i]).__name__}, expected a dict") from None
  raise DataError(f"{what} {i if src is None else int(src[i])} has no {key!r}: "
                  f"{_short(items[i])}")


def _short(obj, limit: int = 200) -> str:
  s = repr(obj)
  return s if len(s) <= limit else s[:limit] + "..."


def _ids_to_index(ids: list, known: np.ndarray, lookup: dict, what: str, items,
                  kind: str) -> np.ndarray:
  """Positions of ``ids`` in the sorted unique ``known`` ids (DataError for unknown)."""
  try:  # (fromiter is several times faster than asarray for a list of ints)
    arr = np.fromiter(ids, np.int64, len(ids))
  except (TypeError, ValueError, OverflowError):
    arr = np.asarray(ids) if ids else np.zeros((0,), np.int64)
  if arr.ndim == 1 and arr.dtype.kind in "iuf" and known.dtype.kind in "iuf":
    pos = np.minimum(np.searchsorted(known, arr), max(len(known) - 1, 0))
    bad = (known[pos] != arr) if len(known) else np.ones(len(arr), bool)
    if np.any(bad):
      i = int(np.flatnonzero(bad)[0])
      raise DataError(f"{what} {i} has {kind} {ids[i]!r}, which is not in the ground "
                      f"truth: {_short(items[i])}")
    return pos.astype(np.int64)
  out = np.empty(len(ids), np.int64)
  for i, x in enumerate(ids):
    try:
      out[i] = lookup[x]
    except (KeyError, TypeError):
      raise DataError(f"{what} {i} has {kind} {x!r}, which is not in the ground truth: "
                      f"{_short(items[i])}") from None
  return out


def _sorted_ids(ids: list, what: str) -> np.ndarray:
  try:
    unique = sorted(set(ids))
  except TypeError:
    raise DataError(f"{what} ids must be all numbers or all strings") from None
  return np.asarray(unique) if unique else np.zeros((0,), np.int64)


def _boxes(values: list, what: str, items, src=None) -> np.ndarray:
  """[N, 4] float64 xywh boxes; ``src`` maps positions to those reported in errors."""
  at = (lambda i: i) if src is None else (lambda i: int(src[i]))
  try:
    # (fromiter over the flattened lists is ~3x faster than np.asarray of a list of lists)
    ok = bool(np.all(np.fromiter(map(len, values), np.int64, len(values)) == 4))
    arr = np.fromiter(itertools.chain.from_iterable(values), np.float64, 4 * len(values))
  except (ValueError, TypeError):
    ok = False
  if not ok:
    for i, b in enumerate(values):
      try:
        b = np.asarray(b, np.float64)
      except (ValueError, TypeError):
        b = None
      if b is None or b.shape != (4,):
        raise DataError(f"{what} {at(i)} has bbox {_short(values[i])}; expected 4 numbers "
                        f"[x, y, width, height]: {_short(items[i])}")
  arr = arr.reshape(-1, 4)
  bad = ~np.all(np.isfinite(arr), axis=1) | (arr[:, 2] < 0) | (arr[:, 3] < 0)
  if np.any(bad):
    i = int(np.flatnonzero(bad)[0])
    raise DataError(f"{what} {at(i)} has bbox {values[i]!r}; expected finite [x, y, width, "
                    f"height] with width, height >= 0")
  return arr


def _numbers(values: list, what: str, key: str, items, src=None) -> np.ndarray:
  try:
    arr = np.fromiter(values, np.float64, len(values))
    ok = True
  except (ValueError, TypeError):
    ok = False
  if not ok or not np.all(np.isfinite(arr)):
    for i, v in enumerate(values):
      if not isinstance(v, (int, float, np.number)) or isinstance(v, bool) or (
          not np.isfinite(v)):
        raise DataError(f"{what} {i if src is None else int(src[i])} has {key} {v!r}; "
                        f"expected a finite number: "
                        f"{_short(items[i])}")
  return arr


def _keypoints(values: list, k: int, what: str, src=None) -> np.ndarray:
  """[N, k, 3] float64 keypoints; ``src`` maps positions to those reported in errors."""
  try:
    arr = np.asarray(values, np.float64)
    ok = arr.ndim == 2 and arr.shape[1] == 3 * k or len(values) == 0
  except (ValueError, TypeError):
    ok = False
  if not ok:
    for i, v in enumerate(values):
      try:
        n = np.asarray(v, np.float64).shape
      except (ValueError, TypeError):
        n = None
      if n != (3 * k,):
        raise DataError(f"{what} {i if src is None else int(src[i])} has "
                        f"{len(v) if hasattr(v, '__len__') else v!r} "
                        f"keypoint values; expected {3 * k} (x, y, v for each of {k} "
                        f"keypoints, one per kpt_oks_sigmas)")
  return arr.reshape(-1, k, 3)


class _Gt:
  """Ground truth as arrays, sorted by (image, category, file order)."""

  def __init__(self, gt: dict, p: Params):
    if not isinstance(gt, dict):
      raise DataError(f"ground truth must be a COCO dict, got {type(gt).__name__}")
    for key in ("images", "categories"):
      if not isinstance(gt.get(key), list):
        raise DataError(f"ground truth has no {key!r} list")
    images, anns = gt["images"], gt.get("annotations") or []
    if not isinstance(anns, list):
      raise DataError("ground truth 'annotations' must be a list")
    all_img = _sorted_ids(_field(images, "id", "ground-truth image"), "image")
    self.all_img_ids = all_img
    self.img_lookup = {x: i for i, x in enumerate(all_img.tolist())}
    self.img_sizes = {}
    for im in images:
      if "height" in im and "width" in im:
        try:
          self.img_sizes[im["id"]] = (int(im["height"]), int(im["width"]))
        except (TypeError, ValueError):
          raise DataError(f"ground-truth image {im['id']!r} has height={im['height']!r}, "
                          f"width={im['width']!r}; expected integers") from None
    all_cat = _sorted_ids(_field(gt["categories"], "id", "category"), "category")
    self.all_cat_ids = all_cat
    self.cat_lookup = {x: i for i, x in enumerate(all_cat.tolist())}
    # Evaluated subsets (COCOeval's params.imgIds / catIds).
    self.img_ids = all_img if p.img_ids is None else _sorted_ids(list(p.img_ids), "image")
    self.cat_ids = all_cat if p.cat_ids is None else _sorted_ids(list(p.cat_ids), "category")
    for ids, lookup, what in ((self.img_ids, self.img_lookup, "image"),
                              (self.cat_ids, self.cat_lookup, "category")):
      unknown = [x for x in ids.tolist() if x not in lookup]
      if unknown:
        raise DataError(f"params {what} ids {unknown[:5]} are not in the ground truth")
    # Position in the evaluated subsets, -1 outside.
    self.img_pos = np.full(len(all_img), -1, np.int64)
    self.img_pos[[self.img_lookup[x] for x in self.img_ids.tolist()]] = np.arange(
        len(self.img_ids))
    self.cat_pos = np.full(len(all_cat), -1, np.int64)
    self.cat_pos[[self.cat_lookup[x] for x in self.cat_ids.tolist()]] = np.arange(
        len(self.cat_ids))

    what = "ground-truth annotation"
    ids = _field(anns, "id", what)
    if len(set(ids)) != len(ids):
      seen, dup = set(), None
      for x in ids:
        if x in seen:
          dup = x
          break
        seen.add(x)
      raise DataError(f"ground-truth annotation id {dup!r} occurs more than once")
    img = _ids_to_index(_field(anns, "image_id", what), all_img, self.img_lookup, what,
                        anns, "image_id")
    cat = _ids_to_index(_field(anns, "category_id", what), all_cat, self.cat_lookup, what,
                        anns, "category_id")
    ip, cp = self.img_pos[img], self.cat_pos[cat]
    keep = np.flatnonzero((ip >= 0) & (cp >= 0))
    order = keep[np.lexsort((cp[keep], ip[keep]))]  # stable: ties keep file order
    self.anns = [anns[i] for i in order.tolist()]
    self.img = ip[order]
    self.cat = cp[order]
    self.n = len(order)
    sel = self.anns
    self.id_nonzero = np.array([a["id"] != 0 for a in sel], bool)
    self.crowd = np.array([bool(a.get("iscrowd", 0)) for a in sel], bool)
    self.ignore = self.crowd.copy()
    self.bbox = None
    self.rles = None
    self.kpts = None
    if p.iou_type in ("bbox", "keypoints"):
      self.bbox = _boxes(_field(sel, "bbox", what, order), what, sel, order)
    if p.iou_type == "segm":  # converted per image with the detections (`_mask_ious`)
      self.segs = _field(sel, "segmentation", what, order)
      self.rles = [None] * self.n
    if p.iou_type == "keypoints":
      k = len(p.kpt_oks_sigmas)
      self.kpts = _keypoints(_field(sel, "keypoints", what, order), k, what, order)
      visible = np.count_nonzero(self.kpts[:, :, 2] > 0, axis=1)
      num = np.array([a.get("num_keypoints", v) for a, v in zip(sel, visible.tolist())])
      self.ignore |= num.reshape(-1) == 0
    areas = [a.get("area") for a in sel]
    self.area_missing = np.array([x is None for x in areas], bool)
    if np.any(self.area_missing):  # segm: the mask area, filled in by `_mask_ious`
      fallback = (np.zeros(self.n) if p.iou_type == "segm"
                  else self.bbox[:, 2] * self.bbox[:, 3])
      areas = [fallback[i] if x is None else x for i, x in enumerate(areas)]
    self.area = _numbers(areas, what, "area", sel, order)

  def rle(self, i: int):
    """The RLE of ground truth i (segm)."""
    if self.rles[i] is None:
      a, seg = self.anns[i], self.segs[i]
      size = self.img_sizes.get(a["image_id"])
      if size is None:
        if not (isinstance(seg, dict) and "size" in seg):
          raise DataError(f"ground-truth image {a['image_id']!r} has no height/width, "
                          f"needed for the segmentation of annotation {a['id']!r}")
        size = seg["size"]
      try:
        self.rles[i] = masks.to_rle(seg, int(size[0]), int(size[1]))
      except DataError as e:
        raise DataError(f"ground-truth annotation {a['id']!r}: {e}") from None
      except Exception as e:  # pylint: disable=broad-except
        raise DataError(f"ground-truth annotation {a['id']!r} has a bad segmentation: "
                        f"{e}") from None
    return self.rles[i]

  def prefill(self, start: int, stop: int) -> None:
    """Converts the masks of ground truths [start, stop) of one image together where
    that is plain (`rle` converts the rest and reports errors)."""
    idx = [j for j in range(start, stop) if self.rles[j] is None]
    if not idx:
      return
    try:
      size = self.img_sizes.get(self.anns[idx[0]]["image_id"])
      if size is None:
        return
      rles = masks.to_rles([self.segs[j] for j in idx], int(size[0]), int(size[1]))
    except Exception:  # pylint: disable=broad-except
      return
    for j, r in zip(idx, rles):
      self.rles[j] = r


class _Dt:
  """Detections as arrays: the best ``max_dets[-1]`` per group, sorted by (group, rank)."""

  def __init__(self, dt: Sequence[dict], g: _Gt, p: Params):
    if not isinstance(dt, (list, tuple)):
      raise DataError(f"detections must be a list of dicts (COCO results format), got "
                      f"{type(dt).__name__}")
    what = "detection"
    dt = list(dt)
    img = _ids_to_index(_field(dt, "image_id", what), g.all_img_ids, g.img_lookup, what,
                        dt, "image_id")
    cat = _ids_to_index(_field(dt, "category_id", what), g.all_cat_ids, g.cat_lookup,
                        what, dt, "category_id")
    score = _numbers(_field(dt, "score", what), what, "score", dt)
    ip, cp = g.img_pos[img], g.cat_pos[cat]
    keep = np.flatnonzero((ip >= 0) & (cp >= 0))
    ncat = max(len(g.cat_ids), 1)
    group = ip * ncat + cp if p.use_cats else ip
    # COCOeval's order within an image (and category): a stable sort on -score of the
    # list (use_cats=False: of its concatenation over categories in id order); lexsort is
    # stable, so ties keep list order.
    keys = (-score[keep], group[keep]) if p.use_cats else (cp[keep], -score[keep], group[keep])
    keep = keep[np.lexsort(keys)]
    gk = group[keep]
    starts = np.flatnonzero(np.r_[True, gk[1:] != gk[:-1]]) if len(gk) else np.zeros(0, int)
    rank = np.arange(len(gk)) - np.repeat(starts, np.diff(np.r_[starts, len(gk)]))
    sel = rank < p.max_dets[-1]
    order = keep[sel]
    self.rank = rank[sel]
    self.img = ip[order]
    self.cat = cp[order]
    self.score = score[order]
    self.n = len(order)
    self.src, self.sizes = order, g.img_sizes
    first = dt[0] if dt else {}
    # COCO.loadRes: the first detection decides how every detection's area is found.
    if isinstance(first.get("bbox"), (list, tuple, np.ndarray)) and len(first["bbox"]):
      area_from = "bbox"
    elif "segmentation" in first:
      area_from = "segm"
    elif "keypoints" in first:
      area_from = "keypoints"
    else:
      area_from = p.iou_type
    self.bbox = self.rles = self.kpts = None
    # Fields are read in list order (much faster than in evaluation order), then selected.
    self.items = [dt[i] for i in order.tolist()] if (
        p.iou_type == "segm" or area_from == "segm") else None
    # A segm detection without a mask is its box as a polygon (as COCO.loadRes makes it
    # when the first detection has a box).
    self.box_ok = p.iou_type == "segm" and area_from == "bbox"
    self.area_from_masks = area_from == "segm"
    if p.iou_type == "segm":  # converted per image with the ground truth (`_mask_ious`)
      self.rles = [None] * self.n
    elif area_from == "segm":
      self.rles = [self.rle(i) for i in range(self.n)]
    if p.iou_type == "bbox" or area_from == "bbox":
      try:
        self.bbox = _boxes([a["bbox"] for a in dt], what, dt)[order]
      except KeyError:
        boxes = [dt[i].get("bbox") for i in order.tolist()]
        i = next((i for i, b in enumerate(boxes) if b is None), None)
        if i is not None and (area_from == "bbox" or self.rles is None):
          why = " (the first detection has one, so all must)" if area_from == "bbox" else ""
          raise DataError(f"detection {int(order[i])} has no 'bbox'{why}: "
                          f"{_short(dt[order[i]])}") from None
        if i is not None:
          from_masks = np.asarray(masks.to_bbox(self.rles), np.float64).reshape(-1, 4)
          boxes = [from_masks[i] if b is None else b for i, b in enumerate(boxes)]
        self.bbox = _boxes(boxes, what, [dt[i] for i in order.tolist()], order)
    if p.iou_type == "keypoints" or area_from == "keypoints":
      k = (len(p.kpt_oks_sigmas) if p.kpt_oks_sigmas is not None
           else len(dt[0]["keypoints"]) // 3 if dt else 1)
      self.kpts = _keypoints(_field(dt, "keypoints", what), k, what)[order]
    if area_from == "bbox":
      self.area = self.bbox[:, 2] * self.bbox[:, 3]
    elif area_from == "segm":  # segm: filled in by `_mask_ious`
      self.area = (np.zeros(self.n) if p.iou_type == "segm" else
                   np.asarray(masks.area(self.rles), np.float64).reshape(-1))
    else:
      x, y = self.kpts[:, :, 0], self.kpts[:, :, 1]
      self.area = ((x.max(1) - x.min(1)) * (y.max(1) - y.min(1)) if self.n
                   else np.zeros(0))

  def rle(self, i: int):
    """The RLE of detection i (segm, or a mask detection's box)."""
    if self.rles is not None and self.rles[i] is not None:
      return self.rles[i]
    a = self.items[i]
    if "segmentation" in a:
      seg = a["segmentation"]
    elif self.box_ok and "bbox" in a:
      x, y, w, h = _boxes([a["bbox"]], "detection", [a])[0]
      seg = [[x, y, x, y + h, x + w, y + h, x + w, y]]
    else:
      raise DataError(f"detection {int(self.src[i])} has no 'segmentation': {_short(a)}")
    size = self.sizes.get(a["image_id"])
    if size is None:
      if not (isinstance(seg, dict) and "size" in seg):
        raise DataError(f"ground-truth image {a['image_id']!r} has no height/width, needed "
                        f"for the polygon segmentation of detection {int(self.src[i])}")
      size = seg["size"]
    try:
      rle = masks.to_rle(seg, int(size[0]), int(size[1]))
    except DataError as e:
      raise DataError(f"detection {int(self.src[i])}: {e}") from None
    except Exception as e:  # pylint: disable=broad-except
      raise DataError(f"detection {int(self.src[i])} has a bad segmentation ({e}): "
                      f"{_short(a)}") from None
    if self.rles is not None:
      self.rles[i] = rle
    return rle

  def prefill(self, start: int, stop: int) -> None:
    """Converts the masks of detections [start, stop) of one image together where that
    is plain (`rle` converts the rest and reports errors)."""
    if self.rles is None:
      return
    idx = [j for j in range(start, stop)
           if self.rles[j] is None and "segmentation" in self.items[j]]
    if not idx:
      return
    try:
      size = self.sizes.get(self.items[idx[0]]["image_id"])
      if size is None:
        return
      rles = masks.to_rles([self.items[j]["segmentation"] for j in idx], int(size[0]),
                              int(size[1]))
    except Exception:  # pylint: disable=broad-except
      return
    for j, r in zip(idx, rles):
      self.rles[j] = r


# ------------------------------------------------------------------------------- IoUs


def _pair_ious(g: _Gt, d: _Dt, p: Params):
  """All (detection, ground truth) pairs of the same group and their IoU / OKS.

  Returns ``(pair_dt, pair_gt, iou)``, ordered by detection, then ground truth.
  """
  ncat = max(len(g.cat_ids), 1)
  g_group = g.img * ncat + g.cat if p.use_cats else g.img
  d_group = d.img * ncat + d.cat if p.use_cats else d.img
  lo = np.searchsorted(g_group, d_group, "left")
  hi = np.searchsorted(g_group, d_group, "right")
  count = hi - lo
  total = int(count.sum())
  pair_dt = np.repeat(np.arange(d.n), count)
  first = np.cumsum(count) - count
  pair_gt = lo[pair_dt] + (np.arange(total) - first[pair_dt])
  if p.iou_type == "bbox":
    iou = box_iou(d.bbox[pair_dt], g.bbox[pair_gt], box_format="xywh", crowd=g.crowd[pair_gt],
                  paired=True)
  elif p.iou_type == "keypoints":
    iou = _oks(d.kpts, g.kpts, g.bbox, g.area, p.kpt_oks_sigmas, pair_dt, pair_gt)
  else:
    iou = _mask_ious(g, d, pair_dt, pair_gt, count)
  return pair_dt, pair_gt, iou


def _mask_ious(g: _Gt, d: _Dt, pair_dt, pair_gt, count) -> np.ndarray:
  """Mask IoUs, image by image (all its detections x ground truths, gathered into the
  pairs). Each image's masks are converted, measured and compared together, while
  `jaxseg.formats.rle` still holds them parsed."""
  iou = np.zeros(len(pair_dt))
  num = len(g.img_ids) + 1
  g_start, d_start = np.searchsorted(g.img, np.arange(num)), np.searchsorted(d.img,
                                                                              np.arange(num))
  p_start = np.searchsorted(d.img[pair_dt], np.arange(num))
  for i in np.unique(np.r_[g.img, d.img]).tolist():
    gs, ge, ds, de = g_start[i], g_start[i + 1], d_start[i], d_start[i + 1]
    g.prefill(gs, ge)
    d.prefill(ds, de)
    g_rles = [g.rle(j) for j in range(gs, ge)]
    d_rles = [d.rle(j) for j in range(ds, de)]
    if d.area_from_masks and de > ds:
      d.area[ds:de] = np.asarray(masks.area(d_rles), np.float64).reshape(-1)
    missing = np.flatnonzero(g.area_missing[gs:ge])
    if len(missing):
      g.area[gs + missing] = np.asarray(masks.area([g_rles[j] for j in missing]),
                                        np.float64).reshape(-1)
    ps, pe = p_start[i], p_start[i + 1]
    if pe == ps:
      continue
    # only the detections with a same-group ground truth (pairs exist for them)
    dsel = np.flatnonzero(count[ds:de] > 0)
    m = np.asarray(masks.iou([d_rles[j] for j in dsel.tolist()], g_rles,
                             [bool(c) for c in g.crowd[gs:ge]]), np.float64)
    m = m.reshape(len(dsel), ge - gs)
    row = np.searchsorted(dsel + ds, pair_dt[ps:pe])
    iou[ps:pe] = m[row, pair_gt[ps:pe] - gs]
  return iou


def _oks(dk: np.ndarray, gk: np.ndarray, gbox: np.ndarray, garea: np.ndarray,
         sigmas: np.ndarray, pair_dt: np.ndarray, pair_gt: np.ndarray) -> np.ndarray:
  """Object keypoint similarity (COCO keypoint challenge) of detections ``dk [D, K, 3]``
  with ground truths ``gk [G, K, 3]`` for the given pairs: the mean over labelled gt
  keypoints of exp(-d^2 / (2 s^2 (2 sigma)^2)), s^2 = gt area; a gt without labelled
  keypoints measures the distance to its box grown by its size on each side."""
  if not len(pair_dt):
    return np.zeros(0)
  prep = _oks_prepare(gk, sigmas)
  chunk = 8192  # temporaries that stay in cache are several times faster
  return np.concatenate([_oks_pairs(prep, dk, gbox, garea, pair_dt[i:i + chunk],
                                    pair_gt[i:i + chunk])
                         for i in range(0, len(pair_dt), chunk)])


def _oks_pairs(prep, dk, gbox, garea, pair_dt, pair_gt) -> np.ndarray:
  col, xg, yg, used_c, var_c, none, n_used = prep
  cols = col[pair_gt]
  rows = pair_dt[:, None]
  xd, yd = dk[:, :, 0][rows, cols], dk[:, :, 1][rows, cols]
  dx, dy = xd - xg[pair_gt], yd - yg[pair_gt]
  far = np.flatnonzero(none[pair_gt])
  if len(far):  # distance outside the box [x - w, x + 2w] x [y - h, y + 2h]
    b = gbox[pair_gt[far]]
    x0, x1 = (b[:, 0] - b[:, 2])[:, None], (b[:, 0] + b[:, 2] * 2)[:, None]
    y0, y1 = (b[:, 1] - b[:, 3])[:, None], (b[:, 1] + b[:, 3] * 2)[:, None]
    xf, yf = xd[far], yd[far]
    dx[far] = np.maximum(0, x0 - xf) + np.maximum(0, xf - x1)
    dy[far] = np.maximum(0, y0 - yf) + np.maximum(0, yf - y1)
  e = (dx ** 2 + dy ** 2) / var_c[pair_gt] / (garea[pair_gt] + np.spacing(1))[:, None] / 2
  terms = np.where(used_c[pair_gt], np.exp(-e), 0.0)
  n = n_used[pair_gt]
  return _pairwise_row_sums(terms, n) / n


def _oks_prepare(gk: np.ndarray, sigmas: np.ndarray):
  """Per ground truth: the used keypoints first (in keypoint order), so that the row sums
  add the terms as np.sum of COCOeval's compacted vector ``e[vg > 0]`` does."""
  var = (sigmas * 2) ** 2
  vis = gk[:, :, 2] > 0
  k1 = np.count_nonzero(vis, axis=1)
  none = k1 == 0
  used = vis | none[:, None]
  col = np.argsort(~used, axis=1, kind="stable")
  xg, yg = (np.take_along_axis(gk[:, :, i], col, 1) for i in (0, 1))
  return (col, xg, yg, np.take_along_axis(used, col, 1), var[col], none,
          np.where(none, gk.shape[1], k1))


def _pairwise_row_sums(x: np.ndarray, n: np.ndarray) -> np.ndarray:
  """Row sums of the first ``n[i]`` entries of ``x[i]`` (the rest are 0), added in the
  order NumPy's pairwise summation adds an ``n``-vector (sequentially below 8 entries,
  else 8 interleaved accumulators over the multiple-of-8 part, then the rest; rows up to
  128), so OKS values equal COCOeval's bit for bit."""
  k = x.shape[1]
  if k > 128:
    return x.sum(axis=1)
  out = np.zeros(len(x))
  for j in range(k):  # adding the trailing zeros changes nothing
    out = out + x[:, j]
  big = n >= 8
  if np.any(big):
    xb = x[big]
    blocks = (n[big] // 8) * 8
    r = xb[:, :8]
    for start in range(8, k - 7, 8):
      r = np.where((start < blocks)[:, None], r + xb[:, start:start + 8], r)
    res = ((r[:, 0] + r[:, 1]) + (r[:, 2] + r[:, 3])) + ((r[:, 4] + r[:, 5]) +
                                                         (r[:, 6] + r[:, 7]))
    for j in range(8, k):
      res = np.where(j >= blocks, res + xb[:, j], res)
    out[big] = res
  return out


# --------------------------------------------------------------------------- matching


def _regular(g: _Gt, p: Params) -> np.ndarray:
  """[A, G]: not ignored (crowd; keypoints: no keypoints) and ``area`` within the range."""
  rng = np.asarray(p.area_rng)
  return ~g.ignore[None] & (g.area[None] >= rng[:, :1]) & (g.area[None] <= rng[:, 1:])


def _match(g: _Gt, d: _Dt, pairs, p: Params):
  """COCOeval.evaluateImg's greedy matching for every area range and IoU threshold.

  Detections of a group are matched in rank order, so the loop runs over ranks and is
  vectorized over groups, area ranges and thresholds. Each detection takes the available
  (unmatched, or crowd) regular ground truth of highest IoU >= threshold, the last one on
  ties; failing that, the best such ignored one. Returns the matches as arrays
  ``(area range, threshold, detection, ground truth)``.
  """
  pair_dt, pair_gt, iou = pairs
  A, T = len(p.area_rng), len(p.iou_thrs)
  regular = _regular(g, p)
  found = [np.zeros((4, 0), np.int64)]
  if not len(pair_dt):
    return found[0]
  thr = np.minimum(p.iou_thrs, 1 - 1e-10)[None, :, None]
  taken = np.zeros((A, T, g.n), bool)
  pair_rank = d.rank[pair_dt]
  by_rank = np.argsort(pair_rank, kind="stable")
  bounds = np.searchsorted(pair_rank[by_rank], np.arange(pair_rank.max() + 2))
  for r in range(len(bounds) - 1):
    idx = by_rank[bounds[r]:bounds[r + 1]]
    if not len(idx):
      continue
    # Each detection's pairs by ascending IoU, then gt order: the best candidate is the
    # last one (COCOeval keeps the last of equal IoUs).
    idx = idx[np.lexsort((iou[idx], pair_dt[idx]))]
    pd, pg, pi = pair_dt[idx], pair_gt[idx], iou[idx]
    starts = np.flatnonzero(np.r_[True, pd[1:] != pd[:-1]])
    n = len(pd)
    ok = (~taken[:, :, pg] | g.crowd[pg]) & (pi >= thr)  # [A, T, n]
    pos = np.arange(n)
    # regular ground truths first: their keys are above all keys of ignored ones
    key = np.where(ok, np.where(regular[:, pg], pos + n, pos)[:, None, :], -1)
    best = np.maximum.reduceat(key, starts, axis=2)  # [A, T, detections]
    a, t, s = np.nonzero(best >= 0)
    mg = pg[best[a, t, s] % n]
    taken[a, t, mg] = True
    found.append(np.stack([a, t, pd[starts[s]], mg]))
  return np.concatenate(found, 1)


# ------------------------------------------------------------------------- accumulate


def _accumulate(g: _Gt, d: _Dt, matches: np.ndarray, p: Params):
  """COCOeval.accumulate: precision [T, R, K, A, M], recall [T, K, A, M], scores.

  Works on the true positives only: in a category's score-sorted detections, precision
  rises only at true positives, so its monotone envelope at a true positive is the maximum
  over this and later true positives, and the recall thresholds fall on true positives
  (``searchsorted(recall, r)`` is the v-th one for the smallest v with v / npig >= r).
  False positives before a detection are counted as (detections not outside the area
  range) - (matched ones not outside it that are no false positive), so nothing of size
  detections x thresholds is built.
  """
  T, R, A, M = len(p.iou_thrs), len(p.rec_thrs), len(p.area_rng), len(p.max_dets)
  K = len(g.cat_ids) if p.use_cats else 1
  precision = -np.ones((T, R, K, A, M))
  recall = -np.ones((T, K, A, M))
  scores = -np.ones((T, R, K, A, M))
  regular = _regular(g, p)
  rng = np.asarray(p.area_rng)
  g_k = g.cat if p.use_cats else np.zeros(g.n, np.int64)
  d_k = d.cat if p.use_cats else np.zeros(d.n, np.int64)
  # COCOeval's order: per category by score, ties by image, then rank in the image.
  order = np.lexsort((d.rank, d.img, -d.score, d_k))
  n = len(order)
  inv = np.empty(n, np.int64)
  inv[order] = np.arange(n)
  cat_s, rank_s, score_s = d_k[order], d.rank[order], np.r_[d.score[order], 0.0]
  s_k = np.searchsorted(cat_s, np.arange(K), "left")
  e_k = np.searchsorted(cat_s, np.arange(K), "right")
  area_s = d.area[order]
  outside = (area_s[None] < rng[:, :1]) | (area_s[None] > rng[:, 1:])  # [A, N]
  ma, mt, md, mg = matches
  mpos = inv[md]
  hit = g.id_nonzero[mg]  # COCOeval stores gt ids: id 0 reads as "no match"
  on_ignored = ~regular[ma, mg]
  is_tp = hit & ~on_ignored
  not_fp = ~outside[ma, mpos] & (hit | on_ignored)  # matched, counted in `inside`, no FP
  eps = np.spacing(1)
  # matches by (area range, threshold, sorted position)
  srt = np.argsort((ma * T + mt) * max(n, 1) + mpos, kind="stable")
  ma, mt, mpos, is_tp, not_fp = ma[srt], mt[srt], mpos[srt], is_tp[srt], not_fp[srt]
  m_rank = rank_s[mpos]
  a_bounds = np.searchsorted(ma, np.arange(A + 1))
  seg_starts = (np.arange(T)[:, None] * n + s_k[None]).reshape(-1)  # keys of (t, s_k)
  for a in range(A):
    npig = np.bincount(g_k[regular[a]], minlength=K)
    has = npig > 0
    if not np.any(has):
      continue
    v = _min_counts(npig, p.rec_thrs)  # [K, R]
    sl = slice(a_bounds[a], a_bounds[a + 1])
    for m, max_det in enumerate(p.max_dets):
      sub = rank_s < max_det
      inside = np.r_[0, np.cumsum(~outside[a] & sub)]  # detections up to j: inside[j+1]
      counted = np.r_[0, np.cumsum(sub)]
      keep = m_rank[sl] < max_det
      t_m, pos_m, x_m = mt[sl][keep], mpos[sl][keep], not_fp[sl][keep]
      tp_i = np.flatnonzero(is_tp[sl][keep])
      x_cum = np.cumsum(x_m)  # matched, not outside, no FP: up to each match
      x_keys = (t_m * n + pos_m)[x_m]
      x_base = np.searchsorted(x_keys, seg_starts, "left")  # [T * K]
      t, pos = t_m[tp_i], pos_m[tp_i]
      k = cat_s[pos]
      gid = t * K + k  # sorted
      fp = (inside[pos + 1] - inside[s_k[k]]) - (x_cum[tp_i] - x_base[gid])
      n_tp = np.bincount(gid, minlength=T * K)
      g_start = np.cumsum(n_tp) - n_tp
      tp = (np.arange(len(gid)) - g_start[gid] + 1).astype(np.float64)
      pr = tp / (fp + tp + eps)
      n_tp, g_start = n_tp.reshape(T, K), g_start.reshape(T, K)
      recall[:, has, a, m] = (n_tp.astype(np.float64) / np.maximum(npig, 1))[:, has]
      # Envelope at the sampled true positives: block maxima between them, then a running
      # maximum from the right.
      ordinal = np.maximum(v - 1, 0)[None]  # [1, K, R]
      sampled = ordinal < n_tp[:, :, None]  # [T, K, R]
      bounds = np.concatenate([np.where(sampled, ordinal, n_tp[:, :, None]),
                               n_tp[:, :, None]], 2) + g_start[:, :, None]
      block = np.maximum.reduceat(np.r_[pr, 0.0], bounds.reshape(-1)).reshape(T, K, R + 1)
      block = np.where(sampled, block[..., :R], 0.0)
      q = np.maximum.accumulate(block[..., ::-1], axis=-1)[..., ::-1]
      # scores: of the sampled true positive, or (v = 0) of the category's first detection
      tp_pos = np.r_[pos, n]
      at = np.where(sampled, tp_pos[np.minimum(g_start[:, :, None] + ordinal,
                                               len(pos))], n)
      first = np.searchsorted(counted, counted[s_k] + 1, "left") - 1  # [K]
      first = np.where(first < e_k, first, n)
      at = np.where(v[None] == 0, first[None, :, None], at)
      ss = score_s[at]
      precision[:, :, has, a, m] = q.transpose(0, 2, 1)[:, :, has]
      scores[:, :, has, a, m] = ss.transpose(0, 2, 1)[:, :, has]
  return precision, recall, scores


def _min_counts(npig: np.ndarray, rec_thrs: np.ndarray) -> np.ndarray:
  """[K, R]: the smallest integer v with v / npig >= r (float division, as COCOeval's
  recall), npig + 1 if none."""
  n = np.maximum(npig, 1).astype(np.float64)[:, None]
  v = np.maximum(np.ceil(rec_thrs[None] * n) - 2, 0)
  for _ in range(5):
    v = np.where((v / n < rec_thrs[None]) & (v <= n), v + 1, v)
  return v.astype(np.int64)


# -------------------------------------------------------------------------- summarize


def _summarize(p: Params, precision: np.ndarray, recall: np.ndarray):
  """COCOeval.summarize: its printed lines and stats."""
  lines = []

  def one(ap=1, iou_thr=None, area="all", max_dets=100):
    fmt = " {:<18} {} @[ IoU={:<9} | area={:>6s} | maxDets={:>3d} ] = {:0.3f}"
    title = "Average Precision" if ap == 1 else "Average Recall"
    kind = "(AP)" if ap == 1 else "(AR)"
    iou_str = ("{:0.2f}:{:0.2f}".format(p.iou_thrs[0], p.iou_thrs[-1]) if iou_thr is None
               else "{:0.2f}".format(iou_thr))
    aind = [i for i, lbl in enumerate(p.area_rng_lbl) if lbl == area]
    mind = [i for i, m in enumerate(p.max_dets) if m == max_dets]
    s = precision if ap == 1 else recall
    if iou_thr is not None:
      s = s[np.where(iou_thr == p.iou_thrs)[0]]
    s = s[:, :, :, aind, mind] if ap == 1 else s[:, :, aind, mind]
    mean = -1 if len(s[s > -1]) == 0 else np.mean(s[s > -1])
    lines.append(fmt.format(title, kind, iou_str, area, max_dets, mean))
    return mean

  if p.iou_type == "keypoints":
    spec = [(1, None, "all", 20), (1, .5, "all", 20), (1, .75, "all", 20),
            (1, None, "medium", 20), (1, None, "large", 20), (0, None, "all", 20),
            (0, .5, "all", 20), (0, .75, "all", 20), (0, None, "medium", 20),
            (0, None, "large", 20)]
  else:
    if len(p.max_dets) < 3:
      raise ConfigError(f"the bbox/segm summary needs 3 max_dets, got {p.max_dets}")
    m = p.max_dets
    spec = [(1, None, "all", 100), (1, .5, "all", m[2]), (1, .75, "all", m[2]),
            (1, None, "small", m[2]), (1, None, "medium", m[2]), (1, None, "large", m[2]),
            (0, None, "all", m[0]), (0, None, "all", m[1]), (0, None, "all", m[2]),
            (0, None, "small", m[2]), (0, None, "medium", m[2]), (0, None, "large", m[2])]
  stats = np.array([one(*s) for s in spec], np.float64)
  return lines, stats
