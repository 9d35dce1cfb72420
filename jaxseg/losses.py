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


def softmax_nll(logits, labels):
  """Elementwise softmax cross-entropy -log softmax(logits)[label]: logits [..., K], int
  labels [...] in 0..K-1 -> [...] float32."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(logp, labels.astype(jnp.int32)[..., None], axis=-1)[..., 0]


def hard_negative_mask(loss, positive, negative, ratio: float = 3.0):
  """SSD's hard negative mining (Liu et al. 2016, sec. 2.2): per image (rows of [B, N]),
  the `negative` elements of highest `loss`, at most ratio x the image's positives
  (argsort + rank mask; ties: the lower index). -> [B, N] bool."""
  candidate = negative & ~positive
  keyed = jnp.where(candidate, loss.astype(jnp.float32), -jnp.inf)
  order = jnp.argsort(-keyed, axis=-1, stable=True)
  rank = jnp.argsort(order, axis=-1, stable=True)
  budget = jnp.floor(ratio * jnp.sum(positive, axis=-1, keepdims=True))
  return candidate & (rank < budget)


def ssd_multibox_terms(logits, deltas, classes, box_targets, positive, negative=None,
                       neg_pos_ratio: float = 3.0, beta: float = 1.0):
  """SSD's MultiBox loss (Liu et al. 2016, eq. 1, alpha = 1) as two terms, each divided
  by N = the number of positive default boxes of the batch (0 when N = 0):
  "ssd_classifier": softmax CE of `logits` [B, D, K] against `classes` [B, D] (0 =
  background) over the positives and the hard negatives (`hard_negative_mask`, at most
  neg_pos_ratio per positive, among `negative`, default every non-positive);
  "ssd_box": smooth L1 of `deltas` [B, D, 4] against `box_targets` over the positives."""
  nll = softmax_nll(logits, jnp.where(positive, classes, 0))
  negative = ~positive if negative is None else negative
  hard = hard_negative_mask(jax.lax.stop_gradient(nll), positive, negative, neg_pos_ratio)
  n = normalizer(positive)
  return {"ssd_classifier": jnp.sum(jnp.where(positive | hard, nll, 0.0)) / n,
          "ssd_box": masked_box_loss(deltas, jax.lax.stop_gradient(box_targets), positive,
                                     positive, beta),
          "ssd_hard_negatives": jnp.sum(hard) / logits.shape[0]}


def yolo_terms(coords, coord_targets, confidence, confidence_targets, responsible,
               class_outputs, class_targets, has_object, class_loss: str = "sse"):
  """YOLO's sum-squared error (Redmon et al. 2016, eq. 3) as unweighted terms, each a sum
  per image averaged over the batch (the paper's lambda_coord = 5 and lambda_noobj = 0.5
  are the weights config.loss.yolo_coord_weight / yolo_noobject_weight):
  "yolo_coord": sum over responsible boxes of the squared error of the 4 coordinates
  (`coords` / `coord_targets` [B, N, K, 4]; the paper's x, y, sqrt w, sqrt h);
  "yolo_object": sum over responsible boxes of (confidence - target)^2 (target: the IoU
  of the predicted box with its ground truth); "yolo_noobject": sum over the other boxes
  of confidence^2 (`confidence` [B, N, K], `responsible` [B, N, K] bool);
  "yolo_class": `class_loss` "sse": sum over cells with an object (`has_object` [B, N])
  of the squared error of the class probabilities `class_outputs` [B, N, C] against the
  one-hot of `class_targets` [B, N] (0..C-1); "softmax": softmax CE of the logits
  `class_outputs` [B, N, C + 1] over every cell (target 0 = background where no object)."""
  b = coords.shape[0]
  sq = lambda x: jnp.square(x.astype(jnp.float32))
  coord = jnp.sum(jnp.where(responsible[..., None], sq(coords - coord_targets), 0.0))
  conf = confidence.astype(jnp.float32)
  obj = jnp.sum(jnp.where(responsible, sq(conf - confidence_targets), 0.0))
  noobj = jnp.sum(jnp.where(responsible, 0.0, sq(conf)))
  if class_loss == "sse":
    onehot = jax.nn.one_hot(jnp.maximum(class_targets, 0), class_outputs.shape[-1])
    cls = jnp.sum(jnp.where(has_object[..., None], sq(class_outputs - onehot), 0.0))
  elif class_loss == "softmax":
    cls = jnp.sum(softmax_nll(class_outputs, jnp.where(has_object, class_targets, 0)))
  else:
    raise ValueError(f"class_loss={class_loss!r}; expected 'sse' or 'softmax'")
  return {"yolo_coord": coord / b, "yolo_object": obj / b, "yolo_noobject": noobj / b,
          "yolo_class": cls / b}
