"""Hypercolumns (Hariharan, Arbeláez, Girshick & Malik, "Hypercolumns for Object
Segmentation and Fine-grained Localization", CVPR 2015).

The hypercolumn of a pixel is the vector of activations of all units above it in a CNN,
taken from several depths: shallow layers localize precisely, deep layers know what the
object is. Here a small convolutional trunk (ConvBlock stages separated by 2x2 max
pooling) yields one feature map per stage; the stages listed in `levels` are each reduced
by a 1x1 conv, bilinearly upsampled to the input resolution and concatenated (the
hypercolumn, `len(levels) * hypercolumn_features` channels per pixel), then classified
per pixel by 1x1 convs. Reducing before upsampling is the paper's own efficiency trick:
the first classifier layer is linear, so it commutes with (linear) bilinear upsampling.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxseg import ops
from jaxseg.models.layers import ConvBlock, ConvNormAct
from jaxseg.models.segmentation.base import SegmentationModel


class Hypercolumns(SegmentationModel):
  """Per-pixel logits [N, H, W, num_classes] from hypercolumns of a conv trunk.

  Fields:
    widths: channels of the trunk stages; stage i works at stride 2**i.
    convs_per_stage: 3x3 ConvNormAct layers per stage.
    levels: indices of the stages whose features form the hypercolumn (default: all);
      stages deeper than max(levels) are not built.
    hypercolumn_features: channels of each level after its 1x1 reduction.
    classifier_features: hidden width of the per-pixel classifier (1x1 conv + BN + ReLU,
      then dropout, then a 1x1 conv to the classes).
  H and W must be divisible by 2**max(levels).
  """
  widths: Sequence[int] = (16, 32, 64, 128)
  convs_per_stage: int = 2
  levels: Sequence[int] | None = None
  hypercolumn_features: int = 32
  classifier_features: int = 64
  conv_type: str = "standard"

  def selected_levels(self) -> tuple[int, ...]:
    levels = tuple(range(len(self.widths))) if self.levels is None else tuple(self.levels)
    if not levels or len(set(levels)) != len(levels) or not all(
        0 <= lv < len(self.widths) for lv in levels):
      raise ValueError(f"Hypercolumns levels must be distinct stage indices in "
                       f"[0, {len(self.widths)}), got {self.levels}")
    return tuple(sorted(levels))

  @nn.compact
  def __call__(self, images, train: bool = False):
    levels = self.selected_levels()
    _, h, w, _ = images.shape
    factor = 2**max(levels)
    if h % factor or w % factor:
      raise ValueError(f"Hypercolumns with levels {levels} needs image height and width "
                       f"divisible by {factor}, got {h}x{w}")
    x = self.normalize(images)
    columns = []
    for i in range(max(levels) + 1):
      if i > 0:
        x = ops.max_pool(x, 2)
      x = ConvBlock(self.widths[i], num_convs=self.convs_per_stage, norm=self.norm,
                    conv_type=self.conv_type, dtype=self.dtype, name=f"stage{i}")(x, train)
      if i in levels:
        r = nn.Conv(self.hypercolumn_features, (1, 1), dtype=self.dtype,
                    name=f"reduce_level{i}")(x)
        columns.append(ops.bilinear_upsample(r, 2**i) if i > 0 else r)
    x = jnp.concatenate(columns, axis=-1)
    x = ConvNormAct(self.classifier_features, 1, norm=self.norm, dtype=self.dtype,
                    name="classifier_hidden")(x, train)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="classifier")(x)
