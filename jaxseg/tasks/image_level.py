"""What the image-level tasks share: one label, one box or one skeleton per image, read
from `jaxseg.data.image_sources`, preprocessed by `jaxseg.data.image_preprocess`
(geometry-consistent augmentation of boxes and joints), batched by `jaxseg.data.pipeline`.

A subclass sets `REQUIRE` (the example fields it needs, e.g. ("label", "box")), builds
`self.model` in `build_model`, and writes the loss, statistics and pictures.
"""
from __future__ import annotations

import numpy as np

from jaxseg.data import image_preprocess, image_sources, pipeline, skeleton
from jaxseg.errors import DataError
from jaxseg.tasks import base


class ImageLevelTask(base.Task):
  """Data, initialization and the model-apply plumbing of an image-level task."""
  REQUIRE: tuple[str, ...] = ()

  def __init__(self, config):
    super().__init__(config)
    self.source = image_sources.get_source(config.dataset.name, config.dataset)
    image_sources.check_provides(self.source, config.dataset.name, self.REQUIRE)
    self.class_names = tuple(self.source.class_names or ())
    self.num_classes = len(self.class_names)
    self.dtype = base.compute_dtype(config.model)
    self.model = self.build_model(config.model)
    self.check_model()  # unknown backbone option, bad image size: one line

  def build_model(self, model_config):
    raise NotImplementedError

  def model_fields(self, model_config, drop=("dtype",)) -> dict:
    """config.model as keyword arguments (ConfigDicts turned into dicts)."""
    return base.model_fields(model_config, drop)

  # -- data ---------------------------------------------------------------------------
  def train_data(self, start_step: int = 0):
    c = self.config.dataset
    ds, n = image_sources.load_split(c, "train", require=self.REQUIRE)
    flip_permutation = skeleton.FLIP_PERMUTATION if "joints" in self.REQUIRE else None
    preprocess = image_preprocess.make_train_preprocess(c.image_size, c.augment,
                                                        flip_permutation=flip_permutation)
    return pipeline.train_batches(ds, n, preprocess, self.config.batch_size, self.config.seed,
                                  start_step, c.shuffle_buffer, c.cache, name=c.name)

  def eval_data(self):
    c = self.config.dataset
    ds, n = image_sources.load_split(c, "eval", require=self.REQUIRE)
    preprocess = image_preprocess.make_eval_preprocess(c.image_size, c.get("eval_crop"))
    return pipeline.eval_batches(ds, n, preprocess, self.config.eval_batch_size, name=c.name)

  def example_batch(self, batch_size: int):
    """Zero arrays with the shapes and dtypes of a training batch (for initialization)."""
    size = self.config.dataset.image_size
    batch = {"image": np.zeros((batch_size, size, size, 3), np.float32)}
    if "label" in self.REQUIRE:
      batch["label"] = np.zeros((batch_size,), np.int32)
    if "box" in self.REQUIRE:
      batch["box"] = np.tile(np.array([0, 0, size, size], np.float32), (batch_size, 1))
    if "joints" in self.REQUIRE:
      batch["joints"] = np.zeros((batch_size, skeleton.NUM_JOINTS, 3), np.float32)
    return batch

  def validate_batch(self, batch):
    name = self.config.dataset.name
    if "label" in batch:
      labels = batch["label"]
      bad = (labels < 0) | (labels >= self.num_classes)
      if bad.any():
        raise DataError(f"dataset {name!r} has labels {np.unique(labels[bad])[:5].tolist()}; "
                        f"expected 0..{self.num_classes - 1}")
    if "box" in batch:
      boxes = batch["box"]
      bad = ~np.isfinite(boxes).all(-1) | (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
      if bad.any():
        raise DataError(f"dataset {name!r} has empty or non-finite boxes after preprocessing, "
                        f"e.g. {boxes[bad][0].tolist()}; expected x1 < x2 and y1 < y2 (pixels)")
    if "joints" in batch:
      joints = batch["joints"]
      if not np.isfinite(joints).all():
        raise DataError(f"dataset {name!r} has non-finite joint coordinates after "
                        f"preprocessing; missing joints must have visibility 0")

  # -- model --------------------------------------------------------------------------
  def apply(self, variables, images, rng=None, train: bool = False):
    """Model outputs, and the updated batch statistics when training."""
    mutable = ["batch_stats"] if train and "batch_stats" in variables else False
    out = self.model.apply(variables, images, train=train,
                           rngs={"dropout": rng} if rng is not None else None,
                           mutable=mutable)
    return out if mutable else (out, {})
