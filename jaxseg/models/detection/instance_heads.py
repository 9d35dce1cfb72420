"""Mask R-CNN's per-RoI branches (He, Gkioxari, Dollar & Girshick, "Mask R-CNN", ICCV 2017):
a mask head and a keypoint head that sit in `RoIHeads`' slots beside the box branch.

- `MaskHead`: RoIAlign `resolution` x `resolution` (14) -> `conv_layers` 3 x 3 convs + ReLU
  (4 x 256) -> 2 x 2 stride-2 transpose conv + ReLU -> 1 x 1 conv to one mask per class:
  logits [B, R, 28, 28, C + 1] (torchvision's MaskRCNNHeads + MaskRCNNPredictor; parameter
  names mask_fcn1..4, conv5_mask, mask_fcn_logits).
  Training (`mask_targets`, `mask_loss`): each foreground RoI's target is its matched
  ground-truth mask RoIAligned to 28 x 28 and thresholded at 0.5 (Detectron2), the loss
  a per-pixel sigmoid binary cross-entropy of the logits of the ground-truth class only
  (the paper's decoupling of masks from classification), averaged over the RoIs' pixels.
  Test time (`mask_probabilities`): the sigmoid of the detected class's mask; pasting it
  into the image is `jaxseg.ops.roi.paste_masks`.
- `KeypointHead`: RoIAlign 14 x 14 -> `conv_layers` 3 x 3 convs + ReLU (8 x 512) -> 4 x 4
  stride-2 transpose conv to K maps (28 x 28) -> bilinear x 2: heatmap logits [B, R, 56,
  56, K] (torchvision's KeypointRCNNHeads + KeypointRCNNPredictor; conv_fcn1..8,
  kps_score_lowres).
  Training (`keypoint_targets`, `keypoint_loss`): each labelled keypoint (v > 0) inside
  its foreground RoI is one-hot at cell floor((x - x1) * 56 / w), ... of the 56 x 56 grid;
  a softmax cross-entropy over the 56^2 positions per keypoint (the paper), averaged over
  the labelled keypoints.
  Test time (`heatmaps_to_keypoints`): each map resized bicubically to the detected box's
  size (ceil of its width and height, at most `max_size`), the arg-max cell's centre in
  image pixels, its value as the keypoint's score (torchvision's heatmaps_to_keypoints).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg import losses, ops
from jaxseg.models.layers import Upsample



def _rois_first(x):
  """[B, R, ...] -> [B * R, ...] and the function that undoes it."""
  b, r = x.shape[:2]
  return x.reshape((b * r,) + x.shape[2:]), lambda y: y.reshape((b, r) + y.shape[1:])


def _conv_stack(x, widths: Sequence[int], prefix: str, dtype):
  for i, width in enumerate(widths, 1):
    x = nn.relu(nn.Conv(width, (3, 3), padding=1, dtype=dtype, name=f"{prefix}{i}",
                        kernel_init=nn.initializers.kaiming_normal())(x))
  return x


class MaskHead(nn.Module):
  """Pooled RoI features [B, R, 14, 14, C] -> mask logits [B, R, 28, 28, num_classes]."""
  num_classes: int  # including the background (torchvision's layout)
  conv_layers: Sequence[int] = (256, 256, 256, 256)
  resolution: int = 14  # of the RoIAlign feeding the head; the masks are twice that
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pooled):
    x, back = _rois_first(pooled.astype(self.dtype))
    x = _conv_stack(x, self.conv_layers, "mask_fcn", self.dtype)
    x = nn.relu(Upsample(self.conv_layers[-1], "transpose", 2, 2, self.dtype,
                         name="conv5_mask")(x))
    x = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="mask_fcn_logits",
                kernel_init=nn.initializers.normal(0.001))(x)  # Detectron2's init
    return back(x.astype(jnp.float32))


class KeypointHead(nn.Module):
  """Pooled RoI features [B, R, 14, 14, C] -> heatmap logits [B, R, 56, 56, K]."""
  num_keypoints: int
  conv_layers: Sequence[int] = (512,) * 8
  resolution: int = 14
  max_size: int = 224  # heatmaps_to_keypoints' cap on the resized map's side (at most
  # the image's longest side is used: boxes are clipped to the image)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pooled):
    x, back = _rois_first(pooled.astype(self.dtype))
    x = _conv_stack(x, self.conv_layers, "conv_fcn", self.dtype)
    x = Upsample(self.num_keypoints, "transpose", 2, 4, self.dtype, name="kps_score_lowres")(x)
    return back(ops.bilinear_upsample(x.astype(jnp.float32), 2))


# -- training targets and losses ----------------------------------------------------------
def mask_targets(gt_masks, rois, matched, size: int):
  """Binary targets [B, P, size, size] (float32): for RoI p of image b, the ground-truth mask
  `matched[b, p]` of `gt_masks` [B, M, H, W] RoIAligned (half-pixel aligned, 2 x 2 samples
  per cell) over rois[b, p] and thresholded at 0.5. Every object's mask is one channel of
  one RoIAlign, then each RoI keeps its matched channel (no [P, H, W] gather)."""
  channels = jnp.moveaxis(gt_masks.astype(jnp.float32), 1, -1)  # [B, H, W, M]
  crops = ops.roi.roi_align(channels, jax.lax.stop_gradient(rois), size, 1.0, 2, True)
  crop = jnp.take_along_axis(crops, matched[:, :, None, None, None], -1)[..., 0]
  return (crop >= 0.5).astype(jnp.float32)


def mask_loss(logits, classes, targets, positive):
  """Mean sigmoid binary cross-entropy over the pixels of the foreground RoIs, of the mask
  logits [B, P, S, S, C + 1] of each RoI's ground-truth class `classes` [B, P]."""
  logit = jnp.take_along_axis(logits, classes[:, :, None, None, None], -1)[..., 0]
  pixels = jnp.broadcast_to(positive[:, :, None, None], logit.shape)
  return losses.sigmoid_binary_cross_entropy(logit, targets, pixels)


def keypoint_targets(keypoints, rois, matched, size: int):
  """(cell index [B, P, K] int32 into the size x size grid, labelled [B, P, K] bool): the
  matched ground-truth keypoints (`keypoints` [B, M, K, 3] pixel (x, y, v)) in each RoI's
  grid, floor((x - x1) * size / w) (a keypoint on the right / bottom edge goes to the last
  cell, as torchvision's keypoints_to_heatmap); labelled = v > 0 and inside the grid."""
  kp = jnp.take_along_axis(keypoints, matched[:, :, None, None], 1)  # [B, P, K, 3]
  x1, y1, x2, y2 = (rois[..., i:i + 1] for i in range(4))
  cell = lambda v, lo, hi: jnp.where(v == hi, size - 1, jnp.floor(
      (v - lo) * size / jnp.maximum(hi - lo, 1e-6)).astype(jnp.int32))
  cx, cy = cell(kp[..., 0], x1, x2), cell(kp[..., 1], y1, y2)
  inside = (cx >= 0) & (cy >= 0) & (cx < size) & (cy < size)
  labelled = inside & (kp[..., 2] > 0)
  return jnp.where(labelled, cy * size + cx, 0), labelled


def keypoint_loss(heatmaps, targets, labelled):
  """Softmax cross-entropy over the positions of each labelled keypoint's heatmap
  (`heatmaps` [B, P, S, S, K] logits), averaged over the labelled keypoints."""
  b, p, s, _, k = heatmaps.shape
  flat = jnp.moveaxis(heatmaps.reshape(b, p, s * s, k), 2, -1)  # [B, P, K, S*S]
  log_p = jax.nn.log_softmax(flat, -1)
  ce = -jnp.take_along_axis(log_p, targets[..., None], -1)[..., 0]
  weight = labelled.astype(jnp.float32)
  return jnp.sum(ce * weight) / jnp.maximum(jnp.sum(weight), 1.0)


# -- test time ----------------------------------------------------------------------------
def mask_probabilities(logits, classes):
  """Sigmoid of each detection's class mask: logits [B, D, S, S, C + 1], classes [B, D]
  (1..C; -1 rows give class 0's) -> [B, D, S, S]."""
  safe = jnp.maximum(classes, 0)
  return jax.nn.sigmoid(jnp.take_along_axis(logits, safe[:, :, None, None, None], -1)[..., 0])


def _cubic_weights(t, a: float = -0.75):
  """PyTorch's bicubic convolution weights of the taps at -1, 0, 1, 2 for fraction t."""
  near = lambda x: ((a + 2) * x - (a + 3)) * x * x + 1
  far = lambda x: ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
  return far(t + 1), near(t), near(1 - t), far(2 - t)


def _bicubic_taps(n_out, n_in: int, max_out: int):
  """Bicubic resize (align_corners=False, taps clamped at the edges: PyTorch's
  interpolate) from n_in to a dynamic size `n_out` <= max_out, as 4 taps per output:
  (indices [4, max_out] int32, weights [4, max_out]); outputs >= n_out weigh 0."""
  dst = jnp.arange(max_out, dtype=jnp.float32)
  src = (dst + 0.5) * (n_in / n_out) - 0.5
  base = jnp.floor(src)
  inside = dst < n_out
  index = jnp.stack([jnp.clip(base + t - 1, 0, n_in - 1) for t in range(4)]).astype(jnp.int32)
  weight = jnp.stack([jnp.where(inside, w, 0.0) for w in _cubic_weights(src - base)])
  return index, weight


def heatmaps_to_keypoints(heatmaps, boxes, max_size: int):
  """Keypoints of heatmap logits [B, D, S, S, K] in boxes [B, D, 4]: each map resized
  bicubically to (min(ceil(h), max_size), min(ceil(w), max_size)) (h, w the box's size,
  at least 1), the first arg-max cell (i, j) -> x = x1 + (j + 0.5) * w / ceil_w, y alike;
  -> (keypoints [B, D, K, 2] image pixels, scores [B, D, K] = the resized map there).
  With max_size >= the image size this is torchvision's heatmaps_to_keypoints. The
  resize is 4 taps per axis (x first, then y, as PyTorch sums them): K max_size^2 8
  multiply-adds per detection, computed a few detections at a time."""
  b, d, s, _, k = heatmaps.shape
  maps = jnp.moveaxis(heatmaps, -1, 2).reshape(b * d, k, s, s)
  flat_boxes = boxes.reshape(b * d, 4)

  def one(args):
    hm, box = args
    w = jnp.maximum(box[2] - box[0], 1.0)
    h = jnp.maximum(box[3] - box[1], 1.0)
    nw, nh = jnp.minimum(jnp.ceil(w), max_size), jnp.minimum(jnp.ceil(h), max_size)
    (ix, wx), (iy, wy) = _bicubic_taps(nw, s, max_size), _bicubic_taps(nh, s, max_size)
    cols = sum(wx[t] * hm[:, :, ix[t]] for t in range(4))  # [K, S, max]
    up = sum(wy[t][:, None] * cols[:, iy[t], :] for t in range(4))  # [K, max, max]
    inside = ((jnp.arange(max_size) < nh)[:, None] & (jnp.arange(max_size) < nw)[None, :])
    up = jnp.where(inside, up, -jnp.inf).reshape(k, -1)
    pos = jnp.argmax(up, -1)
    score = jnp.take_along_axis(up, pos[:, None], -1)[:, 0]
    yi, xi = pos // max_size, pos % max_size
    x = box[0] + (xi + 0.5) * (w / nw)
    y = box[1] + (yi + 0.5) * (h / nh)
    return jnp.stack([x, y], -1), score

  per_item = k * max_size * max_size * 4 * 3  # bytes of the resized maps and temporaries
  xy, score = jax.lax.map(one, (maps, flat_boxes),
                          batch_size=max(1, min(8, int(256 * 2**20 // per_item))))
  return xy.reshape(b, d, k, 2), score.reshape(b, d, k)
