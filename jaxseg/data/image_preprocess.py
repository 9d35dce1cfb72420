"""Image-level preprocessing: the image, and whichever of `box` / `joints` the example
holds, transformed together (continuous pixel coordinates: the image spans [0, W] x
[0, H]; boxes [x1, y1, x2, y2], joints [K, 3] = (x, y, v) with v = 0 for missing).

Train (`make_train_preprocess`), every draw a stateless function of the example's seed:
1. scale jitter: s ~ U[min_scale, max_scale]; the image is resized (stretched) to
   round(s * size) on each axis, coordinates scaled per axis;
2. a size x size window: a random crop where the image is larger, zero padding
   (bottom / right) where it is smaller. With a box, the crop offset on each axis is
   drawn uniformly among the offsets that keep at least r = sqrt(min_box_fraction) of
   the box's extent on that axis (of the crop size, if the box is longer than the
   crop), so at least min_box_fraction of the box's area (of the largest part a crop can
   hold) stays inside -- up to a pixel where the allowed range holds no whole offset.
   Boxes are shifted and clipped to the window; joints are shifted, and those outside
   the window become missing (v = 0, x = y = 0);
3. flip (if `augment.flip`), with probability 1/2: x -> size - x, a box's x1' = size - x2
   and x2' = size - x1, joints mirrored and permuted with `flip_permutation` (the
   left/right swap, e.g. `jaxseg.data.skeleton.FLIP_PERMUTATION`; required with joints).
Eval (`make_eval_preprocess`): the whole image resized (stretched) to size x size; or,
with `eval_crop` (e.g. 0.875, as for ImageNet), the short side resized to size / eval_crop
and the centre size x size crop taken (boxes clipped to it: a box the crop cuts away
entirely comes out empty; joints outside it become missing).

Outputs: `image` float32 [size, size, 3] in [0, 1], and as present `label` int32 [],
`box` float32 [4], `joints` float32 [K, 3]. Images are resampled bilinearly
(tf.image.resize, half-pixel centres, so coordinate x maps to x * new_width / width).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import tensorflow as tf

from jaxseg.errors import ConfigError


def _get(augment, key: str, default: Any):
  """augment[key] (a dict or ConfigDict), `default` where missing or None."""
  value = augment.get(key, default)
  return default if value is None else value


def flip_and_scale(augment) -> tuple[bool, float, float]:
  """(flip, min_scale, max_scale) of an augment dict / ConfigDict (defaults False, 1, 1),
  checked: a ConfigError unless 0 < min_scale <= max_scale."""
  flip = bool(_get(augment, "flip", False))
  min_scale = float(_get(augment, "min_scale", 1.0))
  max_scale = float(_get(augment, "max_scale", 1.0))
  if not 0 < min_scale <= max_scale:
    raise ConfigError(f"augment min_scale={min_scale}, max_scale={max_scale}; expected "
                      f"0 < min_scale <= max_scale")
  return flip, min_scale, max_scale


def _check_permutation(flip_permutation) -> tuple[int, ...] | None:
  if flip_permutation is None:
    return None
  perm = tuple(int(i) for i in flip_permutation)
  if sorted(perm) != list(range(len(perm))) or any(perm[perm[i]] != i for i in range(len(perm))):
    raise ValueError(f"flip_permutation {perm} is not a left/right swap: expected a "
                     f"permutation of 0..{len(perm) - 1} that is its own inverse")
  return perm


def _image_hw(image):
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  return shape[0], shape[1]


def _map_coordinates(example, sx, sy, dx, dy, width, height):
  """Coordinates x -> x * sx - dx, y -> y * sy - dy in a width x height image: boxes
  clipped to it, joints outside it missing (v = 0, x = y = 0); other keys unchanged."""
  out = dict(example)
  if "box" in example:
    box = tf.cast(example["box"], tf.float32)
    box = box * tf.stack([sx, sy, sx, sy]) - tf.stack([dx, dy, dx, dy])
    out["box"] = tf.clip_by_value(box, 0.0, tf.stack([width, height, width, height]))
  if "joints" in example:
    joints = tf.cast(example["joints"], tf.float32)
    x, y, v = tf.unstack(joints, axis=-1)
    x, y = x * sx - dx, y * sy - dy
    keep = (v > 0) & (x >= 0) & (x <= width) & (y >= 0) & (y <= height)
    out["joints"] = tf.where(keep[:, None], tf.stack([x, y, v], axis=-1), 0.0)
  return out


def flip_left_right(example, flip_permutation: Sequence[int] | None = None):
  """The example mirrored horizontally: image columns reversed, x -> W - x, box x1' =
  W - x2 and x2' = W - x1, joints mirrored (missing ones stay (0, 0, 0)) and permuted:
  joint k after the flip is joint flip_permutation[k] before it."""
  out = dict(example)
  image = example["image"]
  width = tf.cast(tf.shape(image)[1], tf.float32)
  out["image"] = tf.reverse(image, axis=[1])
  if "box" in example:
    x1, y1, x2, y2 = tf.unstack(tf.cast(example["box"], tf.float32))
    out["box"] = tf.stack([width - x2, y1, width - x1, y2])
  if "joints" in example:
    if flip_permutation is None:
      raise ConfigError("flipping joints needs a flip_permutation (the left/right joint "
                        "swap); pass one, or set config.dataset.augment.flip=False")
    joints = tf.cast(example["joints"], tf.float32)
    x, y, v = tf.unstack(joints, axis=-1)
    x = tf.where(v > 0, width - x, 0.0)
    out["joints"] = tf.gather(tf.stack([x, y, v], axis=-1), list(flip_permutation))
  return out


def _crop_offset(u, room, box_range, size: int, ratio: float):
  """A crop offset in 0..room (int32) from u ~ U[0, 1): uniform among the offsets whose
  window [o, o + size] keeps at least ratio * min(box length, size) of the box's
  `box_range` (lo, hi) on this axis (all offsets without a box). The kept length is
  concave in o, so they form the interval [lo + t - size, hi - t] (t the length kept)."""
  room = tf.cast(room, tf.float32)
  lo, hi = tf.constant(0.0), room
  if box_range is not None:
    box_lo, box_hi = box_range
    t = ratio * tf.minimum(box_hi - box_lo, float(size))
    lo_real = tf.maximum(lo, box_lo + t - size)
    hi_real = tf.minimum(hi, box_hi - t)
    lo, hi = tf.math.ceil(lo_real), tf.math.floor(hi_real)
    middle = tf.clip_by_value(tf.round((lo_real + hi_real) / 2), 0.0, room)
    lo, hi = tf.where(lo <= hi, lo, middle), tf.where(lo <= hi, hi, middle)
  return tf.cast(tf.minimum(lo + tf.floor(u * (hi - lo + 1)), hi), tf.int32)


def make_train_preprocess(size: int, augment, flip_permutation: Sequence[int] | None = None):
  """`preprocess(example, seed)` for training (see the module docstring).

  `augment`: a dict / ConfigDict with `flip` (bool), `min_scale`, `max_scale` and
  `min_box_fraction` (default 0.5, in (0, 1]). `seed`: [2] int64, as given by
  `jaxseg.data.pipeline.train_batches`.
  """
  flip, min_scale, max_scale = flip_and_scale(augment)
  min_box_fraction = float(_get(augment, "min_box_fraction", 0.5))
  if not 0 < min_box_fraction <= 1:
    raise ValueError(f"augment min_box_fraction={min_box_fraction}; expected a value in (0, 1]")
  flip_permutation = _check_permutation(flip_permutation)
  ratio = math.sqrt(min_box_fraction)

  @tf.autograph.experimental.do_not_convert
  def preprocess(example, seed):
    if flip and "joints" in example and flip_permutation is None:
      raise ConfigError("config.dataset.augment.flip with joints needs a flip_permutation "
                        "(the left/right joint swap); or set config.dataset.augment.flip=False")
    scale_seed, crop_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 3))
    image = tf.cast(example["image"], tf.float32) / 255.0
    height, width = _image_hw(image)
    scale = tf.random.stateless_uniform([], scale_seed, min_scale, max_scale)
    side = tf.maximum(tf.cast(tf.round(size * scale), tf.int32), 1)
    side_f = tf.cast(side, tf.float32)
    image = tf.image.resize(image, (side, side), method="bilinear")
    out = _map_coordinates(dict(example, image=image), side_f / width, side_f / height,
                           0.0, 0.0, side_f, side_f)
    room = tf.maximum(side - size, 0)
    ux, uy = tf.unstack(tf.random.stateless_uniform([2], crop_seed))
    box = out.get("box")
    ox = _crop_offset(ux, room, None if box is None else (box[0], box[2]), size, ratio)
    oy = _crop_offset(uy, room, None if box is None else (box[1], box[3]), size, ratio)
    pad = tf.maximum(size - side, 0)
    image = tf.pad(image, [[0, pad], [0, pad], [0, 0]])
    image = tf.slice(image, tf.stack([oy, ox, 0]), [size, size, 3])
    out = _map_coordinates(dict(out, image=image), 1.0, 1.0, tf.cast(ox, tf.float32),
                           tf.cast(oy, tf.float32), float(size), float(size))
    if flip:
      do_flip = tf.random.stateless_uniform([], flip_seed) < 0.5
      flipped = flip_left_right(out, flip_permutation)
      out.update({k: tf.where(do_flip, flipped[k], out[k])
                  for k in ("image", "box", "joints") if k in out})
    return _outputs(out)

  return preprocess


def make_eval_preprocess(size: int, eval_crop: float | None = None):
  """`preprocess(example)` for evaluation: stretch to size x size, or (with `eval_crop`
  in (0, 1]) resize the short side to size / eval_crop and take the centre crop."""
  if eval_crop is not None and not 0 < eval_crop <= 1:
    raise ValueError(f"eval_crop={eval_crop}; expected a value in (0, 1] (e.g. 0.875) or None")

  @tf.autograph.experimental.do_not_convert
  def preprocess(example):
    image = tf.cast(example["image"], tf.float32) / 255.0
    height, width = _image_hw(image)
    if eval_crop is None:
      new_h, new_w = size, size
    else:
      scale = size / eval_crop / tf.minimum(height, width)
      new_h = tf.maximum(tf.cast(tf.round(height * scale), tf.int32), size)
      new_w = tf.maximum(tf.cast(tf.round(width * scale), tf.int32), size)
    image = tf.image.resize(image, (new_h, new_w), method="bilinear")
    oy, ox = (new_h - size) // 2, (new_w - size) // 2
    image = tf.slice(image, tf.stack([oy, ox, 0]), [size, size, 3])
    new_h, new_w, oy, ox = (tf.cast(v, tf.float32) for v in (new_h, new_w, oy, ox))
    out = _map_coordinates(dict(example, image=image), new_w / width, new_h / height,
                           ox, oy, float(size), float(size))
    return _outputs(out)

  return preprocess


def _outputs(example):
  out = {"image": example["image"]}
  if "label" in example:
    out["label"] = tf.cast(example["label"], tf.int32)
  for key in ("box", "joints"):
    if key in example:
      out[key] = tf.cast(example[key], tf.float32)
  return out
