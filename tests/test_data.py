"""Input pipeline: determinism, resumable order, eval padding, catalog adapters."""
import itertools

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from jaxseg import tasks
from jaxseg.data import sources
from jaxseg.errors import DataError


def _take(iterator, n):
  return list(itertools.islice(iterator, n))


def test_train_batches_are_deterministic_and_resumable(tiny_config):
  task = tasks.get_task(tiny_config)
  steps_per_epoch = 16 // tiny_config.batch_size
  run = _take(task.train_data(0), 2 * steps_per_epoch + 1)
  again = _take(task.train_data(0), 2 * steps_per_epoch + 1)
  for a, b in zip(run, again):
    np.testing.assert_array_equal(a["image"], b["image"])
  resumed = _take(task.train_data(3), len(run) - 3)  # starts mid-epoch 0 and crosses epochs
  for a, b in zip(run[3:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
  first, second = run[0], run[steps_per_epoch]  # epoch 0 and epoch 1 differ
  assert not np.array_equal(first["image"], second["image"])
  size = tiny_config.dataset.image_size
  assert first["image"].shape == (tiny_config.batch_size, size, size, 3)
  assert first["image"].dtype == np.float32 and 0 <= first["image"].min() <= first["image"].max() <= 1
  assert first["label"].dtype == np.int32
  assert set(np.unique(first["label"])) <= {0, 1, 2, 3, 255}


def test_crop_size_trains_on_windows_of_the_images_at_their_scale(tiny_config):
  """dataset.augment.crop_size: each training image is a crop_size window of a training
  example at its own scale (no resize), its label the same window; a crop larger than
  image_size or one the model cannot take is a ConfigError."""
  from jaxseg.errors import ConfigError  # pylint: disable=g-import-not-at-top
  c = tiny_config
  c.dataset.augment.update(min_scale=1.0, max_scale=1.0, flip=False, crop_size=12)
  batch = next(iter(tasks.get_task(c).train_data(0)))
  assert batch["image"].shape == (c.batch_size, 12, 12, 3) and batch["label"].shape[1:] == (12, 12)
  ds, _ = sources.load_split(c.dataset, "train")
  examples = list(tfds.as_numpy(ds))
  size = c.dataset.image_size
  for image, label in zip(batch["image"], batch["label"]):
    found = [(y, x) for ex in examples for y in range(size - 11) for x in range(size - 11)
             if np.array_equal(ex["image"][y:y + 12, x:x + 12] / np.float32(255), image)
             and np.array_equal(ex["label"][y:y + 12, x:x + 12], label)]
    assert found, "a crop that is no window of a training example"
  c.dataset.augment.crop_size = size + 4
  with pytest.raises(ConfigError, match="crop_size=36; expected at most"):
    tasks.get_task(c)
  c.dataset.augment.crop_size = 10  # the tiny U-Net (depth 2) needs multiples of 4
  with pytest.raises(ConfigError, match="config.model .*at dataset.augment.crop_size 10"):
    tasks.get_task(c)


def test_eval_batches_cover_every_example_once_with_padding(tiny_config):
  tiny_config.eval_batch_size = 3  # 8 validation examples -> 3 batches, 1 padding example
  batches = list(tasks.get_task(tiny_config).eval_data())
  assert len(batches) == 3
  masks = np.concatenate([b["example_mask"] for b in batches])
  np.testing.assert_array_equal(masks, [True] * 8 + [False])
  ds, n = sources.load_split(tiny_config.dataset, "eval")
  raw = np.stack([ex["label"] for ex in tfds.as_numpy(ds)])
  labels = np.concatenate([b["label"] for b in batches])[:8]
  np.testing.assert_array_equal(labels, raw)
  assert n == 8


def _pet_examples(sizes):
  """Consistent Oxford-IIIT Pet-like examples: image and trimap of the given sizes."""
  rng = np.random.default_rng(0)
  examples = []
  for image_hw, mask_hw in sizes:
    examples.append({
        "image": rng.integers(0, 255, image_hw + (3,), dtype=np.uint8),
        "segmentation_mask": rng.integers(1, 4, mask_hw + (1,), dtype=np.uint8)})
  return examples


def _mock_pets(examples):
  def as_dataset(self, split, **kwargs):
    del self, split, kwargs
    return tf.data.Dataset.from_generator(
        lambda: iter(examples),
        output_signature={"image": tf.TensorSpec((None, None, 3), tf.uint8),
                          "segmentation_mask": tf.TensorSpec((None, None, 1), tf.uint8)})
  return tfds.testing.mock_data(as_dataset_fn=as_dataset)


def test_oxford_iiit_pet_adapter_maps_trimap(tiny_config):
  tiny_config.dataset.name = "oxford_iiit_pet"
  tiny_config.dataset.data_dir = None
  examples = _pet_examples([((40, 30), (40, 30)), ((25, 50), (25, 50)), ((32, 32), (32, 32)),
                            ((20, 24), (20, 24)), ((64, 40), (64, 40))])
  with _mock_pets(examples):
    task = tasks.get_task(tiny_config)
    assert task.num_classes == 2 and task.class_names == ("background", "pet")
    ds, n = sources.load_split(tiny_config.dataset, "eval")
    assert n == 5
    for example, raw in zip(tfds.as_numpy(ds), examples):
      trimap = raw["segmentation_mask"][..., 0]
      expected = np.choose(trimap, [255, 1, 0, 255])
      np.testing.assert_array_equal(example["label"], expected)
    batch = next(iter(task.train_data(0)))
    size = tiny_config.dataset.image_size
    assert batch["image"].shape == (tiny_config.batch_size, size, size, 3)
    assert set(np.unique(batch["label"])) <= {0, 1, 255}


def test_image_and_mask_size_mismatch_is_a_data_error(tiny_config):
  tiny_config.dataset.name = "oxford_iiit_pet"
  tiny_config.dataset.data_dir = None
  with _mock_pets(_pet_examples([((40, 30), (40, 31))])):
    with pytest.raises(DataError, match="image and segmentation mask sizes differ"):
      list(tasks.get_task(tiny_config).eval_data())


def test_catalog_dataset_not_prepared_is_a_data_error(tiny_config, tmp_path):
  tiny_config.dataset.name = "oxford_iiit_pet"
  tiny_config.dataset.data_dir = str(tmp_path)
  with pytest.raises(DataError, match=r"'oxford_iiit_pet' .* not prepared .*never downloads"):
    sources.load_split(tiny_config.dataset, "train")


# -- catalog datasets with crafted raw masks (tfds.testing.mock_data, nothing prepared) ----
def _mock_catalog(examples, image_key, mask_key, seen=None):
  """Mock any TFDS builder: `as_dataset` yields `examples` ({image_key, mask_key});
  `seen` collects (builder name, config name, split) of each call."""
  channels = examples[0][mask_key].shape[-1]

  def as_dataset(self, split, **kwargs):
    del kwargs
    if seen is not None:
      seen.append((self.name, self.builder_config and self.builder_config.name, split))
    return tf.data.Dataset.from_generator(
        lambda: iter(examples),
        output_signature={image_key: tf.TensorSpec((None, None, 3), tf.uint8),
                          mask_key: tf.TensorSpec((None, None, channels), tf.uint8)})
  return tfds.testing.mock_data(as_dataset_fn=as_dataset)


def _catalog_examples(image_key, mask_key, masks):
  rng = np.random.default_rng(1)
  return [{image_key: rng.integers(0, 255, m.shape[:2] + (3,), dtype=np.uint8),
           mask_key: m.astype(np.uint8)} for m in masks]


def _ade_masks(rng, sizes, red_max=100):
  """scene_parse150 annotations: red = category 0..red_max, green = instance id."""
  return [np.stack([rng.integers(0, red_max + 1, hw), rng.integers(0, 30, hw),
                    np.zeros(hw, int)], -1) for hw in sizes]


def _cityscapes_masks(rng, sizes, high=34):
  return [rng.integers(0, high, hw + (1,)) for hw in sizes]


SIZES = [(40, 30), (25, 50), (32, 32), (20, 24), (64, 40)]
CITYSCAPES = dict(image_key="image_left", mask_key="segmentation_label")
ADE = dict(image_key="image", mask_key="annotation")


def _use(config, name):
  config.dataset.name = name
  config.dataset.data_dir = None


def test_scene_parse150_maps_red_channel_categories(tiny_config):
  _use(tiny_config, "scene_parse150")
  masks = _ade_masks(np.random.default_rng(0), SIZES)
  masks[0][:2, :2, 0] = [[0, 1], [100, 4]]  # background, bed, flag, person
  examples, seen = _catalog_examples(**ADE, masks=masks), []
  with _mock_catalog(examples, **ADE, seen=seen):
    task = tasks.get_task(tiny_config)
    assert task.num_classes == 101
    names = task.class_names
    assert (names[0], names[1], names[4], names[100]) == ("background", "bed", "person", "flag")
    ds, n = sources.load_split(tiny_config.dataset, "eval")
    assert n == 5 and seen[-1] == ("scene_parse150", None, "test")
    labels = [ex["label"] for ex in tfds.as_numpy(ds)]
    np.testing.assert_array_equal(labels[0][:2, :2], [[0, 1], [100, 4]])
    for label, mask in zip(labels, masks):
      assert label.dtype == np.int32
      np.testing.assert_array_equal(label, mask[..., 0])  # green (instance id) unused


def test_cityscapes_maps_label_ids_to_train_ids(tiny_config):
  _use(tiny_config, "cityscapes")
  masks = _cityscapes_masks(np.random.default_rng(0), SIZES)
  masks[4][0, :34, 0] = np.arange(34)  # every labelId once (the image is 64 x 40)
  examples, seen = _catalog_examples(**CITYSCAPES, masks=masks), []
  with _mock_catalog(examples, **CITYSCAPES, seen=seen):
    task = tasks.get_task(tiny_config)
    assert task.num_classes == 19 and task.class_names[0] == "road"
    assert task.class_names[-1] == "bicycle"
    ds, _ = sources.load_split(tiny_config.dataset, "eval")
    assert seen[-1] == ("cityscapes", "semantic_segmentation", "validation")
    labels = [ex["label"] for ex in tfds.as_numpy(ds)]
  expected_row = [255] * 7 + [0, 1, 255, 255, 2, 3, 4, 255, 255, 255, 5, 255,
                              6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 255, 255, 16, 17, 18]
  np.testing.assert_array_equal(labels[4][0, :34], expected_row)
  for label, mask in zip(labels, masks):
    expected = np.asarray(sources.CITYSCAPES_LABEL_ID_TO_TRAIN_ID)[mask[..., 0]]
    np.testing.assert_array_equal(label, np.where(expected == sources.IGNORE, 255, expected))
  assert set(np.unique(np.concatenate([l.ravel() for l in labels]))) == set(range(19)) | {255}


@pytest.mark.parametrize("name,kind", [("scene_parse150", ADE), ("cityscapes", CITYSCAPES)])
def test_catalog_batches_have_the_task_shapes(tiny_config, name, kind):
  _use(tiny_config, name)
  rng = np.random.default_rng(2)
  masks = _ade_masks(rng, SIZES) if name == "scene_parse150" else _cityscapes_masks(rng, SIZES)
  with _mock_catalog(_catalog_examples(**kind, masks=masks), **kind):
    task = tasks.get_task(tiny_config)
    size, c = tiny_config.dataset.image_size, task.num_classes
    train = next(iter(task.train_data(0)))
    assert train["image"].shape == (tiny_config.batch_size, size, size, 3)
    assert train["image"].dtype == np.float32 and train["label"].dtype == np.int32
    assert train["label"].shape == (tiny_config.batch_size, size, size)
    task.validate_batch(train)
    evals = list(task.eval_data())
    assert len(evals) == 2  # 5 examples, batches of 4 (one padded)
    assert evals[0]["image"].shape == (tiny_config.eval_batch_size, size, size, 3)
    assert evals[0]["label"].shape == (tiny_config.eval_batch_size, size, size)
    np.testing.assert_array_equal(evals[1]["example_mask"], [True, False, False, False])
    for batch in [train] + evals:
      assert set(np.unique(batch["label"])) <= set(range(c)) | {255}


@pytest.mark.parametrize("name,kind,masks,pattern", [
    ("cityscapes", CITYSCAPES, [np.full((20, 24, 1), 34)],
     r"cityscapes: segmentation_label holds raw value 34; expected one of 0\.\.33"),
    ("cityscapes", CITYSCAPES, [np.full((20, 24, 1), 255)],
     r"cityscapes: segmentation_label holds raw value 255; expected one of 0\.\.33"),
    ("scene_parse150", ADE, [np.concatenate([np.full((20, 24, 1), 101),
                                             np.zeros((20, 24, 2))], -1)],
     r"scene_parse150: annotation holds raw value 101; expected one of 0\.\.100"),
    ("oxford_iiit_pet", dict(image_key="image", mask_key="segmentation_mask"),
     [np.zeros((20, 24, 1))],
     r"oxford_iiit_pet: segmentation_mask holds raw value 0; expected one of 1\.\.3"),
])
def test_raw_mask_value_outside_documented_range_is_a_data_error(tiny_config, name, kind,
                                                                 masks, pattern):
  _use(tiny_config, name)
  masks = [m.copy() for m in masks]
  masks[0][0, 0] = 0 if name != "oxford_iiit_pet" else 1  # a valid pixel among bad ones
  with _mock_catalog(_catalog_examples(**kind, masks=masks), **kind):
    with pytest.raises(DataError, match=pattern):
      list(tasks.get_task(tiny_config).eval_data())


@pytest.mark.parametrize("name", ["scene_parse150", "cityscapes"])
def test_new_catalog_datasets_not_prepared_are_data_errors(tiny_config, tmp_path, name):
  tiny_config.dataset.name = name
  tiny_config.dataset.data_dir = str(tmp_path)
  with pytest.raises(DataError, match=r"not prepared .*never downloads"):
    sources.load_split(tiny_config.dataset, "train")
