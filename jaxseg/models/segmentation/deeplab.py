"""DeepLabv3+ (Chen, Zhu, Papandreou, Schroff & Adam, "Encoder-Decoder with Atrous
Separable Convolution for Semantic Image Segmentation", ECCV 2018).

Encoder: a ResNet (He et al. CVPR 2016) with atrous later stages (output stride 16 or 8),
then Atrous Spatial Pyramid Pooling (ASPP, Chen et al. "Rethinking Atrous Convolution",
2017): a 1x1 conv, three 3x3 convs with dilation rates (6, 12, 18) at output stride 16
(doubled at 8) and an image-pooling branch (global average pool -> 1x1 conv -> broadcast),
concatenated and projected by a 1x1 conv. Decoder: bilinear upsampling to stride 4,
concatenation with 1x1-reduced stride-4 backbone features, two 3x3 convs, a 1x1
classifier, bilinear upsampling by 4 to the input resolution. The paper uses depthwise
separable convs in ASPP and decoder (`conv_type="depthwise_separable"`).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxseg import ops
from jaxseg.models.backbones.resnet import ResNet
from jaxseg.models.layers import ConvNormAct
from jaxseg.models.segmentation.base import SegmentationModel

DEFAULT_ATROUS_RATES_OS16 = (6, 12, 18)


class ASPP(nn.Module):
  """Atrous Spatial Pyramid Pooling (Chen et al. 2017; DeepLabv3+ ECCV 2018).

  Branches, each `features` wide, concatenated then projected by a 1x1 conv:
  1x1 conv; one 3x3 conv per rate in `atrous_rates` (dilation = rate); image pooling
  (global average -> 1x1 conv -> broadcast back to H x W).

  `aspp=False` is the ablation baseline at equal parameter count: the same branches with
  every 3x3 conv at rate 1 and the image-pooling branch replaced by a local 1x1 conv
  (same weights shape). `image_pooling=False` replaces only the image-pooling branch by
  that local 1x1 conv (atrous rates without global context). The comparison "aspp=True vs aspp=False" therefore isolates the
  multi-scale / global context that atrous rates and image pooling bring, at equal width,
  equal parameters and (almost) equal FLOPs.
  """
  features: int = 256
  atrous_rates: Sequence[int] = DEFAULT_ATROUS_RATES_OS16
  aspp: bool = True
  image_pooling: bool = True
  conv_type: str = "standard"
  norm: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    common = dict(norm=self.norm, dtype=self.dtype)
    branches = [ConvNormAct(self.features, 1, name="conv1x1", **common)(x, train)]
    for i, rate in enumerate(self.atrous_rates):
      dilation = rate if self.aspp else 1
      branches.append(ConvNormAct(self.features, 3, dilation=dilation,
                                  conv_type=self.conv_type, name=f"atrous{i}",
                                  **common)(x, train))
    if self.aspp and self.image_pooling:
      pooled = x.mean(axis=(1, 2), keepdims=True)
      pooled = ConvNormAct(self.features, 1, name="image_pooling", **common)(pooled, train)
      branches.append(jnp.broadcast_to(pooled, branches[0].shape))
    else:
      branches.append(ConvNormAct(self.features, 1, name="local1x1", **common)(x, train))
    x = jnp.concatenate(branches, axis=-1)
    return ConvNormAct(self.features, 1, name="project", **common)(x, train)


class DeepLabV3Plus(SegmentationModel):
  """DeepLabv3+ (Chen et al. ECCV 2018): logits [N, H, W, num_classes] for images in [0, 1].

  Backbone: `ResNet(stage_sizes, block, width, stem, output_stride, multi_grid,
  backbone_conv_type)`; defaults are a tiny ResNet-10-like net (paper: ResNet-101 or
  Xception, width 64, ASPP 256, low-level 48, decoder 256). `atrous_rates=None` uses
  (6, 12, 18) * 16 / output_stride, i.e. (12, 24, 36) at output stride 8. `conv_type`
  sets the 3x3 convs of ASPP and decoder ("depthwise_separable" in the paper).
  `aspp=False` swaps ASPP for its equal-cost rate-1 baseline (see `ASPP`).
  `dropout_rate` applies before the classifier (Monte-Carlo dropout).
  H and W must be divisible by `output_stride`.
  """
  stage_sizes: Sequence[int] = (1, 1, 1, 1)
  block: str = "basic"
  width: int = 16
  stem: str = "imagenet"
  output_stride: int = 16
  multi_grid: Sequence[int] = (1,)
  backbone_conv_type: str = "standard"
  frozen_bn: bool = False
  aspp: bool = True
  image_pooling: bool = True
  atrous_rates: Sequence[int] | None = None
  aspp_features: int = 64
  low_level_features: int = 16
  decoder_features: int = 64
  conv_type: str = "standard"

  def rates(self) -> tuple[int, ...]:
    """The ASPP dilation rates actually used."""
    if self.atrous_rates is not None:
      return tuple(self.atrous_rates)
    return tuple(r * 16 // self.output_stride for r in DEFAULT_ATROUS_RATES_OS16)

  @nn.compact
  def __call__(self, images, train: bool = False):
    _, h, w, _ = images.shape
    if h % self.output_stride or w % self.output_stride:
      raise ValueError(f"DeepLabV3Plus with output_stride {self.output_stride} needs image "
                       f"height and width divisible by {self.output_stride}, got {h}x{w}")
    x = self.normalize(images)
    feats = ResNet(stage_sizes=self.stage_sizes, block=self.block, width=self.width,
                   stem=self.stem, output_stride=self.output_stride,
                   multi_grid=self.multi_grid, conv_type=self.backbone_conv_type,
                   norm=self.norm, frozen_bn=self.frozen_bn, dtype=self.dtype,
                   name="backbone")(x, train)
    common = dict(norm=self.norm, dtype=self.dtype)
    x = ASPP(self.aspp_features, self.rates(), aspp=self.aspp,
             image_pooling=self.image_pooling, conv_type=self.conv_type, name="aspp",
             **common)(feats["stride_32"], train)

    # Decoder: up to stride 4, fuse with the low-level features, refine.
    low = ConvNormAct(self.low_level_features, 1, name="low_level_reduce",
                      **common)(feats["stride_4"], train)
    x = ops.bilinear_upsample(x, self.output_stride // 4)
    x = jnp.concatenate([x, low.astype(x.dtype)], axis=-1)
    for i in range(2):
      x = ConvNormAct(self.decoder_features, 3, conv_type=self.conv_type,
                      name=f"decoder_conv{i}", **common)(x, train)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="classifier")(x)
    return ops.bilinear_upsample(logits, 4)
