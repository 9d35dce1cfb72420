"""A HyperQuest dataset in memory: 32 x 32 x 3 uint8 images and int32 labels.

Read through jaxseg's image sources (`jaxseg.data.image_sources`: `shapes10`, generated
offline, or a prepared TFDS classification set such as `cifar10`); any other TFDS name
with an `image` and a ClassLabel `label` feature (e.g. `svhn_cropped`) is read from its
`train` and `test` (else `validation`) splits, prepared in data_dir. Then capped at
`num_train` / `num_validation` examples by a fixed random subset (seed 0), so every game
and the baseline on a dataset see the same examples.
"""
from __future__ import annotations

import dataclasses
import functools
import io
import os

import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from jaxseg import viz
from jaxseg.data import image_sources, sources
from jaxseg.errors import ConfigError, DataError

IMAGE_SHAPE = (32, 32, 3)


@dataclasses.dataclass(frozen=True, eq=False)
class QuestData:
  name: str
  class_names: tuple[str, ...]
  train_images: np.ndarray  # uint8 [N, 32, 32, 3]
  train_labels: np.ndarray  # int32 [N]
  val_images: np.ndarray
  val_labels: np.ndarray

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def summary(self) -> dict:
    """What the page shows: sizes, class names, examples per class, mean colour."""
    def counts(labels):
      return np.bincount(labels, minlength=self.num_classes).tolist()
    return {"name": self.name, "num_classes": self.num_classes,
            "class_names": list(self.class_names), "image_shape": list(IMAGE_SHAPE),
            "num_train": len(self.train_labels), "num_validation": len(self.val_labels),
            "train_class_counts": counts(self.train_labels),
            "validation_class_counts": counts(self.val_labels),
            "mean_rgb": [round(float(v), 2) for v in
                         self.train_images.reshape(-1, 3).mean(0)]}

  def examples(self, per_class: int) -> list[tuple[int, np.ndarray]]:
    """The first `per_class` training images of each class, as (label, image)."""
    out = []
    for label in range(self.num_classes):
      for i in np.flatnonzero(self.train_labels == label)[:per_class]:
        out.append((label, self.train_images[i]))
    return out

  def examples_png(self, per_class: int, scale: int = 2) -> bytes:
    """A PNG of `per_class` training images per class, one row per class, captioned."""
    rows = [[] for _ in range(self.num_classes)]
    for label, image in self.examples(per_class):
      rows[label].append(viz.caption(viz.upscale(image, scale), self.class_names[label]))
    buffer = io.BytesIO()
    Image.fromarray(viz.grid([r for r in rows if r])).save(buffer, format="PNG")
    return buffer.getvalue()


def _read(name: str, ds, which: str, cap: int) -> tuple[np.ndarray, np.ndarray]:
  """All of `ds` ({image, label}) as arrays, capped at `cap` by a fixed random subset."""
  images, labels = [], []
  for batch in ds.batch(1024).as_numpy_iterator():
    images.append(batch["image"])
    labels.append(batch["label"])
  if not images:
    raise DataError(f"dataset {name!r} has no {which} examples")
  images, labels = np.concatenate(images), np.concatenate(labels).astype(np.int32)
  if images.shape[1:] != IMAGE_SHAPE:
    raise DataError(f"dataset {name!r} has {images.shape[1:]} images; "
                    f"HyperQuest expects {IMAGE_SHAPE}")
  if len(labels) > cap:
    keep = np.sort(np.random.default_rng(0).permutation(len(labels))[:cap])
    images, labels = images[keep], labels[keep]
  return images, labels


def _catalog_splits(name: str, data_dir):
  """(class names, {"train": ds, "eval": ds}) of a TFDS classification set jaxseg has no
  source for (see module doc)."""
  try:
    builder = sources.tfds_builder(name, data_dir if data_dir and os.path.isdir(data_dir)
                                   else None)
  except tfds.core.registered.DatasetNotFoundError:
    raise ConfigError(f"unknown dataset {name!r} in config.datasets; expected one of "
                      f"{sorted(image_sources.IMAGE_SOURCES)} or a TFDS classification "
                      f"dataset name") from None
  features = builder.info.features
  if ("image" not in features or "label" not in features
      or not isinstance(features["label"], tfds.features.ClassLabel)):
    raise ConfigError(f"dataset {name!r} has no `image` and ClassLabel `label` features")
  eval_split = "validation" if "validation" in builder.info.splits and \
      "test" not in builder.info.splits else "test"
  prepare = f"tfds build {name} --data_dir=..."

  def read(split):
    ds, _ = sources.read_split(name, split, data_dir, prepare=prepare)
    return ds.map(lambda ex: {"image": ex["image"], "label": ex["label"]})

  return tuple(features["label"].names), {"train": read("train"), "eval": read(eval_split)}


@functools.lru_cache(maxsize=4)
def _load(name: str, data_dir, num_train: int, num_validation: int) -> QuestData:
  config = ml_collections.ConfigDict(dict(
      name=name, data_dir=data_dir, image_size=IMAGE_SHAPE[0],
      generator=dict(num_train=num_train, num_validation=num_validation)))
  if name in image_sources.IMAGE_SOURCES:
    class_names = image_sources.get_source(name, config).class_names
    splits = {w: image_sources.load_split(config, w, require=("label",))[0]
              for w in ("train", "eval")}
  else:
    class_names, splits = _catalog_splits(name, data_dir)
  train = _read(name, splits["train"], "train", num_train)
  val = _read(name, splits["eval"], "eval", num_validation)
  return QuestData(name, tuple(class_names), *train, *val)


def load(name: str, dataset_config) -> QuestData:
  """Dataset `name` with the game config's `dataset` settings (data_dir, split sizes)."""
  return _load(name, dataset_config.data_dir, dataset_config.num_train,
               dataset_config.num_validation)
