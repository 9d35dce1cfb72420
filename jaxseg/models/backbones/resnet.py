"""ResNet backbone (He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition",
CVPR 2016), with atrous (dilated) later stages for dense prediction (Chen et al.,
"DeepLab", TPAMI 2017; "Rethinking Atrous Convolution", arXiv 2017 — multi-grid).

`ResNet(...)(x, train)` returns a dict of feature maps keyed by **nominal** stride:

    {"stride_2": stem conv output, "stride_4": stage 1, "stride_8": stage 2,
     "stride_16": stage 3, "stride_32": stage 4}

With `output_stride=16` stage 4 keeps the resolution of stage 3 (stride 1, dilation 2);
with `output_stride=8` stages 3 and 4 keep the resolution of stage 2 (dilations 2 and 4).
The keys stay nominal ("stride_32" is always the last stage) so a head can address stages
by name whatever the output stride; their actual stride is `min(nominal, output_stride)`.
Dilation changes no parameter shape, so the parameter count does not depend on
`output_stride`.

Layout follows torchvision's ResNet v1.5 (stride on the 3x3 conv of a bottleneck,
projection shortcut = 1x1 conv + BN wherever the shape changes), so with the default
full-size settings the parameter counts (conv + BN scale/bias, no fc) are the published
ones: ResNet-18 11,176,512 (11,689,512 - fc 513,000), ResNet-50 23,508,032
(25,557,032 - fc 2,049,000). Convolutions use 'SAME' padding (as the flax ImageNet example)
by default; `padding="symmetric"` pads as PyTorch does (the strided 7x7 and 3x3 convs
differ), which with `frozen_bn` and torchvision's weights (`jaxseg.weights.torchvision`)
computes torchvision's ResNet. Padding changes no parameter.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxseg import ops
from jaxseg.models.layers import ConvNormAct

BLOCKS = ("basic", "bottleneck")
STEMS = ("imagenet", "small")
OUTPUT_STRIDES = (8, 16, 32)

# Published stage sizes (He et al. 2016, Table 1).
RESNET_CONFIGS = {
    18: dict(stage_sizes=(2, 2, 2, 2), block="basic"),
    34: dict(stage_sizes=(3, 4, 6, 3), block="basic"),
    50: dict(stage_sizes=(3, 4, 6, 3), block="bottleneck"),
    101: dict(stage_sizes=(3, 4, 23, 3), block="bottleneck"),
    152: dict(stage_sizes=(3, 8, 36, 3), block="bottleneck"),
}


class ResidualBlock(nn.Module):
  """A residual block with identity (or 1x1 projection) shortcut (He et al. CVPR 2016).

  basic (`bottleneck=False`): two 3x3 convs, `features` channels out;
  bottleneck: 1x1 reduce -> 3x3 (strided / dilated) -> 1x1 expand to 4 * `features`
  (stride on the 3x3, "ResNet v1.5"). `conv_type` applies to the 3x3 convs.
  """
  features: int
  bottleneck: bool = False
  strides: int = 1
  dilation: int = 1
  conv_type: str = "standard"
  norm: bool = True
  padding: str = "same"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    out_features = self.features * (4 if self.bottleneck else 1)
    common = dict(norm=self.norm, dtype=self.dtype, padding=self.padding)
    y = x
    if self.bottleneck:
      y = ConvNormAct(self.features, 1, **common)(y, train)
    y = ConvNormAct(self.features, 3, strides=self.strides, dilation=self.dilation,
                    conv_type=self.conv_type, **common)(y, train)
    if self.bottleneck:
      y = ConvNormAct(out_features, 1, activation=False, **common)(y, train)
    else:
      y = ConvNormAct(out_features, 3, dilation=self.dilation, activation=False,
                      conv_type=self.conv_type, **common)(y, train)
    shortcut = x
    if self.strides != 1 or x.shape[-1] != out_features:
      shortcut = ConvNormAct(out_features, 1, strides=self.strides, activation=False,
                             name="shortcut", **common)(x, train)
    return nn.relu(y + shortcut)


class ResNet(nn.Module):
  """ResNet feature extractor (He et al. CVPR 2016): dict of feature maps by nominal stride.

  Fields:
    stage_sizes: residual blocks per stage (ResNet-18: (2, 2, 2, 2); ResNet-50:
      (3, 4, 6, 3) with block="bottleneck"; see `RESNET_CONFIGS`).
    block: "basic" (two 3x3 convs) or "bottleneck" (1x1-3x3-1x1, 4x expansion).
    width: channels of the stem and stage 1 (64 in the paper); stage i has width * 2**i
      (times 4 at the output of a bottleneck).
    stem: "imagenet" = 7x7 stride-2 conv + 3x3 stride-2 max pool (the paper's);
      "small" = 3x3 stride-1 conv + 3x3 stride-2 conv + 2x2 max pool, cheaper and keeping
      more fine detail for tiny images. Both reach stride 4 before stage 1.
    output_stride: 32 (classification), 16 or 8 (atrous: later stages replace their
      stride by dilation, Chen et al.).
    multi_grid: per-block dilation multipliers of the last stage (DeepLabv3 uses
      (1, 2, 4)); cycled if shorter than the stage; (1,) disables it.
    conv_type: type of the 3x3 convs in the residual blocks ("standard",
      "depthwise_separable", "spatially_separable"); the stem stays standard.
    norm: BatchNorm after every conv (no conv bias); False = conv with bias.
    frozen_bn: BatchNorm always uses (and never updates) its running statistics, as when
      fine-tuning a pretrained backbone with small batches. It does not stop gradients to
      the BN scale/bias: mask those in the optimizer to freeze them too.
    padding: "same" (XLA SAME) or "symmetric" (PyTorch's; see the module docstring).
    dtype: compute dtype (parameters stay float32).

  Input: normalized images [N, H, W, C]; H and W must be divisible by `output_stride`.
  """
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  block: str = "basic"
  width: int = 64
  stem: str = "imagenet"
  output_stride: int = 32
  multi_grid: Sequence[int] = (1,)
  conv_type: str = "standard"
  norm: bool = True
  frozen_bn: bool = False
  padding: str = "same"
  dtype: Any = jnp.float32

  @property
  def out_features(self) -> int:
    """Channels of the last stage's output."""
    expansion = 4 if self.block == "bottleneck" else 1
    return self.width * 2**(len(self.stage_sizes) - 1) * expansion

  def _check(self, x):
    if self.block not in BLOCKS:
      raise ValueError(f"unknown ResNet block {self.block!r}; expected one of {BLOCKS}")
    if self.stem not in STEMS:
      raise ValueError(f"unknown ResNet stem {self.stem!r}; expected one of {STEMS}")
    if self.output_stride not in OUTPUT_STRIDES:
      raise ValueError(f"ResNet output_stride must be one of {OUTPUT_STRIDES}, got "
                       f"{self.output_stride}")
    if len(self.stage_sizes) != 4:
      raise ValueError(f"ResNet stage_sizes must have 4 entries, got {self.stage_sizes}")
    if not self.multi_grid or min(self.multi_grid) < 1:
      raise ValueError(f"ResNet multi_grid must be positive integers, got {self.multi_grid}")
    h, w = x.shape[1:3]
    if h % self.output_stride or w % self.output_stride:
      raise ValueError(f"ResNet with output_stride {self.output_stride} needs image height "
                       f"and width divisible by {self.output_stride}, got {h}x{w}")

  @nn.compact
  def __call__(self, x, train: bool = False):
    self._check(x)
    bn_train = train and not self.frozen_bn
    features = {}
    if self.stem == "imagenet":
      x = ConvNormAct(self.width, 7, strides=2, norm=self.norm, dtype=self.dtype,
                      padding=self.padding, name="stem_conv")(x, bn_train)
      features["stride_2"] = x
      # 3x3 stride-2 max pool with padding 1 (as in the paper / torchvision).
      x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
      x = ops.max_pool(x, 3, 2)
    else:
      x = ConvNormAct(self.width, 3, norm=self.norm, dtype=self.dtype,
                      padding=self.padding, name="stem_conv1")(x, bn_train)
      x = ConvNormAct(self.width, 3, strides=2, norm=self.norm, dtype=self.dtype,
                      padding=self.padding, name="stem_conv2")(x, bn_train)
      features["stride_2"] = x
      x = ops.max_pool(x, 2)

    stride, dilation = 4, 1
    for i, num_blocks in enumerate(self.stage_sizes):
      stage_stride = 1 if i == 0 else 2
      if stride * stage_stride > self.output_stride:
        dilation *= stage_stride  # atrous: keep resolution, widen the field of view
        stage_stride = 1
      stride *= stage_stride
      last_stage = i == len(self.stage_sizes) - 1
      for j in range(num_blocks):
        grid = self.multi_grid[j % len(self.multi_grid)] if last_stage else 1
        x = ResidualBlock(self.width * 2**i, bottleneck=self.block == "bottleneck",
                          strides=stage_stride if j == 0 else 1, dilation=dilation * grid,
                          conv_type=self.conv_type, norm=self.norm, padding=self.padding,
                          dtype=self.dtype, name=f"stage{i + 1}_block{j + 1}")(x, bn_train)
      features[f"stride_{4 * 2**i}"] = x
    return features
