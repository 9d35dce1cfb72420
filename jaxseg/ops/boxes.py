"""Box geometry (jax.numpy; any leading batch shape). Boxes are absolute pixel
`[x1, y1, x2, y2]` in continuous coordinates (the image spans [0, W] x [0, H]; a box
over pixel columns c0..c1 has x1 = c0, x2 = c1 + 1), per DESIGN.md; `cxcywh` is
(centre x, centre y, width, height), `xywh` is COCO's (x1, y1, width, height).
"""
from __future__ import annotations

import math

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


def clip_boxes(boxes, height, width, valid=None):
  """Clip xyxy boxes to the image [0, width] x [0, height]. Rows where `valid` (a [...]
  bool mask) is False, e.g. the -1 padding, are returned unchanged."""
  upper = jnp.array([width, height, width, height], boxes.dtype)
  return _keep_padding(jnp.clip(boxes, 0, upper), boxes, valid)


def elementwise_iou(a, b):
  """IoU of boxes a[..., i] with b[..., i] (same shapes [..., 4]); 0 where the union is 0."""
  lo = jnp.maximum(a[..., :2], b[..., :2])
  hi = jnp.minimum(a[..., 2:], b[..., 2:])
  inter = jnp.prod(jnp.maximum(hi - lo, 0), axis=-1)
  union = box_area(a) + box_area(b) - inter
  return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1), 0.0)


def elementwise_intersection(a, b):
  """The intersection of each box of a [..., 4] with its box of b [..., 4] (xyxy), as a
  box; a zero-size box at the corner where they do not intersect."""
  lo = jnp.maximum(a[..., :2], b[..., :2])
  return jnp.concatenate([lo, jnp.maximum(jnp.minimum(a[..., 2:], b[..., 2:]), lo)], -1)


def pairwise_intersection(a, b):
  """Intersection area of every box of a [..., N, 4] with every box of b [..., M, 4] ->
  [..., N, M] (0 for disjoint boxes)."""
  lo = jnp.maximum(a[..., :, None, :2], b[..., None, :, :2])
  hi = jnp.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
  return jnp.prod(jnp.maximum(hi - lo, 0), axis=-1)


def pairwise_iou(a, b):
  """IoU of every box of a [..., N, 4] with every box of b [..., M, 4] -> [..., N, M];
  0 where the union is 0 (degenerate boxes)."""
  inter = pairwise_intersection(a, b)
  union = box_area(a)[..., :, None] + box_area(b)[..., None, :] - inter
  return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1), 0.0)


def xyxy_to_xywh(boxes):
  """xyxy -> COCO (x1, y1, width, height); for the evaluation/IO boundary only."""
  x1, y1, x2, y2 = jnp.moveaxis(boxes, -1, 0)
  return jnp.stack([x1, y1, x2 - x1, y2 - y1], axis=-1)


def xywh_to_xyxy(boxes):
  """COCO (x1, y1, width, height) -> xyxy."""
  x, y, w, h = jnp.moveaxis(boxes, -1, 0)
  return jnp.stack([x, y, x + w, y + h], axis=-1)


def _safe_div(num, den):
  """num / den where den > 0, else 0, with finite gradients everywhere."""
  ok = den > 0
  return jnp.where(ok, num / jnp.where(ok, den, 1), 0.0)


def pairwise_giou(a, b):
  """Generalized IoU (Rezatofighi et al. 2019) of a [..., N, 4] with b [..., M, 4] ->
  [..., N, M] in [-1, 1]: IoU - (C - U) / C with C the area of the smallest box
  enclosing both and U the union. Degenerate boxes have area 0; where C is 0 (both
  boxes the same point or segment) the penalty term is 0, so GIoU is 0 there."""
  inter = pairwise_intersection(a, b)
  union = box_area(a)[..., :, None] + box_area(b)[..., None, :] - inter
  iou = _safe_div(inter, union)
  # The enclosing box of the (area-clamped) boxes: degenerate boxes enter by their corners.
  elo = jnp.minimum(a[..., :, None, :2], b[..., None, :, :2])
  ehi = jnp.maximum(a[..., :, None, 2:], b[..., None, :, 2:])
  enclose = jnp.prod(jnp.maximum(ehi - elo, 0), axis=-1)
  return iou - _safe_div(enclose - union, enclose)


def _keep_padding(new, boxes, valid):
  """`new` where valid (a [...] bool mask), else the original (padded, -1) rows."""
  if valid is None:
    return new
  return jnp.where(valid[..., None], new, boxes)


def flip_boxes(boxes, width, valid=None):
  """Mirror xyxy boxes horizontally in an image of the given width (x -> width - x).
  Rows where `valid` is False (padding) are returned unchanged."""
  x1, y1, x2, y2 = jnp.moveaxis(boxes, -1, 0)
  flipped = jnp.stack([width - x2, y1, width - x1, y2], axis=-1).astype(boxes.dtype)
  return _keep_padding(flipped, boxes, valid)


def scale_boxes(boxes, sx, sy, valid=None):
  """Scale xyxy boxes by sx horizontally and sy vertically (e.g. after resizing the
  image by those factors). Rows where `valid` is False are returned unchanged."""
  factor = jnp.stack(jnp.broadcast_arrays(sx, sy, sx, sy), axis=-1).astype(boxes.dtype)
  return _keep_padding(boxes * factor, boxes, valid)


# Detectron's bound on dw and dh before exp(): no box grows beyond 1000/16 times its anchor.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


def encode(boxes, anchors, weights=(1.0, 1.0, 1.0, 1.0)):
  """R-CNN box regression targets (Girshick et al. 2014, appendix C) of xyxy `boxes`
  relative to `anchors` (both [..., 4], broadcastable):
  (wx (gx - ax) / aw, wy (gy - ay) / ah, ww log(gw / aw), wh log(gh / ah)),
  with (gx, gy, gw, gh) and (ax, ay, aw, ah) the centres and sizes.

  Rows where the box or the anchor has a non-positive width or height (padded -1 rows,
  degenerate boxes) have no defined target: they encode to 0, with zero gradients, so
  nothing is NaN or Inf; mask them out of the loss with the `valid` mask.
  """
  g = xyxy_to_cxcywh(boxes)
  a = xyxy_to_cxcywh(anchors)
  g, a = jnp.broadcast_arrays(g, a)
  ok = (g[..., 2] > 0) & (g[..., 3] > 0) & (a[..., 2] > 0) & (a[..., 3] > 0)
  okk = ok[..., None]
  gs = jnp.where(okk, g[..., 2:], 1.0)
  as_ = jnp.where(okk, a[..., 2:], 1.0)
  wxy = jnp.asarray(weights[:2], boxes.dtype)
  wwh = jnp.asarray(weights[2:], boxes.dtype)
  dxy = wxy * (g[..., :2] - a[..., :2]) / as_
  dwh = wwh * jnp.log(gs / as_)
  return jnp.where(okk, jnp.concatenate([dxy, dwh], axis=-1), 0.0)


def decode(deltas, anchors, weights=(1.0, 1.0, 1.0, 1.0), scale_clamp=DEFAULT_SCALE_CLAMP,
           valid=None):
  """Inverse of `encode`: apply deltas [..., 4] to xyxy `anchors` [..., 4] -> xyxy boxes.
  dw / ww and dh / wh are clamped at `scale_clamp` (Detectron: log(1000 / 16)) before
  exp(), so the result and its gradients stay finite for any finite deltas. A padded
  (-1) anchor has zero size and decodes to itself; rows where `valid` is False are -1.
  """
  a = xyxy_to_cxcywh(anchors)
  wts = jnp.asarray(weights, deltas.dtype)
  d = deltas / wts
  cxy = d[..., :2] * a[..., 2:] + a[..., :2]
  wh = jnp.exp(jnp.minimum(d[..., 2:], scale_clamp)) * a[..., 2:]
  out = jnp.concatenate([cxy - wh / 2, cxy + wh / 2], axis=-1)
  if valid is not None:
    out = jnp.where(valid[..., None], out, -1.0)
  return out
