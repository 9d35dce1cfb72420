"""Box geometry (jax.numpy; any leading batch shape). Boxes are absolute pixel
`[x1, y1, x2, y2]` in continuous coordinates (the image spans [0, W] x [0, H]; a box
over pixel columns c0..c1 has x1 = c0, x2 = c1 + 1), per DESIGN.md; `cxcywh` is
(centre x, centre y, width, height), `xywh` is COCO's (x1, y1, width, height).
"""
from __future__ import annotations

import jax.numpy as jnp


def xyxy_to_cxcywh(boxes):
  x1, y1, x2, y2 = jnp.moveaxis(boxes, -1, 0)
  return jnp.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=-1)


def cxcywh_to_xyxy(boxes):
  cx, cy, w, h = jnp.moveaxis(boxes, -1, 0)
  return jnp.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def box_area(boxes):
  """Area of xyxy boxes; degenerate boxes (x2 < x1 or y2 < y1) have area 0."""
  x1, y1, x2, y2 = jnp.moveaxis(boxes, -1, 0)
  return jnp.maximum(x2 - x1, 0) * jnp.maximum(y2 - y1, 0)


def clip_boxes(boxes, height, width):
  """Clip xyxy boxes to the image [0, width] x [0, height]."""
  upper = jnp.array([width, height, width, height], boxes.dtype)
  return jnp.clip(boxes, 0, upper)


def elementwise_iou(a, b):
  """IoU of boxes a[..., i] with b[..., i] (same shapes [..., 4]); 0 where the union is 0."""
  lo = jnp.maximum(a[..., :2], b[..., :2])
  hi = jnp.minimum(a[..., 2:], b[..., 2:])
  inter = jnp.prod(jnp.maximum(hi - lo, 0), axis=-1)
  union = box_area(a) + box_area(b) - inter
  return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1), 0.0)


def pairwise_iou(a, b):
  """IoU of every box of a [..., N, 4] with every box of b [..., M, 4] -> [..., N, M];
  0 where the union is 0 (degenerate boxes)."""
  lo = jnp.maximum(a[..., :, None, :2], b[..., None, :, :2])
  hi = jnp.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
  inter = jnp.prod(jnp.maximum(hi - lo, 0), axis=-1)
  union = box_area(a)[..., :, None] + box_area(b)[..., None, :] - inter
  return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1), 0.0)
