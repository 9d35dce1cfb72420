"""DeconvNet (Noh, Hong & Han, "Learning Deconvolution Network for Semantic Segmentation",
ICCV 2015).

A VGG encoder whose every 2x2 max pooling records its switches (the argmax positions), a
fully connected bottleneck (fc6/fc7 as 1x1 convolutions here; 7x7 in the paper), and a
mirror-image decoder: for each encoder stage, from the deepest, max *unpooling* with that
stage's switches (values go back to where the maxima came from, zeros elsewhere) followed
by as many "deconvolution" layers as the stage had convolutions. The paper's deconvolution
layers are stride-1 transpose convolutions (3x3, pad 1) with BatchNorm and ReLU; the last
one of each stage narrows to the width of the stage below, like the first conv of the
encoder stage widened it. A 1x1 classifier gives the per-pixel scores.

Differences from the paper, on purpose: 1x1 fc layers with 'SAME' geometry instead of a
7x7 VALID fc6 on 224x224 crops (so any input divisible by 2**len(stage_widths) works),
narrow default widths (`stage_widths=(64, 128, 256, 512, 512)`, `fc_width=4096` for the
paper's), and no instance-wise proposal inference / FCN ensemble.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxseg import ops
from jaxseg.models.backbones.vgg import VGG
from jaxseg.models.layers import ConvNormAct
from jaxseg.models.segmentation.base import SegmentationModel


class DeconvNormAct(nn.Module):
  """DeconvNet's "deconvolution" layer: a stride-1 transpose convolution (kernel
  `kernel_size`, padding kernel_size // 2, so the size is kept) -> BatchNorm -> ReLU."""
  features: int
  kernel_size: int = 3
  norm: bool = True
  activation: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    k = self.kernel_size
    if k % 2 == 0:
      raise ValueError(f"DeconvNormAct kernel_size must be odd to keep the size; got {k}")
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (k, k, x.shape[-1], self.features))
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    x = ops.conv_transpose(x, kernel, 1, k // 2)
    if self.norm:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x)
    else:
      x = x + self.param("bias", nn.initializers.zeros, (self.features,)).astype(x.dtype)
    return nn.relu(x) if self.activation else x


class DeconvNet(SegmentationModel):
  """Per-pixel class logits [N, H, W, num_classes] for images [N, H, W, 3] in [0, 1].

  Encoder stage i has `stage_widths[i]` channels and `stage_convs[i]` 3x3 convs, then a
  2x2 max pool with switches; H and W must be divisible by 2**len(stage_widths) (the depth).
  The decoder mirrors it with max unpooling and stride-1 deconvolution layers.
  `dropout_rate` applies to the bottleneck (fc7) features. The unpooled maps are sown to
  the "intermediates" collection as `unpool{i}` (i = encoder stage) for inspection.
  """
  stage_widths: Sequence[int] = (16, 32, 64, 128, 128)
  stage_convs: Sequence[int] = (2, 2, 3, 3, 3)
  fc_width: int = 256
  deconv_kernel_size: int = 3
  conv_type: str = "standard"

  @nn.compact
  def __call__(self, images, train: bool = False):
    num_stages = len(self.stage_widths)
    if num_stages == 0 or len(self.stage_convs) != num_stages:
      raise ValueError(f"DeconvNet needs as many stage_convs as stage_widths (>= 1); got "
                       f"{tuple(self.stage_widths)} and {tuple(self.stage_convs)}")
    _, h, w, _ = images.shape
    if h % 2**num_stages or w % 2**num_stages:
      raise ValueError(f"DeconvNet with {num_stages} pooling stages needs height and width "
                       f"divisible by {2**num_stages}; got {h}x{w}")
    x = self.normalize(images)
    feats = VGG(self.stage_widths, self.stage_convs, norm=self.norm,
                conv_type=self.conv_type, record_switches=True, dtype=self.dtype,
                name="encoder")(x, train)

    x = feats[f"stride_{2**num_stages}"]
    x = ConvNormAct(self.fc_width, kernel_size=1, norm=self.norm, dtype=self.dtype,
                    name="fc6")(x, train)
    x = ConvNormAct(self.fc_width, kernel_size=1, norm=self.norm, dtype=self.dtype,
                    name="fc7")(x, train)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = ConvNormAct(self.stage_widths[-1], kernel_size=1, norm=self.norm, dtype=self.dtype,
                    name="deconv_fc6")(x, train)

    for i in reversed(range(num_stages)):
      stage = i + 1
      pre_pool = feats[f"stage{stage}"]
      x = ops.max_unpool(x, feats[f"switches_{2**stage}"], pre_pool.shape[1:3], window=2)
      self.sow("intermediates", f"unpool{stage}", x)
      out_width = self.stage_widths[i - 1] if i > 0 else self.stage_widths[0]
      for j in range(self.stage_convs[i]):
        last = j == self.stage_convs[i] - 1
        x = DeconvNormAct(out_width if last else self.stage_widths[i],
                          kernel_size=self.deconv_kernel_size, norm=self.norm,
                          dtype=self.dtype, name=f"deconv{stage}_{j + 1}")(x, train)
    return nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="classifier")(x)
