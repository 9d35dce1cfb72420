"""Precomputed proposals: cached per split and settings, and moved with the image by
every preprocessing step exactly as the ground-truth boxes are."""
import numpy as np
import pytest
import tensorflow as tf

from conftest import load_config
from jaxseg.data import detection, region_proposals


@pytest.fixture
def dataset_config(data_dir):
  c = load_config().dataset
  with c.unlocked():
    c.data_dir = data_dir
  return c


def _gt_as_proposals(ds, p=6):
  """Each example's ground-truth boxes as its proposals (padded to p)."""
  def add(e):
    n = tf.minimum(tf.shape(e["boxes"])[0], p)
    boxes = tf.pad(e["boxes"][:n], [[0, p - n], [0, 0]], constant_values=-1.0)
    return {**e, "proposals": tf.ensure_shape(boxes, [p, 4]),
            "proposal_valid": tf.range(p) < n}
  return ds.map(add)


@pytest.mark.parametrize("train", [True, False])
def test_proposals_move_with_the_boxes(dataset_config, train):
  ds, _ = detection.load_split(dataset_config, "eval")
  ds = _gt_as_proposals(ds)
  size = 24  # a resize, and in training a random crop, flip and scale
  if train:
    pre = detection.make_train_preprocess(size, 8, dict(flip=True, min_scale=0.7, max_scale=1.4))
    ds = ds.enumerate().map(lambda i, e: pre(e, tf.stack([tf.constant(3, tf.int64), i])))
  else:
    ds = ds.map(detection.make_eval_preprocess(size, 8))
  checked = 0
  for e in ds.as_numpy_iterator():
    valid = e["proposal_valid"]
    assert np.all(e["proposals"][~valid] == -1)
    boxes = e["boxes"][e["valid"]]
    # every surviving gt box is one of the proposals (same transform, same clipping)
    for box in boxes:
      d = np.abs(e["proposals"][valid] - box).max(axis=1)
      assert d.min() < 1e-4, (box, e["proposals"][valid])
      checked += 1
  assert checked > 5


def test_cache_round_trip_and_settings_in_the_name(dataset_config, tmp_path, monkeypatch):
  ds, n = detection.load_split(dataset_config, "eval")
  settings = region_proposals.settings_of(dict(method="sliding_windows", max_proposals=50,
                                               scales=(8.0, 16.0), cache_dir=str(tmp_path)))
  boxes, counts, seconds = region_proposals.load_or_compute(dataset_config, "eval", ds, n,
                                                            settings)
  assert boxes.shape == (n, 50, 4) and np.all(counts > 0) and seconds >= 0
  assert np.all(boxes[0, counts[0]:] == -1)

  def no_compute(*a, **k):
    raise AssertionError("recomputed despite the cache")
  monkeypatch.setattr(region_proposals, "compute", no_compute)
  again, _, _ = region_proposals.load_or_compute(dataset_config, "eval", ds, n, settings)
  np.testing.assert_array_equal(again, boxes)
  other = dict(settings, max_proposals=40)
  assert (region_proposals.cache_path(dataset_config, "eval", other, n)
          != region_proposals.cache_path(dataset_config, "eval", settings, n))
  attached = region_proposals.attach(ds, boxes, counts)
  first = next(attached.as_numpy_iterator())
  np.testing.assert_array_equal(first["proposals"], boxes[0])
  assert first["proposal_valid"].sum() == counts[0]


def test_selective_search_proposals_of_a_split(dataset_config, tmp_path):
  ds, n = detection.load_split(dataset_config, "eval")
  settings = region_proposals.settings_of(dict(max_proposals=30, cache_dir=str(tmp_path)))
  boxes, counts, _ = region_proposals.load_or_compute(dataset_config, "eval", ds.take(3), 3,
                                                      settings)
  assert boxes.shape == (3, 30, 4) and np.all(counts >= 1)
  size = dataset_config.image_size
  real = boxes[0, :counts[0]]
  assert np.all(real >= 0) and np.all(real <= size)
