"""PASCAL VOC detection average precision (Everingham et al., IJCV 2010; devkit VOCevaldet.m).

Per class, detections of all images are sorted by decreasing score (a stable sort: ties
keep the order in which images and their detections were given). Each detection takes the
ground-truth box of its class, in its image, with the highest IoU (the first on ties),
among all of them, matched or not, as the devkit does. If that IoU is >= `iou_threshold`:
the detection is ignored (neither TP nor FP) when the box is 'difficult', a TP when the
box is not yet matched (it becomes matched), and an FP (a duplicate) when it is. Otherwise
it is an FP. Difficult boxes do not count in the number of positives.

AP is the area under the monotone (non-increasing) precision envelope, summed where the
recall changes (VOC 2010+, `use_07_metric=False`), or the mean over recall levels
0, 0.1, ..., 1 of the highest precision at a recall >= the level (VOC 2007, 11 points).

Conventions, all as the official devkit:
- `pixel_convention=False` (default): jaxseg's continuous coordinates, widths ``x2 - x1``
  (`jaxseg.data.detection` already turns VOC's 1-based inclusive boxes into these, so this
  gives the devkit's IoU); True: boxes as the devkit's inclusive pixel indices, widths
  ``x2 - x1 + 1`` (py-faster-rcnn voc_eval, detectron2 on raw VOC annotations).
- A match needs IoU >= threshold (the devkit; py-faster-rcnn and detectron2 use ``>``).
- The 11 recall levels are exactly k/10 (py-faster-rcnn's ``np.arange(0., 1.1, 0.1)``
  makes 0.3, 0.6 and 0.7 slightly larger, so a recall of exactly 0.3, 0.6 or 0.7 misses
  that level there).
- Classes with no non-difficult ground truth have AP NaN and are left out of the mAP
  (the devkit would divide by zero); a class with ground truth and no detection has AP 0.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from jaxseg.errors import ConfigError, DataError
from jaxseg.metrics.boxes import box_iou as _box_iou


def voc_ap(recall, precision, use_07_metric: bool = False) -> float:
  """AP of a precision/recall curve (points in order of decreasing score), VOCap.m."""
  rec = np.asarray(recall, np.float64).reshape(-1)
  prec = np.asarray(precision, np.float64).reshape(-1)
  if rec.shape != prec.shape:
    raise DataError(f"recall {rec.shape} and precision {prec.shape} differ in length")
  if use_07_metric:
    ap = 0.0
    for level in np.arange(11) / 10.0:
      above = rec >= level
      ap += (prec[above].max() if above.any() else 0.0) / 11.0
    return float(ap)
  mrec = np.concatenate([[0.0], rec, [1.0]])
  mpre = np.concatenate([[0.0], prec, [0.0]])
  mpre = np.maximum.accumulate(mpre[::-1])[::-1]
  i = np.flatnonzero(mrec[1:] != mrec[:-1])
  return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def box_iou(boxes_a, boxes_b, pixel_convention: bool = False) -> np.ndarray:
  """``[A, B]`` IoU of ``[x1, y1, x2, y2]`` boxes as in VOCevaldet.m (`pixel_convention`:
  widths ``x2 - x1 + 1``); pairs that do not overlap (intersection width or height <= 0)
  get 0. `jaxseg.metrics.boxes.box_iou` with the VOC options."""
  return _box_iou(boxes_a, boxes_b, pixel_convention=pixel_convention)


def _records(name: str, records: Any) -> dict:
  if isinstance(records, Mapping):
    return dict(records)
  try:
    return dict(enumerate(records))
  except TypeError as e:
    raise DataError(f"{name} is a {type(records).__name__}; expected a dict image id -> "
                    "record or a list of records") from e


def _field(record: Any, key: str, where: str, shape_tail: tuple, dtype, n: int | None,
           default=None) -> np.ndarray:
  if not isinstance(record, Mapping):
    raise DataError(f"{where} is a {type(record).__name__}; expected a dict")
  if key not in record:
    if default is not None:
      return default
    raise DataError(f"{where} has no '{key}'; found keys {sorted(map(str, record))}")
  try:
    value = np.asarray(record[key], dtype)
  except (TypeError, ValueError) as e:
    raise DataError(f"{where}['{key}'] is not a numeric array") from e
  if value.size == 0:
    value = value.reshape((0,) + shape_tail)
  if value.shape[1:] != shape_tail or value.ndim != 1 + len(shape_tail) or (
      n is not None and value.shape[0] != n):
    expected = f"[{n if n is not None else 'N'}{''.join(f', {s}' for s in shape_tail)}]"
    raise DataError(f"{where}['{key}'] has shape {list(value.shape)}; expected {expected}")
  if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
    raise DataError(f"{where}['{key}'] holds NaN or Inf")
  return value


def _valid(record: Mapping, where: str, n: int) -> np.ndarray:
  return _field(record, "valid", where, (), bool, n, default=np.ones((n,), bool))


def _labels(labels: np.ndarray, where: str, num_classes: int) -> np.ndarray:
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise DataError(f"{where}['labels'] span [{labels.min()}, {labels.max()}]; expected "
                    f"[0, {num_classes})")
  return labels


def evaluate_voc(groundtruths, detections, num_classes: int, iou_threshold: float = 0.5,
                 use_07_metric: bool = False, pixel_convention: bool = False) -> dict:
  """VOC AP per class and their mean, as the devkit (see the module doc).

  Args:
    groundtruths: per image (a dict image id -> record, or a list indexed by image) a dict
      with ``boxes`` [G, 4] ``x1, y1, x2, y2``, ``labels`` [G] ints in [0, num_classes)
      and optionally ``difficult`` [G] bool (default False) and ``valid`` [G] bool
      (padded rows, which are dropped before any check; default all valid).
    detections: per image, keyed as `groundtruths` (images may be missing), a dict with
      ``boxes`` [D, 4], ``scores`` [D], ``labels`` [D] and optionally ``valid`` [D].
    num_classes: classes 0 .. num_classes - 1 are evaluated.

  Returns:
    ``{'ap': float64 [C] (NaN without ground truth), 'map': float (mean of the non-NaN
    APs; NaN if none), 'num_gt': int64 [C] non-difficult boxes, 'num_det': int64 [C],
    'recall': [C] arrays, 'precision': [C] arrays}`` (curves in order of decreasing
    score; detections matched to difficult boxes included, adding to neither count).
  """
  if not 0 < iou_threshold <= 1:
    raise ConfigError(f"iou_threshold {iou_threshold} is not in (0, 1]")
  if int(num_classes) != num_classes or num_classes < 1:
    raise ConfigError(f"num_classes {num_classes} is not a positive int")
  num_classes = int(num_classes)
  gts = _records("groundtruths", groundtruths)
  dets = _records("detections", detections)
  num_gt = np.zeros((num_classes,), np.int64)
  parsed_gt = {}
  for key, rec in gts.items():
    where = f"groundtruths[{key!r}]"
    boxes = _field(rec, "boxes", where, (4,), np.float64, None)
    n = boxes.shape[0]
    labels = _field(rec, "labels", where, (), np.int64, n)
    difficult = _field(rec, "difficult", where, (), bool, n, default=np.zeros((n,), bool))
    keep = _valid(rec, where, n)
    boxes, labels, difficult = boxes[keep], labels[keep], difficult[keep]
    parsed_gt[key] = (boxes, _labels(labels, where, num_classes), difficult)
    num_gt += np.bincount(labels[~difficult], minlength=num_classes)

  all_scores, all_labels, all_tp, all_fp = [], [], [], []
  for key, rec in dets.items():
    where = f"detections[{key!r}]"
    if key not in parsed_gt:
      raise DataError(f"{where}: image {key!r} is not among the ground truth images")
    boxes = _field(rec, "boxes", where, (4,), np.float64, None)
    n = boxes.shape[0]
    scores = _field(rec, "scores", where, (), np.float64, n)
    labels = _field(rec, "labels", where, (), np.int64, n)
    keep = _valid(rec, where, n)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    labels = _labels(labels, where, num_classes)
    tp, fp = _match_image(boxes, scores, labels, *parsed_gt[key], iou_threshold,
                          pixel_convention)
    all_scores.append(scores)
    all_labels.append(labels)
    all_tp.append(tp)
    all_fp.append(fp)
  scores = np.concatenate(all_scores) if all_scores else np.zeros((0,))
  labels = np.concatenate(all_labels) if all_labels else np.zeros((0,), np.int64)
  tp = np.concatenate(all_tp) if all_tp else np.zeros((0,), bool)
  fp = np.concatenate(all_fp) if all_fp else np.zeros((0,), bool)

  ap = np.full((num_classes,), np.nan)
  num_det = np.bincount(labels, minlength=num_classes).astype(np.int64)
  recalls, precisions = [], []
  for c in range(num_classes):
    sel = np.flatnonzero(labels == c)
    order = sel[np.argsort(-scores[sel], kind="stable")]
    ctp = np.cumsum(tp[order]).astype(np.float64)
    cfp = np.cumsum(fp[order]).astype(np.float64)
    prec = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
    if num_gt[c] == 0:
      rec = np.full(ctp.shape, np.nan)
    else:
      rec = ctp / float(num_gt[c])
      ap[c] = voc_ap(rec, prec, use_07_metric)
    recalls.append(rec)
    precisions.append(prec)
  counted = ~np.isnan(ap)
  mean = float(ap[counted].mean()) if counted.any() else float("nan")
  return {"ap": ap, "map": mean, "num_gt": num_gt, "num_det": num_det,
          "recall": recalls, "precision": precisions}


def _match_image(boxes, scores, labels, gt_boxes, gt_labels, gt_difficult,
                 iou_threshold: float, pixel_convention: bool):
  """TP and FP flags of one image's detections (VOCevaldet.m's loop, vectorized)."""
  d = boxes.shape[0]
  tp = np.zeros((d,), bool)
  if d == 0:
    return tp, np.zeros((0,), bool)
  if gt_boxes.shape[0] == 0:
    return tp, np.ones((d,), bool)
  overlaps = box_iou(boxes, gt_boxes, pixel_convention)
  overlaps = np.where(labels[:, None] == gt_labels[None, :], overlaps, -np.inf)
  best = np.argmax(overlaps, axis=1)
  matched = overlaps[np.arange(d), best] >= iou_threshold
  ignored = matched & gt_difficult[best]
  candidate = matched & ~ignored
  # In order of decreasing score, the first candidate of each box is the TP.
  order = np.argsort(-scores, kind="stable")
  order = order[candidate[order]]
  _, first = np.unique(best[order], return_index=True)
  tp[order[first]] = True
  return tp, ~tp & ~ignored
