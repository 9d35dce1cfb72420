"""Building blocks shared by every model: conv-norm-activation (standard, atrous and
separable convolutions), down- and upsampling."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxseg import ops

CONV_TYPES = ("standard", "depthwise_separable", "spatially_separable")
# Accepted by ConvNormAct besides CONV_TYPES: "depthwise" keeps the channel count, so it
# cannot stand in for a standard conv (MobileNet v2's middle conv, Sandler et al. 2018).
_CONV_ONLY_TYPES = ("depthwise",)
# ConvNormAct `activation`: True = "relu", False / None = none; relu6 = min(max(x, 0), 6)
# (MobileNet, Howard et al. 2017; Sandler et al. 2018).
ACTIVATIONS = {"relu": nn.relu, "relu6": nn.relu6}
DOWNSAMPLE_METHODS = ("maxpool", "strided")
UPSAMPLE_METHODS = ("nearest", "bed_of_nails", "max_unpool", "transpose", "bilinear",
                    "resize_conv", "subpixel")
_UPSAMPLE_ALIASES = {"resize": "resize_conv"}  # name used by earlier configs


class DepthwiseConv(nn.Module):
  """k x k depthwise convolution, 'SAME' padding (`ops.depthwise_conv`); parameters as
  nn.Conv(feature_group_count=C): kernel [k, k, 1, C] and bias [C]."""
  kernel_size: int = 3
  strides: int = 1
  dilation: int = 1
  use_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    k, c = self.kernel_size, x.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, 1, c))
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    y = ops.depthwise_conv(x, kernel, self.strides, self.dilation)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (c,)).astype(y.dtype)
    return y


class DepthwiseSeparableConv(nn.Module):
  """Depthwise k x k conv (one filter per input channel) -> [BatchNorm] -> ReLU -> 1x1
  pointwise conv to `features` (MobileNet, Howard et al. 2017; Xception, Chollet 2017).

  Weights: k*k*C_in + C_in*features, versus k*k*C_in*features for a standard conv.
  """
  features: int
  kernel_size: int = 3
  strides: int = 1
  dilation: int = 1
  norm: bool = True
  use_bias: bool = True  # of the pointwise conv
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = DepthwiseConv(self.kernel_size, self.strides, self.dilation, use_bias=not self.norm,
                      dtype=self.dtype, name="depthwise")(x)
    if self.norm:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x)
    x = nn.relu(x)
    return nn.Conv(self.features, (1, 1), use_bias=self.use_bias, dtype=self.dtype,
                   name="pointwise")(x)


class SpatiallySeparableConv(nn.Module):
  """k x 1 conv to `features`, then 1 x k conv (a rank-separable k x k kernel; Inception v3,
  Szegedy et al. CVPR 2016). No bias or nonlinearity in between: the pair stays linear.

  Weights: k*C_in*features + k*features*features.
  """
  features: int
  kernel_size: int = 3
  strides: int = 1
  dilation: int = 1
  use_bias: bool = True  # of the second conv
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    k, s, d = self.kernel_size, self.strides, self.dilation
    x = nn.Conv(self.features, (k, 1), strides=(s, 1), padding="SAME", kernel_dilation=(d, 1),
                use_bias=False, dtype=self.dtype, name="vertical")(x)
    return nn.Conv(self.features, (1, k), strides=(1, s), padding="SAME", kernel_dilation=(1, d),
                   use_bias=self.use_bias, dtype=self.dtype, name="horizontal")(x)


PADDINGS = ("same", "symmetric")


def conv_padding(padding: str, kernel_size: int, dilation: int = 1):
  """flax `padding` of a k x k conv: "same" -> 'SAME'; "symmetric" -> d(k-1)/2 pixels on
  every side (PyTorch's `padding=k // 2`; equal to SAME for stride 1)."""
  if padding == "same":
    return "SAME"
  if padding == "symmetric":
    p = dilation * (kernel_size - 1) // 2
    return ((p, p), (p, p))
  raise ValueError(f"unknown padding {padding!r}; expected one of {PADDINGS}")


class ConvNormAct(nn.Module):
  """Conv (no bias when normalized) -> BatchNorm (optional) -> activation (default ReLU).

  `dilation` > 1: atrous convolution, a (d(k-1)+1)^2 field of view at the cost of a k x k
  kernel (Chen et al., DeepLab). `conv_type`: one of CONV_TYPES, or "depthwise" (a k x k
  `DepthwiseConv`; `features` must equal the input channels). `activation`: True / "relu",
  "relu6", or False / None for a linear layer. `padding` (standard convs): "same" (XLA's
  SAME: a strided conv of an even input pads one more pixel at the bottom / right) or
  "symmetric" (PyTorch's `padding=d(k-1)/2` on every side, for torchvision weights).
  """
  features: int
  kernel_size: int = 3
  strides: int = 1
  norm: bool = True
  activation: bool | str | None = True
  dtype: Any = jnp.float32
  dilation: int = 1
  conv_type: str = "standard"
  padding: str = "same"

  @nn.compact
  def __call__(self, x, train: bool):
    k, bias = self.kernel_size, not self.norm
    if self.conv_type == "standard":
      x = nn.Conv(self.features, (k, k), strides=self.strides,
                  padding=conv_padding(self.padding, k, self.dilation),
                  kernel_dilation=self.dilation, use_bias=bias, dtype=self.dtype)(x)
    elif self.conv_type == "depthwise_separable":
      x = DepthwiseSeparableConv(self.features, k, self.strides, self.dilation, self.norm,
                                 use_bias=bias, dtype=self.dtype)(x, train)
    elif self.conv_type == "spatially_separable":
      x = SpatiallySeparableConv(self.features, k, self.strides, self.dilation, use_bias=bias,
                                 dtype=self.dtype)(x)
    elif self.conv_type == "depthwise":
      if self.features != x.shape[-1]:
        raise ValueError(f"conv_type 'depthwise' keeps the channel count: features "
                         f"{self.features} must equal the input's {x.shape[-1]} channels")
      x = DepthwiseConv(k, self.strides, self.dilation, use_bias=bias, dtype=self.dtype)(x)
    else:
      raise ValueError(f"unknown conv_type {self.conv_type!r}; expected one of "
                       f"{CONV_TYPES + _CONV_ONLY_TYPES}")
    if self.norm:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x)
    return _activation_fn(self.activation)(x)


def _activation_fn(activation: bool | str | None):
  """The function named by a ConvNormAct `activation` (True = ReLU; False / None = identity)."""
  if activation is True:
    return nn.relu
  if activation is False or activation is None:
    return lambda x: x
  if activation not in ACTIVATIONS:
    raise ValueError(f"unknown activation {activation!r}; expected True, False, None or one "
                     f"of {tuple(ACTIVATIONS)}")
  return ACTIVATIONS[activation]


class ConvBlock(nn.Module):
  """`num_convs` 3x3 ConvNormAct layers at one resolution (a U-Net / VGG stage)."""
  features: int
  num_convs: int = 2
  norm: bool = True
  dtype: Any = jnp.float32
  conv_type: str = "standard"
  dilation: int = 1

  @nn.compact
  def __call__(self, x, train: bool):
    for _ in range(self.num_convs):
      x = ConvNormAct(self.features, norm=self.norm, dtype=self.dtype, dilation=self.dilation,
                      conv_type=self.conv_type)(x, train)
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
  """Learnable 2x upsampling: transpose convolution, kernel 2, stride 2, plus bias.

  out[2h+i, 2w+j] = x[h, w] @ kernel[i, j] + bias (`ops.conv_transpose`); `impl` is passed
  to it ('depth_to_space' matmul, or 'lax', 5x slower to differentiate on XLA:CPU).
  """
  features: int
  impl: str = "depth_to_space"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (2, 2, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    return ops.conv_transpose(x, kernel, 2, impl=self.impl) + bias


class Upsample(nn.Module):
  """Multiply the resolution by `factor`; the output always has `features` channels.

  Learnable (kernel HWIO + bias, produce `features` directly):
  - 'transpose': transpose conv, stride `factor`, kernel `kernel_size` (default `factor`:
    non-overlapping, a matmul + depth-to-space). Larger kernels overlap (e.g. 2*factor, the
    classic deconvolution that can show checkerboard artifacts); padding
    ceil((kernel_size - factor) / 2) and output_padding make the output exactly factor x.
  - 'resize_conv' (alias 'resize', the name of earlier configs): bilinear upsampling, then
    a `kernel_size` (default 3) SAME conv (Odena et al., Distill 2016).
  - 'subpixel': `kernel_size` (default 3) SAME conv to factor^2 * features, then
    depth-to-space (Shi et al. CVPR 2016).
  Fixed (a 1x1 projection to `features` first, only when the channel count differs):
  'nearest', 'bed_of_nails', 'bilinear' (half-pixel), 'max_unpool' (needs `switches` from
  `ops.max_pool_with_argmax(., factor)` with `features` channels).
  """
  features: int
  method: str = "transpose"
  factor: int = 2
  kernel_size: int | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, switches=None):
    method = _UPSAMPLE_ALIASES.get(self.method, self.method)
    f, cin, n, h, w = self.factor, x.shape[-1], *x.shape[:3]
    if method in ("transpose", "resize_conv", "subpixel"):
      k = self.kernel_size or (f if method == "transpose" else 3)
      cout = self.features * (f * f if method == "subpixel" else 1)
      kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, cin, cout))
      bias = self.param("bias", nn.initializers.zeros, (self.features,))
      x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
      if method == "transpose":
        padding = max(0, -(-(k - f) // 2))
        x = ops.conv_transpose(x, kernel, f, padding, output_padding=f - k + 2 * padding)
      elif method == "resize_conv":
        x = ops.resize_conv(x, kernel, f, "bilinear")
      else:
        x = ops.subpixel_conv(x, kernel, f)
      return x + bias
    if method not in UPSAMPLE_METHODS:
      raise ValueError(f"unknown upsample method {self.method!r}; expected one of "
                       f"{UPSAMPLE_METHODS} (or 'resize' = 'resize_conv')")
    expected = (n, h, w, self.features)
    if method == "max_unpool" and (switches is None or switches.shape != expected):
      raise ValueError(f"upsample method 'max_unpool' needs switches of shape {expected} "
                       "from ops.max_pool_with_argmax; got "
                       f"{None if switches is None else switches.shape}")
    if cin != self.features:
      x = nn.Dense(self.features, dtype=self.dtype, name="project")(x)
    if method == "nearest":
      return ops.nearest_upsample(x, f)
    if method == "bed_of_nails":
      return ops.bed_of_nails_upsample(x, f)
    if method == "bilinear":
      return ops.bilinear_upsample(x, f)
    return ops.max_unpool(x, switches, (f * h, f * w), window=f)
