"""Tests for the synthetic `stick_figures` pose dataset and the LSP skeleton."""
import dataclasses

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxseg.data import skeleton
from jaxseg.data import stick_figures as sf
from jaxseg.errors import ConfigError

TINY = sf.stick_figures_config(image_size=32, num_train=5, num_validation=3)
J = {name: i for i, name in enumerate(skeleton.JOINT_NAMES)}


def _render(config, index, split='train'):
  return sf._render(np.random.default_rng([sf.SPLIT_SEEDS[split], index]), config)


# ----------------------------------------------------------------------------
# Skeleton.


def test_skeleton_tables():
  assert skeleton.NUM_JOINTS == 14 == len(skeleton.JOINT_NAMES)
  assert skeleton.JOINT_NAMES[0] == 'right_ankle' and skeleton.JOINT_NAMES[13] == 'head_top'
  assert skeleton.TORSO_JOINTS == (9, 2)
  assert skeleton.FLIP_PERMUTATION == (5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 12, 13)
  assert len(skeleton.LIMBS) == 8 and len(skeleton.PCP_LIMBS) == 10
  for name, a, b in skeleton.LIMBS:  # each limb joins two joints of its own side
    side = name.split('_')[0]
    assert skeleton.JOINT_SIDES[a] == skeleton.JOINT_SIDES[b] == side
  torso = dict((n, (a, b)) for n, a, b in skeleton.PCP_LIMBS)['torso']
  assert sorted(torso) == [(2, 3), (8, 9)]
  edges = {(a, b) for _, a, b in skeleton.SKELETON_EDGES}
  assert {(a, b) for _, a, b in skeleton.LIMBS} <= edges
  assert {j for e in edges for j in e} == set(range(14))  # every joint is drawn
  # OKS sigmas: COCO's for the limb joints, .079 for neck and head_top (CrowdPose)
  sigma = dict(zip(skeleton.JOINT_NAMES, skeleton.OKS_SIGMAS))
  assert len(skeleton.OKS_SIGMAS) == 14
  assert sigma['left_hip'] == sigma['right_hip'] == .107
  assert sigma['right_wrist'] == .062 and sigma['neck'] == sigma['head_top'] == .079
  assert all(skeleton.OKS_SIGMAS[k] == skeleton.OKS_SIGMAS[p]
             for k, p in enumerate(skeleton.FLIP_PERMUTATION))


# ----------------------------------------------------------------------------
# Configs.


def test_config_naming_round_trip():
  default = sf.StickFigures.BUILDER_CONFIGS[0]
  assert default is sf.stick_figures_config()
  assert default.name == 's64_n4000-500'
  assert (default.image_size, default.num_train, default.num_validation) == (64, 4000, 500)
  assert TINY.name == 's32_n5-3'
  assert sf.stick_figures_config(image_size=32, num_train=5, num_validation=3) is TINY
  assert sf.StickFigures.get_builder_config('s32_n5-3') is TINY
  parsed = sf.StickFigures.get_builder_config('s48_n7-2')
  assert (parsed.image_size, parsed.num_train, parsed.num_validation) == (48, 7, 2)
  for bad in ('s048_n7-2', 's16_n7-2', 's48_n7', 'foo'):
    assert sf.StickFigures.get_builder_config(bad) is None, bad
  with pytest.raises(dataclasses.FrozenInstanceError):
    TINY.image_size = 64
  with pytest.raises(ConfigError, match='image_size=16'):
    sf.stick_figures_config(image_size=16)
  with pytest.raises(ConfigError, match='num_test'):
    sf.stick_figures_config(num_test=3)


# ----------------------------------------------------------------------------
# Rendering.


def test_render_is_deterministic():
  (a, pa), (b, pb) = _render(TINY, 2), _render(TINY, 2)
  np.testing.assert_array_equal(a['image'], b['image'])
  np.testing.assert_array_equal(a['joints'], b['joints'])
  np.testing.assert_array_equal(pa, pb)
  assert not np.array_equal(a['joints'], _render(TINY, 3)[0]['joints'])
  assert not np.array_equal(a['joints'], _render(TINY, 2, 'validation')[0]['joints'])
  np.testing.assert_array_equal(
      sf.render_example(np.random.default_rng([0, 2]), TINY)['image'], a['image'])


@pytest.mark.parametrize('size', [32, 64])
def test_features_and_joints_inside_the_image(size):
  config = sf.stick_figures_config(image_size=size)
  extents, occluded = [], 0
  for i in range(60):
    ex, _ = _render(config, i)
    image, joints = ex['image'], ex['joints']
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    assert joints.shape == (14, 3) and joints.dtype == np.float32
    assert (joints[:, :2] >= 1).all() and (joints[:, :2] <= size - 1).all()
    assert set(np.unique(joints[:, 2]).tolist()) <= {1.0, 2.0}  # all labelled
    occluded += int((joints[:, 2] == 1).sum())
    # Facing the viewer, rotated by at most 30 degrees: the person's right shoulder and
    # hip stay on the image's left.
    assert joints[J['right_shoulder'], 0] < joints[J['left_shoulder'], 0]
    assert joints[J['right_hip'], 0] < joints[J['left_hip'], 0]
    extents.append(np.ptp(joints[:, :2], axis=0).max() / size)
  assert 0 < occluded < 0.2 * 60 * 14
  assert 0.25 < min(extents) and max(extents) < 1 and np.ptp(extents) > 0.3


def test_joint_visibility_constructed_case():
  # A 4x4 part map: torso everywhere except the wrists' and the neck's pixels.
  part = {name: i for i, name in enumerate(sf.PART_NAMES)}
  part_map = np.full((4, 4), part['torso'], np.uint8)
  part_map[0, 0] = part['right_lower_arm']
  part_map[0, 1] = part['head']
  part_map[3, 3] = part['left_upper_leg']
  xy = np.full((14, 2), 2.5, np.float32)  # pixel (2, 2): torso
  xy[J['right_wrist']] = (0.5, 0.2)  # pixel (0, 0): its own lower arm
  xy[J['left_wrist']] = (3.99, 3.0)  # pixel (3, 3): a leg covers it
  xy[J['neck']] = (1.0, 0.0)  # pixel (0, 1): the head, incident to the neck
  xy[J['head_top']] = (1.7, 0.9)  # same pixel: the head
  xy[J['left_knee']] = (3.5, 3.5)  # the leg it ends
  v = sf.joint_visibility(part_map, xy)
  expected = np.ones(14, np.float32)  # torso pixel: only its 5 joints are visible
  for name in ('right_hip', 'left_hip', 'right_shoulder', 'left_shoulder', 'right_wrist',
               'neck', 'head_top', 'left_knee'):
    expected[J[name]] = 2
  np.testing.assert_array_equal(v, expected)
  assert v.dtype == np.float32


def test_rendered_visibility_matches_part_map():
  for i in range(20):
    ex, part_map = _render(TINY, i)
    # mask = the painted pixels, box = their tight extent (x2 = last column + 1)
    np.testing.assert_array_equal(ex['mask'][..., 0], part_map > 0)
    assert ex['mask'].dtype == np.uint8 and ex['box'].dtype == np.float32
    rows, cols = np.nonzero(part_map)
    np.testing.assert_array_equal(
        ex['box'], [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
    col, row = np.floor(ex['joints'][:, :2]).astype(int).T
    parts = part_map[row, col]
    assert (parts > 0).all()  # every joint sits on the figure
    np.testing.assert_array_equal(
        ex['joints'][:, 2] == 2, sf.INCIDENCE[parts, np.arange(14)])


def test_right_limbs_are_darker_than_left_limbs():
  part = {name: i for i, name in enumerate(sf.PART_NAMES)}
  right = [part[n] for n, _, _ in skeleton.LIMBS if n.startswith('right')]
  left = [part[n] for n, _, _ in skeleton.LIMBS if n.startswith('left')]
  config = sf.stick_figures_config(image_size=64)
  ratios = []
  for i in range(30):
    ex, part_map = _render(config, i)
    luma = ex['image'].astype(np.float32) @ np.array([0.299, 0.587, 0.114])
    r, l = np.isin(part_map, right), np.isin(part_map, left)
    if r.sum() >= 5 and l.sum() >= 5:
      ratios.append(luma[r].mean() / luma[l].mean())
  assert len(ratios) >= 25
  assert max(ratios) < 0.7  # RIGHT_SHADE = 0.55 up to noise and clipping


def test_figure_contrasts_with_the_background():
  config = sf.stick_figures_config(image_size=64)
  distances = []
  for i in range(30):
    ex, part_map = _render(config, i)
    image = ex['image'].astype(np.float32)
    figure = part_map > 0
    rows, cols = np.nonzero(figure)
    window = np.zeros_like(figure)
    window[max(rows.min() - 3, 0):rows.max() + 4, max(cols.min() - 3, 0):cols.max() + 4] = True
    ring = window & ~figure
    distances.append(np.linalg.norm(image[figure].mean(0) - image[ring].mean(0)))
  assert min(distances) > 25


# ----------------------------------------------------------------------------
# TFDS builder.


def test_tfds_build_and_read_back(tmp_path):
  data_dir = str(tmp_path)
  assert 'stick_figures' in tfds.list_builders()
  builder = tfds.builder('stick_figures', config=TINY, data_dir=data_dir)
  builder.download_and_prepare()
  assert TINY.name in builder.data_dir
  assert builder.info.splits['train'].num_examples == 5
  assert builder.info.splits['validation'].num_examples == 3
  for split, count in (('train', 5), ('validation', 3)):
    ds = builder.as_dataset(split=split)
    expected = {}
    for i in range(count):
      ex = _render(TINY, i, split)[0]
      expected[ex['image'].tobytes()] = ex
    for ex in ds.as_numpy_iterator():
      assert ex['image'].shape == (32, 32, 3) and ex['image'].dtype == np.uint8
      assert ex['joints'].shape == (14, 3) and ex['joints'].dtype == np.float32
      want = expected.pop(ex['image'].tobytes())
      for key in ('joints', 'box', 'mask'):
        np.testing.assert_array_equal(ex[key], want[key])
    assert not expected
  by_name = tfds.load(f'stick_figures/{TINY.name}', split='validation', data_dir=data_dir,
                      download=False)
  assert len(list(by_name)) == 3
