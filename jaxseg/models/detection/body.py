"""The part every detector starts with: images [B, H, W, 3] in [0, 1] normalised, a
backbone of `jaxseg.models.backbones`, and the maps the detector reads from it."""
from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp


def backbone_maps(backbone, images, levels: Sequence[str], pixel_mean, pixel_std,
                  train: bool) -> list:
  """The backbone's maps named `levels` (e.g. "stride_16"), in that order, of the
  normalised images; a ValueError naming config.model.backbone_levels if one is missing."""
  x = (images.astype(jnp.float32) - jnp.asarray(pixel_mean)) / jnp.asarray(pixel_std)
  maps = backbone(x, train=train)
  missing = [k for k in levels if k not in maps]
  if missing:
    raise ValueError(f"config.model.backbone_levels {list(levels)}: the backbone has no "
                     f"{missing}; it gives {sorted(maps)}")
  return [maps[k] for k in levels]
