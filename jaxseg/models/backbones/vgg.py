"""VGG convolutional backbone (Simonyan & Zisserman, "Very Deep Convolutional Networks for
Large-Scale Image Recognition", ICLR 2015).

Only the convolutional stack: stages of 3x3 ConvNormAct layers, each stage followed by a
2x2 stride-2 max pooling. Classification heads (fc6/fc7/fc8) live with the models that
use them (FCN turns them into convolutions, a classifier flattens them), so the backbone
is shared. With the defaults and `norm=False` this is exactly the VGG-16 conv stack:
13 convolutions, 14,714,688 parameters.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxseg import ops
from jaxseg.models.layers import ConvBlock

VGG16_WIDTHS = (64, 128, 256, 512, 512)
VGG16_CONVS = (2, 2, 3, 3, 3)


class VGG(nn.Module):
  """Feature maps of a VGG conv stack, keyed by name.

  Takes already-normalized features [N, H, W, C] (H and W divisible by 2**num_stages)
  and returns a dict with, for stage i = 1..num_stages at output stride s = 2**i:
    "stage{i}":    the stage's last conv output, before pooling (stride s/2; VGG conv{i}_k);
    "stride_{s}":  its 2x2 max-pooled output (VGG pool{i});
    "switches_{s}": the argmax switches of that pooling (only if `record_switches`), as
                   returned by `ops.max_pool_with_argmax`, for max unpooling (DeconvNet).
  `stage_widths` and `stage_convs` give the width and number of 3x3 convs per stage.
  """
  stage_widths: Sequence[int] = VGG16_WIDTHS
  stage_convs: Sequence[int] = VGG16_CONVS
  norm: bool = True
  conv_type: str = "standard"
  record_switches: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    if len(self.stage_widths) != len(self.stage_convs):
      raise ValueError(f"VGG stage_widths {tuple(self.stage_widths)} and stage_convs "
                       f"{tuple(self.stage_convs)} must have the same length")
    factor = 2**len(self.stage_widths)
    if x.shape[1] % factor or x.shape[2] % factor:
      raise ValueError(f"VGG with {len(self.stage_widths)} stages needs height and width "
                       f"divisible by {factor}; got {x.shape[1]}x{x.shape[2]}")
    features = {}
    for i, (width, convs) in enumerate(zip(self.stage_widths, self.stage_convs), start=1):
      x = ConvBlock(width, num_convs=convs, norm=self.norm, dtype=self.dtype,
                    conv_type=self.conv_type, name=f"stage{i}")(x, train)
      features[f"stage{i}"] = x
      if self.record_switches:
        x, switches = ops.max_pool_with_argmax(x, 2)
        features[f"switches_{2**i}"] = switches
      else:
        x = ops.max_pool(x, 2)
      features[f"stride_{2**i}"] = x
    return features
