"""jaxseg.formats.rle (re-exported by jaxseg.metrics.masks) against pycocotools.mask (the
reference; only tests import it)."""
from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from jaxseg.errors import DataError
from jaxseg.formats import rle as masks
from jaxseg.metrics import masks as metric_masks


def _random_masks(rng, h, w, n):
  """Masks of random density, some blobby (long runs), some all 0 / all 1."""
  out = np.zeros((h, w, n), np.uint8)
  for i in range(n):
    kind = rng.integers(5)
    if kind == 0:
      out[:, :, i] = rng.random((h, w)) < rng.random()
    elif kind == 1:
      y0, x0 = rng.integers(0, h), rng.integers(0, w)
      y1, x1 = rng.integers(y0, h + 1), rng.integers(x0, w + 1)
      out[y0:y1, x0:x1, i] = 1
    elif kind == 2:
      out[:, :, i] = rng.integers(0, 2)
    else:
      yy, xx = np.mgrid[:h, :w]
      cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1, max(h, w))
      out[:, :, i] = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
  return out


def _coco_encode(m):
  return coco_mask.encode(np.asfortranarray(m.astype(np.uint8)))


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (9, 1), (5, 6), (33, 17), (64, 48)])
def test_encode_decode_match_pycocotools(shape):
  rng = np.random.default_rng(sum(shape))
  stack = _random_masks(rng, *shape, 12)
  stack[0, 0, 0], stack[0, 0, 1] = 1, 0  # first pixel on / off
  ref = _coco_encode(stack)
  assert masks.encode(stack) == ref
  assert masks.encode(stack.astype(bool)) == ref
  assert masks.encode(stack[:, :, 3]) == _coco_encode(stack[:, :, 3])
  decoded = masks.decode(ref)
  assert decoded.shape == stack.shape and decoded.dtype == np.uint8
  np.testing.assert_array_equal(decoded, stack)
  np.testing.assert_array_equal(masks.decode(ref[5]), stack[:, :, 5])
  np.testing.assert_array_equal(masks.decode({"size": ref[2]["size"],
                                              "counts": ref[2]["counts"].decode()}),
                                stack[:, :, 2])


def test_encode_large_counts_and_empty_stack():
  # Long runs need 5- and 6-character values, and negative differences to the count
  # two places before.
  rng = np.random.default_rng(0)
  h, w = 1000, 3000
  flat = np.zeros(h * w, np.uint8)
  cuts = np.sort(rng.choice(h * w, 40, replace=False))
  for a, b in zip(cuts[0::2], cuts[1::2]):
    flat[a:b] = 1
  m = flat.reshape((h, w), order="F")
  ref = _coco_encode(m)
  assert masks.encode(m) == ref
  np.testing.assert_array_equal(masks.decode(ref), m)
  assert masks.encode(np.zeros((4, 5, 0), np.uint8)) == coco_mask.encode(
      np.zeros((4, 5, 0), np.uint8, order="F")) == []
  assert masks.decode([]).shape == (0, 0, 0)


def _random_polygon(rng, h, w, case):
  k = int(rng.integers(3, 12))
  size = max(h, w)
  if case == 0:  # inside the image
    xy = np.stack([rng.uniform(0, w - 1, k), rng.uniform(0, h - 1, k)], 1)
  elif case == 1:  # partly outside
    xy = rng.uniform(-0.5 * size, 1.5 * size, (k, 2))
  elif case == 2:  # on the grid of half / fifth / tenth pixels (rounding ties)
    xy = np.round(rng.uniform(-3, size + 3, (k, 2)) * rng.choice([1, 2, 5, 10])) / rng.choice(
        [1, 2, 5, 10])
  elif case == 3:  # degenerate: repeated vertices, collinear points
    xy = rng.uniform(-2, size + 2, (k, 2))
    xy[1] = xy[0]
    xy[-1] = xy[-2]
    if rng.random() < 0.5:
      t = rng.random(k)[:, None]
      xy = xy[0] + t * (xy[1 + rng.integers(k - 1)] - xy[0] + rng.uniform(1, 5, 2))
  elif case == 4:  # tiny (sub-pixel) polygons
    xy = rng.uniform(0, size, 2) + rng.uniform(-0.7, 0.7, (k, 2))
  elif case == 5:  # entirely outside, on each side
    xy = rng.uniform(0, size, (k, 2))
    xy[:, rng.integers(2)] += rng.choice([-1.5, 1.5]) * size
  else:  # one point repeated
    xy = np.repeat(rng.uniform(0, size, (1, 2)), k, 0)
  return xy.reshape(-1).tolist()


def test_polygons_match_pycocotools():
  rng = np.random.default_rng(1)
  for i in range(280):
    h, w = (int(v) for v in rng.integers(1, 50, 2))
    polys = [_random_polygon(rng, h, w, i % 7)]
    if i % 4 == 0:  # several polygons, merged as COCO.annToRLE does
      polys += [_random_polygon(rng, h, w, int(rng.integers(7)))
                for _ in range(int(rng.integers(1, 4)))]
    if i % 9 == 0:  # a later polygon of 2 points (covers nothing in pycocotools)
      polys.append(rng.uniform(0, max(h, w), 4).tolist())
    ref = coco_mask.merge(coco_mask.frPyObjects(polys, h, w))
    got = masks.to_rle(polys, h, w)
    assert got == ref, (h, w, polys)


def test_polygon_on_a_coco_sized_image():
  rng = np.random.default_rng(2)
  h, w = 480, 640
  for _ in range(10):
    ang = np.sort(rng.uniform(0, 2 * np.pi, 20))
    r = rng.uniform(20, 300) * rng.uniform(0.5, 1, 20)
    xy = np.stack([rng.uniform(0, w) + r * np.cos(ang), rng.uniform(0, h) + r * np.sin(ang)],
                  1).reshape(-1).tolist()
    assert masks.to_rle([xy], h, w) == coco_mask.merge(coco_mask.frPyObjects([xy], h, w))


def test_rle_segmentations():
  rng = np.random.default_rng(3)
  m = _random_masks(rng, 11, 13, 1)[:, :, 0]
  ref = _coco_encode(m)
  counts = [int(c) for c in masks._string_to_counts(ref["counts"])]
  uncompressed = {"size": [11, 13], "counts": counts}
  assert masks.to_rle(uncompressed, 11, 13) == coco_mask.frPyObjects(uncompressed, 11, 13)
  assert masks.to_rle(uncompressed, 11, 13) == ref
  assert masks.to_rle(ref, 11, 13) == ref
  assert masks.to_rle({"size": [11, 13], "counts": ref["counts"].decode()}, 11, 13) == ref


def test_area_bbox_merge_match_pycocotools():
  rng = np.random.default_rng(4)
  for h, w in [(1, 1), (7, 3), (20, 31), (40, 40)]:
    stack = _random_masks(rng, h, w, 10)
    rles = _coco_encode(stack)
    np.testing.assert_array_equal(masks.area(rles), coco_mask.area(rles))
    assert masks.area(rles[0]) == coco_mask.area(rles[0])
    np.testing.assert_array_equal(masks.to_bbox(rles), coco_mask.toBbox(rles))
    np.testing.assert_array_equal(masks.to_bbox(rles[1]), coco_mask.toBbox(rles[1]))
    for intersect in (False, True):
      for n in (1, 2, 3, 10):
        assert masks.merge(rles[:n], intersect) == coco_mask.merge(rles[:n], intersect)
  assert masks.merge([]) == coco_mask.merge([]) == {"size": [0, 0], "counts": b""}


def test_non_canonical_counts():
  # Zero-length runs (never made by encode) and a trailing empty run: area, box and
  # decode as pycocotools; merge of one RLE re-encodes its counts as pycocotools.
  for counts in ([0, 3, 0, 4, 5, 0], [4, 0, 0, 6, 2], [12, 0], [0, 0, 12], [3, 0, 9], [0, 12],
                 [5, 7, 0, 0], [12], [1, 0, 0, 0, 11]):
    ref = coco_mask.frPyObjects({"size": [3, 4], "counts": counts}, 3, 4)
    got = masks.to_rle({"size": [3, 4], "counts": counts}, 3, 4)
    assert got == ref
    assert masks.area(got) == coco_mask.area(ref)
    np.testing.assert_array_equal(masks.to_bbox(got), coco_mask.toBbox(ref))
    np.testing.assert_array_equal(masks.decode(got), coco_mask.decode(ref))
    assert masks.merge([got]) == coco_mask.merge([ref])


def test_non_canonical_iou_matches_pycocotools():
  # pycocotools' run-merging loop stops when both current runs are empty, so on zero-length
  # runs it can count less than the true intersection; `iou` reproduces that. (Its merge
  # can loop forever on such counts; `merge` returns the true union instead.)
  rng = np.random.default_rng(8)
  rles = []
  for _ in range(40):
    c = rng.integers(0, 4, 12)
    c[rng.random(12) < 0.3] = 0
    c = c[np.cumsum(c) <= 12].tolist()
    rles.append(masks.to_rle({"size": [3, 4], "counts": c + [12 - sum(c)]}, 3, 4))
  crowd = rng.random(20) < 0.5
  np.testing.assert_array_equal(masks.iou(rles[:20], rles[20:], crowd),
                                coco_mask.iou(rles[:20], rles[20:], crowd.astype(np.uint8)))
  union = masks.decode(rles[:3]).any(axis=2)
  np.testing.assert_array_equal(masks.decode(masks.merge(rles[:3])), union)


def test_iou_matches_pycocotools():
  rng = np.random.default_rng(5)
  for h, w, d, g in [(1, 1, 3, 2), (9, 14, 12, 7), (30, 25, 25, 15), (48, 64, 40, 1)]:
    dt = _coco_encode(_random_masks(rng, h, w, d))
    gt = _coco_encode(_random_masks(rng, h, w, g))
    crowd = rng.random(g) < 0.4
    ref = coco_mask.iou(dt, gt, crowd.astype(np.uint8))
    got = masks.iou(dt, gt, crowd)
    assert got.shape == (d, g) and got.dtype == np.float64
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(masks.iou(dt, gt, list(crowd)), ref)


def test_iou_of_polygons_on_a_coco_sized_image():
  rng = np.random.default_rng(6)
  h, w = 427, 640

  def blob():
    ang = np.sort(rng.uniform(0, 2 * np.pi, 10))
    r = rng.uniform(10, 120) * rng.uniform(0.6, 1, 10)
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    return [np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], 1).reshape(-1).tolist()]

  gt = [masks.to_rle(blob(), h, w) for _ in range(12)]
  dt = [masks.to_rle(blob(), h, w) for _ in range(60)] + gt[:3]
  crowd = np.arange(12) % 4 == 0
  np.testing.assert_array_equal(masks.iou(dt, gt, crowd),
                                coco_mask.iou(dt, gt, crowd.astype(np.uint8)))


def test_iou_empty_inputs():
  rles = masks.encode(np.ones((4, 5, 2), np.uint8))
  assert masks.iou([], rles, [0, 0]).shape == (0, 2)
  assert masks.iou(rles, [], []).shape == (2, 0)
  assert masks.iou([], [], []).shape == (0, 0)
  empty = masks.encode(np.zeros((4, 5), np.uint8))
  np.testing.assert_array_equal(masks.iou([empty], [empty], [True]), [[0.0]])


def test_box_iou_matches_pycocotools():
  rng = np.random.default_rng(7)
  dt = np.concatenate([rng.uniform(0, 50, (20, 2)), rng.uniform(0, 30, (20, 2))], 1)
  gt = np.concatenate([rng.uniform(0, 50, (8, 2)), rng.uniform(0, 30, (8, 2))], 1)
  gt[0, 2] = 0.0  # zero-width box
  crowd = rng.random(8) < 0.5
  np.testing.assert_array_equal(metric_masks.box_iou(dt, gt, crowd),
                                coco_mask.iou(dt, gt, crowd.astype(np.uint8)))


@pytest.mark.parametrize("call", [
    lambda: masks.encode(np.full((3, 3), 2, np.uint8)),
    lambda: masks.encode(np.zeros((3,), np.uint8)),
    lambda: masks.encode(np.zeros((3, 3), np.float32)),
    lambda: masks.decode({"size": [4, 4], "counts": b"6"}),  # too few pixels
    lambda: masks.decode({"size": [2, 2], "counts": b"14"}),  # too many pixels
    lambda: masks.decode({"size": [4, 4], "counts": b"0 "}),  # bad character
    lambda: masks.decode({"size": [4, 4], "counts": b"0P"}),  # truncated value
    lambda: masks.decode({"size": [4, 4], "counts": b"0\\8"}),  # negative count
    lambda: masks.decode({"size": [4, 4], "counts": [16]}),  # uncompressed
    lambda: masks.decode({"size": [4], "counts": b"`0"}),
    lambda: masks.decode({"counts": b"`0"}),
    lambda: masks.to_rle([], 5, 5),
    lambda: masks.to_rle([[1, 1, 3, 3]], 5, 5),  # 2 points (pycocotools: TypeError)
    lambda: masks.to_rle([[1, 1, 3, 3, 4]], 5, 5),  # odd length
    lambda: masks.to_rle([[1, 1, 3, 3, 2, 4], [1, 2, 3]], 5, 5),
    lambda: masks.to_rle([[1, 1, 3, float("nan"), 2, 4]], 5, 5),
    lambda: masks.to_rle([[[1, 1], [3, 3], [2, 4]]], 5, 5),  # nested points
    lambda: masks.to_rle("polygon", 5, 5),
    lambda: masks.to_rle({"size": [5, 5], "counts": [20]}, 5, 5),
    lambda: masks.to_rle({"size": [5, 4], "counts": [20]}, 5, 5),
    lambda: masks.to_rle({"size": [5, 5], "counts": [30, -5]}, 5, 5),
    lambda: masks.to_rle({"size": [5, 5], "counts": [2.5, 22.5]}, 5, 5),
    lambda: masks.merge([masks.encode(np.ones((2, 2), np.uint8)),
                         masks.encode(np.ones((2, 3), np.uint8))]),
    lambda: masks.iou([masks.encode(np.ones((2, 2), np.uint8))],
                      [masks.encode(np.ones((2, 3), np.uint8))], [False]),
    lambda: masks.iou([masks.encode(np.ones((2, 2), np.uint8))],
                      [masks.encode(np.ones((2, 2), np.uint8))], [False, True]),
])
def test_bad_inputs_raise_data_error(call):
  with pytest.raises(DataError):
    call()


def test_to_rles_matches_pycocotools():
  """The batched `to_rles` (polygons rasterized together, compressed strings checked
  together) against pycocotools, then area / iou / decode of the lists it makes."""
  rng = np.random.default_rng(7)
  for trial in range(12):
    h, w = (int(v) for v in rng.integers(1, 60, 2))
    segs = []
    for i in range(int(rng.integers(1, 25))):
      polys = [_random_polygon(rng, h, w, (trial + i) % 7)]
      if i % 3 == 0:
        polys += [_random_polygon(rng, h, w, int(rng.integers(7)))
                  for _ in range(int(rng.integers(1, 3)))]
      if i % 5 == 0:
        polys.append(rng.uniform(0, max(h, w), 4).tolist())
      kind = i % 4
      if kind < 2:
        segs.append(polys)
      else:
        ref = coco_mask.merge(coco_mask.frPyObjects(polys, h, w))
        segs.append({"size": [h, w],
                     "counts": ref["counts"].decode() if kind == 2 else ref["counts"]})
    ref = [coco_mask.merge(coco_mask.frPyObjects(s, h, w)) if isinstance(s, list)
           else {"size": [h, w], "counts": _bytes(s["counts"])} for s in segs]
    got = masks.to_rles(segs, h, w)
    assert [g["counts"] for g in got] == [bytes(r["counts"]) for r in ref]
    assert all(g["size"] == [h, w] for g in got)
    assert got == [masks.to_rle(s, h, w) for s in segs]
    np.testing.assert_array_equal(masks.area(got), coco_mask.area(ref))
    np.testing.assert_array_equal(masks.decode(got), coco_mask.decode(ref))
    np.testing.assert_array_equal(masks.to_bbox(got), coco_mask.toBbox(ref))
    crowd = rng.random(len(ref)) < 0.3
    np.testing.assert_array_equal(masks.iou(got[::2], got, crowd),
                                  np.asarray(coco_mask.iou(ref[::2], ref, crowd)))


def _bytes(counts):
  return counts.encode() if isinstance(counts, str) else counts


def test_batched_strings_match_single_decoding():
  rng = np.random.default_rng(8)
  stack = _random_masks(rng, 23, 31, 40)
  strings = [r["counts"] for r in coco_mask.encode(np.asfortranarray(stack))] + [b""]
  got = masks._strings_to_counts(strings)
  for s, (counts, total, ok) in zip(strings, got):
    ref = masks._string_to_counts(s)
    np.testing.assert_array_equal(counts, ref)
    assert total == ref.sum() and ok
  assert masks._strings_to_counts([b"0", b"a"]) is None  # ends inside a value
  assert masks._strings_to_counts([b"0", b"\x7f"]) is None


def test_to_rles_errors_as_to_rle():
  bad = [[[0, 0, 5, 0, 5, 5]], {"size": [4, 5], "counts": b"0a"},
         {"size": [4, 6], "counts": b"X0"}, [[1, 2, 3]], []]
  for seg in bad[1:]:
    with pytest.raises(DataError) as one:
      masks.to_rle(seg, 4, 5)
    with pytest.raises(DataError) as many:
      masks.to_rles([bad[0], seg], 4, 5)
    assert str(many.value) == str(one.value)
  wrong_sum = {"size": [4, 5], "counts": b"3"}
  with pytest.raises(DataError, match="add up"):
    masks.area([masks.to_rle(bad[0], 4, 5), wrong_sum])
