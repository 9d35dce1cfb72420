"""Box IoU in NumPy for the evaluators (host side, any number of boxes, no compilation).

One function for every convention the evaluators and benchmarks need, each an explicit
argument rather than a copy of the formula:

- ``box_format``: ``'xyxy'`` (jaxseg's absolute ``[x1, y1, x2, y2]``) or ``'xywh'`` (COCO's
  ``[x, y, w, h]``; areas are ``w * h`` of the given numbers, as pycocotools computes them);
- ``pixel_convention``: the PASCAL VOC devkit's inclusive pixel indices, widths and
  heights ``x2 - x1 + 1`` (VOCevaldet.m); False: continuous coordinates;
- ``crowd``: per ground truth, whether it is a crowd region; a crowd's IoU is the
  intersection over the *detection's* area (pycocotools maskApi.c bbIou);
- ``paired``: IoU of row i with row i (``[N]``) instead of every pair (``[A, B]``).

Degenerate boxes: a pair whose intersection has width or height <= 0 has IoU 0, whatever
the boxes' own areas (so a zero-width or inverted box overlaps nothing), and so does a pair
with a NaN coordinate. The JAX twin inside `jit` is `jaxseg.ops.boxes.pairwise_iou`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from jaxseg.errors import ConfigError, DataError

BOX_FORMATS = ("xyxy", "xywh")


def box_iou(boxes_a: Any, boxes_b: Any, *, box_format: str = "xyxy",
            pixel_convention: bool = False, crowd: Any = None,
            paired: bool = False) -> np.ndarray:
  """float64 IoU of detections ``boxes_a`` ``[A, 4]`` with ground truths ``boxes_b``
  ``[B, 4]``: ``[A, B]``, or ``[N]`` when ``paired`` (both ``[N, 4]``). See the module
  docstring for the conventions."""
  if box_format not in BOX_FORMATS:
    raise ConfigError(f"box_format {box_format!r} is not one of {BOX_FORMATS}")
  a = np.asarray(boxes_a, np.float64).reshape(-1, 4)
  b = np.asarray(boxes_b, np.float64).reshape(-1, 4)
  if paired and a.shape[0] != b.shape[0]:
    raise DataError(f"paired box IoU of {a.shape[0]} and {b.shape[0]} boxes; expected as "
                    "many of each")
  if crowd is not None:
    crowd = np.asarray(crowd, bool).reshape(-1)
    if crowd.size != b.shape[0]:
      raise DataError(f"iscrowd has {crowd.size} flags for {b.shape[0]} ground truth boxes")
  if not paired:  # broadcast [A, 1, 4] against [1, B, 4]
    a, b = a[:, None, :], b[None, :, :]
  one = 1.0 if pixel_convention else 0.0
  if box_format == "xywh":
    a_x2, a_y2 = a[..., 2] + a[..., 0], a[..., 3] + a[..., 1]
    b_x2, b_y2 = b[..., 2] + b[..., 0], b[..., 3] + b[..., 1]
    area_a = (a[..., 2] + one) * (a[..., 3] + one)
    area_b = (b[..., 2] + one) * (b[..., 3] + one)
  else:
    a_x2, a_y2, b_x2, b_y2 = a[..., 2], a[..., 3], b[..., 2], b[..., 3]
    area_a = (a[..., 2] - a[..., 0] + one) * (a[..., 3] - a[..., 1] + one)
    area_b = (b[..., 2] - b[..., 0] + one) * (b[..., 3] - b[..., 1] + one)
  iw = np.minimum(a_x2, b_x2) - np.maximum(a[..., 0], b[..., 0]) + one
  ih = np.minimum(a_y2, b_y2) - np.maximum(a[..., 1], b[..., 1]) + one
  inter = iw * ih
  union = area_a + area_b - inter
  if crowd is not None:
    union = np.where(crowd if paired else crowd[None, :], area_a, union)
  out = np.zeros(np.broadcast_shapes(iw.shape, ih.shape), np.float64)
  with np.errstate(invalid="ignore", divide="ignore"):
    np.divide(inter, union, out=out, where=(iw > 0) & (ih > 0))
  return np.where(np.isnan(out), 0.0, out)
