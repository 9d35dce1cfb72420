"""Fully convolutional network at full resolution: the lecture's second approach to semantic
segmentation (CS231n lecture 11; a stack of convolutions as in Long, Shelhamer & Darrell,
"Fully Convolutional Networks for Semantic Segmentation", CVPR 2015, but without any
downsampling).

Every layer is a 3x3, stride 1, pad 1 ConvNormAct, so every feature map keeps the input's
H x W; a 1x1 convolution gives the C x H x W class scores. It has no divisibility
constraint and is expensive: all the work happens at the original resolution. The
seminar deck's example is `FullResolutionFCN(num_classes=10)` on 512x512 inputs with the
default widths 16, 32, 64, 128, 64, 32.
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn

from jaxseg.models.layers import ConvNormAct
from jaxseg.models.segmentation.base import SegmentationModel


class FullResolutionFCN(SegmentationModel):
  """Per-pixel class logits [N, H, W, num_classes] for images [N, H, W, 3] in [0, 1].

  One 3x3 stride-1 ConvNormAct per entry of `widths`; `dropout_rate` applies to the last
  features, before the 1x1 classifier.
  """
  widths: Sequence[int] = (16, 32, 64, 128, 64, 32)
  kernel_size: int = 3
  conv_type: str = "standard"

  @nn.compact
  def __call__(self, images, train: bool = False):
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"FullResolutionFCN expects images [N, H, W, 3]; got shape "
                       f"{images.shape}")
    x = self.normalize(images)
    for i, width in enumerate(self.widths):
      x = ConvNormAct(width, kernel_size=self.kernel_size, strides=1, norm=self.norm,
                      conv_type=self.conv_type, dtype=self.dtype, name=f"conv{i + 1}")(
                          x, train)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="classifier")(x)
