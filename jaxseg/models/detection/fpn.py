"""Feature Pyramid Network (Lin, Dollar, Girshick, He, Hariharan & Belongie, "Feature
Pyramid Networks for Object Detection", CVPR 2017).

Backbone maps C_2..C_5 (fine to coarse) -> P_2..P_5 of `channels` channels each: a 1x1
lateral conv per level (`inner_blocks_<i>`), a top-down pathway (the coarser merged map,
nearest-upsampled to the finer size, added to the lateral), then a 3x3 conv per level
(`layer_blocks_<i>`). With `extra_pool`, P_6 = P_5 subsampled by 2 (a max pool of kernel 1,
stride 2: torchvision's LastLevelMaxPool), used by the RPN only. Parameter names follow
torchvision's `backbone.fpn.inner_blocks.<i>` / `layer_blocks.<i>`.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp


def _upsample_to(x, height: int, width: int):
  """Nearest-neighbour upsampling of [B, h, w, C] to [B, height, width, C] (integer or
  not: index floor(i * h / height), as torch's F.interpolate(mode='nearest'))."""
  h, w = x.shape[1:3]
  if (h, w) == (height, width):
    return x
  if height % h == 0 and width % w == 0:
    return jnp.repeat(jnp.repeat(x, height // h, axis=1), width // w, axis=2)
  rows = (jnp.arange(height) * h) // height
  cols = (jnp.arange(width) * w) // width
  return x[:, rows][:, :, cols]


class FPN(nn.Module):
  """Feature pyramid (Lin et al. 2017): list of maps fine to coarse -> list of maps (plus
  the extra P6 with `extra_pool`), all `channels` wide."""
  channels: int = 256
  extra_pool: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: Sequence[Any]):
    init = dict(kernel_init=nn.initializers.lecun_uniform(), bias_init=nn.initializers.zeros,
                dtype=self.dtype)
    laterals = [nn.Conv(self.channels, (1, 1), name=f"inner_blocks_{i}", **init)(f)
                for i, f in enumerate(features)]
    merged = [None] * len(laterals)
    merged[-1] = laterals[-1]
    for i in range(len(laterals) - 2, -1, -1):
      h, w = laterals[i].shape[1:3]
      merged[i] = laterals[i] + _upsample_to(merged[i + 1], h, w)
    outs = [nn.Conv(self.channels, (3, 3), padding="SAME", name=f"layer_blocks_{i}", **init)(m)
            for i, m in enumerate(merged)]
    if self.extra_pool:
      outs.append(outs[-1][:, ::2, ::2, :])
    return outs
