"""RoI heads of Fast / Faster R-CNN (Girshick, "Fast R-CNN", ICCV 2015; Ren et al. 2015),
with static shapes.

`RoIHeads(features, strides, proposals, proposal_valid, image_hw, train, targets)`:
- pooler, chosen by a string (Detectron2's ROIPooler): "roi_pool" (Fast R-CNN's max
  pooling, one level), "roi_align" (Mask R-CNN's RoIAlign, one level), "multilevel"
  (RoIAlign from each RoI's FPN level, Lin et al. 2017, eq. 1) -> [B, R, S, S, C];
  `aligned`: RoIAlign's half-pixel offset (default True, Detectron2; torchvision's
  MultiScaleRoIAlign in its R-CNNs: False); `level_mapper` (multilevel only,
  `ops.roi.LEVEL_MAPPERS`): an RoI's FPN level as "detectron2" (default,
  floor(4 + log2(sqrt(area) / 224 + 1e-8))) or "torchvision" (its LevelMapper,
  floor(4 + log2(sqrt(area) / 224) + 1e-6)): boxes a few ppm below 112, 224 or 448 px
  go one level up with the latter;
- box head `box_head` (`TwoMLPHead`: flatten (H, W, C order) -> fc6 -> ReLU -> fc7 -> ReLU)
  and `box_predictor` (`cls_score`: C + 1 logits incl. background at 0; `bbox_pred`:
  4 (C + 1) class-specific deltas, box-coder weights (10, 10, 5, 5)) -- torchvision's
  `roi_heads.box_head.fc6/fc7`, `roi_heads.box_predictor.cls_score/bbox_pred`;
- training: the ground-truth boxes are appended to the proposals (a concatenation with
  its own valid mask), RoIs matched to the gt by IoU (foreground >= fg_iou_threshold,
  background < bg_iou_threshold, no low-quality matches), `batch_size_per_image` sampled
  with up to `positive_fraction` foreground (`jaxseg.ops.matching.sample_balanced`), and
  only the sampled rows (a static top_k of the sample mask) are pooled; losses: softmax
  CE over the sampled RoIs, smooth L1 of the foreground RoIs' deltas of their gt class,
  both divided by the number of sampled RoIs;
- inference: softmax scores and per-class decoded boxes of every proposal, clipped,
  score > score_threshold and size >= min_size, per-class NMS, the best
  `detections_per_image` -> boxes [B, D, 4], scores, classes (1..C), valid.
`mask_head` / `keypoint_head` hold Mask R-CNN's branches (`instance_heads`; None = off),
so those detectors are table entries, not subclasses: they pool their own resolution
(14) with the same pooler, train on the sampled foreground RoIs (targets "masks" /
"keypoints"), and run on the final detections at test time.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg import losses, ops
from jaxseg.models.detection import instance_heads

POOLERS = ("roi_pool", "roi_align", "multilevel")


class TwoMLPHead(nn.Module):
  """Flatten -> fc6 -> ReLU -> fc7 -> ReLU (Fast R-CNN's two hidden FC layers)."""
  representation_size: int = 1024
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[:-3] + (-1,))
    x = nn.relu(nn.Dense(self.representation_size, name="fc6", dtype=self.dtype)(x))
    return nn.relu(nn.Dense(self.representation_size, name="fc7", dtype=self.dtype)(x))


class FastRCNNPredictor(nn.Module):
  """Class logits over num_classes (background included) and class-specific deltas."""
  num_classes: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    logits = nn.Dense(self.num_classes, name="cls_score", dtype=self.dtype,
                      kernel_init=nn.initializers.normal(0.01))(x)
    deltas = nn.Dense(4 * self.num_classes, name="bbox_pred", dtype=self.dtype,
                      kernel_init=nn.initializers.normal(0.001))(x)
    return (logits.astype(jnp.float32),
            deltas.astype(jnp.float32).reshape(x.shape[:-1] + (self.num_classes, 4)))


def pool(pooler: str, features, strides, boxes, resolution: int, sampling_ratio: int,
         canonical_level: float = 4, canonical_size: float = 224.0, aligned: bool = True,
         level_mapper: str = "detectron2"):
  """features: list of [B, H, W, C] (fine to coarse); boxes [B, R, 4] -> [B, R, S, S, C].
  `aligned`: RoIAlign's half-pixel offset (Detectron2; torchvision's MultiScaleRoIAlign
  in fasterrcnn_resnet50_fpn uses aligned=False); `level_mapper`: the multilevel
  pooler's FPN level assignment (`ops.roi.fpn_level`)."""
  boxes = jax.lax.stop_gradient(boxes)
  if pooler not in POOLERS:
    raise ValueError(f"pooler={pooler!r}; expected one of {POOLERS}")
  if pooler == "multilevel":
    return ops.roi.multilevel_roi_align(features, boxes, resolution, tuple(strides),
                                        sampling_ratio, aligned, canonical_level=canonical_level,
                                        canonical_size=canonical_size, level_mapper=level_mapper)
  if len(features) != 1:
    raise ValueError(f"pooler={pooler!r} reads one feature level; the detector gives "
                     f"{len(features)} (FPN): use pooler='multilevel'")
  if pooler == "roi_pool":
    return ops.roi.roi_pool(features[0], boxes, resolution, 1.0 / strides[0])
  return ops.roi.roi_align(features[0], boxes, resolution, 1.0 / strides[0], sampling_ratio,
                           aligned)


class RoIHeads(nn.Module):
  """Fast R-CNN box branch on proposals (see the module docstring)."""
  num_classes: int  # including the background (class 0)
  pooler: str = "roi_align"
  pooler_resolution: int = 7
  sampling_ratio: int = 2
  aligned: bool = True  # RoIAlign's half-pixel offset (False: torchvision's R-CNNs)
  canonical_level: float = 4.0
  canonical_size: float = 224.0
  level_mapper: str = "detectron2"  # ops.roi.LEVEL_MAPPERS ("torchvision": its LevelMapper)
  representation_size: int = 1024
  batch_size_per_image: int = 512
  positive_fraction: float = 0.25
  fg_iou_threshold: float = 0.5
  bg_iou_threshold: float = 0.5
  box_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0)
  smooth_l1_beta: float = 1.0 / 9
  score_threshold: float = 0.05
  nms_threshold: float = 0.5
  detections_per_image: int = 100
  min_size: float = 1e-2
  instance_rois_per_image: int | None = None  # RoIs the mask / keypoint heads train on
  mask_head: Any = None  # instance_heads.MaskHead (Mask R-CNN) or None
  keypoint_head: Any = None  # instance_heads.KeypointHead (keypoint R-CNN) or None
  dtype: Any = jnp.float32

  def setup(self):
    self.box_head = TwoMLPHead(self.representation_size, self.dtype)
    self.box_predictor = FastRCNNPredictor(self.num_classes, self.dtype)

  def _pool(self, features, strides, rois, resolution: int):
    return pool(self.pooler, features, strides, rois, resolution, self.sampling_ratio,
                self.canonical_level, self.canonical_size, self.aligned, self.level_mapper)

  def _predict(self, features, strides, rois):
    pooled = self._pool(features, strides, rois, self.pooler_resolution)
    return self.box_predictor(self.box_head(pooled.astype(self.dtype)))

  @property
  def instance_outputs(self) -> tuple[str, ...]:
    """The per-object outputs beyond boxes: "masks" and / or "keypoints"."""
    return tuple(k for k, head in (("masks", self.mask_head),
                                   ("keypoints", self.keypoint_head)) if head is not None)

  def __call__(self, features, strides, proposals, proposal_valid, image_hw, train=False,
               targets=None, rng=None):
    if train:
      return self.losses(features, strides, proposals, proposal_valid, targets, rng)
    return self.detect(features, strides, proposals, proposal_valid, image_hw)

  # -- training ------------------------------------------------------------------------
  def sample(self, proposals, proposal_valid, gt_boxes, gt_labels, gt_valid, rng):
    return sample_rois(proposals, proposal_valid, gt_boxes, gt_labels, gt_valid, rng,
                       self.batch_size_per_image, self.positive_fraction,
                       self.fg_iou_threshold, self.bg_iou_threshold, self.box_weights)

  def losses(self, features, strides, proposals, proposal_valid, targets, rng):
    rng, instance_rng = jax.random.split(rng)
    rois, classes, box_targets, sampled, matched = self.sample(
        proposals, proposal_valid, targets["boxes"], targets["labels"], targets["valid"], rng)
    logits, deltas = self._predict(features, strides, rois)
    terms = classifier_losses(logits, deltas, classes, box_targets, sampled,
                              self.smooth_l1_beta)
    if self.instance_outputs:
      terms.update(self.instance_losses(features, strides, rois, classes, sampled, matched,
                                        targets, instance_rng))
    return terms

  def instance_losses(self, features, strides, rois, classes, sampled, matched, targets,
                      rng):
    """Mask / keypoint losses over the foreground RoIs: at most `instance_rois_per_image`
    per image (default: the sampler's foreground quota), a static, small number of rows,
    drawn at random among the foreground RoIs."""
    positive = sampled & (classes > 0)
    quota = self.instance_rois_per_image or int(self.batch_size_per_image
                                                * self.positive_fraction)
    quota = min(rois.shape[1], max(1, quota))
    priority = positive + 0.5 * jax.random.uniform(rng, positive.shape)
    _, rows = jax.lax.top_k(priority, quota)
    take = lambda x: jnp.take_along_axis(x, rows.reshape(rows.shape + (1,) * (x.ndim - 2)), 1)
    rois, classes, positive, matched = take(rois), take(classes), take(positive), take(matched)
    terms = {}
    if self.mask_head is not None:
      size = 2 * self.mask_head.resolution
      logits = self.mask_head(self._pool(features, strides, rois, self.mask_head.resolution))
      gt = instance_heads.mask_targets(targets["masks"], rois, matched, size)
      terms["roi_mask"] = instance_heads.mask_loss(logits, classes, gt, positive)
    if self.keypoint_head is not None:
      heatmaps = self.keypoint_head(self._pool(features, strides, rois,
                                               self.keypoint_head.resolution))
      cells, labelled = instance_heads.keypoint_targets(targets["keypoints"], rois, matched,
                                                        heatmaps.shape[2])
      terms["roi_keypoint"] = instance_heads.keypoint_loss(heatmaps, cells,
                                                           labelled & positive[..., None])
    return terms

  # -- inference -----------------------------------------------------------------------
  def detect(self, features, strides, proposals, proposal_valid, image_hw):
    logits, deltas = self._predict(features, strides, proposals)
    out = postprocess(jax.nn.softmax(logits, -1)[..., 1:], deltas[..., 1:, :], proposals,
                      proposal_valid, image_hw, self.box_weights, self.score_threshold,
                      self.nms_threshold, self.detections_per_image, self.min_size)
    boxes = jnp.maximum(out["boxes"], 0.0)  # padded rows (-1) pool a harmless corner
    if self.mask_head is not None:
      logits = self.mask_head(self._pool(features, strides, boxes, self.mask_head.resolution))
      out["masks"] = instance_heads.mask_probabilities(logits, out["classes"])
    if self.keypoint_head is not None:
      heatmaps = self.keypoint_head(self._pool(features, strides, boxes,
                                               self.keypoint_head.resolution))
      # boxes are clipped to the image: a larger resized map is never needed
      max_size = min(self.keypoint_head.max_size, max(image_hw))
      out["keypoints"], out["keypoint_scores"] = instance_heads.heatmaps_to_keypoints(
          heatmaps, out["boxes"], max_size)
    return out


def sample_rois(proposals, proposal_valid, gt_boxes, gt_labels, gt_valid, rng,
                batch_size_per_image: int, positive_fraction: float, fg_iou_threshold: float,
                bg_iou_threshold: float, box_weights):
  """Fast R-CNN's RoI sampling: the ground-truth boxes appended to the proposals (with
  their own valid mask), RoIs matched to the gt by IoU (foreground >= fg_iou_threshold,
  background < bg_iou_threshold, no low-quality matches), `batch_size_per_image` sampled
  with up to `positive_fraction` foreground, sampled rows first (a static top_k).
  -> RoIs [B, R, 4], class targets [B, R] (0 = background), box targets [B, R, 4]
  (encoded with `box_weights`), sampled mask [B, R], matched gt index [B, R] (0 for
  background rows)."""
  rois = jnp.concatenate([jax.lax.stop_gradient(proposals), gt_boxes], 1)
  roi_valid = jnp.concatenate([proposal_valid, gt_valid], 1)
  iou = ops.boxes.pairwise_iou(rois, gt_boxes)

  def one(iou_b, gt_valid_b, roi_valid_b, key):
    matched, labels = ops.matching.match(iou_b, gt_valid_b, fg_iou_threshold,
                                         bg_iou_threshold, allow_low_quality_matches=False,
                                         anchor_valid=roi_valid_b)
    sampled = ops.matching.sample_balanced(labels, key, batch_size_per_image,
                                           positive_fraction)
    return matched, labels, sampled

  keys = jax.random.split(rng, rois.shape[0])
  matched, labels, sampled = jax.vmap(one)(iou, gt_valid, roi_valid, keys)
  r = min(batch_size_per_image, rois.shape[1])
  _, rows = jax.lax.top_k(sampled.astype(jnp.float32), r)  # sampled rows first
  take = lambda x: jnp.take_along_axis(x, rows.reshape(rows.shape + (1,) * (x.ndim - 2)), 1)
  rois, matched, labels, sampled = take(rois), take(matched), take(labels), take(sampled)
  positive = labels == ops.matching.POSITIVE
  safe = jnp.maximum(matched, 0)
  classes = jnp.where(positive, jnp.take_along_axis(gt_labels, safe, 1), 0)
  matched_boxes = jnp.take_along_axis(gt_boxes, safe[..., None], 1)
  box_targets = ops.boxes.encode(matched_boxes, rois, box_weights)
  return rois, classes, box_targets, sampled & (labels != ops.matching.IGNORED), safe


def classifier_losses(logits, deltas, classes, box_targets, sampled, smooth_l1_beta: float):
  """Fast R-CNN's multi-task loss over sampled RoIs: softmax CE of `logits` [B, R, K]
  (K = C + 1) and smooth L1 of the deltas [B, R, K, 4] of each foreground RoI's class,
  both divided by the number of sampled RoIs (`deltas` None: no box term)."""
  positive = sampled & (classes > 0)
  accuracy = (jnp.sum(sampled & (jnp.argmax(logits, -1) == classes))
              / losses.normalizer(sampled))
  terms = {"roi_classifier": losses.sampled_softmax_cross_entropy(logits, classes, sampled),
           "roi_accuracy": accuracy, "roi_positives": jnp.sum(positive) / logits.shape[0]}
  if deltas is not None:
    class_deltas = jnp.take_along_axis(deltas, classes[..., None, None], 2)[..., 0, :]
    terms["roi_box"] = losses.masked_box_loss(
        class_deltas, jax.lax.stop_gradient(box_targets), positive, sampled, smooth_l1_beta)
  return terms


def postprocess(scores, deltas, proposals, proposal_valid, image_hw, box_weights,
                score_threshold: float, nms_threshold: float, detections_per_image: int,
                min_size: float, candidates_per_class: int | None = None):
  """Per-class detections of scored proposals: `scores` [B, P, C] (background left out),
  class-specific `deltas` [B, P, C, 4] (None: the proposals themselves) decoded with
  `box_weights`, clipped to the image, kept where score > score_threshold and both sides
  >= min_size, [only the best `candidates_per_class` kept boxes of each class (SSD's
  top-k before NMS)], per-class NMS, the best `detections_per_image` -> boxes [B, D, 4],
  scores, classes (1..C), valid (rows past the detections: -1 / 0 / -1 / False)."""
  b, p, c = scores.shape
  if deltas is None:
    boxes = jnp.broadcast_to(proposals[:, :, None, :], (b, p, c, 4))
  else:
    boxes = ops.boxes.decode(deltas, proposals[:, :, None, :], box_weights)
  height, width = image_hw
  boxes = ops.boxes.clip_boxes(boxes, float(height), float(width))
  classes = jnp.broadcast_to(jnp.arange(1, c + 1, dtype=jnp.int32), (b, p, c))
  wh = boxes[..., 2:] - boxes[..., :2]
  ok = (proposal_valid[..., None] & (scores > score_threshold)
        & (wh[..., 0] >= min_size) & (wh[..., 1] >= min_size))
  if candidates_per_class is not None and candidates_per_class < p:
    keyed = jnp.swapaxes(jnp.where(ok, scores, -jnp.inf), 1, 2)  # [B, C, P]
    _, top = jax.lax.top_k(keyed, candidates_per_class)
    top = jnp.swapaxes(top, 1, 2)  # [B, K, C]: each class's best rows
    boxes = jnp.take_along_axis(boxes, top[..., None], 1)
    scores, classes, ok = (jnp.take_along_axis(x, top, 1) for x in (scores, classes, ok))
  boxes, scores = boxes.reshape(b, -1, 4), scores.reshape(b, -1)
  classes, ok = classes.reshape(b, -1), ok.reshape(b, -1)
  d = min(detections_per_image, boxes.shape[1])

  def one(bx, sc, cl, v):
    keep, _ = ops.nms.batched_nms(bx, sc, cl, nms_threshold, d, valid=v)
    return keep

  keep = jax.vmap(one)(boxes, scores, classes, ok)
  valid = keep >= 0
  safe = jnp.maximum(keep, 0)
  return {
      "boxes": jnp.where(valid[..., None], jnp.take_along_axis(boxes, safe[..., None], 1),
                         -1.0),
      "scores": jnp.where(valid, jnp.take_along_axis(scores, safe, 1), 0.0),
      "classes": jnp.where(valid, jnp.take_along_axis(classes, safe, 1), -1),
      "valid": valid,
  }
