"""Detectors as compositions of shared parts (DESIGN.md, "Growing the house"):

- `fpn.FPN`: feature pyramid (Lin et al. 2017);
- `rpn.RPN`: region proposal network (Ren et al. 2015), reusable alone (e.g. DenseCap's
  localization layer); `anchor_convention` "jaxseg" (default) | "torchvision";
- `roi_heads.RoIHeads`: Fast R-CNN's box branch (Girshick 2015) with a pooler chosen by a
  string and slots for mask / keypoint heads; `aligned`, `level_mapper` "detectron2"
  (default) | "torchvision";
- `faster_rcnn.FasterRCNN`: backbone + [FPN] + RPN + RoI heads.

`build_detector(name, num_classes, dtype, **fields)` builds one from config.model.
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
from jaxseg.models.detection.faster_rcnn import FasterRCNN
from jaxseg.models.detection.fpn import FPN
from jaxseg.models.detection.roi_heads import POOLERS, RoIHeads
from jaxseg.models.detection.rpn import ANCHOR_CONVENTIONS, RPN, RPNHead

DETECTORS = ("faster_rcnn",)


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
                   rpn=None, roi_heads=None, pixel_mean=None, pixel_std=None) -> FasterRCNN:
  """The detector `name` (DETECTORS) over `num_classes` classes including the background;
  `rpn` / `roi_heads`: fields of `RPN` / `RoIHeads` (config.model.rpn / .roi_heads)."""
  if name not in DETECTORS:
    raise ConfigError(f"unknown detector {name!r} in config.model.name; expected one of "
                      f"{DETECTORS}")
  backbone_args = dict(_plain(backbone_args or {}))
  backbone_args.setdefault("dtype", dtype)
  body = get_backbone(backbone, **backbone_args)
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
  extra = {}
  if pixel_mean is not None:
    extra["pixel_mean"] = tuple(pixel_mean)
  if pixel_std is not None:
    extra["pixel_std"] = tuple(pixel_std)
  return FasterRCNN(
      backbone=body,
      fpn=FPN(fpn_channels, extra_pool=True, dtype=dtype) if fpn else None,
      rpn=RPN(dtype=dtype, **rpn),
      roi_heads=RoIHeads(num_classes=num_classes, dtype=dtype, **roi_heads),
      backbone_levels=levels, **extra)


__all__ = ["ANCHOR_CONVENTIONS", "DETECTORS", "FPN", "FasterRCNN", "RPN", "RPNHead", "RoIHeads",
           "build_detector"]
