"""Region Proposal Network (Ren, He, Girshick & Sun, "Faster R-CNN: Towards Real-Time
Object Detection with Region Proposal Networks", NeurIPS 2015), with static shapes.

At every cell of every feature level, A anchors (`jaxseg.ops.anchors`: each level's
sizes x the aspect ratios, 3 x 3 by default on one level); a shared head (3x3 conv +
ReLU, `conv`; 1x1 `cls_logits` -> A objectness logits; 1x1 `bbox_pred` -> 4A deltas,
torchvision's `rpn.head` names) scores and refines every anchor. Proposals
(`propose`): deltas decoded with the configured box-coder weights (default (1, 1, 1, 1)),
clipped to the image, the top `pre_nms_top_n` by objectness per level, boxes smaller
than `min_size` dropped, NMS at `nms_threshold` within each level (torchvision's
batched_nms over levels), the best `post_nms_top_n` kept -> proposals
[B, post_nms_top_n, 4] with a `valid` mask (padded NMS; rows -1). Proposals carry no
gradient (as in torchvision: the RoI head does not train the RPN through them).
`score_threshold` (torchvision's `rpn_score_thresh`, default 0: off) also drops the
proposals whose objectness probability sigmoid(logit) is below it, before the NMS.

Anchor conventions (`anchor_convention`, ANCHOR_CONVENTIONS):
- "jaxseg" (default): `ops.anchors.grid_anchors` with its defaults: aspect ratio =
  width / height, a cell's anchors size-major, exact (unrounded) corners, centred at the
  cell centre (`anchor_offset` None = 0.5); every stride must divide the image.
- "torchvision": torchvision's `AnchorGenerator` (`ops.anchors.TORCHVISION`): aspect
  ratio = height / width, ratio-major, corners rounded to whole pixels, centred at
  (x * stride, y * stride) (`anchor_offset` None = 0); each level's grid is the map's
  own size (`feature_size`, ceil(image / stride), e.g. FPN's P6 of an 800 x 1088 image
  is 13 x 17), its cells image // map pixels apart, as torchvision places them.
`anchor_offset` given explicitly overrides the convention's centre in both.

Training targets (`losses`): anchors matched to the padded ground truth by IoU
(positive >= fg_iou_threshold, negative < bg_iou_threshold, plus each gt's best anchors
-- the "low-quality" matches), `batch_size_per_image` anchors sampled per image with up
to `positive_fraction` positives (`jaxseg.ops.matching`); objectness = binary CE over
the sampled anchors, box = smooth L1 of the positives' deltas; both divided by the
number of sampled anchors (torchvision's normalisation).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import losses, ops


ANCHOR_CONVENTIONS = ("jaxseg", "torchvision")


def _grid_stride(image_hw, feature_hw, stride) -> int:
  """A stride whose ceil(image / stride) grid is the map's size (what ops.anchors checks a
  `feature_size` against; the cells are then image // map apart whatever the stride):
  `stride` itself, else the power of 2 that fits (the detector reads strides as image
  height // map height, e.g. 800 // 13 = 61 for a P6 of an 800-row image)."""
  fits = lambda s: all(-(-i // s) == f for i, f in zip(image_hw, feature_hw))
  for s in [int(stride)] + [2**k for k in range(16)]:
    if s > 0 and fits(s):
      return s
  raise ValueError(f"a {feature_hw[0]}x{feature_hw[1]} feature map is not ceil(image / "
                   f"stride) of a {image_hw[0]}x{image_hw[1]} image for any stride")


def level_anchors(image_hw, strides, anchor_sizes, aspect_ratios, offset=None,
                  convention="jaxseg", feature_sizes=None):
  """[N, 4] float32 anchors of all levels (numpy constant), cell-major per level, and the
  number per level. `anchor_sizes`: one sequence of sizes per level; `convention`: one of
  ANCHOR_CONVENTIONS (module docstring); `offset` None: the convention's; feature_sizes:
  the maps' (height, width) per level, used by the "torchvision" convention (None: image
  size / stride)."""
  if convention not in ANCHOR_CONVENTIONS:
    raise ValueError(f"anchor_convention={convention!r}; expected one of {ANCHOR_CONVENTIONS}")
  image_hw = tuple(int(v) for v in image_hw)
  if convention == "jaxseg":
    offset = 0.5 if offset is None else offset
    per_level = [ops.anchors.grid_anchors(image_hw, int(s), tuple(z), tuple(aspect_ratios),
                                          offset)
                 for s, z in zip(strides, anchor_sizes)]
  else:
    options = dict(ops.anchors.TORCHVISION)
    if offset is not None:
      options["offset"] = offset
    if feature_sizes is None:
      feature_sizes = [None] * len(strides)
    per_level = []
    for s, z, f in zip(strides, anchor_sizes, feature_sizes):
      if f is not None:
        f = tuple(int(v) for v in f)
        s = _grid_stride(image_hw, f, s)
      per_level.append(ops.anchors.grid_anchors(image_hw, int(s), tuple(z),
                                                tuple(aspect_ratios), feature_size=f,
                                                **options))
  return np.concatenate(per_level, 0), [len(a) for a in per_level]


class RPNHead(nn.Module):
  """The RPN's shared head (Ren et al. 2015, Fig. 3): conv 3x3 + ReLU, then 1x1 convs to A
  objectness logits and 4A box deltas, applied to every level with the same weights."""
  num_anchors: int
  channels: int | None = None  # of the 3x3 conv; None = the input's
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: Sequence[Any]):
    init = nn.initializers.normal(0.01)
    channels = self.channels or features[0].shape[-1]
    conv = nn.Conv(channels, (3, 3), padding="SAME", kernel_init=init, name="conv",
                   dtype=self.dtype)
    cls = nn.Conv(self.num_anchors, (1, 1), kernel_init=init, name="cls_logits",
                  dtype=self.dtype)
    bbox = nn.Conv(4 * self.num_anchors, (1, 1), kernel_init=init, name="bbox_pred",
                   dtype=self.dtype)
    logits, deltas = [], []
    for f in features:
      t = nn.relu(conv(f))
      b = f.shape[0]
      logits.append(cls(t).reshape(b, -1))  # [B, H * W * A]: cell-major, then anchor
      deltas.append(bbox(t).reshape(b, -1, 4))  # channel a * 4 + coordinate
    return (jnp.concatenate(logits, 1).astype(jnp.float32),
            jnp.concatenate(deltas, 1).astype(jnp.float32))


class RPN(nn.Module):
  """Region proposal network (see the module docstring). `__call__(features, strides,
  image_hw, train)` -> dict with objectness [B, N], deltas [B, N, 4], anchors [N, 4]
  (constant), proposals [B, P, 4], proposal_scores [B, P] (logits), proposal_valid [B, P]."""
  anchor_sizes: Sequence[Sequence[float]] = ((32.0, 64.0, 128.0),)
  aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0)
  anchor_convention: str = "jaxseg"  # ANCHOR_CONVENTIONS; "torchvision": AnchorGenerator's
  anchor_offset: float | None = None  # None: the convention's (jaxseg 0.5, torchvision 0)
  head_channels: int | None = None
  pre_nms_top_n_train: int = 2000
  post_nms_top_n_train: int = 2000
  pre_nms_top_n_test: int = 1000
  post_nms_top_n_test: int = 1000
  nms_threshold: float = 0.7
  min_size: float = 1e-3
  score_threshold: float = 0.0  # on sigmoid(objectness); torchvision's rpn_score_thresh
  fg_iou_threshold: float = 0.7
  bg_iou_threshold: float = 0.3
  batch_size_per_image: int = 256
  positive_fraction: float = 0.5
  box_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)
  smooth_l1_beta: float = 1.0 / 9
  dtype: Any = jnp.float32

  def num_anchors(self) -> int:
    counts = {len(z) * len(self.aspect_ratios) for z in self.anchor_sizes}
    if len(counts) != 1:
      raise ValueError(f"anchor_sizes={self.anchor_sizes!r}: every level needs the same "
                       "number of sizes (the head is shared across levels)")
    return counts.pop()

  @nn.compact
  def __call__(self, features: Sequence[Any], strides: Sequence[int], image_hw,
               train: bool = False):
    if len(self.anchor_sizes) != len(features):
      raise ValueError(f"anchor_sizes has {len(self.anchor_sizes)} levels but the RPN sees "
                       f"{len(features)} feature levels (strides {tuple(strides)}); give one "
                       "sequence of sizes per level")
    objectness, deltas = RPNHead(self.num_anchors(), self.head_channels, self.dtype,
                                 name="head")(features)
    anchors, counts = level_anchors(image_hw, strides, self.anchor_sizes, self.aspect_ratios,
                                    self.anchor_offset, self.anchor_convention,
                                    [f.shape[1:3] for f in features])
    pre = self.pre_nms_top_n_train if train else self.pre_nms_top_n_test
    post = self.post_nms_top_n_train if train else self.post_nms_top_n_test
    proposals, scores, valid = self.propose(objectness, deltas, anchors, counts, image_hw,
                                            pre, post)
    return {"objectness": objectness, "deltas": deltas, "anchors": anchors,
            "proposals": proposals, "proposal_scores": scores, "proposal_valid": valid}

  def propose(self, objectness, deltas, anchors, counts, image_hw, pre_nms_top_n,
              post_nms_top_n):
    """Top-k per level -> decode, clip, drop tiny -> per-level NMS -> top post_nms_top_n."""
    objectness = jax.lax.stop_gradient(objectness)
    deltas = jax.lax.stop_gradient(deltas)
    height, width = image_hw
    idx, lvl, start = [], [], 0
    for level, n in enumerate(counts):
      k = min(pre_nms_top_n, n)
      _, top = jax.lax.top_k(objectness[:, start:start + n], k)
      idx.append(top + start)
      lvl.append(np.full((k,), level, np.int32))
      start += n
    idx = jnp.concatenate(idx, 1)  # [B, K]
    levels = jnp.asarray(np.concatenate(lvl))
    scores = jnp.take_along_axis(objectness, idx, 1)
    boxes = ops.boxes.decode(jnp.take_along_axis(deltas, idx[..., None], 1),
                             jnp.asarray(anchors)[idx], self.box_weights)
    boxes = ops.boxes.clip_boxes(boxes, float(height), float(width))
    wh = boxes[..., 2:] - boxes[..., :2]
    ok = (wh[..., 0] >= self.min_size) & (wh[..., 1] >= self.min_size) & jnp.isfinite(scores)
    if self.score_threshold > 0:  # torchvision keeps sigmoid(logit) >= rpn_score_thresh
      ok &= jax.nn.sigmoid(scores) >= self.score_threshold
    post = min(post_nms_top_n, idx.shape[1])

    def one(b, s, v):
      keep, _ = ops.nms.batched_nms(b, s, levels, self.nms_threshold, post, valid=v)
      return keep

    keep = jax.vmap(one)(boxes, scores, ok)  # [B, post], -1 padded
    valid = keep >= 0
    safe = jnp.maximum(keep, 0)
    proposals = jnp.where(valid[..., None], jnp.take_along_axis(boxes, safe[..., None], 1), -1.0)
    scores = jnp.where(valid, jnp.take_along_axis(scores, safe, 1), -jnp.inf)
    return proposals, scores, valid

  def losses(self, objectness, deltas, anchors, gt_boxes, gt_valid, rng) -> dict:
    """{"rpn_objectness", "rpn_box"} (see the module docstring) and sampling counts."""
    anchors = jnp.asarray(anchors)
    iou = ops.boxes.pairwise_iou(anchors[None], gt_boxes)  # [B, N, M]

    def one(iou_b, valid_b, key):
      matched, labels = ops.matching.match(iou_b, valid_b, self.fg_iou_threshold,
                                           self.bg_iou_threshold,
                                           allow_low_quality_matches=True)
      sampled = ops.matching.sample_balanced(labels, key, self.batch_size_per_image,
                                             self.positive_fraction)
      return matched, labels, sampled

    keys = jax.random.split(rng, gt_boxes.shape[0])
    matched, labels, sampled = jax.vmap(one)(iou, gt_valid, keys)
    positive = labels == ops.matching.POSITIVE
    targets_gt = jnp.take_along_axis(gt_boxes, jnp.maximum(matched, 0)[..., None], 1)
    targets = ops.boxes.encode(targets_gt, anchors[None], self.box_weights)
    return {
        "rpn_objectness": losses.sigmoid_binary_cross_entropy(objectness, positive, sampled),
        "rpn_box": losses.masked_box_loss(deltas, jax.lax.stop_gradient(targets),
                                          sampled & positive, sampled, self.smooth_l1_beta),
        "rpn_positives": jnp.sum(sampled & positive) / gt_boxes.shape[0],
    }


def default_fpn_anchor_sizes(num_levels: int, smallest: float = 32.0):
  """One size per level, doubling from `smallest` (FPN: 32, 64, 128, 256, 512)."""
  return tuple((smallest * 2**i,) for i in range(num_levels))


__all__ = ["ANCHOR_CONVENTIONS", "RPN", "RPNHead", "default_fpn_anchor_sizes", "level_anchors"]
