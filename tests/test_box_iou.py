"""jaxseg.metrics.boxes.box_iou: one NumPy box IoU with its conventions as arguments."""
from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from jaxseg.errors import ConfigError, DataError
from jaxseg.metrics import masks, voc
from jaxseg.metrics.boxes import box_iou
from jaxseg.ops.boxes import pairwise_iou


def _xyxy(rng, n):
  xy = rng.uniform(0, 50, (n, 2))
  return np.concatenate([xy, xy + rng.uniform(0, 30, (n, 2))], 1)


def test_hand_computed_conventions():
  a, b = [[0, 0, 10, 10]], [[5, 0, 15, 10]]
  np.testing.assert_allclose(box_iou(a, b), [[50 / 150]])
  # VOC devkit: inclusive pixels, 11 x 11 boxes overlapping in 6 x 11
  np.testing.assert_allclose(box_iou(a, b, pixel_convention=True), [[66 / 176]])
  # COCO xywh: the same boxes
  np.testing.assert_allclose(box_iou([[0, 0, 10, 10]], [[5, 0, 10, 10]], box_format="xywh"),
                             [[50 / 150]])
  # crowd: intersection over the detection's area
  np.testing.assert_allclose(box_iou(a, [[5, 0, 15, 10], [5, 0, 15, 10]], crowd=[False, True]),
                             [[50 / 150, 50 / 100]])
  np.testing.assert_allclose(box_iou([[5, 0, 15, 10]], [[0, 0, 100, 100]], crowd=[True]), [[1.0]])


def test_degenerate_and_nan_boxes_overlap_nothing():
  a = [[0, 0, 10, 10]]
  b = [[2, 2, 2, 8],     # zero width
       [8, 8, 2, 2],     # inverted
       [0, 0, np.nan, 10],
       [10, 0, 20, 10]]  # touching
  np.testing.assert_array_equal(box_iou(a, b), [[0, 0, 0, 0]])
  np.testing.assert_array_equal(box_iou(a, b, crowd=[True] * 4), [[0, 0, 0, 0]])
  # VOC: a zero-width box is one pixel wide
  np.testing.assert_allclose(box_iou(a, b[:1], pixel_convention=True), [[7 / 121]])
  assert box_iou(np.zeros((0, 4)), b).shape == (0, 4)
  assert box_iou(a, np.zeros((0, 4))).shape == (1, 0)


def test_equals_jax_pairwise_iou_and_pycocotools():
  rng = np.random.default_rng(0)
  a, b = _xyxy(rng, 30), _xyxy(rng, 12)
  np.testing.assert_allclose(box_iou(a, b), np.asarray(pairwise_iou(a, b)), atol=1e-6)
  xywh = lambda x: np.concatenate([x[:, :2], x[:, 2:] - x[:, :2]], 1)
  crowd = rng.random(12) < 0.5
  np.testing.assert_array_equal(box_iou(xywh(a), xywh(b), box_format="xywh", crowd=crowd),
                                coco_mask.iou(xywh(a), xywh(b), crowd.astype(np.uint8)))


def test_paired_is_the_diagonal():
  rng = np.random.default_rng(1)
  a, b = _xyxy(rng, 20), _xyxy(rng, 20)
  crowd = rng.random(20) < 0.5
  for kwargs in ({}, {"pixel_convention": True}, {"box_format": "xywh", "crowd": crowd}):
    full = box_iou(a, b, **kwargs)
    np.testing.assert_array_equal(box_iou(a, b, paired=True, **kwargs), np.diag(full))


def test_wrappers_keep_their_conventions():
  rng = np.random.default_rng(2)
  a, b = _xyxy(rng, 9), _xyxy(rng, 7)
  np.testing.assert_array_equal(voc.box_iou(a, b, True), box_iou(a, b, pixel_convention=True))
  crowd = rng.random(7) < 0.5
  np.testing.assert_array_equal(masks.box_iou(a, b, crowd),
                                box_iou(a, b, box_format="xywh", crowd=crowd))


def test_bad_arguments():
  with pytest.raises(ConfigError, match="box_format"):
    box_iou([[0, 0, 1, 1]], [[0, 0, 1, 1]], box_format="cxcywh")
  with pytest.raises(DataError, match="iscrowd has 1 flags for 2"):
    box_iou([[0, 0, 1, 1]], [[0, 0, 1, 1]] * 2, crowd=[True])
  with pytest.raises(DataError, match="paired"):
    box_iou([[0, 0, 1, 1]], [[0, 0, 1, 1]] * 2, paired=True)
