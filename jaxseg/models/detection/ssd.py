"""SSD (Liu, Anguelov, Erhan, Szegedy, Reed, Fu & Berg, "SSD: Single Shot MultiBox
Detector", ECCV 2016): default boxes on several feature maps, each scored over C + 1
classes and regressed by a 3x3 conv on its map; no proposals (CS231n lecture, "Object
detection" 7).

    images [B, H, W, 3] in [0, 1] -> normalised -> backbone maps `backbone_levels`
    [-> the first L2-normalised with a learned scale (conv4_3, sec. 3.1)] -> extra layers
    (`extra_layers`: 1x1 conv, then 3x3 conv with a stride and padding, each -> one more
    map) -> per map a 3x3 conv to A_k (C + 1) class logits and one to A_k 4 box deltas.

Default boxes (`ops.anchors.ssd_default_boxes`): map k of m has scale s_k from s_min to
s_max (eq. 4; or `scales`), ratios `aspect_ratios` plus the extra box of scale
sqrt(s_k s_{k+1}); `default_box_convention="torchvision"` (with `scales`, `steps`,
`clip`) is torchvision's DefaultBoxGenerator. Deltas are encoded with `box_weights`
(10, 10, 5, 5: the paper's variances 0.1, 0.2).
Training (sec. 2.2): every ground-truth box is matched to its best default box and every
default box to any ground truth of IoU >= iou_threshold (0.5) (`ops.matching.match`);
loss (`losses.ssd_multibox_terms`): softmax CE over the positives and the hard negatives
(highest loss, neg_pos_ratio = 3 per positive) and smooth L1 of the positives' deltas,
both / N positives: terms ssd_classifier, ssd_box (config.loss weights; the paper's
alpha = 1).
Test: softmax scores, decoded and clipped boxes, score > score_threshold, the best
`candidates_per_class` per class, per-class NMS (`roi_heads.postprocess`), the best
`detections_per_image`.

`SSDVGG16` is SSD300's base network (VGG-16 to conv5_3 with pool3 in ceil mode, pool5
3x3 stride 1, fc6 / fc7 as a dilated 3x3 and a 1x1 conv); with `SSD300_VGG16`
(jaxseg.weights.torchvision) and converted weights the detector gives torchvision's
ssd300_vgg16 detections.
Parameter tree (mirrors torchvision's ssd300_vgg16): backbone/conv{i}_{j}, backbone/fc6,
fc7; l2norm_scale; extra_{i}_conv1, extra_{i}_conv2; head_cls_{k}, head_box_{k}.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg import losses, ops
from jaxseg.errors import ConfigError
from jaxseg.models.backbones import get_backbone
from jaxseg.models.backbones.vgg import VGG16_CONVS, VGG16_WIDTHS
from jaxseg.models.detection.body import backbone_maps
from jaxseg.models.detection.roi_heads import postprocess
from jaxseg.models.heads import IMAGENET_MEAN, IMAGENET_STD

LOSS_TERMS = ("ssd_classifier", "ssd_box")
# SSD300's extra layers (conv8_2 .. conv11_2): (1x1 width, 3x3 width, stride, padding)
SSD300_EXTRAS = ((256, 512, 2, 1), (128, 256, 2, 1), (128, 256, 1, 0), (128, 256, 1, 0))


class SSDVGG16(nn.Module):
  """SSD300's VGG-16 (Liu et al. 2016, sec. 3): conv1_1..conv5_3 (3x3, pad 1, ReLU), 2x2
  max pools (pool3 in ceil mode: 75 -> 38 at 300 px), pool5 3x3 stride 1 pad 1, fc6 a 3x3
  conv of dilation 6, fc7 a 1x1 conv -> {"conv4_3", "fc7"} (after ReLU)."""
  stage_widths: Sequence[int] = VGG16_WIDTHS
  stage_convs: Sequence[int] = VGG16_CONVS
  fc_width: int = 1024
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    maps = {}
    for i, (width, convs) in enumerate(zip(self.stage_widths, self.stage_convs), start=1):
      for j in range(1, convs + 1):
        x = nn.relu(nn.Conv(width, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                            name=f"conv{i}_{j}")(x))
      if i == 4:
        maps["conv4_3"] = x
      if i < len(self.stage_widths):
        pad = ((0, x.shape[1] % 2), (0, x.shape[2] % 2)) if i == 3 else ((0, 0), (0, 0))
        x = nn.max_pool(x, (2, 2), (2, 2), padding=pad)
    x = nn.max_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)))
    x = nn.relu(nn.Conv(self.fc_width, (3, 3), padding=((6, 6), (6, 6)), kernel_dilation=6,
                        dtype=self.dtype, name="fc6")(x))
    maps["fc7"] = nn.relu(nn.Conv(self.fc_width, (1, 1), dtype=self.dtype, name="fc7")(x))
    return maps


SSD_BACKBONES = {"ssd_vgg16": SSDVGG16}


class SSD(nn.Module):
  """SSD (see the module docstring). `__call__(images, train, targets)` -> detections
  {boxes, scores, classes, valid, proposal_valid (the default boxes scored)} or, with
  targets {boxes, labels, valid}, the loss terms and diagnostics."""
  backbone: nn.Module
  num_classes: int  # including the background (class 0)
  backbone_levels: Sequence[str] = ("stride_8", "stride_16", "stride_32")
  extra_layers: Sequence[Sequence[int]] = SSD300_EXTRAS
  l2_normalize: bool = False  # the first map L2-normalised, learned scale (init 20)
  s_min: float = 0.2
  s_max: float = 0.9
  scales: Sequence[float] | None = None
  aspect_ratios: Sequence[Any] = (1.0, 2.0, 0.5)
  extra_box: bool = True
  steps: Sequence[float] | None = None
  clip: bool = False
  default_box_convention: str = "jaxseg"  # ops.anchors.SSD_CONVENTIONS
  iou_threshold: float = 0.5
  neg_pos_ratio: float = 3.0
  box_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0)
  smooth_l1_beta: float = 1.0
  score_threshold: float = 0.01
  nms_threshold: float = 0.45
  candidates_per_class: int = 400
  detections_per_image: int = 200
  min_size: float = 0.0
  pixel_mean: Sequence[float] = IMAGENET_MEAN
  pixel_std: Sequence[float] = IMAGENET_STD
  dtype: Any = jnp.float32

  loss_terms = LOSS_TERMS
  needs_proposals = False

  def num_maps(self) -> int:
    return len(self.backbone_levels) + len(self.extra_layers)

  def default_boxes(self, image_hw, feature_sizes):
    return jnp.asarray(ops.anchors.ssd_default_boxes(
        image_hw, feature_sizes, self.s_min, self.s_max, self.aspect_ratios, self.extra_box,
        scales=self.scales, steps=self.steps, clip=self.clip,
        convention=self.default_box_convention))

  def features(self, images, train: bool):
    sources = [m.astype(self.dtype) for m in backbone_maps(
        self.backbone, images, self.backbone_levels, self.pixel_mean, self.pixel_std, train)]
    if self.l2_normalize:
      first = sources[0].astype(jnp.float32)
      scale = self.param("l2norm_scale", nn.initializers.constant(20.0), (first.shape[-1],))
      norm = jnp.sqrt(jnp.sum(jnp.square(first), -1, keepdims=True))
      sources[0] = (scale * first / jnp.maximum(norm, 1e-12)).astype(self.dtype)
    x = sources[-1]
    for i, (mid, width, stride, pad) in enumerate(self.extra_layers):
      if min(x.shape[1:3]) + 2 * pad < 3:
        raise ValueError(
            f"config.model.ssd.extra_layers[{i}] ({mid}, {width}, {stride}, {pad}) needs a "
            f"map of at least {3 - 2 * pad} px but gets {x.shape[1]}x{x.shape[2]} at image "
            f"size {images.shape[1]}; expected fewer extra layers or a larger image")
      x = nn.relu(nn.Conv(mid, (1, 1), dtype=self.dtype, name=f"extra_{i}_conv1")(x))
      x = nn.relu(nn.Conv(width, (3, 3), strides=stride, padding=((pad, pad), (pad, pad)),
                          dtype=self.dtype, name=f"extra_{i}_conv2")(x))
      sources.append(x)
    return sources

  @nn.compact
  def __call__(self, images, train: bool = False, targets=None):
    image_hw = tuple(images.shape[1:3])
    sources = self.features(images, train)
    sizes = [tuple(f.shape[1:3]) for f in sources]
    try:
      anchors = self.default_boxes(image_hw, sizes)
      per_cell = ops.anchors.ssd_boxes_per_cell(self.aspect_ratios, len(sources),
                                                self.extra_box, self.default_box_convention)
    except ConfigError as e:
      raise ValueError(f"config.model.ssd default boxes on maps {sizes}: {e}") from None
    b, k = images.shape[0], self.num_classes
    logits, deltas = [], []
    for i, (f, a) in enumerate(zip(sources, per_cell)):
      c = nn.Conv(a * k, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                  name=f"head_cls_{i}")(f)
      d = nn.Conv(a * 4, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                  name=f"head_box_{i}")(f)
      logits.append(c.astype(jnp.float32).reshape(b, -1, k))
      deltas.append(d.astype(jnp.float32).reshape(b, -1, 4))
    logits, deltas = jnp.concatenate(logits, 1), jnp.concatenate(deltas, 1)
    if logits.shape[1] != anchors.shape[0]:
      raise ValueError(f"the SSD head predicts {logits.shape[1]} boxes but there are "
                       f"{anchors.shape[0]} default boxes")
    if targets is None:
      return self.detect(logits, deltas, anchors, image_hw)
    return self.losses(logits, deltas, anchors, targets)

  def detect(self, logits, deltas, anchors, image_hw):
    boxes = ops.boxes.decode(deltas, anchors[None], self.box_weights)
    scores = jax.nn.softmax(logits, -1)[..., 1:]
    valid = jnp.ones(logits.shape[:2], bool)
    out = postprocess(scores, None, boxes, valid, image_hw, self.box_weights,
                      self.score_threshold, self.nms_threshold, self.detections_per_image,
                      self.min_size, self.candidates_per_class)
    return {**out, "proposal_valid": valid}

  def match(self, anchors, gt_boxes, gt_labels, gt_valid):
    """(class targets [B, D] (0 = background), box targets [B, D, 4], positive [B, D])."""
    iou = ops.boxes.pairwise_iou(anchors[None], gt_boxes)  # [B, D, M]
    matched, labels = jax.vmap(lambda i, v: ops.matching.match(
        i, v, self.iou_threshold, self.iou_threshold, allow_low_quality_matches=True))(
            iou, gt_valid)
    positive = labels == ops.matching.POSITIVE
    safe = jnp.maximum(matched, 0)
    classes = jnp.where(positive, jnp.take_along_axis(gt_labels, safe, 1), 0)
    gt = jnp.take_along_axis(gt_boxes, safe[..., None], 1)
    return classes, ops.boxes.encode(gt, anchors[None], self.box_weights), positive

  def losses(self, logits, deltas, anchors, targets):
    classes, box_targets, positive = self.match(
        anchors, targets["boxes"].astype(jnp.float32), targets["labels"],
        targets["valid"].astype(bool))
    terms = losses.ssd_multibox_terms(logits, deltas, classes, box_targets, positive,
                                      neg_pos_ratio=self.neg_pos_ratio,
                                      beta=self.smooth_l1_beta)
    terms["ssd_positives"] = jnp.sum(positive) / logits.shape[0]
    terms["ssd_accuracy"] = (jnp.sum(positive & (jnp.argmax(logits, -1) == classes))
                             / losses.normalizer(positive))
    return terms


def build_ssd(num_classes: int, dtype, backbone: str, backbone_args: dict, backbone_levels,
              fields: dict, extra: dict) -> SSD:
  """The SSD of config.model: `fields` = config.model.ssd; `backbone` one of jaxseg's
  backbones or "ssd_vgg16" (SSDVGG16, levels ("conv4_3", "fc7"))."""
  if backbone in SSD_BACKBONES:
    unknown = sorted(set(backbone_args) - {"stage_widths", "stage_convs", "fc_width", "dtype"})
    if unknown:
      raise ConfigError(f"backbone {backbone!r} takes no argument {', '.join(unknown)}")
    body = SSD_BACKBONES[backbone](**backbone_args)
  else:
    body = get_backbone(backbone, **backbone_args)
  levels = tuple(backbone_levels)
  if not levels:
    raise ConfigError("config.model.backbone_levels is empty; SSD reads one map or more")
  fields = dict(fields)
  if fields.get("default_box_convention", "jaxseg") not in ops.anchors.SSD_CONVENTIONS:
    raise ConfigError(f"config.model.ssd.default_box_convention="
                      f"{fields['default_box_convention']!r}; expected one of "
                      f"{ops.anchors.SSD_CONVENTIONS}")
  extras = tuple(tuple(int(v) for v in e) for e in fields.pop("extra_layers", SSD300_EXTRAS))
  if any(len(e) != 4 for e in extras):
    raise ConfigError(f"config.model.ssd.extra_layers={extras}; expected (1x1 width, 3x3 "
                      "width, stride, padding) per layer")
  ratios = fields.get("aspect_ratios")
  if ratios is not None and ratios and isinstance(ratios[0], (list, tuple)):
    if len(ratios) != len(levels) + len(extras):
      raise ConfigError(f"config.model.ssd.aspect_ratios has {len(ratios)} maps; expected "
                        f"one per map: {len(levels)} backbone_levels + {len(extras)} "
                        "extra_layers")
  if fields.get("steps") is not None and len(fields["steps"]) != len(levels) + len(extras):
    raise ConfigError(f"config.model.ssd.steps has {len(fields['steps'])} entries; expected "
                      f"one per map ({len(levels) + len(extras)})")
  if fields.get("scales") is not None and len(fields["scales"]) != len(levels) + len(extras) + 1:
    raise ConfigError(f"config.model.ssd.scales has {len(fields['scales'])} entries; "
                      f"expected one per map and one more ({len(levels) + len(extras) + 1})")
  return SSD(backbone=body, num_classes=num_classes, backbone_levels=levels,
             extra_layers=extras, dtype=dtype, **fields, **extra)
