"""DenseNet backbone (Huang, Liu, van der Maaten & Weinberger, "Densely Connected
Convolutional Networks", CVPR 2017), DenseNet-BC layout.

Each layer of a dense block reads the concatenation of every earlier feature map of the
block and adds `growth_rate` channels: BN -> ReLU -> 1x1 conv (bn_size * growth_rate,
the bottleneck) -> BN -> ReLU -> 3x3 conv (growth_rate). Between blocks, a transition
layer BN -> ReLU -> 1x1 conv (compression * channels) -> 2x2 average pool halves the
resolution. With the defaults (DenseNet-121: blocks (6, 12, 24, 16), k = 32, 64 initial
features, compression 0.5) and `heads={"logits": 1000}` the parameter count is torchvision's
densenet121: 7,978,856 (BatchNorm scale and bias included, running statistics not).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxseg import ops
from jaxseg.models.layers import ConvNormAct


def _norm_relu(x, train: bool, norm: bool, dtype: Any, name: str | None = None):
  """Pre-activation BN -> ReLU (just ReLU without norm), inside the caller's compact scope."""
  if norm:
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=dtype, name=name)(x)
  return nn.relu(x)


def _avg_pool2(x):
  """2x2 stride-2 average pooling (H and W even)."""
  n, h, w, c = x.shape
  return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


class DenseLayer(nn.Module):
  """BN-ReLU-1x1 conv (bottleneck) -> BN-ReLU-3x3 conv; returns the input with the
  `growth_rate` new channels concatenated (Huang et al. 2017, DenseNet-B)."""
  growth_rate: int
  bn_size: int = 4
  norm: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    y = _norm_relu(x, train, self.norm, self.dtype)
    y = ConvNormAct(self.bn_size * self.growth_rate, 1, norm=self.norm, dtype=self.dtype,
                    name="bottleneck")(y, train)
    y = nn.Conv(self.growth_rate, (3, 3), padding="SAME", use_bias=not self.norm,
                dtype=self.dtype, name="conv")(y)
    return jnp.concatenate([x, y], axis=-1)


class DenseNet(nn.Module):
  """DenseNet feature extractor (Huang et al. CVPR 2017): dict of feature maps by stride.

  Returns {"stride_2": stem conv, "stride_4", "stride_8", "stride_16": the outputs of dense
  blocks 1-3 (before their transition), "stride_32": block 4 after the final BN -> ReLU}.
  Fields:
    growth_rate: k, the channels each dense layer adds (32 for DenseNet-121).
    block_config: dense layers per block; 4 blocks (DenseNet-121: (6, 12, 24, 16);
      169: (6, 12, 32, 32); 201: (6, 12, 48, 32)).
    num_init_features: channels of the 7x7 stride-2 stem conv (2k in the paper).
    bn_size: bottleneck width as a multiple of k (4).
    compression: transition layers keep floor(compression * channels) (0.5, DenseNet-C).
    norm: BatchNorm (pre-activation) everywhere, no conv bias; False = convs with bias.
    dtype: compute dtype (parameters stay float32).
  Input: normalized images [N, H, W, C], H and W divisible by 32.
  """
  growth_rate: int = 32
  block_config: Sequence[int] = (6, 12, 24, 16)
  num_init_features: int = 64
  bn_size: int = 4
  compression: float = 0.5
  norm: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    h, w = x.shape[1:3]
    if h % 32 or w % 32:
      raise ValueError(f"DenseNet needs image height and width divisible by 32, got {h}x{w}")
    if len(self.block_config) != 4:
      raise ValueError(f"DenseNet block_config must have 4 entries, got "
                       f"{tuple(self.block_config)}")
    if not 0 < self.compression <= 1:
      raise ValueError(f"DenseNet compression must be in (0, 1], got {self.compression}")
    features = {}
    x = ConvNormAct(self.num_init_features, 7, strides=2, norm=self.norm, dtype=self.dtype,
                    name="stem_conv")(x, train)
    features["stride_2"] = x
    # 3x3 stride-2 max pool with padding 1 (as torchvision; inputs are >= 0 after ReLU).
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    x = ops.max_pool(x, 3, 2)
    for i, num_layers in enumerate(self.block_config):
      for j in range(num_layers):
        x = DenseLayer(self.growth_rate, self.bn_size, self.norm, self.dtype,
                       name=f"block{i + 1}_layer{j + 1}")(x, train)
      if i < len(self.block_config) - 1:
        features[f"stride_{4 * 2**i}"] = x
        x = _norm_relu(x, train, self.norm, self.dtype, name=f"transition{i + 1}_norm")
        x = nn.Conv(int(x.shape[-1] * self.compression), (1, 1), use_bias=not self.norm,
                    dtype=self.dtype, name=f"transition{i + 1}_conv")(x)
        x = _avg_pool2(x)
    features["stride_32"] = _norm_relu(x, train, self.norm, self.dtype, name="final_norm")
    return features
