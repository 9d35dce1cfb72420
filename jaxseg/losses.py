"""Pure loss functions. Every loss is computed in float32 whatever the compute dtype."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _valid_pixels(labels, ignore_index):
  valid = labels != ignore_index
  return valid, jnp.where(valid, labels, 0)


def softmax_cross_entropy(logits, labels, ignore_index: int = 255):
  """Per-pixel softmax cross-entropy averaged over pixels whose label is not ignored.

  logits [..., C], labels [...] int. Returns 0 when every pixel is ignored.
  """
  valid, safe_labels = _valid_pixels(labels, ignore_index)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, safe_labels[..., None], axis=-1)[..., 0]
  return jnp.sum(nll * valid) / jnp.maximum(jnp.sum(valid), 1)


def soft_dice_loss(logits, labels, ignore_index: int = 255, smooth: float = 1.0):
  """1 - mean over classes of the soft Dice coefficient (Milletari et al., V-Net 2016).

  dice_c = (2 sum(p_c y_c) + smooth) / (sum(p_c) + sum(y_c) + smooth), sums over the
  non-ignored pixels of the whole batch, p = softmax(logits), y = one-hot labels.
  """
  valid, safe_labels = _valid_pixels(labels, ignore_index)
  num_classes = logits.shape[-1]
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1) * valid[..., None]
  onehot = jax.nn.one_hot(safe_labels, num_classes, dtype=jnp.float32) * valid[..., None]
  axes = tuple(range(logits.ndim - 1))
  intersection = jnp.sum(probs * onehot, axis=axes)
  denominator = jnp.sum(probs, axis=axes) + jnp.sum(onehot, axis=axes)
  dice = (2.0 * intersection + smooth) / (denominator + smooth)
  return 1.0 - jnp.mean(dice)


# -- detection ----------------------------------------------------------------------------
# Pure per-element terms; a detector sums them over a sample mask and normalises by
# `normalizer(mask)` (the static form of "divide by the number of sampled indices").


def normalizer(mask):
  """max(sum(mask), 1) as float32: the count of sampled elements, at least 1."""
  return jnp.maximum(jnp.sum(mask.astype(jnp.float32)), 1.0)


def smooth_l1(pred, target, beta: float = 1.0):
  """Smooth L1 (Huber) loss of Fast R-CNN (Girshick, ICCV 2015), elementwise, float32:
  0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta (beta = 0: plain L1)."""
  d = jnp.abs(jnp.asarray(pred, jnp.float32) - jnp.asarray(target, jnp.float32))
  if beta <= 0:
    return d
  return jnp.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)


def masked_box_loss(pred, target, mask, norm_mask=None, beta: float = 1.0):
  """Smooth L1 summed over the 4 coordinates of the rows where `mask` [...] (e.g. the
  sampled positives), divided by `normalizer(norm_mask)` (default `mask`): pred and
  target [..., 4]. Torchvision's RPN / RoI-head box losses use norm_mask = every sampled
  row (positives and negatives). Zero, with finite gradients, when `mask` is all False."""
  per_row = jnp.sum(smooth_l1(pred, target, beta), axis=-1)
  norm_mask = mask if norm_mask is None else norm_mask
  return jnp.sum(jnp.where(mask, per_row, 0.0)) / normalizer(norm_mask)


def sigmoid_binary_cross_entropy(logits, labels, mask):
  """Binary cross-entropy of `logits` [...] against 0/1 `labels` [...], summed where
  `mask` and divided by `normalizer(mask)` (the RPN's objectness loss, Ren et al. 2015).
  Stable form: max(z, 0) - z y + log(1 + exp(-|z|))."""
  z = logits.astype(jnp.float32)
  y = labels.astype(jnp.float32)
  per = jnp.maximum(z, 0.0) - z * y + jnp.log1p(jnp.exp(-jnp.abs(z)))
  return jnp.sum(jnp.where(mask, per, 0.0)) / normalizer(mask)


def sampled_softmax_cross_entropy(logits, labels, mask):
  """Softmax cross-entropy of `logits` [..., K] against int `labels` [...] (any value
  where `mask` is False), summed where `mask` and divided by `normalizer(mask)` (the
  RoI head's classification loss over the sampled RoIs, Girshick 2015)."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  safe = jnp.where(mask, labels, 0).astype(jnp.int32)
  nll = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
  return jnp.sum(jnp.where(mask, nll, 0.0)) / normalizer(mask)
