"""Where examples come from: TFDS datasets by name, with their label maps.

A source turns a TFDS example into `{'image': uint8 [H, W, 3], 'label': int32 [H, W]}`
with label 0 = background and `ignore_index` for pixels excluded from loss and metrics.

Label maps:
- `shapes` (jaxseg's own, generated offline on first use): 0 background, 1 circle,
  2 square, 3 triangle; splits train / validation.
- `oxford_iiit_pet` (catalog; prepare it in `data_dir` first, e.g. `tfds build
  oxford_iiit_pet --data_dir=...`): trimap 1 pet -> 1, 2 background -> 0, 3 border ->
  ignore_index; splits train / test.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

import tensorflow as tf
import tensorflow_datasets as tfds

from jaxseg.data import shapes
from jaxseg.errors import ConfigError, DataError


@dataclasses.dataclass(frozen=True)
class SegmentationSource:
  """A TFDS dataset seen as (image, per-pixel label) pairs."""
  tfds_name: str
  class_names: tuple[str, ...]
  train_split: str
  eval_split: str
  to_label: Callable[[tf.Tensor, int], tf.Tensor]  # (raw mask [H, W, 1], ignore) -> int32 [H, W]
  generated_offline: bool = False  # jaxseg builds it itself; no download ever

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


def _identity_label(mask, ignore_index):
  del ignore_index
  return tf.cast(mask[..., 0], tf.int32)


def _pet_trimap_label(mask, ignore_index):
  mask = tf.cast(mask[..., 0], tf.int32)
  tf.debugging.assert_equal(tf.reduce_all((mask >= 1) & (mask <= 3)), True,
                            message="oxford_iiit_pet trimap values must be 1, 2 or 3")
  return tf.gather(tf.constant([ignore_index, 1, 0, ignore_index], tf.int32), mask)


SEGMENTATION_SOURCES = {
    "shapes": SegmentationSource("shapes", shapes.CLASS_NAMES, "train", "validation",
                                 _identity_label, generated_offline=True),
    "oxford_iiit_pet": SegmentationSource("oxford_iiit_pet", ("background", "pet"), "train",
                                          "test", _pet_trimap_label),
}


def get_source(name: str) -> SegmentationSource:
  if name not in SEGMENTATION_SOURCES:
    raise ConfigError(f"unknown dataset name {name!r} in config.dataset.name; expected one "
                      f"of {sorted(SEGMENTATION_SOURCES)}")
  return SEGMENTATION_SOURCES[name]


def _builder(source: SegmentationSource, dataset_config, data_dir):
  kwargs = {}
  if source.tfds_name == "shapes":
    g = dataset_config.generator
    kwargs["config"] = shapes.shapes_config(
        image_size=dataset_config.image_size, num_train=g.num_train,
        num_validation=g.num_validation, min_objects=g.min_objects, max_objects=g.max_objects)
  return tfds.builder(source.tfds_name, data_dir=data_dir, **kwargs)


def _check_data_dir(data_dir, create: bool):
  if data_dir is None:
    return
  if create:
    try:
      os.makedirs(data_dir, exist_ok=True)
    except OSError as e:
      raise DataError(f"cannot create config.dataset.data_dir {data_dir!r}: {e.strerror}") from None
  if not os.path.isdir(data_dir):
    raise DataError(f"config.dataset.data_dir {data_dir!r} is not a directory; expected a "
                    f"folder holding prepared TFDS datasets")
  if not os.access(data_dir, os.R_OK | os.X_OK):
    raise DataError(f"config.dataset.data_dir {data_dir!r} is not readable")


def _num_examples(builder, split, ds) -> int:
  try:
    return builder.info.splits[split].num_examples
  except KeyError:  # split sizes not recorded (e.g. mocked data): count once
    cardinality = int(ds.cardinality())
    return cardinality if cardinality >= 0 else int(ds.reduce(0, lambda n, _: n + 1))


def load_split(dataset_config, which: str) -> tuple[tf.data.Dataset, int]:
  """The raw split `which` ('train' or 'eval') as a tf.data.Dataset and its size.

  Generated datasets are built on first use (offline); catalog datasets must already be
  prepared in `data_dir`: nothing is downloaded.
  """
  source = get_source(dataset_config.name)
  data_dir = dataset_config.data_dir
  _check_data_dir(data_dir, create=source.generated_offline)
  split = dataset_config.get(f"{which}_split") or getattr(source, f"{which}_split")
  builder = _builder(source, dataset_config, data_dir)
  if source.generated_offline:
    builder.download_and_prepare()
  try:
    ds = builder.as_dataset(split=split, shuffle_files=False,
                            read_config=tfds.ReadConfig(shuffle_seed=0, interleave_cycle_length=1))
  except (AssertionError, FileNotFoundError, tf.errors.NotFoundError) as e:
    where = data_dir or "the default TFDS data_dir"
    raise DataError(f"dataset {source.tfds_name!r} split {split!r} is not prepared in {where} "
                    f"({str(e).splitlines()[0]}); prepare it first (e.g. `tfds build "
                    f"{source.tfds_name} --data_dir=...`): jaxseg never downloads at run "
                    f"time") from None
  except (KeyError, ValueError) as e:
    raise ConfigError(f"split {split!r} of dataset {source.tfds_name!r}: {e}") from None
  num_examples = _num_examples(builder, split, ds)

  ignore_index = dataset_config.ignore_index

  @tf.autograph.experimental.do_not_convert
  def to_pair(example):
    image, mask = example["image"], example["segmentation_mask"]
    tf.debugging.assert_equal(
        tf.shape(image)[:2], tf.shape(mask)[:2],
        message=f"{source.tfds_name}: image and segmentation mask sizes differ")
    return {"image": image, "label": source.to_label(mask, ignore_index)}

  return ds.map(to_pair, num_parallel_calls=tf.data.AUTOTUNE), num_examples
