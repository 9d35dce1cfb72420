"""GoogLeNet / Inception-v1 backbone (Szegedy et al., "Going Deeper with Convolutions",
CVPR 2015), without the auxiliary classifiers.

An inception module concatenates four branches computed from the same input:
1x1 conv | 1x1 reduce -> 3x3 conv | 1x1 reduce -> 5x5 conv | 3x3 max pool -> 1x1 "pool proj",
with the paper's channel table (Table 1) for modules 3a..5b. Every conv is a ConvNormAct
(conv -> BatchNorm -> ReLU, as torchvision's BasicConv2d; `norm=False`: conv + bias -> ReLU).
The paper's local response normalizations are left out (BatchNorm replaces them, as in
torchvision).

The "5x5" branch: the paper uses 5x5 kernels (`branch5_kernel=5`, the default); torchvision
uses 3x3 there (`branch5_kernel=3`, a known slip kept for its pretrained weights). With
`heads={"logits": 1000}` and BatchNorm the parameter counts are torchvision's 6,624,904
(branch5_kernel=3) and 7,005,832 (the paper's 5x5: + 16 * 23,808 weights). The paper's
"6.8M" is its Table 1 summed in units of K = 1024 weights (6,798K, about 6.96M weights).

Max pools are 3x3 stride 2 (the paper's; torchvision's last one is 2x2) with 'SAME'
padding: for even sizes that is torchvision's `ceil_mode=True` pooling (one extra
row/column at the bottom/right).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxseg import ops
from jaxseg.models.layers import ConvNormAct

# Szegedy et al. 2015, Table 1: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj).
INCEPTION_TABLE = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
# Inception modules per stage: stage 3 at stride 8, 4 at stride 16, 5 at stride 32.
STAGES = (("3a", "3b"), ("4a", "4b", "4c", "4d", "4e"), ("5a", "5b"))


def _max_pool_same(x, window: int, stride: int):
  """Max pooling with 'SAME' padding (XLA's rule: any odd pad goes to the bottom/right)."""
  pads = []
  for n in x.shape[1:3]:
    total = max((-(-n // stride) - 1) * stride + window - n, 0)
    pads.append((total // 2, total - total // 2))
  x = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
  return ops.max_pool(x, window, stride)


class Inception(nn.Module):
  """One inception module: four branches concatenated along channels (Szegedy et al. 2015).

  `widths` = (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj).
  """
  widths: Sequence[int]
  branch5_kernel: int = 5
  norm: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    c1, c3r, c3, c5r, c5, cp = self.widths
    conv = functools.partial(ConvNormAct, norm=self.norm, dtype=self.dtype)
    b1 = conv(c1, 1, name="branch1x1")(x, train)
    b3 = conv(c3r, 1, name="branch3x3_reduce")(x, train)
    b3 = conv(c3, 3, name="branch3x3")(b3, train)
    b5 = conv(c5r, 1, name="branch5x5_reduce")(x, train)
    b5 = conv(c5, self.branch5_kernel, name="branch5x5")(b5, train)
    bp = conv(cp, 1, name="pool_proj")(_max_pool_same(x, 3, 1), train)
    return jnp.concatenate([b1, b3, b5, bp], axis=-1)


class GoogLeNet(nn.Module):
  """GoogLeNet feature extractor (Szegedy et al. CVPR 2015): dict of feature maps by stride.

  Returns {"stride_2": conv1, "stride_4": conv3 (the 3x3 192 conv), "stride_8": inception
  3b, "stride_16": inception 4e, "stride_32": inception 5b (1024 channels at width 1)}.
  Fields:
    width: multiplier of every channel count of the paper (round(c * width), at least 1);
      e.g. 1/8 for a tiny test network.
    branch5_kernel: kernel of the "5x5" branch: 5 (paper) or 3 (torchvision).
    stages: the inception modules (Table 1 names) of stages 3, 4 and 5; fewer make a
      shallow test network.
    norm: BatchNorm after every conv (no conv bias); False = conv with bias.
    dtype: compute dtype (parameters stay float32).
  Input: normalized images [N, H, W, C], H and W divisible by 32.
  """
  width: float = 1.0
  branch5_kernel: int = 5
  stages: Sequence[Sequence[str]] = STAGES
  norm: bool = True
  dtype: Any = jnp.float32

  def _channels(self, c: int) -> int:
    return max(1, round(c * self.width))

  @nn.compact
  def __call__(self, x, train: bool = False):
    h, w = x.shape[1:3]
    if h % 32 or w % 32:
      raise ValueError(f"GoogLeNet needs image height and width divisible by 32, got {h}x{w}")
    if self.width <= 0:
      raise ValueError(f"GoogLeNet width multiplier must be positive, got {self.width}")
    names = [name for stage in self.stages for name in stage]
    if len(self.stages) != 3 or not set(names) <= set(INCEPTION_TABLE):
      raise ValueError(f"GoogLeNet stages must be 3 sequences of inception module names from "
                       f"{tuple(INCEPTION_TABLE)}, got {self.stages}")
    conv = functools.partial(ConvNormAct, norm=self.norm, dtype=self.dtype)
    features = {}
    x = conv(self._channels(64), 7, strides=2, name="conv1")(x, train)
    features["stride_2"] = x
    x = _max_pool_same(x, 3, 2)
    x = conv(self._channels(64), 1, name="conv2")(x, train)
    x = conv(self._channels(192), 3, name="conv3")(x, train)
    features["stride_4"] = x
    for stride, names in zip((8, 16, 32), self.stages):
      x = _max_pool_same(x, 3, 2)
      for name in names:
        widths = tuple(self._channels(c) for c in INCEPTION_TABLE[name])
        x = Inception(widths, self.branch5_kernel, self.norm, self.dtype,
                      name=f"inception{name}")(x, train)
      features[f"stride_{stride}"] = x
    return features
