"""A HyperQuest dataset in memory: 32 x 32 x 3 uint8 images and int32 labels.

Read through jaxseg's image sources (`jaxseg.data.image_sources`: `shapes10`, generated
offline, or a prepared TFDS classification set such as `cifar10`), then capped at
`num_train` / `num_validation` examples by a fixed random subset (seed 0), so every game
and the baseline on a dataset see the same examples.
"""
from __future__ import annotations

import dataclasses
import functools
import io

import ml_collections
import numpy as np
from PIL import Image

from jaxseg import viz
from jaxseg.data import image_sources
from jaxseg.errors import DataError

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


def _read(dataset_config, which: str, cap: int) -> tuple[np.ndarray, np.ndarray]:
  ds, n = image_sources.load_split(dataset_config, which, require=("label",))
  images, labels = [], []
  for batch in ds.batch(1024).as_numpy_iterator():
    images.append(batch["image"])
    labels.append(batch["label"])
  if not images:
    raise DataError(f"dataset {dataset_config.name!r} has no {which} examples")
  images, labels = np.concatenate(images), np.concatenate(labels).astype(np.int32)
  if images.shape[1:] != IMAGE_SHAPE:
    raise DataError(f"dataset {dataset_config.name!r} has {images.shape[1:]} images; "
                    f"HyperQuest expects {IMAGE_SHAPE}")
  del n
  if len(labels) > cap:
    keep = np.sort(np.random.default_rng(0).permutation(len(labels))[:cap])
    images, labels = images[keep], labels[keep]
  return images, labels


@functools.lru_cache(maxsize=4)
def _load(name: str, data_dir, num_train: int, num_validation: int) -> QuestData:
  config = ml_collections.ConfigDict(dict(
      name=name, data_dir=data_dir, image_size=IMAGE_SHAPE[0],
      generator=dict(num_train=num_train, num_validation=num_validation)))
  source = image_sources.get_source(name, config)
  train = _read(config, "train", num_train)
  val = _read(config, "eval", num_validation)
  return QuestData(name, tuple(source.class_names), *train, *val)


def load(name: str, dataset_config) -> QuestData:
  """Dataset `name` with the game config's `dataset` settings (data_dir, split sizes)."""
  return _load(name, dataset_config.data_dir, dataset_config.num_train,
               dataset_config.num_validation)
