"""Region proposals: sliding windows by hand, selective search's parts and whole."""
from __future__ import annotations

import functools

import numpy as np
import pytest

from jaxseg.errors import ConfigError, DataError
from jaxseg.ops import proposals as P


def _iou(a, b):
  """Pairwise IoU of xyxy boxes (numpy reference)."""
  lo = np.maximum(a[:, None, :2], b[None, :, :2])
  hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
  inter = np.prod(np.clip(hi - lo, 0, None), -1)
  area = lambda x: np.prod(x[:, 2:] - x[:, :2], -1)
  return inter / (area(a)[:, None] + area(b)[None, :] - inter)


# Flat-coloured rectangles on a grey background: (x1, y1, x2, y2), RGB.
RECTS = [((6, 8, 30, 40), (220, 30, 30)), ((40, 10, 90, 26), (30, 200, 40)),
         ((50, 40, 80, 70), (20, 40, 230)), ((10, 50, 34, 66), (240, 230, 20))]


def _rectangles_image():
  image = np.full((80, 100, 3), 128, np.uint8)
  for (x1, y1, x2, y2), colour in RECTS:
    image[y1:y2, x1:x2] = colour
  return image


@functools.lru_cache(maxsize=1)
def _shapes_image():
  from jaxseg.data.shapes import render_example, shapes_config
  rng = np.random.default_rng([1, 3])
  return render_example(rng, shapes_config(image_size=64, min_objects=2, max_objects=3))


# ---------------------------------------------------------------------------- windows


def test_sliding_windows_count_and_coordinates_by_hand():
  # 4x4 windows, stride 2, in a 10 (H) x 12 (W) image: (12-4)//2+1 = 5 columns, 4 rows.
  boxes = P.sliding_windows(10, 12, scales=(4,))
  assert boxes.shape == (20, 4) and boxes.dtype == np.float32
  assert P.num_sliding_windows(10, 12, scales=(4,)) == 20
  np.testing.assert_array_equal(boxes[:2], [[0, 0, 4, 4], [2, 0, 6, 4]])
  np.testing.assert_array_equal(boxes[5], [0, 2, 4, 6])  # row-major: next row after 5
  np.testing.assert_array_equal(boxes[-1], [8, 6, 12, 10])
  # Stride 3: columns at 0, 3, 6 would leave 2 px on the right; the grid is centred: 1, 4, 7.
  boxes = P.sliding_windows(4, 12, scales=(4,), strides=3)
  np.testing.assert_array_equal(boxes[:, 0], [1, 4, 7])
  np.testing.assert_array_equal(boxes[:, 2], [5, 8, 11])
  # Aspect ratio 2 (width / height) at scale 4: round(4 sqrt 2) = 6 wide, round(2.83) = 3 high.
  boxes = P.sliding_windows(3, 6, scales=(4,), aspect_ratios=(2.0,))
  np.testing.assert_array_equal(boxes, [[0, 0, 6, 3]])


def test_sliding_windows_clip_and_windows_larger_than_the_image():
  # 5 px wide, stride 2, width 12: ceil(7/2)+1 = 5 columns at 0..8; the last clipped to 12.
  boxes = P.sliding_windows(5, 12, scales=(5,), strides=2, placement="clip")
  np.testing.assert_array_equal(boxes[:, 0], [0, 2, 4, 6, 8])
  np.testing.assert_array_equal(boxes[:, 2], [5, 7, 9, 11, 12])
  assert P.num_sliding_windows(5, 12, scales=(5,), strides=2, placement="clip") == 5
  assert P.sliding_windows(10, 10, scales=(20,)).shape == (0, 4)
  np.testing.assert_array_equal(P.sliding_windows(10, 8, scales=(20,), placement="clip"),
                                [[0, 0, 8, 10]])


@pytest.mark.parametrize("placement", ["inside", "clip"])
def test_sliding_window_count_formula_matches_enumeration(placement):
  rng = np.random.default_rng(0)
  for _ in range(20):
    h, w = rng.integers(1, 90, 2)
    scales = tuple(rng.integers(1, 100, rng.integers(1, 4)))
    ratios = tuple(rng.uniform(0.3, 3, rng.integers(1, 4)))
    frac = rng.uniform(0.1, 1.5)
    n = P.num_sliding_windows(h, w, scales, ratios, frac, placement=placement)
    boxes = P.sliding_windows(h, w, scales, ratios, frac, placement=placement)
    assert boxes.shape == (n, 4)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    assert (boxes[:, 2:] > boxes[:, :2]).all()


# ---------------------------------------------------------------------------- parts


def test_similarities_on_hand_computed_values():
  assert P.histogram_intersection(np.array([0.5, 0.5, 0.0]),
                                  np.array([0.25, 0.25, 0.5])) == pytest.approx(0.5)
  assert P.histogram_intersection(np.array([1.0, 0]), np.array([0, 1.0])) == 0
  assert P.size_similarity(10, 20, 100) == pytest.approx(0.7)
  # Two 2x2 regions side by side with a 1 px gap: union box 5x2 = 10, gap 2 px.
  assert P.fill_similarity(np.array([0, 0, 2, 2]), np.array([3, 0, 5, 2]), 4, 4,
                           100) == pytest.approx(0.98)
  assert P.fill_similarity(np.array([0, 0, 2, 2]), np.array([2, 0, 4, 2]), 4, 4,
                           100) == pytest.approx(1.0)
  assert P.parse_similarity("tsf") == {"T", "S", "F"}


def test_colour_histogram_by_hand():
  # One channel ('i'): pixel values 0, 1/2, 1, 1 -> bins 0, 12, 24, 24 of 25.
  space = np.array([[[0.0], [0.5], [1.0], [1.0]]], np.float32)
  hist = P.colour_histograms(np.array([[0, 0, 1, 1]]), space)
  assert hist.shape == (2, 25)
  expected = np.zeros((2, 25))
  expected[0, [0, 12]] = 0.5
  expected[1, 24] = 1.0
  np.testing.assert_allclose(hist, expected)
  # Three channels: each region's histogram sums to 1 over the concatenated channels.
  space = np.random.default_rng(0).random((6, 7, 3)).astype(np.float32)
  labels = np.arange(42).reshape(6, 7) % 3
  hist = P.colour_histograms(labels, space)
  assert hist.shape == (3, 75)
  np.testing.assert_allclose(hist.sum(1), 1)
  np.testing.assert_allclose(hist[:, :25].sum(1), 1 / 3)


def test_merged_histograms_equal_the_histogram_of_the_union():
  image = _shapes_image()["image"]
  space = P.colour_space(image, "lab")
  labels = (np.arange(64)[:, None] // 16 * 4 + np.arange(64)[None, :] // 16)  # 16 blocks
  union = np.where(labels == 5, 6, labels)
  union = np.where(union > 5, union - 1, union)  # relabel to 0..14 with 5+6 -> 5
  sizes = np.bincount(labels.ravel())
  for hists in (P.colour_histograms, P.texture_histograms):
    parts, whole = hists(labels, space), hists(union, space)
    assert parts.shape[1] == (75 if hists is P.colour_histograms else 240)
    merged = P.merge_histograms(parts[5], sizes[5], parts[6], sizes[6])
    np.testing.assert_allclose(merged, whole[5], atol=1e-12)
    np.testing.assert_allclose(parts.sum(1), 1)


def test_adjacency_and_grouping_hierarchy():
  labels = np.array([[0, 0, 1], [2, 2, 1], [2, 3, 3]])
  np.testing.assert_array_equal(P.adjacent_pairs(labels),
                                [[0, 1], [0, 2], [1, 2], [1, 3], [2, 3]])
  np.testing.assert_array_equal(P.region_boxes(labels),
                                [[0, 0, 2, 1], [2, 0, 3, 2], [0, 1, 2, 3], [1, 2, 3, 3]])
  # Size only: the two smallest adjacent regions first (0 and 1, 2 px each; ties -> ids).
  boxes, merges = P.hierarchical_grouping(labels, similarity="S")
  assert boxes.shape == (7, 4) and merges.shape == (3, 2)
  np.testing.assert_array_equal(merges[0], [0, 1])
  np.testing.assert_array_equal(boxes[4], [0, 0, 3, 2])
  np.testing.assert_array_equal(boxes[-1], [0, 0, 3, 3])
  # Every region is merged exactly once, and only into later regions.
  assert sorted(merges.ravel().tolist()) == list(range(6))
  assert all(max(m) < 4 + k for k, m in enumerate(merges.tolist()))


# ---------------------------------------------------------------------------- whole


def test_selective_search_finds_each_flat_rectangle_exactly():
  image = _rectangles_image()
  boxes = P.selective_search(image, "fast")
  gt = np.array([r for r, _ in RECTS], np.float32)
  best = _iou(gt, boxes).max(1)
  np.testing.assert_allclose(best, 1.0)


def test_selective_search_boxes_well_formed_deterministic_and_ranked():
  example = _shapes_image()
  image = example["image"]
  boxes = P.selective_search(image, "fast", seed=3)
  h, w = image.shape[:2]
  assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
  assert 0 < len(boxes) <= 2000
  assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
  assert (boxes[:, 2:] > boxes[:, :2]).all()
  np.testing.assert_array_equal(boxes, np.round(boxes))
  assert len(np.unique(boxes, axis=0)) == len(boxes)
  np.testing.assert_array_equal(boxes, P.selective_search(image, "fast", seed=3))
  other = P.selective_search(image, "fast", seed=4)
  assert {tuple(b) for b in other.tolist()} == {tuple(b) for b in boxes.tolist()}
  assert not np.array_equal(other, boxes)  # the ranking's random factor differs
  np.testing.assert_array_equal(P.selective_search(image, "fast", seed=3, max_proposals=7),
                                boxes[:7])
  # Every ground-truth object is found at IoU >= 0.5.
  gt = example["objects"]["bbox"][:, [1, 0, 3, 2]] * w
  assert (_iou(gt, boxes).max(1) >= 0.5).all()


def test_quality_mode_contains_fast_and_explicit_parameters():
  image = _shapes_image()["image"][:40, :48]
  fast = P.selective_search(image, "fast", max_proposals=10**6)
  quality = P.selective_search(image, "quality", max_proposals=10**6)
  as_set = lambda b: {tuple(x) for x in b.tolist()}
  assert as_set(fast) <= as_set(quality) and len(quality) > len(fast)
  one = P.selective_search(image, scales=(100,), colour_spaces="rgb", similarities="CTSF",
                           max_proposals=10**6)
  assert 1 <= len(one) <= len(fast) + 100
  wide = P.selective_search(image, "fast", min_box_size=10, max_proposals=10**6)
  assert ((wide[:, 2:] - wide[:, :2]) >= 10).all()


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 7, 3), (20, 20, 3)])
def test_selective_search_tiny_and_uniform_images_give_the_whole_image(shape):
  boxes = P.selective_search(np.zeros(shape, np.uint8))
  np.testing.assert_array_equal(boxes, [[0, 0, shape[1], shape[0]]])


@pytest.mark.parametrize("image, kwargs, error, match", [
    (np.zeros((8, 8, 3), np.float32), {}, DataError, "uint8"),
    (np.zeros((8, 8), np.uint8), {}, DataError, r"\[H, W, 3\]"),
    (np.zeros((8, 8, 4), np.uint8), {}, DataError, "shape"),
    (np.zeros((8, 8, 3), np.uint8), {"max_proposals": 0}, ConfigError, "max_proposals"),
    (np.zeros((8, 8, 3), np.uint8), {"mode": "slow"}, ConfigError, "mode"),
    (np.zeros((8, 8, 3), np.uint8), {"similarities": ("CX",)}, ConfigError, "similarity"),
    (np.zeros((8, 8, 3), np.uint8), {"colour_spaces": ("xyz",)}, ConfigError, "colour space"),
    (np.zeros((8, 8, 3), np.uint8), {"scales": (0,)}, ConfigError, "scales"),
    (np.zeros((8, 8, 3), np.uint8), {"sigma": -1}, ConfigError, "sigma"),
])
def test_selective_search_bad_input(image, kwargs, error, match):
  with pytest.raises(error, match=match):
    P.selective_search(image, **kwargs)


def test_sliding_windows_bad_input():
  with pytest.raises(ConfigError, match="scales"):
    P.sliding_windows(10, 10, scales=(-4,))
  with pytest.raises(ConfigError, match="image_height"):
    P.sliding_windows(0, 10, scales=(4,))
  with pytest.raises(ConfigError, match="placement"):
    P.sliding_windows(10, 10, scales=(4,), placement="pad")
  with pytest.raises(ConfigError, match="strides"):
    P.sliding_windows(10, 10, scales=(4, 5), strides=(2,))
