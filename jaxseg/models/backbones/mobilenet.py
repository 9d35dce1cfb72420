"""MobileNet backbones.

MobileNet v1 (Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile
Vision Applications", arXiv 2017): a 3x3 stride-2 conv, then 13 depthwise-separable convs
(depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU, `ConvNormAct` with
conv_type="depthwise_separable"); width multiplier alpha scales every layer to
int(alpha * channels). With alpha = 1 and `heads={"logits": 1000}`: 4,231,976 parameters
(Keras' MobileNet trainable count; BN scale/bias included, running statistics not).

MobileNet v2 (Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
CVPR 2018): inverted residual blocks 1x1 expand (x t) -> ReLU6 -> depthwise 3x3 -> ReLU6 ->
1x1 linear projection (no activation), identity shortcut where stride 1 and the width is
unchanged; channels alpha * c rounded to a multiple of 8 (as the reference implementation).
With alpha = 1 and `heads={"logits": 1000}`: 3,504,872 parameters (torchvision).

Both return {"stride_2", "stride_4", ..., "stride_32"}: the last feature map at each stride;
"stride_32" is the final conv's (1024 channels for v1, 1280 for v2 at alpha 1).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.models.layers import ConvNormAct

# Howard et al. 2017, Table 1: (output channels, stride) of the 13 depthwise-separable
# convs. (The table's second-to-last stride "s2" is a typo: the output is 7x7 from 224.)
V1_LAYERS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
             (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))

# Sandler et al. 2018, Table 2: (expansion t, output channels c, repeats n, first stride s).
V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
               (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _check(name: str, x, alpha: float, strides):
  h, w = x.shape[1:3]
  if h % 32 or w % 32:
    raise ValueError(f"{name} needs image height and width divisible by 32, got {h}x{w}")
  if alpha <= 0:
    raise ValueError(f"{name} width multiplier alpha must be positive, got {alpha}")
  if any(s not in (1, 2) for s in strides) or list(strides).count(2) != 4:
    raise ValueError(f"{name} layer strides must be 1 or 2 with exactly four 2s (stride 32 "
                     f"after the stride-2 stem), got {tuple(strides)}")


def make_divisible(value: float, divisor: int = 8) -> int:
  """`value` rounded to the nearest multiple of `divisor` (at least `divisor`), never more
  than 10% below `value` (the MobileNet v2 reference's channel rounding)."""
  rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
  return rounded + divisor if rounded < 0.9 * value else rounded


class MobileNetV1(nn.Module):
  """MobileNet v1 feature extractor (Howard et al. 2017): dict of feature maps by stride.

  Fields:
    alpha: width multiplier: int(alpha * c) channels, at least 1.
    layers: (channels, stride) of the depthwise-separable convs (the paper's `V1_LAYERS`;
      fewer make a shallow test network).
    norm: BatchNorm after every conv, no conv bias; False = convs with bias.
    dtype: compute dtype (parameters stay float32).
  Input: normalized images [N, H, W, C], H and W divisible by 32.
  """
  alpha: float = 1.0
  layers: Sequence[tuple[int, int]] = V1_LAYERS
  norm: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    _check("MobileNetV1", x, self.alpha, [s for _, s in self.layers])
    channels = lambda c: max(1, int(c * self.alpha))
    x = ConvNormAct(channels(32), 3, strides=2, norm=self.norm, dtype=self.dtype,
                    name="conv1")(x, train)
    stride = 2
    features = {"stride_2": x}
    for i, (c, s) in enumerate(self.layers, start=1):
      x = ConvNormAct(channels(c), 3, strides=s, norm=self.norm, conv_type="depthwise_separable",
                      dtype=self.dtype, name=f"block{i}")(x, train)
      stride *= s
      features[f"stride_{stride}"] = x
    return features


class InvertedResidual(nn.Module):
  """1x1 expand (x `expansion`, skipped when 1) -> ReLU6 -> 3x3 depthwise (`strides`) ->
  ReLU6 -> 1x1 linear projection to `features`; + input where shapes allow (Sandler et al.
  2018)."""
  features: int
  strides: int = 1
  expansion: int = 6
  norm: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    common = dict(norm=self.norm, dtype=self.dtype)
    hidden = round(x.shape[-1] * self.expansion)
    y = x
    if self.expansion != 1:
      y = ConvNormAct(hidden, 1, activation="relu6", name="expand", **common)(y, train)
    y = ConvNormAct(hidden, 3, strides=self.strides, conv_type="depthwise",
                    activation="relu6", name="depthwise", **common)(y, train)
    y = ConvNormAct(self.features, 1, activation=False, name="project", **common)(y, train)
    if self.strides == 1 and x.shape[-1] == self.features:
      y = y + x
    return y


class MobileNetV2(nn.Module):
  """MobileNet v2 feature extractor (Sandler et al. CVPR 2018): dict of feature maps by stride.

  Fields:
    alpha: width multiplier; channels make_divisible(alpha * c, round_to).
    round_to: channel rounding (8 as the reference implementation).
    blocks: (expansion t, channels c, repeats n, first stride s) per group of inverted
      residual blocks (the paper's `V2_SETTINGS`; fewer make a shallow test network).
    last_channels: width of the final 1x1 conv (1280; scaled by alpha only when alpha > 1,
      as in the paper); lower it for tiny test networks.
    norm: BatchNorm after every conv, no conv bias; False = convs with bias.
    dtype: compute dtype (parameters stay float32).
  Input: normalized images [N, H, W, C], H and W divisible by 32.
  """
  alpha: float = 1.0
  round_to: int = 8
  blocks: Sequence[tuple[int, int, int, int]] = V2_SETTINGS
  last_channels: int = 1280
  norm: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    _check("MobileNetV2", x, self.alpha, [s for *_, s in self.blocks])
    channels = lambda c: make_divisible(c * self.alpha, self.round_to)
    common = dict(norm=self.norm, dtype=self.dtype)
    x = ConvNormAct(channels(32), 3, strides=2, activation="relu6", name="conv1",
                    **common)(x, train)
    stride = 2
    features = {"stride_2": x}
    block = 0
    for t, c, n, s in self.blocks:
      for j in range(n):
        block += 1
        x = InvertedResidual(channels(c), s if j == 0 else 1, t, name=f"block{block}",
                             **common)(x, train)
        stride *= s if j == 0 else 1
        features[f"stride_{stride}"] = x
    last = make_divisible(self.last_channels * max(1.0, self.alpha), self.round_to)
    x = ConvNormAct(last, 1, activation="relu6", name="conv_last", **common)(x, train)
    features["stride_32"] = x
    return features
