"""Detectors that classify warped image regions, one network pass per region: the
lecture's sliding-window detector and R-CNN (Girshick, Donahue, Darrell & Malik, "Rich
feature hierarchies for accurate object detection and semantic segmentation", CVPR 2014).

    RegionClassifier(crop_net, num_classes, regions="windows" | "proposals")
    images [B, H, W, 3] in [0, 1] -> regions [B, R, 4] pixel xyxy -> each region grown by
    `context_padding` (R-CNN's 16 px of context around a 227 px warp, in crop pixels) and
    warped to crop_size x crop_size (bilinear, aspect ratio not kept: R-CNN's "warp") ->
    `crop_net` (`jaxseg.models.heads.BackboneWithHeads`'s features: any backbone, pooled,
    one hidden fc) -> `cls_score`: C + 1 logits, background at 0.

- regions="windows" (sliding window): every window of `window_scales` x
  `window_aspect_ratios` on a grid with stride `window_stride_fraction` of the window
  (`jaxseg.ops.proposals.sliding_windows`, a constant of the image size); scores =
  softmax, no box regression: the windows themselves are the boxes, then per-class NMS.
- regions="proposals" (R-CNN): the image's precomputed proposals (selective search,
  `jaxseg.data.region_proposals`). Training fine-tunes the network with softmax over
  sampled regions (foreground IoU >= 0.5 with a ground-truth box, the ground-truth boxes
  included, `positive_fraction` of `batch_size_per_image`), as the paper's first stage.
  The paper's later stages are fit post hoc on cached features
  (`jaxseg.train.rcnn_stages`): per-class linear SVMs with hard-negative mining
  (`classifier="svm"`) and per-class ridge box regressors (`box_regression=True`). Their
  weights live in the "post_hoc" variable collection, which the optimizer never touches;
  until they are fit (`post_hoc/fitted` = 0) inference uses the softmax scores and the
  proposal boxes, so evaluations during fine-tuning stay meaningful.

Losses (training): {"roi_classifier"} (softmax CE over the sampled regions) and the
diagnostics "roi_accuracy", "roi_positives". Inference: detections {"boxes", "scores",
"classes", "valid"} as the R-CNNs' RoI heads give them (`roi_heads.postprocess`), plus
"proposals" / "proposal_valid" (the regions scored).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import ops
from jaxseg.models.detection.roi_heads import classifier_losses, postprocess, sample_rois

REGION_SOURCES = ("windows", "proposals")
CLASSIFIERS = ("softmax", "svm")


class RegionClassifier(nn.Module):
  """Warp each region, classify it (see the module docstring)."""
  crop_net: nn.Module  # images [N, S, S, 3] in [0, 1] -> features [N, D] (`.embed`)
  num_classes: int  # including the background (class 0)
  regions: str = "proposals"
  crop_size: int = 32
  context_padding: float = 0.0  # px of context on each side in the warped crop
  window_scales: Sequence[float] = (16.0, 32.0, 64.0)
  window_aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0)
  window_stride_fraction: float = 0.5
  classifier: str = "softmax"  # "svm": the paper's post-hoc linear SVMs
  box_regression: bool = False  # the paper's post-hoc ridge box regressors
  batch_size_per_image: int = 32
  positive_fraction: float = 0.25
  fg_iou_threshold: float = 0.5
  bg_iou_threshold: float = 0.5
  score_threshold: float = 0.05
  nms_threshold: float = 0.3  # R-CNN's greedy NMS overlap
  detections_per_image: int = 100
  min_size: float = 1e-2
  dtype: Any = jnp.float32

  BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)  # R-CNN's regression targets (appendix C), unscaled

  @property
  def loss_terms(self) -> tuple[str, ...]:
    return ("roi_classifier",)

  @property
  def needs_proposals(self) -> bool:
    return self.regions == "proposals"

  @property
  def has_post_hoc(self) -> bool:
    return self.classifier == "svm" or self.box_regression

  def windows(self, image_hw) -> np.ndarray:
    """The sliding windows of an image of `image_hw`: [N, 4] (N is static)."""
    return ops.proposals.sliding_windows(image_hw[0], image_hw[1], tuple(self.window_scales),
                                         tuple(self.window_aspect_ratios),
                                         self.window_stride_fraction)

  def warp(self, images, regions):
    """[B, R, 4] regions of [B, H, W, 3] images -> crops [B, R, S, S, 3] (context added)."""
    s = self.crop_size
    regions = jax.lax.stop_gradient(regions)
    if self.context_padding:
      grow = s / (s - 2.0 * self.context_padding)  # the region fills s - 2p of s pixels
      centre = (regions[..., :2] + regions[..., 2:]) / 2
      half = (regions[..., 2:] - regions[..., :2]) / 2 * grow
      regions = jnp.concatenate([centre - half, centre + half], -1)
    crops = ops.roi.roi_align(images.astype(jnp.float32), regions, s, 1.0, sampling_ratio=2,
                              aligned=True)
    return crops.reshape(regions.shape[:2] + (s, s, images.shape[-1]))

  def features(self, images, regions, train: bool = False):
    """Region features [B, R, D] (the crop network's hidden fc, "fc7"); `train`: batch
    norm's mode."""
    crops = self.warp(images, regions)
    b, r = crops.shape[:2]
    return self.crop_net.embed(crops.reshape((b * r,) + crops.shape[2:]),
                               train=train).reshape(b, r, -1)

  def setup(self):
    self.cls_score = nn.Dense(self.num_classes, name="cls_score", dtype=self.dtype)
    if self.has_post_hoc:  # the post-hoc stages' weights (module docstring)
      d, c = self.crop_net.fc_widths[-1], self.num_classes - 1
      zeros = lambda *shape: (lambda: jnp.zeros(shape, jnp.float32))
      self.post_hoc = {name: self.variable("post_hoc", name, init) for name, init in (
          ("svm_kernel", zeros(d, c)), ("svm_bias", zeros(c)), ("box_kernel", zeros(d, c, 4)),
          ("box_bias", zeros(c, 4)), ("fitted", zeros()))}

  def __call__(self, images, train: bool = False, targets=None, proposals=None,
               proposal_valid=None):
    image_hw = tuple(images.shape[1:3])
    b = images.shape[0]
    if self.regions == "windows":
      windows = self.windows(image_hw)
      proposals = jnp.broadcast_to(jnp.asarray(windows), (b,) + windows.shape)
      proposal_valid = jnp.ones(proposals.shape[:2], bool)
    elif proposals is None or proposal_valid is None:
      raise ValueError("R-CNN (regions='proposals') needs `proposals` and `proposal_valid` "
                       "(config.proposals)")
    proposals = proposals.astype(jnp.float32)
    proposal_valid = proposal_valid.astype(bool)
    if targets is not None:
      rois, classes, _, sampled, _ = sample_rois(
          proposals, proposal_valid, targets["boxes"].astype(jnp.float32), targets["labels"],
          targets["valid"].astype(bool), self.make_rng("sampling"), self.batch_size_per_image,
          self.positive_fraction, self.fg_iou_threshold, self.bg_iou_threshold,
          self.BOX_WEIGHTS)
      logits = self.cls_score(self.features(images, rois, train)).astype(jnp.float32)
      return classifier_losses(logits, None, classes, None, sampled, 1.0)
    feats = self.features(images, proposals)
    scores = jax.nn.softmax(self.cls_score(feats).astype(jnp.float32), -1)[..., 1:]
    deltas = None
    if self.has_post_hoc:
      w = {name: v.value for name, v in self.post_hoc.items()}
      fitted = w["fitted"] > 0.5
      if self.classifier == "svm":  # a margin -> (0, 1) for thresholds and pictures
        svm = jax.nn.sigmoid(feats @ w["svm_kernel"] + w["svm_bias"])
        scores = jnp.where(fitted, svm, scores)
      if self.box_regression:
        deltas = jnp.einsum("brd,dck->brck", feats, w["box_kernel"]) + w["box_bias"]
        deltas = jnp.where(fitted, deltas, 0.0)
    detections = postprocess(scores, deltas, proposals, proposal_valid, image_hw,
                             self.BOX_WEIGHTS, self.score_threshold, self.nms_threshold,
                             self.detections_per_image, self.min_size)
    return {**detections, "proposals": proposals, "proposal_valid": proposal_valid}
