"""Building blocks shared by every model: conv-norm-activation, down- and upsampling."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg import ops

DOWNSAMPLE_METHODS = ("maxpool", "strided")
UPSAMPLE_METHODS = ("transpose", "resize")


class ConvNormAct(nn.Module):
  """Conv (no bias when normalized) -> BatchNorm (optional) -> ReLU."""
  features: int
  kernel_size: int = 3
  strides: int = 1
  norm: bool = True
  activation: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    k = self.kernel_size
    x = nn.Conv(self.features, (k, k), strides=self.strides, padding="SAME",
                use_bias=not self.norm, dtype=self.dtype)(x)
    if self.norm:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x)
    return nn.relu(x) if self.activation else x


class ConvBlock(nn.Module):
  """`num_convs` 3x3 ConvNormAct layers at one resolution (a U-Net / VGG stage)."""
  features: int
  num_convs: int = 2
  norm: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    for _ in range(self.num_convs):
      x = ConvNormAct(self.features, norm=self.norm, dtype=self.dtype)(x, train)
    return x


class Downsample(nn.Module):
  """Halve the resolution: 2x2 max pooling, or a learned 3x3 stride-2 convolution."""
  method: str = "maxpool"
  features: int | None = None
  norm: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    if self.method == "maxpool":
      return ops.max_pool(x, 2)
    if self.method == "strided":
      return ConvNormAct(self.features or x.shape[-1], strides=2, norm=self.norm,
                         dtype=self.dtype)(x, train)
    raise ValueError(f"unknown downsample method {self.method!r}; expected one of "
                     f"{DOWNSAMPLE_METHODS}")


class TransposeConv2x(nn.Module):
  """Learnable 2x upsampling: transpose convolution, kernel 2, stride 2.

  With kernel == stride the output blocks do not overlap, so the op is a per-pixel linear
  map to a 2x2 block, out[2h+i, 2w+j] = x[h, w] @ kernel[i, j] + bias (the textbook and
  PyTorch convention): a matmul followed by depth-to-space. `impl='lax'` computes the
  same function with `lax.conv_transpose` (5x slower to differentiate on XLA:CPU).
  """
  features: int
  impl: str = "depth_to_space"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    cin = x.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (2, 2, cin, self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    if self.impl == "lax":
      # lax.conv_transpose correlates with the spatially flipped kernel.
      y = jax.lax.conv_transpose(x, kernel[::-1, ::-1], (2, 2), "VALID",
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    elif self.impl == "depth_to_space":
      matrix = kernel.transpose(2, 0, 1, 3).reshape(cin, 4 * self.features)
      y = ops.depth_to_space(x @ matrix, 2)
    else:
      raise ValueError(f"unknown impl {self.impl!r}; expected 'depth_to_space' or 'lax'")
    return y + bias


class Upsample(nn.Module):
  """Double the resolution: transpose conv, or resize-convolution (bilinear resize then
  3x3 conv; no checkerboard artifacts, Odena et al. 2016)."""
  features: int
  method: str = "transpose"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.method == "transpose":
      return TransposeConv2x(self.features, dtype=self.dtype)(x)
    if self.method == "resize":
      n, h, w, _ = x.shape
      x = ops.resize(x, (2 * h, 2 * w), "bilinear")
      return nn.Conv(self.features, (3, 3), padding="SAME", dtype=self.dtype)(x)
    raise ValueError(f"unknown upsample method {self.method!r}; expected one of "
                     f"{UPSAMPLE_METHODS}")
