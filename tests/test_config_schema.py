"""The config schema: every committed experiment config is valid; each range rule reports
the key, the value and the range in one line."""
import glob
import os

import pytest

from conftest import REPO, load_config
from jaxseg import config_schema
from jaxseg.errors import ConfigError

EXPERIMENTS = sorted(p for p in glob.glob(os.path.join(REPO, "experiments", "*", "*.py"))
                     if "ablations" not in p)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: os.path.relpath(p, REPO))
@pytest.mark.parametrize("variant", [None, "small", "tiny"])
def test_committed_configs_are_valid(path, variant):
  try:
    config = load_config(path, variant)
  except ValueError as e:  # a config without this variant
    pytest.skip(str(e))
  assert config_schema.errors(config) == []


@pytest.mark.parametrize("key,value,message", [
    ("optimizer.lr", -1e-3, r"config.optimizer.lr=-0.001 is out of range; expected a finite number > 0"),
    ("optimizer.lr", float("nan"), r"optimizer.lr=nan"),
    ("num_steps", -1, r"config.num_steps=-1 .* an integer >= 0"),
    ("eval_every", 0, r"config.eval_every=0 .* >= 1"),
    ("checkpoint_every", 0, r"config.checkpoint_every=0"),
    ("model.dropout_rate", 1.0, r"dropout_rate=1.0 .* \[0, 1\)"),
    ("model.dropout_rate", -0.1, r"dropout_rate=-0.1"),
    ("batch_size", 0, r"batch_size=0 .* integer >= 1"),
    ("best_mode", "maximum", r"best_mode='maximum' .* 'max' or 'min'"),
])
def test_out_of_range_values_are_named(tiny_config, key, value, message):
  section, _, field = key.rpartition(".")
  with tiny_config.unlocked():
    (tiny_config[section] if section else tiny_config)[field] = value
  with pytest.raises(ConfigError, match=message):
    config_schema.validate(tiny_config)


def test_rules_across_keys(tiny_config):
  tiny_config.dataset.augment.min_scale = 1.5
  tiny_config.dataset.augment.max_scale = 1.2
  tiny_config.loss.ce_weight = tiny_config.loss.dice_weight = 0.0
  found = config_schema.errors(tiny_config)
  assert any("min_scale=1.5 is larger than config.dataset.augment.max_scale=1.2" in m
             for m in found)
  assert any("every loss term is switched off" in m for m in found)
  with pytest.raises(ConfigError, match=r"\(and 1 more: "):
    config_schema.validate(tiny_config)


def test_keys_of_other_tasks_are_skipped():
  assert config_schema.errors({"task": "x", "seed": 0}) == []


def test_detection_keys(tmp_path):
  config = load_config(os.path.join(REPO, "experiments", "detection", "faster_rcnn_shapes.py"),
                       "tiny")
  assert config_schema.errors(config) == []
  with config.unlocked():
    config.dataset.max_boxes = 0
    config.model.rpn.fg_iou_threshold = 0.2  # below bg 0.3
    for term in ("rpn_objectness", "rpn_box", "roi_classifier", "roi_box"):
      config.loss[f"{term}_weight"] = 0.0
  found = " | ".join(config_schema.errors(config))
  assert "config.dataset.max_boxes=0 is out of range" in found
  assert "config.model.rpn.bg_iou_threshold=0.3 is larger than" in found
  assert "every loss term is switched off" in found
