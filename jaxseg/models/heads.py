"""One network with global output heads: a registered backbone, pooling, optional hidden
fully-connected layers, then one Dense layer per output.

Serves image classification (`heads={"logits": C}`), classification + localization
(`heads={"logits": C, "box": 4}`, Sermanet et al., "OverFeat", ICLR 2014) and DeepPose
(`heads={"joints": 2 * K}`, Toshev & Szegedy, CVPR 2014).
"""
from __future__ import annotations

import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.errors import ConfigError
from jaxseg.models.backbones import get_backbone, level_stride

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The published classifier of a backbone when `fc_widths` is None: (adaptive average pool
# size, hidden widths). VGG-16 (Simonyan & Zisserman 2015): 7x7 -> fc6 4096 -> fc7 4096.
# Every other backbone: global average pooling (pool size 1), no hidden layer.
PUBLISHED_CLASSIFIERS = {"vgg16": (7, (4096, 4096))}  # others: (1, ())


def adaptive_avg_pool(x: jax.Array, size: int) -> jax.Array:
  """[N, H, W, C] -> [N, size, size, C]: output bin i averages rows floor(i * H / size) to
  ceil((i + 1) * H / size) - 1 (as torch's AdaptiveAvgPool2d; bins overlap or repeat when
  H is not a multiple of size, and at H = size it is the identity)."""

  def weights(n):
    w = np.zeros((size, n), np.float32)
    for i in range(size):
      start, end = (i * n) // size, -(-(i + 1) * n // size)
      w[i, start:end] = 1.0 / (end - start)
    return jnp.asarray(w, x.dtype)

  return jnp.einsum("ih,jw,nhwc->nijc", weights(x.shape[1]), weights(x.shape[2]), x)


class BackboneWithHeads(nn.Module):
  """Backbone -> pool -> hidden Dense + ReLU layers -> one Dense per head, with dropout
  before every Dense layer but the first hidden one.

  Fields:
    backbone: registry name (`jaxseg.models.backbones.BACKBONES`).
    heads: mapping output name -> size; the Dense layers are named after the outputs
      (params["logits"], ...), built in sorted order.
    backbone_args: fields forwarded to `get_backbone` (dict, ConfigDict or FrozenDict);
      `dtype` defaults to this module's.
    fc_widths: hidden fully-connected widths. None: the backbone's published classifier
      (VGG-16: adaptive average pool of "stride_32" to 7x7, flatten, fc 4096, fc 4096 —
      with heads={"logits": 1000} and norm=False exactly VGG-16's 138,357,544 parameters;
      every other backbone: global average pool, no hidden layer). A sequence: global
      average pool, then those layers; () = none.
    pool_size: the backbone's coarsest map ("stride_32" unless it has fewer stages) is
      average-pooled to pool_size x pool_size and flattened (1 = global average pooling;
      larger keeps where things are, which box and joint regression need). None: the published classifier's (VGG-16 7, others 1).
    dropout_rate: of that dropout (VGG: between fc6, fc7 and fc8; GoogLeNet, MobileNet:
      before the classifier); only when `train`, drawing from the "dropout" rng collection.
    zero_init_heads: the head layers start at zero (outputs 0 at initialization; e.g. a
      refinement stage that starts as the identity).
    pixel_mean, pixel_std: images arrive in [0, 1] and are normalized here.
    dtype: compute dtype; parameters stay float32 and outputs are cast to float32.

  `__call__(images, train) -> {name: [N, size] float32}`; `embed(images, train)` gives the
  [N, D] feature vector the heads read (before the last dropout).
  """
  backbone: str
  heads: Any
  backbone_args: Any = None
  fc_widths: Any = None
  pool_size: Any = None
  dropout_rate: float = 0.0
  zero_init_heads: bool = False
  pixel_mean: tuple = IMAGENET_MEAN
  pixel_std: tuple = IMAGENET_STD
  dtype: Any = jnp.float32

  def _heads(self) -> dict[str, int]:
    heads = dict(self.heads or {})
    if not heads:
      raise ConfigError(f"BackboneWithHeads needs at least one head (name -> size), got "
                        f"{self.heads!r}")
    for name, size in heads.items():
      if name == "backbone" or re.fullmatch(r"fc\d+", name):
        raise ConfigError(f"head name {name!r} is taken by a layer of BackboneWithHeads; "
                          "expected a name other than 'backbone' and 'fc<number>'")
      if not isinstance(size, (int, np.integer)) or size < 1:
        raise ConfigError(f"head {name!r} has size {size!r}; expected a positive integer")
    return dict(sorted(heads.items()))

  def __call__(self, images, train: bool = False) -> dict[str, jax.Array]:
    return self._forward(images, train, with_heads=True)

  def embed(self, images, train: bool = False) -> jax.Array:
    return self._forward(images, train, with_heads=False)

  @nn.compact
  def _forward(self, images, train: bool, with_heads: bool):
    heads = self._heads() if with_heads else {}  # `embed` alone needs no head
    args = dict(self.backbone_args or {})
    args.setdefault("dtype", self.dtype)
    mean = jnp.asarray(self.pixel_mean, jnp.float32)
    std = jnp.asarray(self.pixel_std, jnp.float32)
    x = ((images.astype(jnp.float32) - mean) / std).astype(self.dtype)
    features = get_backbone(self.backbone, name="backbone", **args)(x, train)
    strides = [s for s in map(level_stride, features) if s is not None]
    x = features[f"stride_{max(strides)}"]  # the coarsest map ("stride_32" at full depth)

    published_pool, widths = PUBLISHED_CLASSIFIERS.get(self.backbone, (1, ()))
    if self.fc_widths is not None:
      published_pool, widths = 1, tuple(self.fc_widths)
    pool_size = self.pool_size or published_pool
    if pool_size == 1:
      x = x.mean(axis=(1, 2))
    else:
      x = adaptive_avg_pool(x, pool_size).reshape(x.shape[0], -1)

    dropout = nn.Dropout(self.dropout_rate, deterministic=not train or self.dropout_rate == 0)
    for i, width in enumerate(widths):
      if i:
        x = dropout(x)
      x = nn.relu(nn.Dense(width, dtype=self.dtype, name=f"fc{i + 1}")(x))
    if not with_heads:
      return x.astype(jnp.float32)
    x = dropout(x)
    init = nn.initializers.zeros if self.zero_init_heads else nn.linear.default_kernel_init
    return {name: nn.Dense(size, dtype=self.dtype, kernel_init=init, name=name)(x)
            .astype(jnp.float32) for name, size in heads.items()}
