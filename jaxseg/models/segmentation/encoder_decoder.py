"""Encoder-decoder segmentation networks: downsample inside the network, upsample back.

With `skip_connections=True` this is U-Net (Ronneberger et al., MICCAI 2015), with
'SAME' padding so the output has the input's size; without, it is the plain
downsample/upsample fully convolutional network of the lecture (Long et al. CVPR 2015,
Noh et al. ICCV 2015, without their skip fusions). With `upsample='max_unpool'` each
2x2 max pool remembers its switches and the mirrored decoder stage unpools with them.
"""
from __future__ import annotations


import flax.linen as nn
import jax.numpy as jnp

from jaxseg import ops
from jaxseg.models.layers import ConvBlock, Downsample, Upsample
from jaxseg.models.segmentation.base import SegmentationModel


class EncoderDecoder(SegmentationModel):
  """Per-pixel class logits [N, H, W, num_classes] for images [N, H, W, 3] in [0, 1].

  `depth` downsamplings by 2 (H and W must be divisible by 2**depth); stage i has
  `base_width * 2**i` channels. `dropout_rate` applies to the bottleneck features.
  `upsample` is any method of `layers.UPSAMPLE_METHODS`; `conv_type` any of
  `layers.CONV_TYPES` (e.g. depthwise-separable convolutions everywhere).
  """
  base_width: int = 32
  depth: int = 4
  skip_connections: bool = True
  downsample: str = "maxpool"
  upsample: str = "transpose"
  upsample_kernel: int | None = None  # None: the method's default (transpose: 2)
  conv_type: str = "standard"

  @nn.compact
  def __call__(self, images, train: bool = False):
    factor = 2**self.depth
    if images.shape[1] % factor or images.shape[2] % factor:
      raise ValueError(f"image size {images.shape[1:3]} must be divisible by 2**depth = "
                       f"{factor}")
    unpool = self.upsample == "max_unpool"
    if unpool and self.downsample != "maxpool":
      raise ValueError("upsample='max_unpool' needs downsample='maxpool' (its switches)")
    x = self.normalize(images)
    widths = [self.base_width * 2**i for i in range(self.depth + 1)]
    block = lambda w: ConvBlock(w, norm=self.norm, conv_type=self.conv_type, dtype=self.dtype)
    skips, switches = [], []
    for width in widths[:-1]:
      x = block(width)(x, train)
      skips.append(x)
      if unpool:
        x, sw = ops.max_pool_with_argmax(x, 2)
        switches.append(sw)
      else:
        x = Downsample(self.downsample, width, norm=self.norm, dtype=self.dtype)(x, train)
        switches.append(None)
    x = block(widths[-1])(x, train)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    for width, skip, sw in zip(reversed(widths[:-1]), reversed(skips), reversed(switches)):
      x = Upsample(width, self.upsample, kernel_size=self.upsample_kernel, dtype=self.dtype)(x, switches=sw)
      if self.skip_connections:
        x = jnp.concatenate([x, skip], axis=-1)
      x = block(width)(x, train)
    return nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="classifier")(x)
