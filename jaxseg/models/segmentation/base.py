"""What every segmentation model shares: its output size, the fields the trainer and the
configs rely on, and input normalization."""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SegmentationModel(nn.Module):
  """Base of the segmentation models: `__call__(images [N, H, W, 3] in [0, 1], train)`
  returns logits [N, H, W, num_classes].

  `norm`: batch normalization on or off; `dropout_rate`: the model's dropout (an
  `nn.Dropout`, so Monte-Carlo dropout works for every model); `dtype`: compute dtype
  (parameters stay float32).
  """
  num_classes: int
  norm: bool = True
  dropout_rate: float = 0.0
  pixel_mean: Sequence[float] = IMAGENET_MEAN
  pixel_std: Sequence[float] = IMAGENET_STD
  dtype: Any = jnp.float32

  def normalize(self, images):
    """(images - pixel_mean) / pixel_std in the compute dtype."""
    x = (images - jnp.asarray(self.pixel_mean)) / jnp.asarray(self.pixel_std)
    return x.astype(self.dtype)
