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
