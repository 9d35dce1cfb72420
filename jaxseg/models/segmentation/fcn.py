"""FCN-32s / FCN-16s / FCN-8s (Long, Shelhamer & Darrell, "Fully Convolutional Networks for
Semantic Segmentation", CVPR 2015).

A VGG backbone whose fully connected layers fc6/fc7 are rewritten as convolutions (fc6 a
`head_kernel_size` conv, 7x7 in the paper, fc7 a 1x1 conv), a 1x1 "score" layer giving
class scores at stride 32, and skip fusions:
  FCN-32s: score(fc7)                                        -> fixed 32x bilinear upsampling;
  FCN-16s: up2(score(fc7)) + score_pool4(pool4)              -> fixed 16x bilinear upsampling;
  FCN-8s:  up2(up2(score(fc7)) + score_pool4(pool4)) + score_pool3(pool3) -> fixed 8x.
The learnable 2x upsamplings `up2` are transpose convolutions, kernel 4, stride 2, pad 1,
initialised to bilinear interpolation as in the paper (`upsample="transpose"`); any other
`layers.Upsample` method can be chosen instead for ablations. The skip score layers are
zero-initialised as in the paper, so FCN-16s/8s start out as the coarser network.

Differences from the Caffe reference, on purpose: 'SAME' padding everywhere instead of the
paper's 100-pixel input padding and crop layers (so H and W must be divisible by
2**len(stage_widths), 32 by default), optional BatchNorm, and narrow default widths; use
`stage_widths=(64, 128, 256, 512, 512)`, `head_width=4096`, `norm=False`,
`dropout_rate=0.5` for the paper's VGG-16 layout.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxseg import ops
from jaxseg.models.backbones.vgg import VGG
from jaxseg.models.layers import ConvNormAct, Upsample
from jaxseg.models.segmentation.base import SegmentationModel

FCN_VARIANTS = {"32s": 0, "16s": 1, "8s": 2}  # variant -> number of skip fusions


def bilinear_kernel_init(key, shape, dtype=jnp.float32):
  """[k, k, C, C] transpose-conv kernel that performs bilinear upsampling channel by
  channel (FCN's `upsample_filt`; zero between different channels). Deterministic."""
  del key
  k, k2, cin, cout = shape
  if k != k2 or cin != cout:
    raise ValueError(f"bilinear init needs a square kernel with as many input as output "
                     f"channels; got shape {shape}")
  factor = (k + 1) // 2
  center = factor - 1 if k % 2 == 1 else factor - 0.5
  og = np.arange(k)
  filt1d = 1 - np.abs(og - center) / factor
  filt = np.outer(filt1d, filt1d)
  kernel = np.zeros(shape, np.float32)
  kernel[:, :, np.arange(cin), np.arange(cout)] = filt[:, :, None]
  return jnp.asarray(kernel, dtype)


class BilinearTransposeConv(nn.Module):
  """Learnable 2x upsampling: transpose conv (kernel `kernel_size`, stride 2, padding
  (kernel_size - 2) // 2, no bias), initialised to bilinear interpolation (FCN's upscore)."""
  features: int
  kernel_size: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    if k < 2 or k % 2:
      raise ValueError(f"BilinearTransposeConv kernel_size must be even and >= 2 for an "
                       f"exact 2x upsampling; got {k}")
    kernel = self.param("kernel", bilinear_kernel_init, (k, k, x.shape[-1], self.features))
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    return ops.conv_transpose(x, kernel, 2, (k - 2) // 2)


class FCN(SegmentationModel):
  """Per-pixel class logits [N, H, W, num_classes] for images [N, H, W, 3] in [0, 1].

  `variant` "32s" | "16s" | "8s"; backbone `stage_widths`/`stage_convs` (VGG); `head_width`
  and `head_kernel_size` for the convolutionalized fc6/fc7; `upsample` chooses the learnable
  2x fusion upsampling (default bilinear-initialised transpose conv). `dropout_rate` is
  applied after fc6 and after fc7 (the paper's dropout layers).
  """
  variant: str = "8s"
  stage_widths: Sequence[int] = (16, 32, 64, 128, 128)
  stage_convs: Sequence[int] = (2, 2, 3, 3, 3)
  head_width: int = 256
  head_kernel_size: int = 7
  upsample: str = "transpose"
  conv_type: str = "standard"

  @nn.compact
  def __call__(self, images, train: bool = False):
    if self.variant not in FCN_VARIANTS:
      raise ValueError(f"unknown FCN variant {self.variant!r}; expected one of "
                       f"{sorted(FCN_VARIANTS)}")
    if self.upsample == "max_unpool":
      raise ValueError("FCN upsample='max_unpool' is not possible: FCN keeps no pooling "
                       "switches; use 'transpose', 'bilinear', 'nearest', 'resize_conv', ...")
    num_stages = len(self.stage_widths)
    fusions = FCN_VARIANTS[self.variant]
    if num_stages < fusions + 1:
      raise ValueError(f"FCN-{self.variant} fuses {fusions} pooling layers below the last; "
                       f"needs at least {fusions + 1} backbone stages, got {num_stages}")
    _, h, w, _ = images.shape
    stride = 2**num_stages
    if h % stride or w % stride:
      raise ValueError(f"FCN with {num_stages} backbone stages needs height and width "
                       f"divisible by {stride}; got {h}x{w}")
    x = self.normalize(images)
    feats = VGG(self.stage_widths, self.stage_convs, norm=self.norm,
                conv_type=self.conv_type, dtype=self.dtype, name="backbone")(x, train)

    x = feats[f"stride_{stride}"]
    x = ConvNormAct(self.head_width, kernel_size=self.head_kernel_size, norm=self.norm,
                    dtype=self.dtype, name="fc6")(x, train)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = ConvNormAct(self.head_width, kernel_size=1, norm=self.norm, dtype=self.dtype,
                    name="fc7")(x, train)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    score = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="score_fr")(x)

    for j in range(1, fusions + 1):
      # j = 1 fuses pool4 (stride 16 by default), j = 2 fuses pool3 (stride 8).
      pool_stride = stride // 2**j
      pool_name = f"pool{num_stages - j}"
      if self.upsample == "transpose":
        up = BilinearTransposeConv(self.num_classes, kernel_size=4, dtype=self.dtype,
                                   name=f"upscore_{pool_name}")
      else:
        up = Upsample(self.num_classes, self.upsample, factor=2, dtype=self.dtype,
                      name=f"upscore_{pool_name}")
      score = up(score)
      skip = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype,
                     kernel_init=nn.initializers.zeros, name=f"score_{pool_name}")(
                         feats[f"stride_{pool_stride}"])
      score = score + skip

    factor = stride // 2**fusions
    return ops.bilinear_upsample(score, factor) if factor > 1 else score
