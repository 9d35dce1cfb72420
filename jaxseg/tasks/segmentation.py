"""Semantic segmentation: a class for every pixel (CS231n lecture 11).

Loss: per-pixel softmax cross-entropy averaged over non-ignored pixels, plus optionally
soft Dice (`config.loss.ce_weight * CE + config.loss.dice_weight * Dice`).
Metrics: confusion matrix summed over the eval set -> pixel accuracy, IoU and Dice per
class, mIoU, mean Dice.

Uncertainty (`config.uncertainty.mc_samples` = S > 0; Monte-Carlo dropout, Gal &
Ghahramani ICML 2016): evaluation also runs the model S times with every `nn.Dropout`
active but BatchNorm on its running averages (`mc_dropout_predict`). The predictive
distribution is the mean of the S softmaxes; its argmax gives `mc_pixel_accuracy`,
`mc_mIoU` and `mc_mean_dice`; its per-pixel entropy H = -sum_c p_c log p_c (nats, in
[0, log C]) gives `mean_entropy`, and over the correctly / wrongly predicted pixels
`mean_entropy_correct` / `mean_entropy_wrong` (errors should be the more uncertain);
`mean_mutual_information` = H - mean_s H(p_s) is the part due to the dropout masks (the
model's epistemic uncertainty, BALD). Means are over the non-ignored pixels. Pictures
`eval_<step>_entropy.png` show image | truth | MC prediction | entropy. Sample s draws
its masks from `fold_in(key(MC_DROPOUT_SEED), s)`, so evaluation is deterministic. The
deterministic prediction and its metrics are unchanged.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxseg import losses, models, viz
from jaxseg.data import pipeline, segmentation as seg_data, sources
from jaxseg.errors import ConfigError, DataError
from jaxseg.metrics import segmentation as seg_metrics
from jaxseg.tasks import base

MC_DROPOUT_SEED = 0


# -- Monte-Carlo dropout ------------------------------------------------------------------
def _dropout_always_on(next_fun, args, kwargs, context):
  """`nn.intercept_methods` interceptor: every `nn.Dropout` call drops out, whatever its
  `deterministic` flag (attribute or call argument); every other method runs as usual.
  The mask is drawn exactly as flax's `nn.Dropout` draws it."""
  module = context.module
  if not (isinstance(module, nn.Dropout) and context.method_name == "__call__"):
    return next_fun(*args, **kwargs)
  inputs = args[0] if args else kwargs["inputs"]
  rng = args[2] if len(args) > 2 else kwargs.get("rng")
  if module.rate == 0.0:
    return inputs
  if module.rate == 1.0:
    return jnp.zeros_like(inputs)
  if rng is None:
    rng = module.make_rng(module.rng_collection)
  keep_prob = 1.0 - module.rate
  shape = list(inputs.shape)
  for dim in module.broadcast_dims:
    shape[dim] = 1
  keep = jnp.broadcast_to(jax.random.bernoulli(rng, p=keep_prob, shape=shape), inputs.shape)
  return jax.lax.select(keep, inputs / keep_prob, jnp.zeros_like(inputs))


def apply_with_dropout(model, variables, images, rng):
  """One stochastic forward pass for MC dropout: `train=False` (BatchNorm uses its
  running averages, nothing is mutated) with every `nn.Dropout` of `model` active.

  Works for any flax.linen model without changing it: flax's method interception turns
  dropout on, whatever flag the model passes. Custom stochastic layers that do not use
  `nn.Dropout` stay deterministic.
  """
  with nn.intercept_methods(_dropout_always_on):
    return model.apply(variables, images, train=False, rngs={"dropout": rng})


def entropy(probs, axis: int = -1):
  """Shannon entropy in nats, -sum p log p over `axis` (0 log 0 = 0)."""
  return jnp.sum(jax.scipy.special.entr(probs), axis=axis)


def mc_dropout_predict(model, variables, images, num_samples: int, rng):
  """Monte-Carlo dropout: `num_samples` passes of `apply_with_dropout`, sample s with
  `fold_in(rng, s)`, in a loop (memory of one pass).

  Returns float32 `probs` [N, H, W, C] (mean of the softmaxes: the predictive
  distribution), `entropy` [N, H, W] (its entropy, nats) and `expected_entropy`
  [N, H, W] (mean entropy of the individual softmaxes; <= `entropy` by Jensen).
  """
  if num_samples < 1:
    raise ValueError(f"num_samples must be >= 1, got {num_samples}")

  def sample(s, carry):
    probs_sum, entropy_sum = carry
    logits = apply_with_dropout(model, variables, images, jax.random.fold_in(rng, s))
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    return probs_sum + probs, entropy_sum + entropy(probs)

  shape = jax.eval_shape(lambda: apply_with_dropout(model, variables, images, rng)).shape
  init = (jnp.zeros(shape, jnp.float32), jnp.zeros(shape[:-1], jnp.float32))
  probs_sum, entropy_sum = jax.lax.fori_loop(0, num_samples, sample, init)
  probs = probs_sum / num_samples
  return {"probs": probs, "entropy": entropy(probs),
          "expected_entropy": entropy_sum / num_samples}


class SegmentationTask(base.Task):
  """The task contract for semantic segmentation (see jaxseg.tasks)."""

  def __init__(self, config):
    super().__init__(config)
    self.source = sources.get_source(config.dataset.name)
    self.class_names = self.source.class_names
    self.num_classes = self.source.num_classes
    self.ignore_index = config.dataset.ignore_index
    if 0 <= self.ignore_index < self.num_classes:
      raise ConfigError(f"config.dataset.ignore_index={self.ignore_index} collides with a class "
                        f"id; expected a value outside [0, {self.num_classes})")
    model_kwargs = dict(config.model)
    name = model_kwargs.pop("name")
    model_kwargs.pop("dtype", None)
    self.model = models.get_segmentation_model(
        name, num_classes=self.num_classes, dtype=base.compute_dtype(config.model),
        **model_kwargs)
    self.check_model(name)  # unknown option, image size it cannot take: one line
    crop = (config.dataset.get("augment") or {}).get("crop_size")
    if crop is not None:  # the training crops must suit the model too
      if crop > config.dataset.image_size:
        raise ConfigError(f"config.dataset.augment.crop_size={crop}; expected at most "
                          f"dataset.image_size={config.dataset.image_size} (or None)")
      self.check_model(name, size=crop)
    uncertainty = config.get("uncertainty") or {}
    self.mc_samples = uncertainty.get("mc_samples", 0)
    if (isinstance(self.mc_samples, bool) or not isinstance(self.mc_samples, int)
        or self.mc_samples < 0):
      raise ConfigError(f"config.uncertainty.mc_samples={self.mc_samples!r}; expected an "
                        f"integer >= 0 (0 = no Monte-Carlo dropout)")
    if self.mc_samples and not model_kwargs.get("dropout_rate"):
      logging.warning("config.uncertainty.mc_samples=%d but the model has no dropout "
                      "(config.model.dropout_rate): the MC samples are all the same",
                      self.mc_samples)

  # -- data ---------------------------------------------------------------------------
  def train_data(self, start_step: int = 0):
    c = self.config.dataset
    ds, n = sources.load_split(c, "train")
    preprocess = seg_data.make_train_preprocess(
        c.image_size, c.augment.min_scale, c.augment.max_scale, c.augment.flip,
        self.ignore_index, c.augment.get("crop_size"))
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

  def example_batch(self, batch_size: int, size: int | None = None):
    """Zero arrays with the shapes and dtypes of a batch of `size` x `size` images
    (default dataset.image_size; for initialization)."""
    size = size or self.config.dataset.image_size
    return {"image": np.zeros((batch_size, size, size, 3), np.float32),
            "label": np.zeros((batch_size, size, size), np.int32)}

  # -- model --------------------------------------------------------------------------
  def loss_fn(self, variables, batch, rng, train: bool):
    """Weighted CE + Dice of the logits. With `config.model.deep_supervision` (models that
    sow "step_logits", e.g. recurrent refinement) the mean of that loss over every sown
    step's logits."""
    deep = bool(self.config.model.get("deep_supervision", False))
    mutable = ["batch_stats"] if train and "batch_stats" in variables else []
    mutable += ["intermediates"] if deep else []
    out = self.model.apply(variables, batch["image"], train=train, rngs={"dropout": rng},
                           mutable=mutable or False)
    logits, new_state = out if mutable else (out, {})
    new_state = dict(new_state)
    step_logits = new_state.pop("intermediates", {}).get("step_logits", (logits,))
    labels = batch["label"]
    c = self.config.loss
    ce = [losses.softmax_cross_entropy(z, labels, self.ignore_index) for z in step_logits]
    dice = [losses.soft_dice_loss(z, labels, self.ignore_index) for z in step_logits]
    loss = sum(c.ce_weight * a + c.dice_weight * b for a, b in zip(ce, dice)) / len(ce)
    valid = labels != self.ignore_index
    correct = (jnp.argmax(logits, -1) == labels) & valid
    accuracy = correct.sum() / jnp.maximum(valid.sum(), 1)
    return loss, ({"cross_entropy": ce[-1], "dice_loss": dice[-1], "pixel_accuracy": accuracy},
                  new_state)

  def predict(self, variables, images):
    """`labels` [N, H, W] of the deterministic model and the per-image checkerboard and
    gradient energies of its logits (`metrics.segmentation.checkerboard_energy`); with
    MC dropout on, also `mc_labels`, `entropy` and `mutual_information` (see the module
    docstring)."""
    logits = self.model.apply(variables, images, train=False)
    predictions = {"labels": jnp.argmax(logits, -1).astype(jnp.int32),
                   **seg_metrics.checkerboard_energy(logits)}
    if self.mc_samples:
      mc = mc_dropout_predict(self.model, variables, images, self.mc_samples,
                              jax.random.key(MC_DROPOUT_SEED))
      predictions.update(mc_labels=jnp.argmax(mc["probs"], -1).astype(jnp.int32),
                         entropy=mc["entropy"],
                         mutual_information=mc["entropy"] - mc["expected_entropy"])
    return predictions

  # -- evaluation ---------------------------------------------------------------------
  def eval_stats(self, variables, batch, predictions=None):
    """Sums over the batch's real examples; `predictions` (of `predict`) if already made."""
    if predictions is None:
      predictions = self.predict(variables, batch["image"])
    labels = jnp.where(batch["example_mask"][:, None, None], batch["label"], self.ignore_index)
    confusion = lambda p: seg_metrics.confusion_matrix(labels, p, self.num_classes,
                                                       self.ignore_index)
    stats = {"confusion": confusion(predictions["labels"]),
             **{k: jnp.sum(predictions[k] * batch["example_mask"])
                for k in ("checkerboard", "gradient")}}
    if self.mc_samples:
      valid = labels != self.ignore_index
      correct = valid & (predictions["mc_labels"] == labels)
      wrong = valid & ~correct
      h = predictions["entropy"]
      stats.update(mc_confusion=confusion(predictions["mc_labels"]),
                   entropy_correct=jnp.sum(jnp.where(correct, h, 0.0)),
                   entropy_wrong=jnp.sum(jnp.where(wrong, h, 0.0)),
                   mutual_information=jnp.sum(
                       jnp.where(valid, predictions["mutual_information"], 0.0)))
    return stats

  def summarize(self, stats):
    summary = seg_metrics.summarize_confusion(stats["confusion"], self.class_names)
    if "checkerboard" in stats:
      summary["checkerboard_score"] = seg_metrics.checkerboard_score(stats)
    if "mc_confusion" in stats:
      mc = seg_metrics.summarize_confusion(stats["mc_confusion"], self.class_names)
      summary.update({f"mc_{k}": mc[k] for k in ("pixel_accuracy", "mIoU", "mean_dice")})
      cm = np.asarray(stats["mc_confusion"], np.float64)
      n_correct, n_wrong = np.trace(cm), cm.sum() - np.trace(cm)
      ratio = lambda a, n: float(a / n) if n else float("nan")
      summary.update(
          mean_entropy=ratio(stats["entropy_correct"] + stats["entropy_wrong"],
                             n_correct + n_wrong),
          mean_entropy_correct=ratio(stats["entropy_correct"], n_correct),
          mean_entropy_wrong=ratio(stats["entropy_wrong"], n_wrong),
          mean_mutual_information=ratio(stats["mutual_information"], n_correct + n_wrong))
    return summary

  def visualize(self, batch, predictions, max_rows: int = 8):
    """Rows of image | ground truth | prediction, with a class-colour legend below.

    With MC dropout on, a dict: {"": that picture, "entropy": rows of image | ground
    truth | MC prediction | predictive entropy on a fixed [0, log C] colour scale}.
    """
    images = viz.to_uint8(batch["image"][:max_rows])
    truth = viz.colourize(np.asarray(batch["label"][:max_rows]), self.num_classes,
                          self.ignore_index)
    pred = viz.colourize(np.asarray(predictions["labels"][:max_rows]), self.num_classes)
    picture = viz.grid([list(row) for row in zip(images, truth, pred)])
    legend = viz.legend(self.class_names, picture.shape[1])
    picture = np.concatenate([picture, legend], axis=0)
    if "entropy" not in predictions:
      return picture
    max_entropy = float(np.log(self.num_classes))
    mc_pred = viz.colourize(np.asarray(predictions["mc_labels"][:max_rows]), self.num_classes)
    heat = viz.heatmap(np.asarray(predictions["entropy"][:max_rows]), 0.0, max_entropy)
    uncertainty = viz.grid([list(row) for row in zip(images, truth, mc_pred, heat)])
    width = uncertainty.shape[1]
    bar = viz.colour_bar(width, 0.0, max_entropy,
                         f"predictive entropy (nats), 0 .. log {self.num_classes} = "
                         f"{max_entropy:.2f}; {self.mc_samples} MC-dropout samples")
    return {"": picture,
            "entropy": np.concatenate([uncertainty, bar,
                                       viz.legend(self.class_names, width)], axis=0)}
