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
