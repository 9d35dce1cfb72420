"""jaxseg.ops.roi against NumPy loop references written here (the one copy: bench/roi_align.py
loads this file by path), hand-computed cases and tf.image.crop_and_resize.

The references transcribe the per-sample loops of the Caffe / torchvision CPU kernels
(RoIPool: rounding, inclusive end cell, floor/ceil bin edges; RoIAlign: sample points,
the [-1, H] border rule and clamping), in float32 coordinates and float64 sums.
"""
from __future__ import annotations

import decimal
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.errors import ConfigError
from jaxseg.ops import roi

F32 = np.float32


def _c_round(v):
  """C round(): half away from zero (decimal's ROUND_HALF_UP), of the exact float value."""
  return int(decimal.Decimal(float(v)).quantize(0, rounding=decimal.ROUND_HALF_UP))


def roi_pool_reference(features, boxes, box_indices, output_size, spatial_scale):
  """Loop RoIPool -> (out [K, oh, ow, C], argmax [K, oh, ow, C] flat h * W + w or -1)."""
  features = np.asarray(features, np.float64)
  _, height, width, c = features.shape
  oh, ow = output_size
  out = np.zeros((len(boxes), oh, ow, c))
  argmax = np.full((len(boxes), oh, ow, c), -1)
  for k, (box, b) in enumerate(zip(np.asarray(boxes, F32), box_indices)):
    x1, y1, x2, y2 = (_c_round(float(F32(v) * F32(spatial_scale))) for v in box)
    roi_w, roi_h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
    bin_h, bin_w = F32(roi_h) / F32(oh), F32(roi_w) / F32(ow)
    for ph in range(oh):
      hs = min(max(int(math.floor(F32(ph) * bin_h)) + y1, 0), height)
      he = min(max(int(math.ceil(F32(ph + 1) * bin_h)) + y1, 0), height)
      for pw in range(ow):
        ws = min(max(int(math.floor(F32(pw) * bin_w)) + x1, 0), width)
        we = min(max(int(math.ceil(F32(pw + 1) * bin_w)) + x1, 0), width)
        if he <= hs or we <= ws:
          continue  # empty bin: 0, no argmax
        best = np.full(c, -np.inf)
        for h in range(hs, he):
          for w in range(ws, we):
            v = features[b, h, w]
            better = v > best
            best = np.where(better, v, best)
            argmax[k, ph, pw] = np.where(better, h * width + w, argmax[k, ph, pw])
        out[k, ph, pw] = best
  return out, argmax


def roi_pool_adjoint_reference(grad_out, argmax, box_indices, feature_shape):
  """Backward of RoIPool: each bin's upstream gradient goes to its argmax cell."""
  b_, h_, w_, c = feature_shape
  grad = np.zeros((b_, h_ * w_, c))
  for k, b in enumerate(box_indices):
    for idx in np.ndindex(argmax.shape[1:3]):
      for ch in range(c):
        a = argmax[(k, *idx, ch)]
        if a >= 0:
          grad[b, a, ch] += grad_out[(k, *idx, ch)]
  return grad.reshape(feature_shape)


def _bilinear_taps(y, x, height, width):
  """torchvision's bilinear_interpolate as (row, col, weight) taps; [] outside [-1, H]."""
  if y < -1.0 or y > height or x < -1.0 or x > width:
    return []
  y, x = max(y, F32(0)), max(x, F32(0))
  y_low, x_low = int(y), int(x)
  if y_low >= height - 1:
    y_high = y_low = height - 1
    y = F32(y_low)
  else:
    y_high = y_low + 1
  if x_low >= width - 1:
    x_high = x_low = width - 1
    x = F32(x_low)
  else:
    x_high = x_low + 1
  ly, lx = F32(y - y_low), F32(x - x_low)
  hy, hx = F32(1) - ly, F32(1) - lx
  return [(y_low, x_low, hy * hx), (y_low, x_high, hy * lx), (y_high, x_low, ly * hx),
          (y_high, x_high, ly * lx)]


def roi_align_samples(boxes, box_indices, output_size, spatial_scale, sampling_ratio, aligned,
                      height, width):
  """Yields (k, ph, pw, b, row, col, weight): RoIAlign as a sum of weighted taps."""
  oh, ow = output_size
  offset = F32(0.5 if aligned else 0.0)
  scale = F32(spatial_scale)
  for k, (box, b) in enumerate(zip(np.asarray(boxes, F32), box_indices)):
    x1, y1, x2, y2 = (F32(v) * scale - offset for v in box)
    roi_w, roi_h = F32(x2 - x1), F32(y2 - y1)
    if not aligned:
      roi_w, roi_h = max(roi_w, F32(1)), max(roi_h, F32(1))
    bin_h, bin_w = F32(roi_h / F32(oh)), F32(roi_w / F32(ow))
    gh = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_h / F32(oh)))
    gw = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_w / F32(ow)))
    count = max(gh * gw, 1)
    for ph in range(oh):
      for iy in range(gh):
        y = F32(y1 + F32(ph) * bin_h + F32(F32(iy + 0.5) * bin_h) / F32(gh))
        for pw in range(ow):
          for ix in range(gw):
            x = F32(x1 + F32(pw) * bin_w + F32(F32(ix + 0.5) * bin_w) / F32(gw))
            for row, col, w in _bilinear_taps(y, x, height, width):
              yield k, ph, pw, b, row, col, float(w) / count


def roi_align_reference(features, boxes, box_indices, output_size, spatial_scale,
                        sampling_ratio, aligned):
  """Loop RoIAlign (torchvision CPU kernel): features [B, H, W, C] -> [K, oh, ow, C]."""
  features = np.asarray(features, np.float64)
  out = np.zeros((len(boxes), *output_size, features.shape[-1]))
  for k, ph, pw, b, row, col, w in roi_align_samples(
      boxes, box_indices, output_size, spatial_scale, sampling_ratio, aligned,
      *features.shape[1:3]):
    out[k, ph, pw] += w * features[b, row, col]
  return out


def roi_align_adjoint_reference(grad_out, boxes, box_indices, feature_shape, output_size,
                                spatial_scale, sampling_ratio, aligned):
  """Transpose of RoIAlign (its backward kernel): scatter grad_out along the taps."""
  grad = np.zeros(feature_shape)
  for k, ph, pw, b, row, col, w in roi_align_samples(
      boxes, box_indices, output_size, spatial_scale, sampling_ratio, aligned,
      *feature_shape[1:3]):
    grad[b, row, col] += w * grad_out[k, ph, pw]
  return grad


def random_boxes(rng, n, height, width, scale=1.0):
  """Image-space xyxy boxes: ordinary, partly outside, tiny (< 1 map cell), degenerate."""
  ih, iw = height / scale, width / scale
  x1 = rng.uniform(-0.3 * iw, 0.9 * iw, n)
  y1 = rng.uniform(-0.3 * ih, 0.9 * ih, n)
  bw = rng.uniform(0.05, 1.2, n) * iw
  bh = rng.uniform(0.05, 1.2, n) * ih
  boxes = np.stack([x1, y1, x1 + bw, y1 + bh], 1)
  boxes[0] = [0.3 / scale, 0.2 / scale, 0.7 / scale, 0.5 / scale]  # tiny: < 1 cell
  boxes[1] = [-2 * iw, -2 * ih, -1.5 * iw, -1.5 * ih]  # entirely outside
  boxes[2] = [0.6 * iw, 0.6 * ih, 0.4 * iw, 0.5 * ih]  # x2 < x1, y2 < y1
  boxes[3] = [-0.5 * iw, -0.5 * ih, 1.5 * iw, 1.5 * ih]  # covers the image and more
  return boxes.astype(F32)


def _data(seed=0, b=2, h=9, w=11, c=3, n=14, scale=0.5):
  rng = np.random.default_rng(seed)
  features = rng.normal(size=(b, h, w, c)).astype(F32)
  boxes = random_boxes(rng, n, h, w, scale)
  indices = rng.integers(0, b, n).astype(np.int32)
  return features, boxes, indices


# ----------------------------------------------------------------------------- RoIPool


def test_c_round_helper():
  assert [_c_round(v) for v in (2.5, -2.5, 2.4999, 0.5, -0.5, 3.0, -3.7)] == [3, -3, 2, 1, -1,
                                                                              3, -4]


def test_roi_pool_hand_computed():
  # 4 x 6 map; box x 0..5, y 0..3 (inclusive ends) at scale 1 -> 2 x 2 bins of 2 x 3 cells
  f = np.array([[1, 9, 2, 0, 0, 3],
                [4, 0, 0, 8, 7, 0],
                [0, 5, 0, 0, 0, 6],
                [2, 0, 0, 1, 0, 0]], F32)[None, :, :, None]
  out = roi.roi_pool(f[0], np.array([[0, 0, 5, 3]], F32), (2, 2))
  np.testing.assert_array_equal(out[0, :, :, 0], [[9, 8], [5, 6]])
  # x1 = 2.5 * 1 rounds half away from zero to 3 (jnp.round would give 2): cols 3..5;
  # y 1.4 -> 1, y2 3 -> 3: rows 1..3; 3 x 3 cells into 2 x 2 bins of floor/ceil edges
  # rows [1, 3) [2, 4), cols [3, 5) [4, 6)
  out = roi.roi_pool(f[0], np.array([[2.5, 1.4, 5, 3]], F32), (2, 2))
  np.testing.assert_array_equal(out[0, :, :, 0], [[8, 7], [1, 6]])
  # box beyond the right edge: bins with no cell inside the map are 0
  out = roi.roi_pool(f[0], np.array([[4, 0, 11, 0]], F32), (1, 4))
  np.testing.assert_array_equal(out[0, 0, :, 0], [3, 0, 0, 0])


@pytest.mark.parametrize("output_size,scale", [((3, 4), 0.5), ((7, 7), 0.25), ((2, 2), 1.0)])
def test_roi_pool_matches_reference(output_size, scale):
  features, boxes, indices = _data(1, scale=scale)
  ref, _ = roi_pool_reference(features, boxes, indices, output_size, scale)
  out = jax.jit(lambda f, b, i: roi.roi_pool(f, b, output_size, scale, box_indices=i))(
      features, boxes, indices)
  assert out.shape == (len(boxes), *output_size, 3)
  np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
  assert np.any(ref == 0) and np.all(ref[1] == 0)  # empty bins present


def test_roi_pool_gradient_goes_to_argmax():
  """Ties included: the first maximum of the bin in row-major order gets it."""
  features, boxes, indices = _data(2, scale=0.5)
  features = np.round(features * 1.5).astype(F32)  # few distinct values: many ties
  g = np.random.default_rng(3).normal(size=(len(boxes), 3, 3, 3))
  _, argmax = roi_pool_reference(features, boxes, indices, (3, 3), 0.5)
  grad = jax.grad(lambda f: jnp.sum(roi.roi_pool(f, boxes, (3, 3), 0.5, box_indices=indices)
                                    * g))(features)
  ref = roi_pool_adjoint_reference(g, argmax, indices, features.shape)
  np.testing.assert_allclose(grad, ref, rtol=1e-5, atol=1e-5)


def test_roi_pool_layouts_agree():
  features, boxes, _ = _data(4, b=2, n=6)
  per_image = np.stack([boxes, boxes[::-1]])
  out = roi.roi_pool(features, per_image, (2, 3), 0.5)
  assert out.shape == (2, 6, 2, 3, 3)
  single = jax.vmap(lambda f, b: roi.roi_pool(f, b, (2, 3), 0.5))(features, per_image)
  np.testing.assert_array_equal(out, single)
  flat = roi.roi_pool(features, per_image.reshape(-1, 4), (2, 3), 0.5,
                      box_indices=np.repeat([0, 1], 6))
  np.testing.assert_array_equal(out.reshape(flat.shape), flat)


# ---------------------------------------------------------------------------- RoIAlign


@pytest.mark.parametrize("impl", ["matmul", "gather"])
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [1, 2, 3])
def test_roi_align_matches_reference(impl, aligned, sampling_ratio):
  features, boxes, indices = _data(5, scale=0.5)
  ref = roi_align_reference(features, boxes, indices, (3, 4), 0.5, sampling_ratio, aligned)
  fn = jax.jit(lambda f, b, i: roi.roi_align(f, b, (3, 4), 0.5, sampling_ratio, aligned,
                                             box_indices=i, impl=impl))
  out = fn(features, boxes, indices)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
  assert np.all(ref[1] == 0) and np.any(ref[0] != 0)  # outside box: 0; tiny box: not


def test_roi_align_tiny_maps_and_edges():
  # 1 x W and H x 1 maps (clamping to row 0 = H - 1) and points just inside [-1, H]
  rng = np.random.default_rng(6)
  for shape in [(1, 1, 5, 2), (1, 4, 1, 2), (1, 1, 1, 2)]:
    f = rng.normal(size=shape).astype(F32)
    h, w = shape[1:3]
    boxes = np.array([[-0.9, -0.9, w + 0.9, h + 0.9], [-3, -3, w + 3, h + 3],
                      [0.2, 0.1, 0.3, 0.2]], F32)
    for aligned in (True, False):
      ref = roi_align_reference(f, boxes, [0, 0, 0], (2, 3), 1.0, 2, aligned)
      for impl in ("matmul", "gather"):
        out = roi.roi_align(f[0], boxes, (2, 3), 1.0, 2, aligned, impl=impl)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6, err_msg=f"{shape} {impl}")


def test_roi_align_adaptive_sampling_with_cap():
  features, boxes, indices = _data(7, scale=0.5)
  ref = roi_align_reference(features, boxes, indices, (2, 2), 0.5, 0, True)
  # the largest box spans 2 * 11 map cells in 2 bins: adaptive grid <= 11
  out = roi.roi_align(features, boxes, (2, 2), 0.5, 0, True, box_indices=indices,
                      max_sampling_ratio=11)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
  # gradient of the looped taps (484 > the unrolled 36) against the adjoint
  g = np.random.default_rng(17).normal(size=out.shape)
  grad = jax.grad(lambda f: jnp.sum(roi.roi_align(f, boxes, (2, 2), 0.5, 0, True,
                                                  box_indices=indices, max_sampling_ratio=11)
                                    * g))(features)
  ref = roi_align_adjoint_reference(g, boxes, indices, features.shape, (2, 2), 0.5, 0, True)
  np.testing.assert_allclose(grad, ref, rtol=1e-5, atol=1e-5)
  with pytest.raises(ConfigError, match="max_sampling_ratio"):
    roi.roi_align(features, boxes, (2, 2), 0.5, -1, box_indices=indices)


@pytest.mark.parametrize("impl", ["matmul", "gather"])
def test_roi_align_gradient_is_the_reference_adjoint(impl):
  features, boxes, indices = _data(8, scale=0.5)
  g = np.random.default_rng(9).normal(size=(len(boxes), 3, 2, 3))
  for aligned in (True, False):
    loss = lambda f: jnp.sum(roi.roi_align(f, boxes, (3, 2), 0.5, 2, aligned,
                                           box_indices=indices, impl=impl) * g)
    grad = jax.jit(jax.grad(loss))(features)
    ref = roi_align_adjoint_reference(g, boxes, indices, features.shape, (3, 2), 0.5, 2,
                                      aligned)
    np.testing.assert_allclose(grad, ref, rtol=1e-5, atol=1e-5)


def test_roi_align_box_gradient_matches_finite_differences():
  f = np.random.default_rng(10).normal(size=(8, 9, 2)).astype(F32)
  boxes = np.array([[1.3, 2.2, 6.2, 5.7], [0.4, 0.3, 3.3, 7.9]], F32)
  eps = 1e-3  # fixed boxes: no sample point within eps of a kink (integer coordinate)
  for impl in ("gather", "matmul"):
    loss = jax.jit(lambda b, impl=impl: jnp.sum(
        roi.roi_align(f, b, (2, 2), 1.0, 2, True, impl=impl) ** 2))
    grad = jax.grad(loss)(boxes)
    for k, j in np.ndindex(2, 4):
      d = np.zeros_like(boxes)
      d[k, j] = eps
      fd = (loss(boxes + d) - loss(boxes - d)) / (2 * eps)
      np.testing.assert_allclose(grad[k, j], fd, rtol=1e-2, atol=1e-2, err_msg=impl)


def test_roi_align_layouts_jit_and_vmap_agree():
  features, boxes, _ = _data(11, b=3, n=5)
  per_image = np.stack([boxes, boxes[::-1], np.roll(boxes, 1, axis=0)])
  expected = np.stack([roi_align_reference(features[i:i + 1], per_image[i], [0] * 5, (2, 3),
                                           0.5, 2, True) for i in range(3)])
  for impl in ("auto", "matmul", "gather"):
    out = jax.jit(lambda f, b: roi.roi_align(f, b, (2, 3), 0.5, impl=impl))(features, per_image)
    assert out.shape == (3, 5, 2, 3, 3)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    single = jax.vmap(lambda f, b: roi.roi_align(f, b, (2, 3), 0.5, impl=impl))(features,
                                                                                 per_image)
    np.testing.assert_allclose(single, expected, rtol=1e-5, atol=1e-5)


def _to_tf_boxes(boxes, output_size, sampling_ratio, height, width, scale):
  """Image xyxy -> crop_and_resize's normalized [y1, x1, y2, x2] whose crop of size
  (oh s, ow s) samples exactly RoIAlign's points (aligned=True): with d = the sub-bin
  step in map pixels, the first point is x1 scale - 0.5 + d / 2 and points are d apart;
  crop_and_resize samples y1n (H - 1) + i (y2n - y1n) (H - 1) / (n - 1), pixel centres
  at integers. Needs n = o s > 1."""
  out = []
  for lo, hi, o, size in ((1, 3, output_size[0], height), (0, 2, output_size[1], width)):
    n = o * sampling_ratio
    d = (boxes[:, hi] - boxes[:, lo]) * scale / n
    first = boxes[:, lo] * scale - 0.5 + d / 2
    out.append((first / (size - 1), (first + d * (n - 1)) / (size - 1)))
  (y1, y2), (x1, x2) = out
  return np.stack([y1, x1, y2, x2], 1).astype(F32)


def test_roi_align_equals_tf_crop_and_resize_inside_the_map():
  """Where they coincide: aligned=True, every sample point inside [0, H - 1] x [0, W - 1]
  (crop_and_resize extrapolates 0 outside it; RoIAlign clamps points in [-1, 0) and
  (H - 1, H]), boxes mapped by _to_tf_boxes; then RoIAlign with s samples per axis =
  crop_and_resize to (oh s, ow s) followed by s x s average pooling."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(12)
  features = rng.normal(size=(2, 12, 16, 3)).astype(F32)
  scale = 0.25
  x1 = rng.uniform(2, 30, 8)
  y1 = rng.uniform(2, 20, 8)
  boxes = np.stack([x1, y1, x1 + rng.uniform(4, 30, 8), y1 + rng.uniform(4, 24, 8)], 1)
  boxes = np.minimum(boxes, [[62, 46, 62, 46]]).astype(F32)  # points stay inside
  indices = rng.integers(0, 2, 8).astype(np.int32)
  for s in (1, 2):
    crops = tf.image.crop_and_resize(features, _to_tf_boxes(boxes, (3, 4), s, 12, 16, scale),
                                     indices, (3 * s, 4 * s), extrapolation_value=0.0).numpy()
    expected = crops.reshape(8, 3, s, 4, s, 3).mean(axis=(2, 4))
    out = roi.roi_align(features, boxes, (3, 4), scale, s, True, box_indices=indices)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_roi_align_one_sample_equals_ops_crop_and_resize_inside():
  from jaxseg import ops  # pylint: disable=g-import-not-at-top
  features, _, _ = _data(13, b=2, h=10, w=12)
  boxes = np.array([[1, 1, 9, 7], [2.5, 0.7, 11.2, 9.1], [4, 3, 5, 4]], F32)
  out = roi.roi_align(features, boxes, (3, 3), 1.0, 1, True, box_indices=np.array([0, 1, 1]))
  np.testing.assert_allclose(out, ops.crop_and_resize(features, boxes, np.array([0, 1, 1]),
                                                      (3, 3)), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------- FPN


def test_fpn_level_hand_computed():
  sizes = [224, 112, 448, 223, 1000, 10, 0, 111.9, 112.1, 896]
  # floor(4 + log2(s / 224)): 4, 3, 5, 3 (log2 = -0.006), 6 -> 5, -1 -> 2, -inf -> 2,
  # 2.99 -> 2, 3.002 -> 3, 6 -> 5
  expected = [4, 3, 5, 3, 5, 2, 2, 2, 3, 5]
  boxes = np.array([[10, 20, 10 + s, 20 + s] for s in sizes], F32)
  np.testing.assert_array_equal(roi.fpn_level(boxes), expected)
  # sqrt(w h): 448 x 112 -> 224 -> level 4; -1 padded rows (area 0) -> min level
  np.testing.assert_array_equal(
      roi.fpn_level(np.array([[0, 0, 448, 112], [-1, -1, -1, -1]], F32), 3, 6), [4, 3])


def _fpn_data(seed, b=2):
  rng = np.random.default_rng(seed)
  strides = (4, 8, 16, 32)
  maps = [rng.normal(size=(b, 64 // s, 96 // s, 2)).astype(F32) for s in strides]
  sizes = np.array([20, 60, 100, 150, 230, 300, 500, 900, 40, 120])
  cx, cy = rng.uniform(0, 96, len(sizes)), rng.uniform(0, 64, len(sizes))
  ar = rng.uniform(0.5, 2, len(sizes))
  w, h = sizes * np.sqrt(ar) / 8, sizes / np.sqrt(ar) / 8  # image 8x smaller than COCO
  boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1).astype(F32)
  return maps, strides, boxes, rng.integers(0, b, len(sizes)).astype(np.int32)


@pytest.mark.parametrize("impl", ["gather", "matmul"])
def test_multilevel_roi_align_selects_the_level(impl):
  maps, strides, boxes, indices = _fpn_data(14)
  levels = np.asarray(roi.fpn_level(boxes, 2, 5, canonical_size=28.0))
  assert set(levels) == {2, 3, 4, 5}  # every level used
  expected = np.stack([roi_align_reference(maps[lv - 2], boxes[k:k + 1], indices[k:k + 1],
                                           (2, 2), 1 / strides[lv - 2], 2, True)[0]
                       for k, lv in enumerate(levels)])
  fn = jax.jit(lambda m, b, i: roi.multilevel_roi_align(
      m, b, (2, 2), strides, box_indices=i, canonical_size=28.0, impl=impl))
  np.testing.assert_allclose(fn(maps, boxes, indices), expected, rtol=1e-5, atol=1e-5)
  named = dict(zip(["p2", "p3", "p4", "p5"], maps))
  per_image = roi.multilevel_roi_align(
      named, np.stack([boxes, boxes]), (2, 2), strides, canonical_size=28.0, impl=impl)
  np.testing.assert_allclose(per_image[1], roi.multilevel_roi_align(
      [m[1] for m in maps], boxes, (2, 2), strides, canonical_size=28.0, impl=impl),
                             rtol=1e-5, atol=1e-6)


def test_multilevel_gradient_reaches_only_the_assigned_level():
  maps, strides, boxes, indices = _fpn_data(15)
  levels = np.asarray(roi.fpn_level(boxes, 2, 5, canonical_size=28.0))
  g = np.random.default_rng(16).normal(size=(len(boxes), 2, 2, 2))
  for impl in ("gather", "matmul"):
    grads = jax.grad(lambda m: jnp.sum(roi.multilevel_roi_align(
        m, boxes, (2, 2), strides, box_indices=indices, canonical_size=28.0, impl=impl) * g))(
            maps)
    for lv in range(4):
      sel = levels == lv + 2
      ref = roi_align_adjoint_reference(g[sel], boxes[sel], indices[sel], maps[lv].shape,
                                        (2, 2), 1 / strides[lv], 2, True)
      np.testing.assert_allclose(grads[lv], ref, rtol=1e-5, atol=1e-5)


def test_argument_errors():
  f = np.zeros((2, 4, 4, 1), F32)
  with pytest.raises(ValueError, match="per-image boxes"):
    roi.roi_align(f, np.zeros((3, 4), F32))
  with pytest.raises(ValueError, match="box_indices"):
    roi.roi_pool(f, np.zeros((3, 4), F32), box_indices=np.zeros(2, np.int32))
  with pytest.raises(ConfigError, match="output_size"):
    roi.roi_align(f[0], np.zeros((3, 4), F32), (0, 2))
  with pytest.raises(ConfigError, match="impl"):
    roi.roi_align(f[0], np.zeros((3, 4), F32), impl="cuda")
  with pytest.raises(ConfigError, match="consecutive"):
    roi.multilevel_roi_align([f, f], np.zeros((2, 3, 4), F32), strides=(4, 16))
  with pytest.raises(ConfigError, match="powers of 2"):
    roi.multilevel_roi_align([f], np.zeros((2, 3, 4), F32), strides=(6,))
