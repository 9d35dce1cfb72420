"""Losses and segmentation metrics against hand-computed values and NumPy references."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import losses
from jaxseg.metrics import segmentation as seg_metrics

BIG = 30.0  # logits this far apart make the softmax one-hot to float32 precision


def test_cross_entropy_hand_computed_with_ignore():
  logits = jnp.array([[0.0, math.log(3.0)], [0.0, 0.0], [5.0, -5.0]])
  labels = jnp.array([1, 0, 255])
  # p = (1/4, 3/4) -> -log(3/4); p = (1/2, 1/2) -> log 2; third pixel ignored.
  expected = (math.log(4 / 3) + math.log(2)) / 2
  assert float(losses.softmax_cross_entropy(logits, labels)) == pytest.approx(expected, 1e-6)


def test_cross_entropy_all_ignored_is_zero():
  logits = jnp.ones((2, 3, 4))
  assert float(losses.softmax_cross_entropy(logits, jnp.full((2, 3), 255))) == 0.0


def test_soft_dice_hand_computed():
  predicted = np.array([0, 1, 1, 0, 1])
  labels = jnp.array([0, 1, 0, 0, 255])  # last pixel ignored
  logits = jnp.asarray(np.eye(2)[predicted] * BIG)
  # class 0: I=2, P=2, Y=3 -> (4+1)/(5+1); class 1: I=1, P=2, Y=1 -> (2+1)/(3+1)
  expected = 1 - (5 / 6 + 3 / 4) / 2
  assert float(losses.soft_dice_loss(logits, labels)) == pytest.approx(expected, 1e-6)


def test_soft_dice_perfect_prediction_is_zero():
  labels = np.random.default_rng(0).integers(0, 3, (2, 5, 5))
  logits = jnp.asarray(np.eye(3)[labels] * BIG)
  assert float(losses.soft_dice_loss(logits, jnp.asarray(labels))) == pytest.approx(0.0, abs=1e-6)


def test_confusion_matrix_hand_computed():
  labels = jnp.array([[0, 0, 1], [1, 255, 2]])
  preds = jnp.array([[0, 1, 1], [0, 2, 2]])
  expected = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]])
  np.testing.assert_array_equal(seg_metrics.confusion_matrix(labels, preds, 3), expected)


def test_confusion_matrix_matches_numpy_on_random_input():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 5, (3, 17, 9))
  labels[rng.random(labels.shape) < 0.1] = 255
  preds = rng.integers(0, 5, labels.shape)
  expected = np.zeros((5, 5), np.int64)
  valid = labels != 255
  np.add.at(expected, (labels[valid], preds[valid]), 1)
  np.testing.assert_array_equal(
      seg_metrics.confusion_matrix(jnp.asarray(labels), jnp.asarray(preds), 5), expected)


def test_summary_hand_computed():
  cm = np.array([[3, 1], [2, 4]])  # tp = 3, 4; fp = 2, 1; fn = 1, 2
  s = seg_metrics.summarize_confusion(cm, ["bg", "fg"])
  assert s["pixel_accuracy"] == pytest.approx(7 / 10)
  assert s["iou/bg"] == pytest.approx(3 / 6)
  assert s["iou/fg"] == pytest.approx(4 / 7)
  assert s["mIoU"] == pytest.approx((3 / 6 + 4 / 7) / 2)
  assert s["dice/bg"] == pytest.approx(6 / 9)
  assert s["dice/fg"] == pytest.approx(8 / 11)
  assert s["mean_dice"] == pytest.approx((6 / 9 + 8 / 11) / 2)


def test_summary_excludes_absent_classes_from_means():
  cm = np.array([[5, 0, 0], [0, 0, 0], [1, 0, 4]])  # class 1 never occurs nor is predicted
  s = seg_metrics.summarize_confusion(cm, ["a", "b", "c"])
  assert math.isnan(s["iou/b"])
  assert s["mIoU"] == pytest.approx((5 / 6 + 4 / 5) / 2)
