"""Segmentation preprocessing: identical geometric augmentation of image and label.

Train: resize so the short side is `size * scale` (scale ~ U[min_scale, max_scale];
bilinear for the image, nearest for the label), pad to at least `crop_size` (default
`size`; label padding = ignore_index), random `crop_size` x `crop_size` crop, random
horizontal flip. A crop smaller than `size` trains a fully convolutional network on
parts of images at their evaluation scale: fewer pixels per step, the same objects.
Eval: resize to `size` x `size` (native-size datasets such as shapes are untouched).
Images come out float32 in [0, 1], labels int32.
"""
from __future__ import annotations

import tensorflow as tf


def _resize_pair(image, label, height, width):
  image = tf.image.resize(image, (height, width), method="bilinear")
  label = tf.image.resize(label[..., None], (height, width), method="nearest")[..., 0]
  return image, label


def make_train_preprocess(size: int, min_scale: float, max_scale: float, flip: bool,
                          ignore_index: int, crop_size: int | None = None):
  crop = crop_size or size

  def preprocess(example, seed):
    scale_seed, crop_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 3))
    image = tf.cast(example["image"], tf.float32) / 255.0
    label = example["label"]
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.random.stateless_uniform([], scale_seed, min_scale, max_scale)
    new_shape = tf.cast(tf.round(shape * (size * scale / tf.reduce_min(shape))), tf.int32)
    image, label = _resize_pair(image, label, new_shape[0], new_shape[1])
    pad_h = tf.maximum(crop - new_shape[0], 0)
    pad_w = tf.maximum(crop - new_shape[1], 0)
    paddings = [[0, pad_h], [0, pad_w]]
    image = tf.pad(image, paddings + [[0, 0]])
    label = tf.pad(label, paddings, constant_values=ignore_index)
    both = tf.concat([image, tf.cast(label[..., None], tf.float32)], axis=-1)
    both = tf.image.stateless_random_crop(both, (crop, crop, 4), crop_seed)
    if flip:
      both = tf.image.stateless_random_flip_left_right(both, flip_seed)
    return {"image": both[..., :3], "label": tf.cast(both[..., 3], tf.int32)}
  return preprocess


def make_eval_preprocess(size: int):
  def preprocess(example):
    image = tf.cast(example["image"], tf.float32) / 255.0
    image, label = _resize_pair(image, example["label"], size, size)
    return {"image": image, "label": label}
  return preprocess
