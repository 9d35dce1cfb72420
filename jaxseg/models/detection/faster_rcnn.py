"""Faster R-CNN (Ren, He, Girshick & Sun, NeurIPS 2015), optionally with a Feature Pyramid
Network (Lin et al., CVPR 2017), and Fast R-CNN (Girshick, ICCV 2015) as the same parts
without the RPN: a detector made of parts, as torchvision's GeneralizedRCNN and
Detectron2's meta_arch/rcnn.py.

    FasterRCNN(backbone, rpn, roi_heads, fpn=None)
    images [B, H, W, 3] in [0, 1] -> normalised -> backbone (any of
    jaxseg.models.backbones) -> the maps `backbone_levels` -> [FPN] -> RPN (proposals) ->
    RoI heads (detections, or the RoI losses when training).
    rpn=None (Fast R-CNN): the proposals come with the images (`proposals` [B, P, 4]
    pixel xyxy and `proposal_valid` [B, P], e.g. selective search precomputed by
    `jaxseg.data.region_proposals`); the backbone still runs once per image and the RoI
    heads pool every proposal from its maps.

`__call__(images, train=False, targets=None, proposals=None, proposal_valid=None)`:
- targets None: detections {"boxes" [B, D, 4] pixel xyxy, "scores" [B, D], "classes"
  [B, D] int32 in 1..C, "valid" [B, D]} (rows past the detections: -1 / 0 / -1 / False),
  plus "proposals" [B, P, 4] and "proposal_valid"; with a mask head "masks" [B, D, 28, 28]
  (each detection's class mask, probabilities: paste with `ops.roi.paste_masks`), with a
  keypoint head "keypoints" [B, D, K, 2] (image pixels) and "keypoint_scores" [B, D, K];
- with targets {"boxes" [B, M, 4], "labels" [B, M] (1..C), "valid" [B, M]}:
  the named loss terms {"rpn_objectness", "rpn_box", "roi_classifier", "roi_box"} (the
  RoI ones only without an RPN: `loss_terms`; Mask R-CNN adds "roi_mask" with targets'
  "masks" [B, M, H, W], keypoint R-CNN "roi_keypoint" with "keypoints" [B, M, K, 3]) and
  diagnostics ("roi_accuracy", "rpn_positives", "roi_positives"); the RoI sampling draws
  from the "sampling" rng collection. The RPN uses its training top-k settings then.
`train` only sets batch norm's mode (batch statistics, updated running averages).
Feature strides are read from the map shapes (image size / map size), so a dilated
backbone (ResNet output_stride 16) gives the right anchors and pooling scales. Without
FPN the RoI heads pool the single backbone level; with FPN they pool P2..P5 (the RPN
also sees the extra P6).
With the fields of `jaxseg.weights.torchvision.FASTERRCNN_RESNET50_FPN` (torchvision's
anchors, RoIAlign offset and FPN level mapper: `RPN.anchor_convention` / `anchor_offset`,
`RoIHeads.aligned` / `level_mapper`) and converted weights it gives torchvision's
`fasterrcnn_resnet50_fpn` detections (docs/torchvision_weights.md).

Parameter tree (names chosen to mirror torchvision's fasterrcnn_resnet50_fpn):
  backbone/...                          <- backbone.body.*
  fpn/inner_blocks_<i>/{kernel,bias}    <- backbone.fpn.inner_blocks.<i>.*
  fpn/layer_blocks_<i>/{kernel,bias}    <- backbone.fpn.layer_blocks.<i>.*
  rpn/head/conv, cls_logits, bbox_pred  <- rpn.head.conv(.0.0), cls_logits, bbox_pred
  roi_heads/box_head/fc6, fc7           <- roi_heads.box_head.fc6, fc7 (fc6 input
                                           flattened H, W, C here; C, H, W in torch)
  roi_heads/box_predictor/cls_score, bbox_pred
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models.detection.body import backbone_maps
from jaxseg.models.detection.rpn import RPN
from jaxseg.models.heads import IMAGENET_MEAN, IMAGENET_STD
from jaxseg.models.detection.roi_heads import RoIHeads



class FasterRCNN(nn.Module):
  """Backbone [+ FPN] + RPN + RoI heads (see the module docstring)."""
  backbone: nn.Module
  rpn: RPN | None
  roi_heads: RoIHeads
  fpn: nn.Module | None = None
  backbone_levels: Sequence[str] = ("stride_16",)
  pixel_mean: Sequence[float] = IMAGENET_MEAN
  pixel_std: Sequence[float] = IMAGENET_STD

  def features(self, images, train: bool):
    """(RPN maps, their strides, RoI maps, their strides)."""
    maps = backbone_maps(self.backbone, images, self.backbone_levels, self.pixel_mean,
                         self.pixel_std, train)
    height = images.shape[1]
    if self.fpn is not None:
      pyramid = self.fpn(maps)
      strides = [height // m.shape[1] for m in pyramid]
      return pyramid, strides, pyramid[:len(maps)], strides[:len(maps)]
    strides = [height // m.shape[1] for m in maps]
    return maps, strides, maps, strides

  @property
  def instance_outputs(self) -> tuple[str, ...]:
    """"masks" / "keypoints" when the RoI heads have those branches (Mask R-CNN)."""
    return self.roi_heads.instance_outputs

  @property
  def loss_terms(self) -> tuple[str, ...]:
    rpn = ("rpn_objectness", "rpn_box") if self.rpn is not None else ()
    instance = tuple({"masks": "roi_mask", "keypoints": "roi_keypoint"}[k]
                     for k in self.instance_outputs)
    return rpn + ("roi_classifier", "roi_box") + instance

  @property
  def needs_proposals(self) -> bool:
    return self.rpn is None

  @nn.compact
  def __call__(self, images, train: bool = False, targets=None, proposals=None,
               proposal_valid=None):
    image_hw = tuple(images.shape[1:3])
    rpn_maps, rpn_strides, roi_maps, roi_strides = self.features(images, train)
    losses = targets is not None  # the RPN / RoI heads' training mode
    if self.rpn is None:
      if proposals is None or proposal_valid is None:
        raise ValueError("a detector without an RPN (Fast R-CNN) needs `proposals` and "
                         "`proposal_valid` (config.proposals)")
      rpn_out = {"proposals": proposals.astype(jnp.float32),
                 "proposal_valid": proposal_valid.astype(bool)}
    else:
      rpn_out = self.rpn(rpn_maps, rpn_strides, image_hw, train=losses)
    if not losses:
      detections = self.roi_heads(roi_maps, roi_strides, rpn_out["proposals"],
                                  rpn_out["proposal_valid"], image_hw)
      return {**detections, "proposals": rpn_out["proposals"],
              "proposal_valid": rpn_out["proposal_valid"]}
    rpn_rng, roi_rng = jax.random.split(self.make_rng("sampling"))
    gt_boxes = targets["boxes"].astype(jnp.float32)
    gt_valid = targets["valid"].astype(bool)
    terms = {}
    if self.rpn is not None:
      terms = self.rpn.losses(rpn_out["objectness"], rpn_out["deltas"], rpn_out["anchors"],
                              gt_boxes, gt_valid, rpn_rng)
    terms.update(self.roi_heads(roi_maps, roi_strides, rpn_out["proposals"],
                                rpn_out["proposal_valid"], image_hw, train=True,
                                targets=dict(targets, boxes=gt_boxes, valid=gt_valid),
                                rng=roi_rng))
    return terms
