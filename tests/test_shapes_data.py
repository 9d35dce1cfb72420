"""Tests for the synthetic `shapes` TFDS dataset (jaxseg/data/shapes.py)."""

import dataclasses

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxseg.data import shapes

SMALL = shapes.shapes_config(image_size=32, num_train=6, num_validation=4)


def _render(config, index, split='train'):
  rng = np.random.default_rng([shapes.SPLIT_SEEDS[split], index])
  return shapes.render_example(rng, config)


def _flatten(example):
  objects = example['objects']
  return {**example, **{f'objects/{k}': v for k, v in objects.items()}}


# ----------------------------------------------------------------------------
# Configs.


def test_config_names_are_derived_and_distinct():
  default = shapes.Shapes.BUILDER_CONFIGS[0]
  assert default is shapes.shapes_config()
  assert default.name == 's128_n2000-500_o1-4'
  assert SMALL.name == 's32_n6-4_o1-4'
  assert SMALL.name != default.name
  names = {
      shapes.shapes_config(**{field: value}).name
      for field, value in [
          ('image_size', 64),
          ('num_train', 10),
          ('num_validation', 10),
          ('min_objects', 2),
          ('max_objects', 5),
      ]
  }
  assert len(names | {default.name}) == 6


def test_config_is_interned_immutable_and_validated():
  assert shapes.shapes_config(image_size=32, num_train=6, num_validation=4) is SMALL
  with pytest.raises(dataclasses.FrozenInstanceError):
    SMALL.image_size = 64
  with pytest.raises(TypeError):
    shapes.shapes_config(num_test=3)
  with pytest.raises(ValueError):
    shapes.shapes_config(min_objects=3, max_objects=2)
  with pytest.raises(ValueError):
    shapes.shapes_config(image_size=8)


def test_builder_resolves_derived_config_names():
  assert shapes.Shapes.get_builder_config(SMALL.name) is SMALL
  parsed = shapes.Shapes.get_builder_config('s48_n3-2_o0-2')
  assert (parsed.image_size, parsed.num_train, parsed.num_validation) == (48, 3, 2)
  assert (parsed.min_objects, parsed.max_objects) == (0, 2)
  assert shapes.Shapes.get_builder_config('s048_n3-2_o0-2') is None
  assert shapes.Shapes.get_builder_config('s48_n3-2_o3-2') is None
  assert shapes.Shapes.get_builder_config('foo') is None


# ----------------------------------------------------------------------------
# Rendering.


def test_render_is_deterministic():
  a, b = _render(SMALL, 3), _render(SMALL, 3)
  a, b = _flatten(a), _flatten(b)
  assert a.keys() == b.keys()
  for key in a:
    if key != 'objects':
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  assert not np.array_equal(a['image'], _render(SMALL, 4)['image'])
  assert not np.array_equal(
      a['image'], _render(SMALL, 3, split='validation')['image']
  )


CONSISTENCY_CONFIGS = [
    shapes.shapes_config(image_size=32, min_objects=1, max_objects=4),
    shapes.shapes_config(image_size=64, min_objects=2, max_objects=5),
    shapes.shapes_config(image_size=128, min_objects=1, max_objects=4),
    shapes.shapes_config(image_size=48, min_objects=0, max_objects=2),
]


@pytest.mark.parametrize('config', CONSISTENCY_CONFIGS, ids=lambda c: c.name)
def test_render_annotations_are_consistent(config):
  size = config.image_size
  min_area = shapes.min_visible_area(size)
  counts = set()
  for index in range(25):
    ex = _render(config, index)
    image, seg = ex['image'], ex['segmentation_mask']
    inst, objects = ex['instance_mask'], ex['objects']
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    assert seg.shape == inst.shape == (size, size, 1)
    assert seg.dtype == inst.dtype == np.uint8
    seg, inst = seg[..., 0], inst[..., 0]

    n = len(objects['label'])
    counts.add(n)
    assert config.min_objects <= n <= config.max_objects
    assert objects['bbox'].shape == (n, 4) and objects['bbox'].dtype == np.float32
    assert objects['label'].dtype == np.int64
    assert objects['area'].dtype == np.int32
    assert set(objects['label'].tolist()) <= {0, 1, 2}
    assert set(np.unique(inst).tolist()) <= set(range(n + 1))

    np.testing.assert_array_equal(seg[inst == 0], 0)
    for k in range(n):
      m = inst == k + 1
      np.testing.assert_array_equal(seg[m], objects['label'][k] + 1)
      assert objects['area'][k] == m.sum() >= min_area
      rows, cols = np.nonzero(m)
      expected = np.array(
          [rows.min(), cols.min(), rows.max() + 1, cols.max() + 1]
      ) / size
      np.testing.assert_allclose(objects['bbox'][k], expected, atol=1e-6)
  assert len(counts) > 1  # The number of objects varies.


def test_all_classes_occur():
  labels = np.concatenate(
      [_render(SMALL, i)['objects']['label'] for i in range(30)]
  )
  assert set(labels.tolist()) == {0, 1, 2}


def test_objects_contrast_with_surrounding_background():
  # Single objects: mean colour vs. the background in a margin around the bbox.
  # Random colours without the contrast constraint get as close as ~20.
  size = 64
  config = shapes.shapes_config(image_size=size, min_objects=1, max_objects=1)
  distances = []
  for index in range(300):
    ex = _render(config, index)
    image = ex['image'].astype(np.float32)
    inst = ex['instance_mask'][..., 0]
    y0, x0, y1, x1 = np.round(ex['objects']['bbox'][0] * size).astype(int)
    window = np.zeros_like(inst, bool)
    window[max(y0 - 4, 0):y1 + 4, max(x0 - 4, 0):x1 + 4] = True
    ring = window & (inst == 0)
    distances.append(
        np.linalg.norm(image[inst == 1].mean(0) - image[ring].mean(0))
    )
  assert min(distances) > 40


def test_background_is_textured_and_noisy():
  config = shapes.shapes_config(image_size=256, min_objects=0, max_objects=0)
  for index in range(8):
    ex = _render(config, index)
    assert not ex['instance_mask'].any()
    image = ex['image'].astype(np.float32)
    assert image.std(axis=(0, 1)).max() > 10
    # Structure that survives 16x16 averaging (which removes pixel noise).
    blocks = image.reshape(16, 16, 16, 16, 3).mean(axis=(1, 3))
    assert blocks.std(axis=(0, 1)).max() > 8
    # Per-pixel noise: the smooth texture has tiny second differences.
    second_diff = image[:, 2:] - 2 * image[:, 1:-1] + image[:, :-2]
    assert np.abs(second_diff).mean() > 3


def test_background_pixels_of_annotated_images_vary():
  ex = _render(SMALL, 0)
  background = ex['image'][ex['instance_mask'][..., 0] == 0].astype(np.float32)
  assert background.std(axis=0).max() > 10


# ----------------------------------------------------------------------------
# TFDS builder.


def test_builder_is_registered():
  assert 'shapes' in tfds.list_builders()
  assert tfds.builder_cls('shapes') is shapes.Shapes


def test_tfds_load_small_config(tmp_path):
  data_dir = str(tmp_path)
  builder = tfds.builder('shapes', config=SMALL, data_dir=data_dir)
  builder.download_and_prepare()
  assert builder.info.config_name == SMALL.name
  assert SMALL.name in builder.data_dir
  assert builder.info.features['objects']['label'].names == [
      'circle', 'square', 'triangle'
  ]
  assert builder.info.splits['train'].num_examples == 6
  assert builder.info.splits['validation'].num_examples == 4

  for split, count in [('train', 6), ('validation', 4)]:
    ds = tfds.load(
        'shapes',
        split=split,
        data_dir=data_dir,
        builder_kwargs={'config': SMALL},
        download=False,
    )
    loaded = list(ds.as_numpy_iterator())
    assert len(loaded) == count
    # Order is shuffled by TFDS; match examples by image content.
    expected = {
        _render(SMALL, i, split)['image'].tobytes(): _render(SMALL, i, split)
        for i in range(count)
    }
    for ex in loaded:
      assert ex['image'].shape == (32, 32, 3) and ex['image'].dtype == np.uint8
      assert ex['segmentation_mask'].shape == (32, 32, 1)
      assert ex['instance_mask'].dtype == np.uint8
      want = expected.pop(ex['image'].tobytes())
      for key in ('segmentation_mask', 'instance_mask'):
        np.testing.assert_array_equal(ex[key], want[key])
      for key, value in want['objects'].items():
        assert ex['objects'][key].dtype == value.dtype, key
        np.testing.assert_array_equal(ex['objects'][key], value)
    assert not expected

  # A prepared custom config can be reloaded by its name alone.
  by_name = tfds.load(
      f'shapes/{SMALL.name}', split='validation', data_dir=data_dir,
      download=False,
  )
  assert len(list(by_name)) == 4


# ----------------------------------------------------------------------------
# Class-imbalanced variants (`class_probs`).

IMBALANCED = shapes.shapes_config(
    image_size=32, num_train=6, num_validation=4, class_probs=(0.90, 0.08, 0.02)
)


def test_class_probs_name_the_config_and_leave_defaults_alone():
  assert shapes.shapes_config().name == 's128_n2000-500_o1-4'
  assert shapes.shapes_config().class_probs is None
  assert shapes.shapes_config(class_probs=None) is shapes.shapes_config()
  assert IMBALANCED.name == 's32_n6-4_o1-4_p90-08-02'
  assert IMBALANCED.class_probs == (0.90, 0.08, 0.02)
  assert shapes.shapes_config(
      image_size=32, num_train=6, num_validation=4, class_probs=[0.9, 0.08, 0.02]
  ) is IMBALANCED
  assert shapes.Shapes.get_builder_config(IMBALANCED.name) is IMBALANCED
  parsed = shapes.Shapes.get_builder_config('s48_n3-2_o0-2_p100-00-00')
  assert parsed.class_probs == (1.0, 0.0, 0.0)
  assert shapes.Shapes.get_builder_config('s48_n3-2_o0-2_p90-8-2') is None
  assert shapes.Shapes.get_builder_config('s48_n3-2_o0-2_p50-40-20') is None


@pytest.mark.parametrize('bad', [
    (0.5, 0.5), (0.5, 0.6, -0.1), (0.5, 0.4, 0.2), (0.5, 0.5, float('nan')),
    (1 / 3, 1 / 3, 1 / 3), 'abc', 0.5,
])
def test_class_probs_are_validated(bad):
  with pytest.raises(ValueError, match='class_probs'):
    shapes.shapes_config(class_probs=bad)


def test_default_rendering_is_unchanged_by_the_class_probs_option():
  # Object classes of SMALL's first train examples as rendered before `class_probs`
  # existed: uniform configs must keep drawing exactly the same data.
  labels = [_render(SMALL, i)['objects']['label'].tolist() for i in range(8)]
  assert labels == [[0, 1, 2, 0], [0, 1, 0], [0, 0], [1, 2, 1, 2], [0, 1, 0, 0],
                    [1, 1, 0, 1], [0, 1, 2], [2]]


def test_class_frequencies_follow_class_probs():
  config = shapes.shapes_config(
      image_size=32, min_objects=2, max_objects=4, class_probs=(0.70, 0.25, 0.05)
  )
  labels = np.concatenate(
      [_render(config, i)['objects']['label'] for i in range(400)]
  )
  freq = np.bincount(labels, minlength=3) / len(labels)
  assert len(labels) > 1000
  # Binomial standard error at n > 1000 is < 0.015; rejected placements (which
  # redraw the class) bias the frequencies only slightly.
  np.testing.assert_allclose(freq, [0.70, 0.25, 0.05], atol=0.04)
  uniform = np.concatenate(
      [_render(SMALL, i)['objects']['label'] for i in range(300)]
  )
  assert np.bincount(uniform, minlength=3).min() / len(uniform) > 0.25


def test_sources_pass_class_probs_from_the_dataset_config(tmp_path):
  import ml_collections  # pylint: disable=g-import-not-at-top
  from jaxseg.data import sources  # pylint: disable=g-import-not-at-top
  from jaxseg.errors import ConfigError  # pylint: disable=g-import-not-at-top

  def builder(**generator):
    dataset = ml_collections.ConfigDict(dict(image_size=32, generator=dict(
        num_train=6, num_validation=4, min_objects=1, max_objects=4, **generator)))
    return sources._builder(sources.get_source('shapes'), dataset, str(tmp_path))

  assert builder().builder_config is SMALL  # configs without the key: uniform
  assert builder(class_probs=None).builder_config is SMALL
  assert builder(class_probs=(0.9, 0.08, 0.02)).builder_config is IMBALANCED
  with pytest.raises(ConfigError, match=r'config\.dataset\.generator.*class_probs'):
    builder(class_probs=(0.9, 0.2, 0.02))
