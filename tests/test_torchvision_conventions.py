"""torchvision's anchor and FPN-level conventions as options of jaxseg.ops (defaults
unchanged): numbers computed by hand from torchvision's formulas, and, when torch is
installed, equal to torchvision's own AnchorGenerator and LevelMapper."""
from __future__ import annotations

import numpy as np
import pytest

from jaxseg.errors import ConfigError
from jaxseg.ops import anchors, roi

F32 = np.float32


def _tv(**kwargs):
  return {**anchors.TORCHVISION, **kwargs}


def test_torchvision_anchors_hand_computed():
  # sizes (32,), ratios h/w (0.5, 1, 2): ws = 32 / sqrt(a), hs = 32 sqrt(a), corners
  # round([-ws, -hs, ws, hs] / 2): 45.25 x 22.63 -> [-23, -11, 23, 11], etc.
  a = anchors.grid_anchors((32, 48), 16, [32], [0.5, 1.0, 2.0], **anchors.TORCHVISION)
  cell = np.array([[-23, -11, 23, 11], [-16, -16, 16, 16], [-11, -23, 11, 23]], F32)
  assert a.dtype == np.float32 and a.shape == (2 * 3 * 3, 4)
  a = a.reshape(2, 3, 3, 4)
  for y in range(2):
    for x in range(3):  # centred at (x * stride, y * stride): offset 0
      np.testing.assert_array_equal(a[y, x], cell + np.array([16 * x, 16 * y] * 2, F32))


def test_torchvision_order_rounding_and_ratio_reading():
  # ratio-major: (r=0.5: s=16, s=32), (r=2: s=16, s=32)
  a = anchors.grid_anchors(16, 16, [16, 32], [0.5, 2.0], **anchors.TORCHVISION)
  np.testing.assert_array_equal(a, np.array([[-11, -6, 11, 6], [-23, -11, 23, 11],
                                             [-6, -11, 6, 11], [-11, -23, 11, 23]], F32))
  # rounding half to even, as torch.round: 45 / 2 = 22.5 -> 22, 43 / 2 = 21.5 -> 22
  np.testing.assert_array_equal(anchors.grid_anchors(16, 16, [45, 43], [1.0], **_tv()),
                                [[-22, -22, 22, 22], [-22, -22, 22, 22]])
  # each option alone: height / width reading swaps the shapes of ratio 0.5
  w, h = anchors.anchor_shapes([32], [0.5], height_over_width=True)
  w0, h0 = anchors.anchor_shapes([32], [0.5])
  np.testing.assert_allclose([w[0], h[0]], [h0[0], w0[0]], rtol=1e-6)
  unrounded = anchors.grid_anchors(16, 16, [32], [0.5], offset=0.0, height_over_width=True)
  np.testing.assert_allclose(unrounded[0], [-22.627417, -11.313708, 22.627417, 11.313708],
                             rtol=1e-6)
  # defaults unchanged: cell centres, w / h, size-major, no rounding
  np.testing.assert_allclose(anchors.grid_anchors(16, 16, [32], [2.0])[0],
                             [8 - 22.627417, 8 - 11.313708, 8 + 22.627417, 8 + 11.313708],
                             rtol=1e-6)


def test_torchvision_multilevel_anchors():
  strides, sizes = (4, 8, 16, 32, 64), ((32,), (64,), (128,), (256,), (512,))
  a = anchors.multilevel_anchors((128, 192), strides, sizes, (0.5, 1.0, 2.0),
                                 **anchors.TORCHVISION)
  counts = anchors.level_sizes((128, 192), strides, sizes)
  assert len(a) == sum(counts)
  parts = np.split(a, np.cumsum(counts)[:-1])
  for s, z, part in zip(strides, sizes, parts):
    np.testing.assert_array_equal(part, anchors.grid_anchors((128, 192), s, z, (0.5, 1, 2),
                                                             **anchors.TORCHVISION))
  assert np.all(a == np.round(a))


def test_feature_size_of_a_stride_that_does_not_divide():
  # 128 x 160 image, stride 64: a 2 x 3 map (ceil), cells 128 // 2 = 64 and 160 // 3 = 53
  # apart, as torchvision's AnchorGenerator places FPN's 'pool' level
  a = anchors.grid_anchors((128, 160), 64, [512], [1.0], feature_size=(2, 3),
                           **anchors.TORCHVISION)
  np.testing.assert_array_equal(a[:, 0] + 256, [0, 53, 106] * 2)
  np.testing.assert_array_equal(a[:, 1] + 256, [0] * 3 + [64] * 3)
  assert anchors.level_sizes((128, 160), (32, 64), [32, 64], [1.0],
                             feature_sizes=[None, (2, 3)]) == [20, 6]
  with pytest.raises(ConfigError, match="ceil"):
    anchors.grid_anchors((128, 160), 64, [512], [1.0], feature_size=(2, 2))
  with pytest.raises(ConfigError, match="does not divide"):
    anchors.grid_anchors((128, 160), 64, [512], [1.0])
  with pytest.raises(ConfigError, match="one per stride"):
    anchors.multilevel_anchors((128, 160), (32, 64), [32, 64], feature_sizes=[None])


def _torchvision_level(boxes, k_min=2, k_max=5):
  """torchvision's LevelMapper formula in float32 NumPy: floor(4 + log2(sqrt(area) / 224)
  + 1e-6), clamped."""
  b = np.asarray(boxes, F32)
  s = np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
  k = np.floor(F32(4) + np.log2(s / F32(224)) + F32(1e-6))
  return np.clip(k, k_min, k_max).astype(np.int32)


def test_fpn_level_torchvision_mapper_hand_computed():
  eps_side = 112 * (1 - 4e-7)  # 0.4 ppm below 112 px: log2 = -1 - 5.8e-7
  boxes = np.array([[0, 0, 112, 112], [0, 0, 224, 224], [0, 0, 448, 448],
                    [0, 0, 111, 111], [0, 0, 113, 113], [10, 10, 10 + eps_side, 10 + eps_side],
                    [0, 0, 8, 8], [0, 0, 2000, 2000]], F32)
  tv = np.asarray(roi.fpn_level(boxes, level_mapper="torchvision"))
  d2 = np.asarray(roi.fpn_level(boxes))
  np.testing.assert_array_equal(tv, [3, 4, 5, 2, 3, 3, 2, 5])
  np.testing.assert_array_equal(d2, [3, 4, 5, 2, 3, 2, 2, 5])
  np.testing.assert_array_equal(tv, _torchvision_level(boxes))


def test_fpn_level_mappers_agree_away_from_boundaries():
  rng = np.random.default_rng(0)
  xy = rng.uniform(0, 300, (500, 2))
  boxes = np.concatenate([xy, xy + rng.uniform(1, 600, (500, 2))], 1).astype(F32)
  tv = np.asarray(roi.fpn_level(boxes, level_mapper="torchvision"))
  np.testing.assert_array_equal(tv, _torchvision_level(boxes))
  np.testing.assert_array_equal(tv, np.asarray(roi.fpn_level(boxes)))


def test_multilevel_roi_align_level_mapper_option():
  # a box just below 112 px: level 2 (stride 4) for Detectron2, 3 (stride 8) for torchvision
  side = F32(112 * (1 - 4e-7))
  maps = [np.full((1, 128 // s, 128 // s, 1), float(s), F32) for s in (4, 8, 16, 32)]
  box = np.array([[[0, 0, side, side]]], F32)
  d2 = roi.multilevel_roi_align(maps, box, 2, (4, 8, 16, 32), canonical_size=224.0)
  tv = roi.multilevel_roi_align(maps, box, 2, (4, 8, 16, 32), level_mapper="torchvision")
  assert float(np.asarray(d2).mean()) == 4.0 and float(np.asarray(tv).mean()) == 8.0
  with pytest.raises(ConfigError, match="level_mapper"):
    roi.multilevel_roi_align(maps, box, 2, (4, 8, 16, 32), level_mapper="caffe2")
  with pytest.raises(ConfigError, match="level_mapper"):
    roi.fpn_level(box, level_mapper="caffe2")


def test_equal_to_torchvision_itself():
  from jaxseg.weights import torchvision as tvw  # pylint: disable=g-import-not-at-top
  tvw.hide_triton()  # before torchvision imports torch._dynamo (see hide_triton)
  torch = pytest.importorskip("torch")
  tv_anchor = pytest.importorskip("torchvision.models.detection.anchor_utils")
  poolers = pytest.importorskip("torchvision.ops.poolers")
  from torchvision.models.detection.image_list import ImageList  # pylint: disable=g-import-not-at-top
  sizes, ratios = ((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5
  gen = tv_anchor.AnchorGenerator(sizes, ratios)
  h, w = 128, 160
  images = ImageList(torch.zeros(1, 3, h, w), [(h, w)])
  feats = [torch.zeros(1, 1, -(-h // s), -(-w // s)) for s in (4, 8, 16, 32, 64)]
  expected = gen(images, feats)[0].numpy()
  strides = (4, 8, 16, 32, 64)
  got = anchors.multilevel_anchors((h, w), strides, sizes, (0.5, 1.0, 2.0),
                                   feature_sizes=[(-(-h // s), -(-w // s)) for s in strides],
                                   **anchors.TORCHVISION)
  np.testing.assert_array_equal(got, expected)
  # several sizes on one level: torchvision's ratio-major order
  gen = tv_anchor.AnchorGenerator(((32, 64, 128),), ((0.5, 1.0, 2.0),))
  expected = gen(images, [torch.zeros(1, 1, h // 16, w // 16)])[0].numpy()
  got = anchors.grid_anchors((h, w), 16, (32, 64, 128), (0.5, 1.0, 2.0), **anchors.TORCHVISION)
  np.testing.assert_array_equal(got, expected)
  # the level mapper
  mapper = poolers.initLevelMapper(2, 5)
  rng = np.random.default_rng(1)
  xy = rng.uniform(0, 300, (400, 2))
  boxes = np.concatenate([xy, xy + rng.uniform(1, 600, (400, 2))], 1).astype(F32)
  side = F32(112 * (1 - 4e-7))
  boxes = np.concatenate([boxes, [[0, 0, side, side], [0, 0, 112, 112], [0, 0, 224, 224]]],
                         0).astype(F32)
  expected = mapper([torch.from_numpy(boxes)]).numpy() + 2
  np.testing.assert_array_equal(np.asarray(roi.fpn_level(boxes, level_mapper="torchvision")),
                                expected)


def test_symmetric_conv_padding_option():
  import jax  # pylint: disable=g-import-not-at-top
  from jaxseg.models.layers import ConvNormAct, conv_padding  # pylint: disable=g-import-not-at-top
  assert conv_padding("symmetric", 7) == ((3, 3), (3, 3))
  assert conv_padding("symmetric", 3, dilation=2) == ((2, 2), (2, 2))
  assert conv_padding("same", 3) == "SAME"
  x = np.random.default_rng(0).normal(size=(1, 8, 8, 2)).astype(F32)
  layer = lambda padding, strides: ConvNormAct(3, 3, strides=strides, norm=False,
                                              activation=False, padding=padding)
  variables = layer("same", 1).init(jax.random.key(0), x, False)
  same1, sym1 = (np.asarray(layer(p, 1).apply(variables, x, False)) for p in ("same", "symmetric"))
  np.testing.assert_allclose(same1, sym1)  # stride 1: the same
  same2, sym2 = (np.asarray(layer(p, 2).apply(variables, x, False)) for p in ("same", "symmetric"))
  # stride 2 on an even input: symmetric (PyTorch) centres output i on input 2i, SAME
  # (padding bottom / right only) on 2i + 1
  np.testing.assert_allclose(sym2, same1[:, ::2, ::2], atol=1e-5)
  np.testing.assert_allclose(same2, same1[:, 1::2, 1::2], atol=1e-5)
