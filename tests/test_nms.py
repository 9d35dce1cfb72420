"""jaxseg.ops.nms against a plain greedy NumPy reference written here."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.errors import ConfigError
from jaxseg.ops import nms as nms_lib


def _iou_one_to_many(box, others):
  """float32 IoU of box [4] with others [K, 4]; 0 where the union is 0."""
  lo = np.maximum(others[:, :2], box[:2])
  hi = np.minimum(others[:, 2:], box[2:])
  inter = np.prod(np.maximum(hi - lo, np.float32(0)), axis=1)
  area = lambda b: np.maximum(b[..., 2] - b[..., 0], 0) * np.maximum(b[..., 3] - b[..., 1], 0)
  union = area(others) + area(box) - inter
  return np.where(union > 0, inter / np.where(union > 0, union, 1), np.float32(0))


def reference_nms(boxes, scores, iou_threshold, max_outputs, score_threshold=-np.inf,
                  valid=None, classes=None):
  """Greedy NMS, written plainly: visit candidates by descending score (stable: lower
  index first on ties), keep a box unless a kept box of its class has IoU > threshold."""
  boxes = np.asarray(boxes, np.float32)
  scores = np.asarray(scores, np.float32)
  n = len(scores)
  valid = np.ones(n, bool) if valid is None else np.asarray(valid)
  classes = np.zeros(n, int) if classes is None else np.asarray(classes)
  keep = []
  for i in np.argsort(-scores, kind="stable"):
    if not (valid[i] and scores[i] > np.float32(score_threshold)):
      continue
    if len(keep) == max_outputs:
      break
    same = [k for k in keep if classes[k] == classes[i]]
    if not same or not np.any(_iou_one_to_many(boxes[i], boxes[same]) > np.float32(iou_threshold)):
      keep.append(int(i))
  return keep


def _check(result, expected, max_outputs):
  idx, count = (np.asarray(r) for r in result)
  assert idx.shape == (max_outputs,) and idx.dtype == np.int32
  assert int(count) == len(expected)
  np.testing.assert_array_equal(idx[:len(expected)], expected)
  assert np.all(idx[len(expected):] == -1)


def _random_boxes(rng, n, grid=4, extent=64.0):
  """Random boxes; on a 1/grid-pixel grid all IoU arithmetic but the division is exact
  (grid 1 with a small extent: many IoUs exactly 1/2 or 1/3, i.e. at the threshold)."""
  xy = rng.uniform(0, extent, (n, 2))
  wh = rng.uniform(0, extent / 3, (n, 2))
  boxes = np.concatenate([xy, xy + wh], axis=1)
  if grid:
    boxes = np.round(boxes * grid) / grid
  return boxes.astype(np.float32)


# (n, max_outputs, tile_size): one tile, several tiles, the full-sort second stage
# (tile_size * 2 < n), max_outputs below and above the count.
CASES = [(40, 64, 256), (200, 30, 16), (201, 500, 32)]


@pytest.mark.parametrize("n,max_outputs,tile_size", CASES)
def test_nms_equals_reference_on_random_inputs(n, max_outputs, tile_size):
  rng = np.random.default_rng(n + max_outputs)
  fn = jax.jit(lambda b, s, t, v: nms_lib.nms(b, s, t, max_outputs, -np.inf, v,
                                               tile_size=tile_size))
  for trial in range(6):
    grid, extent = [(4, 64.0), (1, 12.0), (0, 64.0)][trial % 3]
    boxes = _random_boxes(rng, n, grid, extent)
    # Integer scores give many ties; float scores some exact duplicates.
    scores = (rng.integers(0, 6, n) if trial % 2 == 0 else
              np.round(rng.normal(size=n), 1)).astype(np.float32)
    valid = rng.random(n) > 0.15
    boxes[~valid] = -1.0
    if trial == 3:  # duplicated and zero-area boxes
      boxes[1::7] = boxes[0]
      boxes[2::5, 2] = boxes[2::5, 0]
    thr = [0.5, 1 / 3, 0.7, 0.5, 0.5, 0.3][trial]
    expected = reference_nms(boxes, scores, thr, max_outputs, valid=valid)
    _check(fn(boxes, scores, thr, valid), expected, max_outputs)


def test_nms_continuous_coordinates_large_n():
  rng = np.random.default_rng(7)
  boxes = _random_boxes(rng, 1500, grid=0, extent=300.0)
  scores = rng.random(1500).astype(np.float32)
  for thr in [0.5, 0.2]:
    _check(nms_lib.nms(boxes, scores, thr, 300), reference_nms(boxes, scores, thr, 300), 300)


def test_ties_keep_lower_index_and_signed_zero_is_a_tie():
  box = np.array([[0, 0, 10, 10]] * 4, np.float32)
  # All identical boxes: only the first of the highest score survives.
  _check(nms_lib.nms(box, np.array([1, 2, 2, 0], np.float32), 0.5, 4), [1], 4)
  _check(nms_lib.nms(box, np.array([-0.0, 0.0, 0.0, -0.0], np.float32), 0.5, 4), [0], 4)
  disjoint = np.array([[0, 0, 1, 1], [2, 0, 3, 1], [4, 0, 5, 1], [6, 0, 7, 1]], np.float32)
  _check(nms_lib.nms(disjoint, np.array([0.0, -0.0, 1, 0.0]), 0.5, 4), [2, 0, 1, 3], 4)


def test_threshold_is_strict_and_zero_area_boxes_never_suppress():
  # IoU of the first two is exactly 0.5: kept at threshold 0.5, suppressed below it.
  boxes = np.array([[0, 0, 4, 1], [0, 0, 2, 1], [9, 9, 10, 10], [0, 0, 4, 1]], np.float32)
  scores = np.array([0.9, 0.8, 0.1, 0.0], np.float32)
  _check(nms_lib.nms(boxes, scores, 0.5, 4), [0, 1, 2], 4)
  _check(nms_lib.nms(boxes, scores, 0.4999, 4), [0, 2], 4)
  points = np.array([[3, 3, 3, 3], [3, 3, 3, 3], [3, 3, 3, 9], [5, 2, 4, 8]], np.float32)
  _check(nms_lib.nms(points, np.arange(4.0), 0.0, 4), [3, 2, 1, 0], 4)


def test_score_threshold_empty_and_invalid_inputs():
  rng = np.random.default_rng(1)
  boxes = _random_boxes(rng, 30)
  scores = rng.random(30).astype(np.float32)
  ones = np.ones(30, bool)
  _check(nms_lib.nms(boxes, scores, 0.5, 30, score_threshold=2.0, valid=ones), [], 30)
  _check(nms_lib.nms(boxes, scores, 0.5, 30, valid=np.zeros(30, bool)), [], 30)
  _check(nms_lib.nms(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), 0.5, 3), [], 3)
  nan = scores.copy()
  nan[::2] = np.nan
  _check(nms_lib.nms(boxes, nan, 0.5, 30, valid=ones), reference_nms(boxes, nan, 0.5, 30), 30)
  thr = 0.6
  _check(nms_lib.nms(boxes, scores, 0.5, 30, score_threshold=thr, valid=ones),
         reference_nms(boxes, scores, 0.5, 30, score_threshold=thr), 30)
  idx, count = nms_lib.nms(boxes, scores, 0.5, 0)
  assert idx.shape == (0,) and int(count) == 0
  with pytest.raises(ConfigError, match="max_outputs"):
    nms_lib.nms(boxes, scores, 0.5, -1)


def test_batched_nms_is_per_class():
  rng = np.random.default_rng(3)
  n, k = 120, 50
  fn = jax.jit(lambda b, s, c: nms_lib.batched_nms(b, s, c, 0.4, k, tile_size=32))
  for _ in range(3):
    boxes = _random_boxes(rng, n, extent=32.0)
    scores = rng.integers(0, 10, n).astype(np.float32)
    classes = rng.integers(0, 3, n)
    expected = reference_nms(boxes, scores, 0.4, k, classes=classes)
    _check(fn(boxes, scores, classes), expected, k)
    # Same as class-by-class NMS merged by (score desc, index asc), cut at k.
    merged = []
    for c in range(3):
      sel = np.flatnonzero(classes == c)
      merged += [int(sel[i]) for i in reference_nms(boxes[sel], scores[sel], 0.4, n)]
    merged.sort(key=lambda i: (-scores[i], i))
    assert expected == merged[:k]
  # Identical boxes of different classes do not suppress each other.
  same = np.zeros((n, 4), np.float32)
  same[:3] = [0, 0, 5, 5]
  scores = np.zeros(n, np.float32)
  scores[:3] = [3, 2, 1]
  classes = np.zeros(n, np.int32)
  classes[1] = 1
  _check(fn(same, scores, classes), [0, 1] + list(range(3, k + 1)), k)


def test_nms_vmaps_over_images():
  rng = np.random.default_rng(5)
  b, n, k = 3, 48, 20
  boxes = np.stack([_random_boxes(rng, n) for _ in range(b)])
  scores = rng.integers(0, 4, (b, n)).astype(np.float32)
  valid = np.arange(n)[None, :] < np.array([48, 10, 0])[:, None]
  thresholds = np.array([0.5, 0.3, 0.5], np.float32)
  fn = jax.jit(jax.vmap(lambda bx, s, t, v: nms_lib.nms(bx, s, t, k, 0.5, v, tile_size=16)))
  idx, count = fn(boxes, scores, thresholds, valid)
  for i in range(b):
    _check((idx[i], count[i]),
           reference_nms(boxes[i], scores[i], thresholds[i], k, 0.5, valid[i]), k)
  assert jnp.asarray(count).shape == (b,)
