"""COCO masks for the evaluators, `pycocotools.mask`'s API: the RLE codec of
`jaxseg.formats.rle` (encode, decode, area, to_bbox, merge, iou, to_rle, to_rles) and
`box_iou`, pycocotools' ``mask.iou`` on ``[x, y, w, h]`` boxes."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxseg.formats.rle import RLE, area, decode, encode, iou, merge, to_bbox, to_rle, to_rles
from jaxseg.metrics import boxes

__all__ = ["RLE", "area", "box_iou", "decode", "encode", "iou", "merge", "to_bbox", "to_rle",
           "to_rles"]


def box_iou(dt_boxes, gt_boxes, iscrowd: Sequence[bool]) -> np.ndarray:
  """``[D, G]`` IoU of ``[x, y, w, h]`` boxes, equal to pycocotools.mask.iou on boxes
  (maskApi.c bbIou: crowd ground truth divides by the detection's area)."""
  return boxes.box_iou(dt_boxes, gt_boxes, box_format="xywh", crowd=iscrowd)
