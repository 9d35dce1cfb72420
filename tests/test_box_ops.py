"""jaxseg.ops.boxes (additions), anchors and matching: hand-computed values, NumPy
references written here, and properties."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.errors import ConfigError
from jaxseg.ops import anchors as anchors_lib
from jaxseg.ops import boxes as B
from jaxseg.ops import matching


# Jitted once per shape: one compile each instead of many eager ops (a slow, shared CPU).
giou, iou, area = jax.jit(B.pairwise_giou), jax.jit(B.pairwise_iou), jax.jit(B.box_area)
flip, scale = jax.jit(B.flip_boxes), jax.jit(B.scale_boxes)
to_xywh, to_xyxy = jax.jit(B.xyxy_to_xywh), jax.jit(B.xywh_to_xyxy)
encode, decode = jax.jit(B.encode), jax.jit(B.decode)


def _random_boxes(rng, n, extent=50.0):
  xy = rng.uniform(0, extent, (n, 2))
  wh = rng.uniform(0.5, extent / 2, (n, 2))
  return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


# ----------------------------------------------------------------------------- boxes


def test_xywh_conversions():
  xyxy = np.array([[1.0, 2, 4, 8], [0, 0, 0, 0], [-1, -1, -1, -1]], np.float32)
  xywh = to_xywh(xyxy)
  np.testing.assert_array_equal(xywh, [[1, 2, 3, 6], [0, 0, 0, 0], [-1, -1, 0, 0]])
  np.testing.assert_array_equal(to_xyxy(xywh), xyxy)
  batch = _random_boxes(np.random.default_rng(0), 12).reshape(3, 4, 4)
  np.testing.assert_allclose(to_xyxy(to_xywh(batch)), batch, atol=1e-5)


def _giou_reference(a, b):
  out = np.zeros((len(a), len(b)), np.float64)
  for i, p in enumerate(a.astype(np.float64)):
    for j, q in enumerate(b.astype(np.float64)):
      area = lambda r: max(r[2] - r[0], 0) * max(r[3] - r[1], 0)
      inter = (max(min(p[2], q[2]) - max(p[0], q[0]), 0)
               * max(min(p[3], q[3]) - max(p[1], q[1]), 0))
      union = area(p) + area(q) - inter
      enclose = (max(max(p[2], q[2]) - min(p[0], q[0]), 0)
                 * max(max(p[3], q[3]) - min(p[1], q[1]), 0))
      iou = inter / union if union > 0 else 0.0
      out[i, j] = iou - ((enclose - union) / enclose if enclose > 0 else 0.0)
  return out


def test_pairwise_giou():
  a = np.array([[0, 0, 1, 1], [0, 0, 2, 2], [3, 3, 3, 3]], np.float32)
  b = np.array([[2, 0, 3, 1], [0, 0, 2, 2], [3, 3, 3, 3]], np.float32)
  # Disjoint unit squares 1 apart: IoU 0, enclosing 3, union 2 -> -1/3. Identical: 1.
  # Same point: enclosing area 0 -> 0. Unit square in a 2x2: IoU 1/4, no penalty.
  expected = [[-1 / 3, 1 / 4, -(9 - 1) / 9], [-(6 - 5) / 6, 1, -(9 - 4) / 9],
              [-(3 - 1) / 3, -(9 - 4) / 9, 0]]
  np.testing.assert_allclose(giou(a, b), expected, rtol=1e-6)
  rng = np.random.default_rng(1)
  x, y = _random_boxes(rng, 20), _random_boxes(rng, 15)
  x[:3, 2] = x[:3, 0] - 1  # inverted (degenerate) boxes
  g = np.asarray(giou(x, y))
  np.testing.assert_allclose(g, _giou_reference(x, y), atol=1e-5)
  assert np.all(g <= np.asarray(iou(x, y)) + 1e-6) and np.all(g >= -1)
  # Batched leading dims and finite gradients at degenerate / padded boxes.
  pad = np.full((2, 4), -1, np.float32)
  grad = jax.jit(jax.grad(lambda p: jnp.sum(giou(p, jnp.concatenate([p, pad])))))(
      jnp.concatenate([jnp.asarray(x[:4]), pad]))
  assert np.all(np.isfinite(grad))
  assert giou(x.reshape(4, 5, 4), y[:3][None].repeat(4, 0)).shape == (4, 5, 3)


def test_flip_and_scale_boxes():
  boxes = np.array([[1.0, 2, 4, 8], [-1, -1, -1, -1]], np.float32)
  valid = np.array([True, False])
  np.testing.assert_array_equal(flip(boxes, 10, valid), [[6, 2, 9, 8], [-1, -1, -1, -1]])
  np.testing.assert_array_equal(flip(boxes, 10)[0], [6, 2, 9, 8])
  rng = np.random.default_rng(2)
  x = _random_boxes(rng, 10)
  np.testing.assert_allclose(flip(flip(x, 77.0), 77.0), x, atol=1e-5)
  np.testing.assert_allclose(area(flip(x, 77.0)), area(x), rtol=1e-5)
  np.testing.assert_array_equal(scale(boxes, 2.0, 0.5, valid),
                                [[2, 1, 8, 4], [-1, -1, -1, -1]])
  np.testing.assert_allclose(area(scale(x, 3.0, 0.25)),
                             np.asarray(area(x)) * 0.75, rtol=1e-5)


def test_encode_hand_values_and_round_trip():
  anchor = np.array([0.0, 0, 10, 10], np.float32)  # centre (5, 5), size 10 x 10
  box = np.array([2.0, 4, 22, 9], np.float32)  # centre (12, 6.5), size 20 x 5
  np.testing.assert_allclose(encode(box, anchor), [0.7, 0.15, math.log(2), math.log(0.5)],
                             rtol=1e-6)
  w = (10.0, 10.0, 5.0, 5.0)
  np.testing.assert_allclose(encode(box, anchor, w),
                             [7, 1.5, 5 * math.log(2), 5 * math.log(0.5)], rtol=1e-6)
  rng = np.random.default_rng(3)
  boxes, anchors = _random_boxes(rng, 64).reshape(2, 32, 4), _random_boxes(rng, 32)
  for weights in [(1.0, 1.0, 1.0, 1.0), w]:
    deltas = encode(boxes, anchors, weights)  # anchors broadcast over the batch
    assert deltas.shape == (2, 32, 4)
    np.testing.assert_allclose(decode(deltas, anchors, weights), boxes, atol=1e-4)


def test_decode_clamps_and_padding_is_safe():
  anchors = np.array([[0.0, 0, 16, 16], [-1, -1, -1, -1]], np.float32)
  deltas = np.array([[0.0, 0, 50, -2], [1.0, 2, 3, 4]], np.float32)
  out = np.asarray(decode(deltas, anchors))
  # dw clamped at log(1000/16): the width becomes 1000; dh = -2: height 16 e^-2.
  np.testing.assert_allclose(out[0], [8 - 500, 8 - 8 * math.exp(-2), 8 + 500,
                                      8 + 8 * math.exp(-2)], rtol=1e-5)
  np.testing.assert_array_equal(out[1], [-1, -1, -1, -1])  # padded anchor decodes to itself
  np.testing.assert_array_equal(decode(deltas, anchors, valid=np.array([True, False]))[1], -1)
  g = jax.jit(jax.grad(lambda d: jnp.sum(decode(d, anchors))))(jnp.asarray(deltas) * 100)
  assert np.all(np.isfinite(g))
  # Padded / degenerate gt or anchors encode to 0 with finite values and gradients.
  gt = np.array([[2.0, 2, 8, 8], [-1, -1, -1, -1], [5, 5, 5, 9], [1, 1, 3, 3]], np.float32)
  anc = np.array([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [-1, -1, -1, -1]],
                 np.float32)
  d = np.asarray(encode(gt, anc))
  assert np.all(np.isfinite(d)) and np.all(d[1:] == 0) and np.all(d[0, 2:] < 0)
  for argnum in (0, 1):
    loss = lambda p, q: jnp.sum(encode(p, q, (10.0, 10, 5, 5)) ** 2)
    g = jax.jit(jax.grad(loss, argnum))(gt, anc)
    assert np.all(np.isfinite(g)) and np.all(np.asarray(g)[1:] == 0)


# ----------------------------------------------------------------------------- anchors


def test_grid_anchors_hand_values_and_order():
  a = anchors_lib.grid_anchors(32, 16, [16], [1.0])
  np.testing.assert_array_equal(a, [[0, 0, 16, 16], [16, 0, 32, 16], [0, 16, 16, 32],
                                    [16, 16, 32, 32]])
  assert a.dtype == np.float32
  # Non-square image: 2 x 3 cells; per cell sizes (8, 16) x ratios (0.5, 2), size-major.
  a = anchors_lib.grid_anchors((32, 48), 16, [8, 16], [0.5, 2.0]).reshape(2, 3, 4, 4)
  w, h = a[..., 2] - a[..., 0], a[..., 3] - a[..., 1]
  np.testing.assert_allclose(w * h, np.broadcast_to([64, 64, 256, 256], w.shape), rtol=1e-5)
  np.testing.assert_allclose(w / h, np.broadcast_to([0.5, 2, 0.5, 2], w.shape), rtol=1e-5)
  centres = (a[..., :2] + a[..., 2:]) / 2
  np.testing.assert_allclose(centres[1, 2, 3], [40, 24])  # cell (y=1, x=2)
  np.testing.assert_allclose(centres[..., 0], np.broadcast_to(
      (np.arange(3) * 16 + 8)[None, :, None], (2, 3, 4)))
  np.testing.assert_allclose(anchors_lib.grid_anchors(32, 16, [16], [1.0], offset=0.0)[1],
                             [8, -8, 24, 8])


def test_multilevel_anchors():
  strides, sizes = (4, 8, 16, 32, 64), (32, 64, 128, 256, 512)
  a = anchors_lib.multilevel_anchors(64, strides, sizes)
  counts = anchors_lib.level_sizes(64, strides, sizes)
  assert counts == [16 * 16 * 3, 8 * 8 * 3, 4 * 4 * 3, 2 * 2 * 3, 3] and len(a) == sum(counts)
  split = np.split(a, np.cumsum(counts)[:-1])
  for part, s, z in zip(split, strides, sizes):
    np.testing.assert_array_equal(part, anchors_lib.grid_anchors(64, s, [z]))
  per_level = anchors_lib.multilevel_anchors((32, 64), (16, 32), [(16, 32), 64],
                                             [(1.0,), (0.5, 1.0, 2.0)])
  assert len(per_level) == 2 * 4 * 2 + 1 * 2 * 3


@pytest.mark.parametrize("call,match", [
    (lambda: anchors_lib.grid_anchors(40, 16, [32]), "does not divide"),
    (lambda: anchors_lib.grid_anchors((32, 40), 16, [32]), "does not divide"),
    (lambda: anchors_lib.grid_anchors(32, 0, [32]), "stride"),
    (lambda: anchors_lib.grid_anchors(32, 16, [0]), "sizes"),
    (lambda: anchors_lib.grid_anchors(32, 16, []), "sizes"),
    (lambda: anchors_lib.grid_anchors(32, 16, [8], [1.0, -2]), "aspect_ratios"),
    (lambda: anchors_lib.grid_anchors(-32, 16, [8]), "image_size"),
    (lambda: anchors_lib.grid_anchors(32, 16, [8], offset=1.0), "offset"),
    (lambda: anchors_lib.multilevel_anchors(32, (8, 16), [8]), "one entry"),
    (lambda: anchors_lib.yolo_grid_boxes(448, 7, [(64, 0)]), "box_sizes"),
    (lambda: anchors_lib.yolo_grid_boxes(448, 0, [(64, 64)]), "grid_size"),
    (lambda: anchors_lib.ssd_default_boxes(300, [4], s_min=0.9, s_max=0.2), "s_min"),
    (lambda: anchors_lib.ssd_default_boxes(300, [4, 0]), "feature_sizes"),
    (lambda: anchors_lib.ssd_default_boxes(300, [4], aspect_ratios=(1, 0)), "aspect_ratios"),
])
def test_anchor_config_errors(call, match):
  with pytest.raises(ConfigError, match=match):
    call()


def test_yolo_grid_boxes():
  cells = anchors_lib.yolo_grid_boxes(448, 7, [(64, 64)])
  assert cells.shape == (49, 4)
  np.testing.assert_array_equal(cells[0], [0, 0, 64, 64])
  np.testing.assert_array_equal(cells[1], [64, 0, 128, 64])  # next column first
  np.testing.assert_array_equal(cells[-1], [384, 384, 448, 448])
  areas = np.prod(cells[:, 2:] - cells[:, :2], axis=1)
  np.testing.assert_allclose(areas.sum(), 448 * 448)  # they tile the image
  two = anchors_lib.yolo_grid_boxes((100, 60), (2, 3), [(10, 20), (30, 4)]).reshape(2, 3, 2, 4)
  np.testing.assert_allclose(two[1, 2, 1], [50 - 15, 75 - 2, 50 + 15, 75 + 2])  # centre (50, 75)
  np.testing.assert_allclose(two[0, 0, 0], [10 - 5, 25 - 10, 10 + 5, 25 + 10])


def test_ssd_default_boxes():
  np.testing.assert_allclose(anchors_lib.ssd_scales(6),
                             [0.2, 0.34, 0.48, 0.62, 0.76, 0.9, 1.04], rtol=1e-9)
  boxes = anchors_lib.ssd_default_boxes(300, [2, 1], aspect_ratios=(1.0, 2.0, 0.5))
  assert boxes.shape == (2 * 2 * 4 + 1 * 4, 4)
  first = boxes[:4]  # cell (0, 0) of the 2x2 map, centre (75, 75), scale 0.2
  r2 = 0.2 * math.sqrt(2) * 300
  extra = math.sqrt(0.2 * 0.9) * 300
  np.testing.assert_allclose(first, [[45, 45, 105, 105],
                                     [75 - r2 / 2, 75 - r2 / 4, 75 + r2 / 2, 75 + r2 / 4],
                                     [75 - r2 / 4, 75 - r2 / 2, 75 + r2 / 4, 75 + r2 / 2],
                                     [75 - extra / 2, 75 - extra / 2, 75 + extra / 2,
                                      75 + extra / 2]], rtol=1e-5)
  np.testing.assert_allclose(boxes[4, :2], [225 - 30, 75 - 30], rtol=1e-6)  # next column
  last = boxes[-4:]  # the 1x1 map: scale 0.9, extra box sqrt(0.9 * 1.6)
  np.testing.assert_allclose(last[0], [15, 15, 285, 285], rtol=1e-5)
  np.testing.assert_allclose(last[3, 2] - last[3, 0], math.sqrt(0.9 * 1.6) * 300, rtol=1e-5)
  # Non-square image, per-map ratios, no extra box: sizes relative to W and H.
  rect = anchors_lib.ssd_default_boxes((100, 200), [(1, 2), 1], 0.5, 0.5, [(1.0,), (4.0,)],
                                       extra_box=False)
  np.testing.assert_allclose(rect, [[0, 25, 100, 75], [100, 25, 200, 75],
                                    [0, 37.5, 200, 62.5]], rtol=1e-6)


# ----------------------------------------------------------------------------- matching


def _match_reference(iou, gt_valid, pos, neg, low_quality, anchor_valid=None):
  n, m = iou.shape
  anchor_valid = np.ones(n, bool) if anchor_valid is None else anchor_valid
  gts = [j for j in range(m) if gt_valid[j]]
  labels = np.zeros(n, int)
  best = np.full(n, -1)
  for i in range(n):
    if gts:
      best[i] = max(gts, key=lambda j: (iou[i, j], -j))  # ties: lower gt index
      v = iou[i, best[i]]
      labels[i] = 1 if v >= pos else (0 if v < neg else -1)
  if low_quality:
    for j in gts:
      col = [iou[i, j] for i in range(n) if anchor_valid[i]]
      top = max(col) if col else 0.0
      for i in range(n):
        if top > 0 and anchor_valid[i] and iou[i, j] == top:
          labels[i] = 1
  labels[~anchor_valid] = -1
  return np.where(labels == 1, best, -1), labels


def test_match_hand_case():
  # gt 2 is padding; gt 3 overlaps no anchor, so it has no low-quality match.
  iou = np.array([[0.9, 0.1, 0.99, 0],   # positive for gt 0
                  [0.5, 0.2, 0.99, 0],   # ignored (between 0.3 and 0.7)
                  [0.1, 0.4, 0.0, 0],    # best anchor of gt 1 (tie) -> low-quality positive
                  [0.05, 0.4, 0.0, 0],   # also gt 1's best: ties are all positive
                  [0.0, 0.0, 0.0, 0]], np.float32)  # negative
  valid = np.array([True, True, False, True])
  matched, labels = matching.match(iou, valid, 0.7, 0.3, True)
  np.testing.assert_array_equal(labels, [1, -1, 1, 1, 0])
  np.testing.assert_array_equal(matched, [0, -1, 1, 1, -1])
  matched, labels = matching.match(iou, valid, 0.7, 0.3, False)
  np.testing.assert_array_equal(labels, [1, -1, -1, -1, 0])
  np.testing.assert_array_equal(matched, [0, -1, -1, -1, -1])
  matched, labels = matching.match(iou, np.zeros(4, bool), 0.7, 0.3, True)
  np.testing.assert_array_equal(labels, 0)
  np.testing.assert_array_equal(matched, -1)
  matched, labels = matching.match(iou, valid, 0.7, 0.3, True,
                                   anchor_valid=np.array([True, True, False, True, True]))
  np.testing.assert_array_equal(labels, [1, -1, -1, 1, 0])
  with pytest.raises(ConfigError, match="negative_threshold"):
    matching.match(iou, valid, 0.3, 0.7)


def test_match_equals_reference_and_vmaps():
  rng = np.random.default_rng(4)
  n, m = 40, 6
  fn = jax.jit(jax.vmap(lambda i, v, a: matching.match(i, v, 0.5, 0.4, True, a)))
  fn_plain = jax.jit(lambda i, v: matching.match(i, v, 0.7, 0.3, False))
  iou = np.round(rng.random((5, n, m)) ** 3, 1).astype(np.float32)  # many ties and zeros
  gt_valid = rng.random((5, m)) > 0.3
  gt_valid[0] = False
  iou[1, :, 2] = 0  # a gt overlapping nothing
  anchor_valid = rng.random((5, n)) > 0.1
  matched, labels = fn(iou, gt_valid, anchor_valid)
  for b in range(5):
    exp_m, exp_l = _match_reference(iou[b], gt_valid[b], 0.5, 0.4, True, anchor_valid[b])
    np.testing.assert_array_equal(labels[b], exp_l)
    np.testing.assert_array_equal(matched[b], exp_m)
    exp_m, exp_l = _match_reference(iou[b], gt_valid[b], 0.7, 0.3, False)
    got_m, got_l = fn_plain(iou[b], gt_valid[b])
    np.testing.assert_array_equal(got_l, exp_l)
    np.testing.assert_array_equal(got_m, exp_m)
    got = np.asarray(matched[b])
    assert gt_valid[b][got[got >= 0]].all()  # padded gt never matched


def test_sample_balanced_counts_and_candidates():
  fn = jax.jit(matching.sample_balanced, static_argnums=(2, 3))
  rng = np.random.default_rng(5)
  # One label length (64, padded with ignored anchors) and few static settings.
  for num_pos, num_neg, samples, frac in [(20, 30, 16, 0.25), (2, 30, 16, 0.25),
                                          (20, 3, 16, 0.25), (0, 0, 16, 0.25),
                                          (10, 0, 16, 0.25), (30, 30, 16, 0.0),
                                          (3, 4, 100, 1.0), (40, 20, 100, 1.0)]:
    labels = rng.permutation(np.repeat([1, 0, -1], [num_pos, num_neg, 64 - num_pos - num_neg]))
    labels = labels.astype(np.int32)
    mask = np.asarray(fn(labels, jax.random.key(num_pos + num_neg), samples, frac))
    exp_pos = min(num_pos, int(samples * frac))
    exp_neg = min(num_neg, samples - exp_pos)
    assert mask.shape == labels.shape and mask.dtype == bool
    assert mask[labels == 1].sum() == exp_pos and mask[labels == 0].sum() == exp_neg
    assert not mask[labels == -1].any()
  with pytest.raises(ConfigError, match="positive_fraction"):
    matching.sample_balanced(labels, jax.random.key(0), 8, 1.5)


def test_sample_balanced_is_uniform_and_key_dependent():
  labels = jnp.asarray(np.array([1] * 4 + [0] * 12 + [-1] * 4, np.int32))
  keys = jax.random.split(jax.random.key(0), 4000)
  masks = np.asarray(jax.jit(jax.vmap(lambda k: matching.sample_balanced(labels, k, 8, 0.25)))(
      keys))
  assert np.all(masks[:, :4].sum(1) == 2) and np.all(masks[:, 4:16].sum(1) == 6)
  freq = masks.mean(0)
  # Each positive is taken with p = 2/4, each negative with p = 6/12 (std ~0.008).
  np.testing.assert_allclose(freq[:16], 0.5, atol=0.04)
  assert len({m.tobytes() for m in masks[:50]}) > 40  # different keys, different samples


def test_match_without_valid_gt_is_background_for_any_thresholds():
  iou = jnp.array([[0.0, 0.9], [0.0, 0.2]])  # the gt slots are padding
  for negative in (0.0, 0.3):
    matched, labels = matching.match(iou, jnp.array([False, False]), 0.7, negative)
    assert labels.tolist() == [0, 0] and matched.tolist() == [-1, -1]


def test_clip_boxes_keeps_padding_rows():
  boxes = jnp.array([[-2.0, 1.0, 12.0, 30.0], [-1.0, -1.0, -1.0, -1.0]])
  clipped = B.clip_boxes(boxes, 20, 10, valid=jnp.array([True, False]))
  np.testing.assert_array_equal(clipped, [[0, 1, 10, 20], [-1, -1, -1, -1]])
  np.testing.assert_array_equal(B.clip_boxes(boxes, 20, 10)[1], [0, 0, 0, 0])
