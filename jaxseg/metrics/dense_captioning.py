"""The dense-captioning metric of DenseCap (Johnson, Karpathy & Fei-Fei, "DenseCap: Fully
Convolutional Localization Networks for Dense Captioning", CVPR 2016), as the reference
evaluator computes it (github.com/jcjohnson/densecap, eval/eval_utils.lua and
densecap/box_utils.lua), plus BLEU-4 and CIDEr of the well-localised captions.

Per image (``DenseCaptioningEvaluator.add``, Lua ``addResult``): ground-truth boxes that
overlap by IoU >= 0.7 are merged (`merge_boxes`, `merged_ground_truth`) into one box (the
mean) with all their captions as references; detections, by decreasing score, are assigned
to the merged box of highest IoU; a box already taken makes the detection not ``ok``.
Over all images (``evaluate``): METEOR of every (candidate, references) record; for each
IoU threshold x METEOR threshold, a detection is a true positive when ``ok``,
``IoU >= t_iou`` and ``METEOR > t_meteor`` (strict: the 0 threshold is not a catch-all,
eval/README.md); AP is max-interpolated precision averaged over recall thresholds, ``map``
the mean over the 5 x 6 cells, ``detection_map`` the mean over the IoU thresholds with
METEOR ignored (the Lua's ``min_score = -1``).

What the reference does, and this module therefore does too (each checked in its source):
- IoU uses inclusive pixel coordinates: widths ``x2 - x1 + 1`` (both in box_utils.iou_matrix
  and in addResult: ``local iw = bi[3]-bi[1]+1 ... local ua = (bb[3]-bb[1]+1)*(bb[4]-bb[2]+1)
  + ...``). Boxes here are xyxy in the reference's convention: its boxes come from
  ``xcycwh_to_x1y1x2y2`` (``x0 = xc - (w-1)/2``, ``x1 = xc + (w-1)/2``), so ``x2 - x1 + 1``
  is the box's width ``w``. For jaxseg's continuous boxes (width ``x2 - x1``) pass
  ``[x1, y1, x2 - 1, y2 - 1]`` (`continuous_to_inclusive`); the IoUs are then the continuous
  ones, as in the reference.
- A pair overlaps only if the +1 intersection width and height are both > 0; ties for the
  best ground truth go to the first (``if ov > ovmax``), and a box with at least one overlap
  is assigned even if that ground truth is taken (then ``ok = 0``: no search for the best
  *free* box, unlike COCO).
- merge_boxes is greedy: take the box with the most others at IoU >= thr (itself included,
  ``D[{i,i}] = 1.0``; ties: the first), make it and its neighbours one group (ascending
  indices), zero their rows and columns, repeat while any count is > 0. (Lua counts with a
  ByteTensor, which wraps at 256 neighbours; here counts are exact.) The merged box is
  ``torch.mean`` of the float32 boxes: a float64 sum rounded to float32, then divided in
  float32.
- A detection that overlaps no merged box (``jmax`` stays ``-1``): ``used[jmax]`` on a torch
  tensor with index -1 is its LAST element (torch7 ``__index__``/``__newindex__``: ``if
  (index < 0) index = tensor->size[0] + index + 1``). So such a detection takes the image's
  last merged box when that is free (``ok = 1``; it is still a false positive, its IoU 0
  being below every threshold) and a later detection of that box is then not ``ok``.
  REPLICATED, as the published numbers include it. (scenic's port, projects/densevoc,
  differs: ``matched = max_iou > 0 and not gt_used[...]`` consumes nothing.) Its references
  are ``{}`` (``if record.references == nil then record.references = {} end``), sent to
  METEOR as one empty reference (score 0).
- The ``if not r.references then fp[i] = 1`` branch of evaluate is dead in Lua (``{}`` is
  true), and so it is here.
- The recall thresholds are Lua's ``for t=0,1,0.01``: a float loop that adds 0.01 each time,
  so it runs 100 times, t = 0, 0.01, ..., 0.99000000000000066 (the 101st value,
  1.0000000000000007, exceeds 1), with accumulated rounding (t = 0.060000000000000005, ...);
  AP = sum of ``max(precision * (recall >= t))`` / 100. scenic's port also uses 100
  thresholds (``range(100)``, exact t / 100).
- Sorting: detections by decreasing score within an image, then all records by decreasing
  score. torch.sort breaks ties arbitrarily; here ties keep their order (stable sort: within
  an image the order given to `add`, across images the order of the `add` calls).
- recall = tp / (total merged ground-truth count over all images), precision
  = tp / (tp + fp).

Where the reference would crash, this module chooses: an image without ground truth (Lua:
``used[-1]`` of an empty tensor raises "empty tensor") makes its detections false positives;
no detections at all (``torch.cat`` of nothing) or no ground truth at all (recall 0 / 0)
give AP 0 in every cell. Boxes must be finite with ``x2 - x1 + 1 >= 0`` and
``y2 - y1 + 1 >= 0`` (else `DataError`); scores finite.

``bleu4`` and ``cider`` (not in the reference) are pycocoevalcap's ``Bleu(4)`` (corpus BLEU-4,
"closest" reference length) and ``Cider()`` over the records that are ``ok`` with
IoU >= 0.5, candidate against its references, captions as given (lowercase words, as
DenseCap's vocabulary has; no PTB tokenisation). CIDEr's document frequencies come from
those records' references, so it is a corpus statistic. ``meteor_mean`` is the mean METEOR of
the same records. All three are NaN when there is no such record.
"""
from __future__ import annotations

import math
from typing import Any, Protocol, Sequence

import numpy as np

from jaxseg.errors import DataError
from jaxseg.metrics.boxes import box_iou

IOU_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
METEOR_THRESHOLDS = (0, 0.05, 0.1, 0.15, 0.2, 0.25)
MERGE_IOU = 0.7
LANGUAGE_IOU = 0.5  # meteor_mean, bleu4, cider: ok records with IoU >= this


def _lua_recall_thresholds() -> np.ndarray:
  """The values of Lua's ``for t=0,1,0.01`` (t += 0.01 while t <= 1): 100 of them."""
  out, t = [], 0.0
  while t <= 1:
    out.append(t)
    t += 0.01
  return np.array(out, np.float64)


RECALL_THRESHOLDS = _lua_recall_thresholds()


class CaptionScorer(Protocol):
  def score(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> np.ndarray: ...


def continuous_to_inclusive(boxes: Any) -> np.ndarray:
  """jaxseg's continuous ``[x1, y1, x2, y2]`` (width ``x2 - x1``) -> the reference's
  inclusive pixel boxes (width ``x2 - x1 + 1``): ``[x1, y1, x2 - 1, y2 - 1]``."""
  return np.asarray(boxes, np.float64).reshape(-1, 4) - np.array([0.0, 0.0, 1.0, 1.0])


def _check_boxes(boxes: Any, what: str) -> np.ndarray:
  """float32 ``[N, 4]`` (the reference's ``:float()``), validated."""
  b = np.asarray(boxes, np.float64)
  if b.size == 0:
    return np.zeros((0, 4), np.float32)
  if b.ndim != 2 or b.shape[1] != 4:
    raise DataError(f"{what} has shape {b.shape}; expected [N, 4] xyxy boxes")
  if not np.isfinite(b).all():
    raise DataError(f"{what} has non-finite coordinates: {b[~np.isfinite(b).all(1)][:3]}")
  b = b.astype(np.float32)
  bad = (b[:, 2] - b[:, 0] + 1 < 0) | (b[:, 3] - b[:, 1] + 1 < 0)
  if bad.any():
    raise DataError(f"{what} has boxes with x2 - x1 + 1 < 0 or y2 - y1 + 1 < 0 (inclusive "
                    f"pixel xyxy expected): {b[bad][:3].tolist()}")
  return b


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """The reference's +1 IoU, float64 from float32 boxes (Lua numbers are doubles)."""
  return box_iou(a.astype(np.float64), b.astype(np.float64), pixel_convention=True)


def merge_boxes(boxes: Any, iou_threshold: float = MERGE_IOU) -> list[np.ndarray]:
  """Groups of row indices (int64, ascending) of ``boxes`` ``[N, 4]`` (inclusive pixel
  xyxy) by box_utils.lua ``merge_boxes``: greedily the box with the most boxes at
  IoU >= ``iou_threshold`` (itself included) and those boxes, until none is left."""
  if not iou_threshold > 0:
    raise DataError(f"merge iou_threshold {iou_threshold} must be > 0 (box_utils.lua asserts)")
  b = _check_boxes(boxes, "merge_boxes boxes")
  n = b.shape[0]
  d = _iou(b, b)
  np.fill_diagonal(d, 1.0)  # iou_matrix: D[{i,i}] = 1.0, whatever the box
  groups = []
  while n:
    good = d >= iou_threshold
    counts = good.sum(axis=0)
    top = int(np.argmax(counts))  # the first of the largest, as torch.max
    if counts[top] == 0:
      break
    members = np.flatnonzero(good[top]).astype(np.int64)
    groups.append(members)
    d[members, :] = 0
    d[:, members] = 0
  return groups


def _mean_box(boxes: np.ndarray) -> np.ndarray:
  """torch.mean(FloatTensor, 1): float64 running sum -> float32, / n in float32."""
  total = np.cumsum(boxes.astype(np.float64), axis=0)[-1].astype(np.float32)
  return total / np.float32(boxes.shape[0])


def merged_ground_truth(boxes: Any, captions: Sequence[str],
                        iou_threshold: float = MERGE_IOU
                        ) -> tuple[np.ndarray, list[list[str]]]:
  """eval_utils.lua ``pluck_boxes`` of `merge_boxes`: float32 ``[G, 4]`` mean box of each
  group and its captions (in row order) as one reference list."""
  b = _check_boxes(boxes, "ground truth boxes")
  captions = list(captions)
  if len(captions) != b.shape[0]:
    raise DataError(f"{b.shape[0]} ground truth boxes but {len(captions)} captions")
  groups = merge_boxes(b, iou_threshold)
  merged = np.zeros((len(groups), 4), np.float32)
  for g, members in enumerate(groups):
    merged[g] = _mean_box(b[members])
  return merged, [[captions[i] for i in members] for members in groups]


def _average_precision(tp: np.ndarray, num_gt: int) -> float:
  """eval_utils.lua: 100-point (Lua's float loop) max-interpolated AP of a tp list."""
  if tp.size == 0 or num_gt == 0:
    return 0.0  # Lua: torch.cat of nothing / recall nan: no threshold is reached
  ctp = np.cumsum(tp, dtype=np.float64)
  recall = ctp / num_gt
  precision = ctp / np.arange(1, tp.size + 1, dtype=np.float64)
  reached = recall[None, :] >= RECALL_THRESHOLDS[:, None]  # [100, n]
  return float(np.sum(np.max(precision[None, :] * reached, axis=1)) / RECALL_THRESHOLDS.size)


class DenseCaptioningEvaluator:
  """Accumulates images with `add`; `evaluate` gives the DenseCap metric (module docstring).

  ``meteor``: any object with ``score(pairs) -> np.ndarray`` (default: a
  `jaxseg.metrics.meteor.Meteor` created at `evaluate` and closed after it).
  ``language_metrics``: also compute ``bleu4`` and ``cider`` (pycocoevalcap)."""

  def __init__(self, meteor: CaptionScorer | None = None,
               iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
               meteor_thresholds: Sequence[float] = METEOR_THRESHOLDS,
               merge_iou: float = MERGE_IOU, language_metrics: bool = True):
    self.meteor = meteor
    self.iou_thresholds = tuple(float(t) for t in iou_thresholds)
    self.meteor_thresholds = tuple(float(t) for t in meteor_thresholds)
    self.merge_iou = merge_iou
    self.language_metrics = language_metrics
    self.reset()

  def reset(self) -> None:
    self.scores: list[float] = []  # per record, records in add order (sorted per image)
    self.ok: list[bool] = []
    self.overlaps: list[float] = []
    self.candidates: list[str] = []
    self.references: list[list[str]] = []
    self.image_index: list[int] = []
    self.num_images = 0
    self.num_gt_merged = 0

  def add(self, scores: Any, boxes: Any, captions: Sequence[str], gt_boxes: Any,
          gt_captions: Sequence[str]) -> None:
    """One image: detections' ``scores`` ``[D]``, ``boxes`` ``[D, 4]`` and ``captions``;
    ground truth ``gt_boxes`` ``[N, 4]`` and ``gt_captions``. Boxes in image pixels, xyxy,
    the reference's inclusive convention (see `continuous_to_inclusive`)."""
    s = np.asarray(scores, np.float64).reshape(-1)
    b = _check_boxes(boxes, "detection boxes")
    captions = list(captions)
    if not (s.shape[0] == b.shape[0] == len(captions)):
      raise DataError(f"{s.shape[0]} scores, {b.shape[0]} boxes and {len(captions)} "
                      "captions; expected one of each per detection")
    if not np.isfinite(s).all():
      raise DataError(f"detection scores must be finite, got {s[~np.isfinite(s)][:3]}")
    gt, gt_refs = merged_ground_truth(gt_boxes, gt_captions, self.merge_iou)
    order = np.argsort(-s, kind="stable")
    ious = _iou(b[order], gt)  # [D, G]
    used = np.zeros(gt.shape[0], bool)
    for rank, i in enumerate(order):
      row = ious[rank]
      j = int(np.argmax(row)) if row.size and row.max() > 0 else -1
      overlap = float(row[j]) if j >= 0 else 0.0
      if used.size == 0:
        ok = False  # Lua would crash on used[-1] of an empty tensor
      else:
        # j == -1 is torch's used[-1]: the last merged box (module docstring).
        ok = not used[j]
        used[j] = True
      self.scores.append(float(s[i]))
      self.ok.append(ok)
      self.overlaps.append(overlap)
      self.candidates.append(captions[i])
      self.references.append(list(gt_refs[j]) if j >= 0 else [])
      self.image_index.append(self.num_images)
    self.num_images += 1
    self.num_gt_merged += gt.shape[0]

  def records(self) -> list[dict]:
    """The Lua's records (``ok``, ``ov``, candidate, references, image) in add order."""
    return [dict(ok=ok, overlap=ov, candidate=c, references=r, image=im, score=s)
            for ok, ov, c, r, im, s in zip(self.ok, self.overlaps, self.candidates,
                                           self.references, self.image_index, self.scores)]

  def evaluate(self) -> dict[str, float]:
    """The metric over every image added (module docstring for the keys)."""
    pairs = list(zip(self.candidates, self.references))
    meteor, own = self.meteor, self.meteor is None
    if own and pairs:
      from jaxseg.metrics.meteor import Meteor
      meteor = Meteor()
    try:
      meteor_scores = (np.asarray(meteor.score(pairs), np.float64).reshape(-1) if pairs
                       else np.zeros((0,), np.float64))
    finally:
      if own and meteor is not None:
        meteor.close()
    if meteor_scores.shape[0] != len(pairs):
      raise DataError(f"the caption scorer gave {meteor_scores.shape[0]} scores for "
                      f"{len(pairs)} records")
    order = np.argsort(-np.asarray(self.scores, np.float64), kind="stable")
    ok = np.asarray(self.ok, bool)[order]
    overlap = np.asarray(self.overlaps, np.float64)[order]
    sorted_meteor = meteor_scores[order]

    out: dict[str, float] = {}
    cells = []
    for t_iou in self.iou_thresholds:
      for t_meteor in self.meteor_thresholds:
        tp = ok & (overlap >= t_iou) & (sorted_meteor > t_meteor)
        ap = _average_precision(tp, self.num_gt_merged)
        out[f"ap/iou{t_iou:g}_meteor{t_meteor:g}"] = ap
        cells.append(ap)
    det = []
    for t_iou in self.iou_thresholds:  # Lua's min_score = -1 (METEOR >= 0 > -1)
      ap = _average_precision(ok & (overlap >= t_iou) & (sorted_meteor > -1),
                              self.num_gt_merged)
      out[f"det_ap/iou{t_iou:g}"] = ap
      det.append(ap)
    out["map"] = float(np.mean(cells)) if cells else math.nan
    out["detection_map"] = float(np.mean(det)) if det else math.nan
    out["num_detections"] = float(len(pairs))
    out["num_gt_merged"] = float(self.num_gt_merged)

    good = np.flatnonzero(np.asarray(self.ok, bool)
                          & (np.asarray(self.overlaps, np.float64) >= LANGUAGE_IOU))
    out["meteor_mean"] = float(np.mean(meteor_scores[good])) if good.size else math.nan
    if self.language_metrics:
      out.update(_bleu_cider([self.candidates[k] for k in good],
                             [self.references[k] for k in good]))
    return out


def _bleu_cider(candidates: list[str], references: list[list[str]]) -> dict[str, float]:
  """pycocoevalcap's corpus BLEU-4 and CIDEr (NaN without records)."""
  if not candidates:
    return {"bleu4": math.nan, "cider": math.nan}
  from pycocoevalcap.bleu.bleu import Bleu
  from pycocoevalcap.cider.cider import Cider
  one_line = lambda text: " ".join(str(text).split())  # noqa: E731
  res = {k: [one_line(c)] for k, c in enumerate(candidates)}
  gts = {k: [one_line(r) for r in refs] for k, refs in enumerate(references)}
  bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
  cider, _ = Cider().compute_score(gts, res)
  return {"bleu4": float(bleu[3]), "cider": float(cider)}
