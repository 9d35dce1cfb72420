"""Feature-extraction backbones: flax.linen modules returning dicts of feature maps.

Every backbone is called as `Backbone(...)(x, train) -> dict` on normalized images
[N, H, W, C] (H and W divisible by 32) and returns at least "stride_4", "stride_8",
"stride_16" and "stride_32": the feature map at that (nominal) output stride. Select one by
name with `get_backbone(name, **fields)`.
"""
from __future__ import annotations

import dataclasses
import functools

from jaxseg.errors import ConfigError
from jaxseg.models.backbones.densenet import DenseNet
from jaxseg.models.backbones.googlenet import GoogLeNet
from jaxseg.models.backbones.mobilenet import MobileNetV1, MobileNetV2
from jaxseg.models.backbones.resnet import RESNET_CONFIGS, ResNet
from jaxseg.models.backbones.vgg import VGG

BACKBONES = {
    "vgg16": VGG,
    **{f"resnet{depth}": functools.partial(ResNet, **RESNET_CONFIGS[depth])
       for depth in (18, 34, 50, 101, 152)},
    "googlenet": GoogLeNet,
    "densenet121": DenseNet,
    "mobilenet_v1": MobileNetV1,
    "mobilenet_v2": MobileNetV2,
}


def backbone_fields(name: str) -> tuple[str, ...]:
  """The fields (keyword arguments) the backbone registered as `name` takes."""
  factory = BACKBONES[name]
  cls = factory.func if isinstance(factory, functools.partial) else factory
  return tuple(f.name for f in dataclasses.fields(cls) if f.init and f.name != "parent")


def level_stride(level: str) -> int | None:
  """The stride of a backbone map named "stride_<n>" (the names every backbone gives its
  maps), or None for any other name."""
  digits = level[len("stride_"):]
  return int(digits) if level.startswith("stride_") and digits.isdigit() else None


def get_backbone(name: str, /, **kwargs):
  """Instantiate the backbone registered as `name` with `kwargs` (its fields)."""
  if name not in BACKBONES:
    raise ConfigError(f"unknown backbone {name!r}; expected one of {sorted(BACKBONES)}")
  fields = backbone_fields(name)
  unknown = sorted(set(kwargs) - set(fields))
  if unknown:
    raise ConfigError(f"backbone {name!r} takes no argument {', '.join(unknown)}; it takes "
                      f"{', '.join(f for f in fields if f != 'name')}")
  return BACKBONES[name](**kwargs)


__all__ = ["BACKBONES", "VGG", "DenseNet", "GoogLeNet", "MobileNetV1", "MobileNetV2", "ResNet",
           "backbone_fields", "get_backbone", "level_stride"]
