"""The valid range of every config key that has one, in one table, checked before anything
trains or any file is written (`validate(config)`).

A rule names a dotted key; configs without the key (another task's) skip it. A violated
rule is reported as one line naming the key, the value and the range. Keys whose values
are names (task, model, dataset, optimizer) are checked by the registries that own them.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from jaxseg.errors import ConfigError


def _number(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _int(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def positive_int(x):
  return _int(x) and x >= 1


def non_negative_int(x):
  return _int(x) and x >= 0


def positive(x):
  return _number(x) and x > 0


def non_negative(x):
  return _number(x) and x >= 0


def fraction(x):  # [0, 1)
  return _number(x) and 0 <= x < 1


def unit(x):  # [0, 1]
  return _number(x) and 0 <= x <= 1


def one_of(*values) -> Callable[[Any], bool]:
  return lambda x: x in values


def optional(check):
  return lambda x: x is None or check(x)


# key -> (check, what is expected)
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (non_negative_int, "an integer >= 0"),
    "num_steps": (non_negative_int, "an integer >= 0"),
    "batch_size": (positive_int, "an integer >= 1"),
    "eval_batch_size": (positive_int, "an integer >= 1"),
    "log_every": (positive_int, "an integer >= 1 (steps)"),
    "eval_every": (positive_int, "an integer >= 1 (steps)"),
    "checkpoint_every": (positive_int, "an integer >= 1 (steps)"),
    "keep_checkpoints": (positive_int, "an integer >= 1"),
    "best_mode": (one_of("max", "min"), "'max' or 'min'"),
    "optimizer.lr": (positive, "a finite number > 0"),
    "optimizer.warmup_steps": (non_negative_int, "an integer >= 0"),
    "optimizer.final_lr_fraction": (unit, "a number in [0, 1]"),
    "optimizer.decay_factor": (lambda x: _number(x) and 0 < x <= 1, "a number in (0, 1]"),
    "optimizer.momentum": (fraction, "a number in [0, 1)"),
    "optimizer.b1": (fraction, "a number in [0, 1)"),
    "optimizer.b2": (fraction, "a number in [0, 1)"),
    "optimizer.weight_decay": (non_negative, "a finite number >= 0"),
    "optimizer.grad_clip_norm": (optional(non_negative), "a number >= 0 (0 or None: off)"),
    "model.dropout_rate": (fraction, "a number in [0, 1)"),
    "model.dtype": (one_of("float32", "bfloat16"), "'float32' or 'bfloat16'"),
    "dataset.image_size": (positive_int, "an integer >= 1 (pixels)"),
    "dataset.shuffle_buffer": (positive_int, "an integer >= 1"),
    "dataset.shard_by_process": (lambda x: isinstance(x, bool), "True or False"),
    "dataset.ignore_index": (non_negative_int, "an integer >= 0"),
    "dataset.eval_crop": (optional(lambda x: _number(x) and 0 < x <= 1), "a number in (0, 1]"),
    "dataset.augment.min_scale": (positive, "a number > 0"),
    "dataset.augment.max_scale": (positive, "a number > 0"),
    "dataset.augment.crop_size": (optional(positive_int),
                                  "an integer >= 1 (pixels; None: dataset.image_size)"),
    "dataset.augment.min_box_fraction": (lambda x: _number(x) and 0 < x <= 1,
                                         "a number in (0, 1]"),
    "dataset.generator.num_train": (positive_int, "an integer >= 1"),
    "dataset.generator.num_validation": (positive_int, "an integer >= 1"),
    "dataset.generator.min_objects": (non_negative_int, "an integer >= 0"),
    "dataset.generator.max_objects": (positive_int, "an integer >= 1"),
    "loss.ce_weight": (non_negative, "a finite number >= 0"),
    "loss.dice_weight": (non_negative, "a finite number >= 0"),
    "loss.box_weight": (non_negative, "a finite number >= 0"),
    "loss.label_smoothing": (fraction, "a number in [0, 1)"),
    "loss.smooth_l1_beta": (non_negative, "a finite number >= 0"),
    "uncertainty.mc_samples": (non_negative_int, "an integer >= 0"),
    # detection
    "dataset.max_boxes": (positive_int, "an integer >= 1 (objects per image)"),
    "dataset.resize": (one_of("letterbox", "stretch"), "'letterbox' or 'stretch'"),
    "dataset.max_boxes_overflow": (one_of("error", "keep_largest"), "'error' or 'keep_largest'"),
    "dataset.crowd_max_area": (non_negative, "a number >= 0 (pixels; 0: no crowd)"),
    "dataset.augment.min_visible_fraction": (unit, "a number in [0, 1]"),
    "loss.rpn_objectness_weight": (non_negative, "a finite number >= 0"),
    "loss.rpn_box_weight": (non_negative, "a finite number >= 0"),
    "loss.roi_classifier_weight": (non_negative, "a finite number >= 0"),
    "loss.roi_box_weight": (non_negative, "a finite number >= 0"),
    "loss.roi_mask_weight": (non_negative, "a finite number >= 0"),
    "loss.roi_keypoint_weight": (non_negative, "a finite number >= 0"),
    "model.roi_heads.instance_rois_per_image": (positive_int, "an integer >= 1"),
    "model.mask_head.resolution": (positive_int, "an integer >= 1"),
    "model.keypoint_head.resolution": (positive_int, "an integer >= 1"),
    "model.keypoint_head.max_size": (positive_int, "an integer >= 1 (pixels)"),
    "model.fpn_channels": (positive_int, "an integer >= 1"),
    # dense captioning
    "dataset.max_caption_length": (positive_int, "an integer >= 1 (words)"),
    "vocab.min_count": (positive_int, "an integer >= 1"),
    "vocab.max_size": (optional(positive_int), "an integer >= 1 (None: no limit)"),
    "loss.confidence_weight": (non_negative, "a finite number >= 0"),
    "loss.caption_weight": (non_negative, "a finite number >= 0"),
    "model.sampled_regions": (positive_int, "an integer >= 1"),
    "model.caption_iou_threshold": (optional(unit), "a number in [0, 1] (None: every positive)"),
    "model.final_nms_threshold": (unit, "a number in [0, 1]"),
    "model.detections_per_image": (positive_int, "an integer >= 1"),
    "model.beam_size": (positive_int, "an integer >= 1"),
    **{f"model.{head}.{key}": rule for head in ("rpn", "roi_heads") for key, rule in {
        "batch_size_per_image": (positive_int, "an integer >= 1"),
        "positive_fraction": (lambda x: _number(x) and 0 < x <= 1, "a number in (0, 1]"),
        "fg_iou_threshold": (unit, "a number in [0, 1]"),
        "bg_iou_threshold": (unit, "a number in [0, 1]"),
        "nms_threshold": (unit, "a number in [0, 1]"),
        "score_threshold": (unit, "a number in [0, 1]"),
        "detections_per_image": (positive_int, "an integer >= 1"),
        "pooler_resolution": (positive_int, "an integer >= 1"),
        "sampling_ratio": (non_negative_int, "an integer >= 0 (0: adaptive)"),
        "representation_size": (positive_int, "an integer >= 1"),
        "pre_nms_top_n_train": (positive_int, "an integer >= 1"),
        "pre_nms_top_n_test": (positive_int, "an integer >= 1"),
        "post_nms_top_n_train": (positive_int, "an integer >= 1"),
        "post_nms_top_n_test": (positive_int, "an integer >= 1"),
    }.items()},
}

_MISSING = object()


def _get(config, key: str):
  node = config
  for part in key.split("."):
    try:
      node = node[part]
    except (KeyError, TypeError, AttributeError):
      return _MISSING
  return node


def _at_least(low_key: str, high_key: str):
  def check(config):
    low, high = _get(config, low_key), _get(config, high_key)
    if _MISSING in (low, high) or not (_number(low) and _number(high)) or low <= high:
      return None
    return f"config.{low_key}={low} is larger than config.{high_key}={high}; expected {low_key} <= {high_key}"
  return check


def _some_positive(*keys: str):
  def check(config):
    values = {k: _get(config, k) for k in keys}
    present = {k: v for k, v in values.items() if v is not _MISSING}
    if len(present) < 2 or any(_number(v) and v > 0 for v in present.values()):
      return None
    listed = ", ".join(f"config.{k}={v}" for k, v in present.items())
    return f"{listed}: every loss term is switched off; expected at least one weight > 0"
  return check


# Rules across keys: each returns None or the message.
CROSS_RULES = (
    _at_least("dataset.augment.min_scale", "dataset.augment.max_scale"),
    _at_least("dataset.generator.min_objects", "dataset.generator.max_objects"),
    _some_positive("loss.ce_weight", "loss.dice_weight"),
    _some_positive("loss.rpn_objectness_weight", "loss.rpn_box_weight",
                   "loss.roi_classifier_weight", "loss.roi_box_weight"),
    _at_least("model.rpn.bg_iou_threshold", "model.rpn.fg_iou_threshold"),
    _at_least("model.roi_heads.bg_iou_threshold", "model.roi_heads.fg_iou_threshold"),
)


def errors(config) -> list[str]:
  """Every violated rule of `config`, one message each."""
  found = []
  for key, (check, expected) in RULES.items():
    value = _get(config, key)
    if value is _MISSING:
      continue
    if not check(value):
      found.append(f"config.{key}={value!r} is out of range; expected {expected}")
  for rule in CROSS_RULES:
    message = rule(config)
    if message:
      found.append(message)
  return found


def validate(config) -> None:
  """Raise ConfigError naming the first violated rule (and how many more there are)."""
  found = errors(config)
  if found:
    more = f" (and {len(found) - 1} more: {'; '.join(found[1:])})" if len(found) > 1 else ""
    raise ConfigError(found[0] + more)
