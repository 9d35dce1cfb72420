"""Encoder-decoder segmentation networks: downsample inside the network, upsample back.

With `skip_connections=True` this is U-Net (Ronneberger et al., MICCAI 2015), with
'SAME' padding so the output has the input's size; without, it is the plain
downsample/upsample fully convolutional network of the lecture (Long et al. CVPR 2015,
Noh et al. ICCV 2015, without their skip fusions and unpooling switches).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxseg.models.layers import ConvBlock, Downsample, Upsample


class EncoderDecoder(nn.Module):
  """Per-pixel class logits [N, H, W, num_classes] for images [N, H, W, 3] in [0, 1].

  `depth` downsamplings by 2 (H and W must be divisible by 2**depth); stage i has
  `base_width * 2**i` channels. `dropout_rate` applies to the bottleneck features.
  """
  num_classes: int
  base_width: int = 32
  depth: int = 4
  skip_connections: bool = True
  downsample: str = "maxpool"
  upsample: str = "transpose"
  norm: bool = True
  dropout_rate: float = 0.0
  pixel_mean: Sequence[float] = (0.485, 0.456, 0.406)
  pixel_std: Sequence[float] = (0.229, 0.224, 0.225)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    x = (images - jnp.asarray(self.pixel_mean)) / jnp.asarray(self.pixel_std)
    x = x.astype(self.dtype)
    widths = [self.base_width * 2**i for i in range(self.depth + 1)]
    skips = []
    for width in widths[:-1]:
      x = ConvBlock(width, norm=self.norm, dtype=self.dtype)(x, train)
      skips.append(x)
      x = Downsample(self.downsample, width, norm=self.norm, dtype=self.dtype)(x, train)
    x = ConvBlock(widths[-1], norm=self.norm, dtype=self.dtype)(x, train)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    for width, skip in zip(reversed(widths[:-1]), reversed(skips)):
      x = Upsample(width, self.upsample, dtype=self.dtype)(x)
      if self.skip_connections:
        x = jnp.concatenate([x, skip], axis=-1)
      x = ConvBlock(width, norm=self.norm, dtype=self.dtype)(x, train)
    return nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="classifier")(x)
