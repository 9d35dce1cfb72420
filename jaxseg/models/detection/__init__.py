"""Detectors as compositions of shared parts (DESIGN.md, "Growing the house"):

- `fpn.FPN`: feature pyramid (Lin et al. 2017);
- `rpn.RPN`: region proposal network (Ren et al. 2015), reusable alone (e.g. DenseCap's
  localization layer); `anchor_convention` "jaxseg" (default) | "torchvision";
- `roi_heads.RoIHeads`: Fast R-CNN's box branch (Girshick 2015) with a pooler chosen by a
  string and slots for mask / keypoint heads; `aligned`, `level_mapper` "detectron2"
  (default) | "torchvision";
- `instance_heads.MaskHead` / `KeypointHead`: Mask R-CNN's mask and keypoint branches
  (He et al. 2017) in RoIHeads' slots (config.model.mask_head / .keypoint_head);
- `faster_rcnn.FasterRCNN`: backbone + [FPN] + RPN + RoI heads; without the RPN it is
  Fast R-CNN (Girshick 2015) over given proposals;
- `region_classifier.RegionClassifier`: one crop network pass per warped region: the
  sliding-window detector and R-CNN (Girshick et al. 2014), whose post-hoc SVMs and ridge
  box regressors are fit by `jaxseg.train.rcnn_stages`;
- `yolo.YOLO` (Redmon et al. 2016; config.model.yolo) and `ssd.SSD` (Liu et al. 2016;
  config.model.ssd): single-shot detectors, no proposals, one network from the image to
  a tensor of scores and boxes.

`build_detector(name, num_classes, dtype, **fields)` builds one from config.model:
"faster_rcnn", "fast_rcnn" (no RPN: config.proposals), "rcnn" (config.proposals),
"sliding_window", "yolo" or "ssd". Every detector has `loss_terms` (its named losses) and
`needs_proposals` (whether batches must carry `proposals` / `proposal_valid`).
Where torchvision computes differently from jaxseg's defaults, the parts have fields for
it (anchors, RoIAlign offset, FPN level mapper); `jaxseg.weights.torchvision.
FASTERRCNN_RESNET50_FPN` is the config.model of the detector equal to torchvision's
fasterrcnn_resnet50_fpn (docs/torchvision_weights.md).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from jaxseg import ops
from jaxseg.errors import ConfigError
from jaxseg.models.backbones import get_backbone
from jaxseg.models.heads import BackboneWithHeads
from jaxseg.models.detection.faster_rcnn import FasterRCNN
from jaxseg.models.detection.fpn import FPN
from jaxseg.models.detection.instance_heads import KeypointHead, MaskHead
from jaxseg.models.detection.region_classifier import (CLASSIFIERS, REGION_SOURCES,
                                                       RegionClassifier)
from jaxseg.models.detection.roi_heads import POOLERS, RoIHeads
from jaxseg.models.detection.rpn import ANCHOR_CONVENTIONS, RPN, RPNHead
from jaxseg.models.detection.ssd import SSD, build_ssd
from jaxseg.models.detection.yolo import YOLO, build_yolo

SINGLE_SHOT = ("yolo", "ssd")
DETECTORS = ("faster_rcnn", "fast_rcnn", "rcnn", "sliding_window") + SINGLE_SHOT
REGION_CLASSIFIERS = {"rcnn": "proposals", "sliding_window": "windows"}


def _plain(value):
  """ConfigDict / FrozenDict / lists -> dicts and tuples (hashable module fields)."""
  if hasattr(value, "to_dict"):
    value = value.to_dict()
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return tuple(_plain(v) for v in value)
  return value


def _fields(cls, values: dict, where: str) -> dict:
  known = {f.name for f in dataclasses.fields(cls) if f.init and f.name not in ("parent", "name")}
  unknown = sorted(set(values) - known)
  if unknown:
    raise ConfigError(f"{where} has no field {', '.join(unknown)}; it takes "
                      f"{', '.join(sorted(known))}")
  return values


def build_detector(name: str, num_classes: int, dtype: Any = jnp.float32, *,
                   backbone: str = "resnet50", backbone_args=None,
                   backbone_levels=("stride_16",), fpn: bool = False, fpn_channels: int = 256,
                   rpn=None, roi_heads=None, region_classifier=None, pixel_mean=None,
                   pixel_std=None, yolo=None, ssd=None, mask_head=None, keypoint_head=None,
                   num_keypoints: int = 0):
  """The detector `name` (DETECTORS) over `num_classes` classes including the background;
  `rpn` / `roi_heads` / `region_classifier`: fields of `RPN` / `RoIHeads` /
  `RegionClassifier` (config.model.rpn / .roi_heads / .region_classifier; the last also
  takes `representation_size`, the crop network's hidden fc width). `mask_head` /
  `keypoint_head` (fields of `MaskHead` / `KeypointHead`, {} for the defaults; None: off)
  make Faster R-CNN a Mask R-CNN / keypoint R-CNN (He et al. 2017) predicting
  `num_keypoints` keypoints."""
  if name not in DETECTORS:
    raise ConfigError(f"unknown detector {name!r} in config.model.name; expected one of "
                      f"{DETECTORS}")
  backbone_args = dict(_plain(backbone_args or {}))
  backbone_args.setdefault("dtype", dtype)
  extra = {}
  if pixel_mean is not None:
    extra["pixel_mean"] = tuple(pixel_mean)
  if pixel_std is not None:
    extra["pixel_std"] = tuple(pixel_std)
  if name in SINGLE_SHOT:
    return _single_shot(name, num_classes, dtype, backbone, backbone_args, backbone_levels,
                        dict(_plain((yolo if name == "yolo" else ssd) or {})), extra,
                        dict(rpn=rpn, roi_heads=roi_heads, region_classifier=region_classifier,
                             fpn=fpn, yolo=yolo, ssd=ssd))
  for key, value in (("yolo", yolo), ("ssd", ssd)):
    if value:
      raise ConfigError(f"config.model.{key} is set but detector {name!r} has none")
  heads = {k: v for k, v in (("mask_head", mask_head), ("keypoint_head", keypoint_head))
           if v is not None}
  if heads and name not in ("faster_rcnn", "fast_rcnn"):
    raise ConfigError(f"config.model.{next(iter(heads))} is set but detector {name!r} has "
                      "no RoI heads; Mask R-CNN is faster_rcnn (or fast_rcnn) with it")
  if name in REGION_CLASSIFIERS:
    unused = [k for k, v in (("rpn", rpn), ("roi_heads", roi_heads), ("fpn", fpn)) if v]
    if unused:
      raise ConfigError(f"config.model.{unused[0]} is set but detector {name!r} has none; "
                        "it takes config.model.region_classifier")
    return _region_classifier(name, num_classes, dtype, backbone, backbone_args,
                              dict(_plain(region_classifier or {})), extra)
  if region_classifier:
    raise ConfigError(f"config.model.region_classifier is set but detector {name!r} has "
                      "none; it takes config.model.rpn and config.model.roi_heads")
  body = get_backbone(backbone, **backbone_args)
  if name == "fast_rcnn" and rpn:
    raise ConfigError("config.model.rpn is set but fast_rcnn has no RPN: its proposals "
                      "come from config.proposals")
  rpn = _fields(RPN, dict(_plain(rpn or {})), "config.model.rpn")
  roi_heads = _fields(RoIHeads, dict(_plain(roi_heads or {})), "config.model.roi_heads")
  if roi_heads.get("pooler", "roi_align") not in POOLERS:
    raise ConfigError(f"config.model.roi_heads.pooler={roi_heads['pooler']!r}; expected one "
                      f"of {POOLERS}")
  if roi_heads.get("level_mapper", "detectron2") not in ops.roi.LEVEL_MAPPERS:
    raise ConfigError(f"config.model.roi_heads.level_mapper={roi_heads['level_mapper']!r}; "
                      f"expected one of {ops.roi.LEVEL_MAPPERS}")
  if rpn.get("anchor_convention", "jaxseg") not in ANCHOR_CONVENTIONS:
    raise ConfigError(f"config.model.rpn.anchor_convention={rpn['anchor_convention']!r}; "
                      f"expected one of {ANCHOR_CONVENTIONS}")
  levels = tuple(_plain(backbone_levels))
  if not levels:
    raise ConfigError("config.model.backbone_levels is empty; expected backbone map names, "
                      "e.g. ('stride_16',) or ('stride_4', 'stride_8', 'stride_16', 'stride_32')")
  if not fpn and len(levels) != 1:
    raise ConfigError(f"config.model.backbone_levels={levels} without FPN; expected one level "
                      "(or set config.model.fpn=True)")
  return FasterRCNN(
      backbone=body,
      fpn=FPN(fpn_channels, extra_pool=True, dtype=dtype) if fpn else None,
      rpn=RPN(dtype=dtype, **rpn) if name == "faster_rcnn" else None,
      roi_heads=RoIHeads(num_classes=num_classes, dtype=dtype,
                         **_instance_heads(heads, num_classes, num_keypoints, dtype),
                         **roi_heads),
      backbone_levels=levels, **extra)


def _instance_heads(heads: dict, num_classes: int, num_keypoints: int, dtype) -> dict:
  """RoIHeads' mask_head / keypoint_head modules from their config.model fields."""
  out = {}
  if "mask_head" in heads:
    fields = _fields(MaskHead, dict(_plain(heads["mask_head"])), "config.model.mask_head")
    out["mask_head"] = MaskHead(num_classes=num_classes, dtype=dtype, **fields)
  if "keypoint_head" in heads:
    fields = _fields(KeypointHead, dict(_plain(heads["keypoint_head"])),
                     "config.model.keypoint_head")
    if num_keypoints < 1:
      raise ConfigError("config.model.keypoint_head is set but the dataset has no keypoints "
                        "(its source names none)")
    fields.pop("num_keypoints", None)
    out["keypoint_head"] = KeypointHead(num_keypoints=num_keypoints, dtype=dtype, **fields)
  return out


def _region_classifier(name, num_classes, dtype, backbone, backbone_args, fields, extra):
  """A RegionClassifier: the crop network is `backbone` pooled + one hidden fc."""
  width = int(fields.pop("representation_size", 256))
  fields.setdefault("regions", REGION_CLASSIFIERS[name])
  if fields["regions"] != REGION_CLASSIFIERS[name]:
    raise ConfigError(f"config.model.region_classifier.regions={fields['regions']!r}; "
                      f"{name} takes {REGION_CLASSIFIERS[name]!r}")
  fields = _fields(RegionClassifier, fields, "config.model.region_classifier")
  if fields.get("classifier", "softmax") not in CLASSIFIERS:
    raise ConfigError(f"config.model.region_classifier.classifier={fields['classifier']!r}; "
                      f"expected one of {CLASSIFIERS}")
  if name == "sliding_window" and (fields.get("classifier", "softmax") != "softmax"
                                   or fields.get("box_regression")):
    raise ConfigError("the sliding-window detector has no post-hoc stages; "
                      "config.model.region_classifier.classifier='svm' and box_regression "
                      "are R-CNN's (model name 'rcnn')")
  crop_net = BackboneWithHeads(backbone, heads={}, backbone_args=backbone_args,
                               fc_widths=(width,), dtype=dtype, **extra)
  return RegionClassifier(crop_net=crop_net, num_classes=num_classes, dtype=dtype, **fields)


def _single_shot(name, num_classes, dtype, backbone, backbone_args, backbone_levels, fields,
                 extra, parts):
  """YOLO or SSD: backbone + its own head (`yolo.build_yolo`, `ssd.build_ssd`)."""
  unused = [k for k, v in parts.items() if v and k != name]
  if unused:
    raise ConfigError(f"config.model.{unused[0]} is set but detector {name!r} has none; "
                      f"it takes config.model.{name}")
  if name == "yolo":
    body = get_backbone(backbone, **backbone_args)
    return build_yolo(num_classes, dtype, body, _plain(backbone_levels),
                      _fields(YOLO, fields, "config.model.yolo"), extra)
  return build_ssd(num_classes, dtype, backbone, backbone_args, _plain(backbone_levels),
                   _fields(SSD, fields, "config.model.ssd"), extra)


__all__ = ["ANCHOR_CONVENTIONS", "CLASSIFIERS", "DETECTORS", "FPN", "FasterRCNN", "KeypointHead",
           "MaskHead", "REGION_SOURCES",
           "RPN", "RPNHead", "RegionClassifier", "RoIHeads", "SINGLE_SHOT", "SSD", "YOLO",
           "build_detector"]
