"""Semantic segmentation: a class for every pixel (CS231n lecture 11).

Loss: per-pixel softmax cross-entropy averaged over non-ignored pixels, plus optionally
soft Dice (`config.loss.ce_weight * CE + config.loss.dice_weight * Dice`).
Metrics: confusion matrix summed over the eval set -> pixel accuracy, IoU and Dice per
class, mIoU, mean Dice.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import losses, models, viz
from jaxseg.data import pipeline, segmentation as seg_data, sources
from jaxseg.errors import ConfigError, DataError
from jaxseg.metrics import segmentation as seg_metrics

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class SegmentationTask:
  """The task contract for semantic segmentation (see jaxseg.tasks)."""

  def __init__(self, config):
    self.config = config
    self.source = sources.get_source(config.dataset.name)
    self.class_names = self.source.class_names
    self.num_classes = self.source.num_classes
    self.ignore_index = config.dataset.ignore_index
    if 0 <= self.ignore_index < self.num_classes:
      raise ConfigError(f"config.dataset.ignore_index={self.ignore_index} collides with a class "
                        f"id; expected a value outside [0, {self.num_classes})")
    model_kwargs = dict(config.model)
    name = model_kwargs.pop("name")
    dtype = model_kwargs.pop("dtype", "float32")
    if dtype not in DTYPES:
      raise ConfigError(f"config.model.dtype={dtype!r}; expected one of {sorted(DTYPES)}")
    self.model = models.get_segmentation_model(
        name, num_classes=self.num_classes, dtype=DTYPES[dtype], **model_kwargs)

  # -- data ---------------------------------------------------------------------------
  def train_data(self, start_step: int = 0):
    c = self.config.dataset
    ds, n = sources.load_split(c, "train")
    preprocess = seg_data.make_train_preprocess(
        c.image_size, c.augment.min_scale, c.augment.max_scale, c.augment.flip,
        self.ignore_index)
    return pipeline.train_batches(ds, n, preprocess, self.config.batch_size, self.config.seed,
                                  start_step, c.shuffle_buffer, c.cache, name=c.name)

  def eval_data(self):
    c = self.config.dataset
    ds, n = sources.load_split(c, "eval")
    return pipeline.eval_batches(ds, n, seg_data.make_eval_preprocess(c.image_size),
                                 self.config.eval_batch_size, name=c.name)

  def validate_batch(self, batch):
    labels = batch["label"]
    bad = (labels < 0) | ((labels >= self.num_classes) & (labels != self.ignore_index))
    if bad.any():
      values = np.unique(labels[bad])[:5].tolist()
      raise DataError(f"dataset {self.config.dataset.name!r} has label values {values}; expected "
                      f"0..{self.num_classes - 1} or ignore_index={self.ignore_index}")

  def example_batch(self, batch_size: int):
    """Zero arrays with the shapes and dtypes of a training batch (for initialization)."""
    size = self.config.dataset.image_size
    return {"image": np.zeros((batch_size, size, size, 3), np.float32),
            "label": np.zeros((batch_size, size, size), np.int32)}

  # -- model --------------------------------------------------------------------------
  def init(self, rng, batch):
    params_rng, dropout_rng = jax.random.split(rng)
    return self.model.init({"params": params_rng, "dropout": dropout_rng}, batch["image"],
                           train=False)

  def loss_fn(self, variables, batch, rng, train: bool):
    mutable = ["batch_stats"] if train and "batch_stats" in variables else False
    out = self.model.apply(variables, batch["image"], train=train, rngs={"dropout": rng},
                           mutable=mutable)
    logits, new_state = out if mutable else (out, {})
    labels = batch["label"]
    ce = losses.softmax_cross_entropy(logits, labels, self.ignore_index)
    dice = losses.soft_dice_loss(logits, labels, self.ignore_index)
    c = self.config.loss
    loss = c.ce_weight * ce + c.dice_weight * dice
    valid = labels != self.ignore_index
    correct = (jnp.argmax(logits, -1) == labels) & valid
    accuracy = correct.sum() / jnp.maximum(valid.sum(), 1)
    return loss, ({"cross_entropy": ce, "dice_loss": dice, "pixel_accuracy": accuracy},
                  new_state)

  def predict(self, variables, images):
    logits = self.model.apply(variables, images, train=False)
    return {"labels": jnp.argmax(logits, -1).astype(jnp.int32)}

  # -- evaluation ---------------------------------------------------------------------
  def eval_stats(self, variables, batch):
    predictions = self.predict(variables, batch["image"])["labels"]
    labels = jnp.where(batch["example_mask"][:, None, None], batch["label"], self.ignore_index)
    return {"confusion": seg_metrics.confusion_matrix(labels, predictions, self.num_classes,
                                                      self.ignore_index)}

  def summarize(self, stats):
    return seg_metrics.summarize_confusion(stats["confusion"], self.class_names)

  def visualize(self, batch, predictions, max_rows: int = 8):
    """Rows of image | ground truth | prediction, with a class-colour legend below."""
    images = viz.to_uint8(batch["image"][:max_rows])
    truth = viz.colourize(np.asarray(batch["label"][:max_rows]), self.num_classes,
                          self.ignore_index)
    pred = viz.colourize(np.asarray(predictions["labels"][:max_rows]), self.num_classes)
    picture = viz.grid([list(row) for row in zip(images, truth, pred)])
    return np.concatenate([picture, viz.legend(self.class_names, picture.shape[1])], axis=0)
