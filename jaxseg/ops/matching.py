"""Anchor-to-ground-truth matching and balanced sampling (Faster R-CNN, Ren et al. 2015),
with static shapes: jit- and vmap-able over a batch of images.

Labels: 1 positive (foreground), 0 negative (background), -1 ignored.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxseg.errors import ConfigError

POSITIVE, NEGATIVE, IGNORED = 1, 0, -1


def match(iou, gt_valid, positive_threshold=0.7, negative_threshold=0.3,
          allow_low_quality_matches=True, anchor_valid=None):
  """Match anchors to ground truth by IoU (Ren et al. 2015, sec. 3.1.2).

  iou: [N, M] IoU of N anchors with M (padded) gt boxes; gt_valid: [M] bool.
  Each anchor takes its highest-IoU valid gt (ties: the lower gt index). It is positive
  if that IoU >= positive_threshold, negative if < negative_threshold, ignored between.
  With `allow_low_quality_matches`, for every valid gt, the anchors of highest IoU with
  it (all ties) are positive too, if that IoU is > 0; they keep their own best gt as
  match (as Detectron). Padded gt never match; with no valid gt every anchor is
  negative. Anchors with `anchor_valid` False (e.g. crossing the image border) are
  ignored.

  Returns (matched [N] int32: the gt index of positive anchors, -1 elsewhere;
  labels [N] int32 in {1, 0, -1}).
  """
  if not negative_threshold <= positive_threshold:
    raise ConfigError(f"negative_threshold={negative_threshold} must be <= "
                     f"positive_threshold={positive_threshold}")
  if iou.shape[-1] == 0:  # no gt slots at all
    labels = jnp.zeros(iou.shape[:-1], jnp.int32)
    if anchor_valid is not None:
      labels = jnp.where(anchor_valid, labels, IGNORED)
    return jnp.full(iou.shape[:-1], -1, jnp.int32), labels
  gt_valid = jnp.asarray(gt_valid, bool)
  # Padded gt get -1: never the best of an anchor while any valid gt exists.
  masked = jnp.where(gt_valid[..., None, :], iou, -1.0)
  best_gt = jnp.argmax(masked, axis=-1).astype(jnp.int32)
  best_iou = jnp.max(masked, axis=-1)
  has_gt = jnp.any(gt_valid, axis=-1, keepdims=True)
  best_iou = jnp.where(has_gt, best_iou, 0.0)
  labels = jnp.where(best_iou >= positive_threshold, POSITIVE,
                     jnp.where(best_iou < negative_threshold, NEGATIVE, IGNORED))
  labels = jnp.where(has_gt, labels, NEGATIVE)  # no gt at all: background everywhere
  if allow_low_quality_matches:
    if anchor_valid is not None:
      masked = jnp.where(anchor_valid[..., :, None], masked, -1.0)
    best_anchor_iou = jnp.max(masked, axis=-2, keepdims=True)  # [..., 1, M]
    low = (masked == best_anchor_iou) & (best_anchor_iou > 0) & gt_valid[..., None, :]
    labels = jnp.where(jnp.any(low, axis=-1), POSITIVE, labels)
  if anchor_valid is not None:
    labels = jnp.where(anchor_valid, labels, IGNORED)
  labels = labels.astype(jnp.int32)
  return jnp.where(labels == POSITIVE, best_gt, -1), labels


def sample_balanced(labels, rng, num_samples, positive_fraction=0.5):
  """Fixed-size random minibatch of anchors or proposals (Ren et al. 2015: 256 anchors,
  up to half positive; Fast R-CNN: 128 RoIs, 25% positive).

  Takes min(#positives, floor(num_samples * positive_fraction)) positives and fills up
  to num_samples with negatives, as many as there are; uniformly at random among the
  candidates (labels 1 and 0; -1 is never sampled). Static shapes: random keys + top_k.
  labels: [N] (vmap for a batch). Returns a [N] bool mask.
  """
  if not 0 <= positive_fraction <= 1:
    raise ConfigError(f"positive_fraction={positive_fraction}; expected a value in [0, 1]")
  if num_samples < 0:
    raise ConfigError(f"num_samples={num_samples}; expected >= 0")
  if labels.ndim != 1:
    raise ValueError(f"labels of shape {labels.shape}; expected [N] (vmap over a batch)")
  n = labels.shape[0]
  max_pos = min(int(num_samples * positive_fraction), n)
  max_all = min(int(num_samples), n)
  pos = labels == POSITIVE
  neg = labels == NEGATIVE
  k_pos, k_neg = jax.random.split(rng)
  num_pos = jnp.minimum(jnp.sum(pos), max_pos)
  num_neg = jnp.minimum(jnp.sum(neg), max_all - num_pos)
  return _sample(pos, k_pos, max_pos, num_pos) | _sample(neg, k_neg, max_all, num_neg)


def _sample(candidates, rng, k, count):
  """A mask of `count` (<= k, static) elements drawn uniformly from `candidates` [N]."""
  if k == 0:
    return jnp.zeros(candidates.shape, bool)
  keys = jnp.where(candidates, jax.random.uniform(rng, candidates.shape), -1.0)
  _, idx = jax.lax.top_k(keys, k)  # candidates first, in random order
  take = jnp.arange(k) < count
  return jnp.zeros(candidates.shape, bool).at[idx].set(take)
