"""Monte-Carlo dropout uncertainty (Gal & Ghahramani, ICML 2016): the sampling mechanism,
the entropy maths, and a tiny end-to-end run that writes entropy maps."""
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

from jaxseg import tasks
from jaxseg.errors import ConfigError
from jaxseg.tasks import segmentation as seg
from jaxseg.train import loop

IMAGES = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3))


class _TinyNet(nn.Module):
  """Conv - BatchNorm - ReLU - Dropout - Conv, as the segmentation models use them (a
  U-Net takes half a minute to compile on a loaded 2-core CPU; the end-to-end test
  below runs one)."""
  dropout_rate: float

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(8, (3, 3))(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Conv(4, (1, 1))(x)


def _model(dropout_rate):
  """The net with BatchNorm running averages of other images, so that train=True (batch
  statistics) and train=False (running averages) clearly differ."""
  model = _TinyNet(dropout_rate)
  variables = model.init({"params": jax.random.key(0)}, IMAGES)
  other = 0.5 * jax.random.uniform(jax.random.key(100), IMAGES.shape)
  _, state = model.apply(variables, other, train=True, mutable=["batch_stats"],
                         rngs={"dropout": jax.random.key(0)})
  return model, {**variables, **state}


def test_entropy_in_nats_uniform_is_log_c_and_one_hot_is_zero():
  for c in (2, 4, 19):
    np.testing.assert_allclose(seg.entropy(jnp.full((3, c), 1.0 / c)), np.log(c), rtol=1e-6)
  np.testing.assert_array_equal(seg.entropy(jnp.eye(5)), 0.0)
  p = jnp.array([0.5, 0.25, 0.25])
  np.testing.assert_allclose(seg.entropy(p), 1.5 * np.log(2), rtol=1e-6)


def test_without_dropout_samples_equal_the_deterministic_model():
  model, variables = _model(0.0)
  logits = model.apply(variables, IMAGES, train=False)
  batch_stat_logits, _ = model.apply(variables, IMAGES, train=True, mutable=["batch_stats"])
  assert np.abs(logits).max() > 1e-2  # not a degenerate (all-zero) network
  assert not np.allclose(logits, batch_stat_logits, atol=1e-3)  # BN mode matters here
  a = seg.apply_with_dropout(model, variables, IMAGES, jax.random.key(1))
  b = seg.apply_with_dropout(model, variables, IMAGES, jax.random.key(2))
  np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(a, logits, rtol=1e-5, atol=1e-5)  # running averages
  mc = jax.jit(lambda v, x: seg.mc_dropout_predict(model, v, x, 3, jax.random.key(0)))(
      variables, IMAGES)
  p = np.asarray(jax.nn.softmax(logits, -1), np.float64)
  hand = -np.sum(p * np.log(p), -1)  # all p > 0 here
  np.testing.assert_allclose(mc["probs"], p, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(mc["entropy"], hand, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(mc["expected_entropy"], hand, rtol=1e-4, atol=1e-6)


def test_with_dropout_samples_differ_and_predictive_entropy_dominates():
  model, variables = _model(0.5)
  deterministic = model.apply(variables, IMAGES, train=False)
  a = seg.apply_with_dropout(model, variables, IMAGES, jax.random.key(1))
  again = seg.apply_with_dropout(model, variables, IMAGES, jax.random.key(1))
  b = seg.apply_with_dropout(model, variables, IMAGES, jax.random.key(2))
  np.testing.assert_array_equal(a, again)  # a key fixes the masks
  assert not np.allclose(a, b) and not np.allclose(a, deterministic)
  rng, n = jax.random.key(7), 4
  mc = seg.mc_dropout_predict(model, variables, IMAGES, n, rng)
  samples = [jax.nn.softmax(seg.apply_with_dropout(model, variables, IMAGES,
                                                   jax.random.fold_in(rng, s)), -1)
             for s in range(n)]
  np.testing.assert_allclose(mc["probs"], np.mean(samples, 0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(mc["expected_entropy"],
                             np.mean([seg.entropy(p) for p in samples], 0), rtol=1e-5)
  np.testing.assert_allclose(mc["probs"].sum(-1), 1.0, rtol=1e-5)
  # Jensen: the entropy of the mean is at least the mean of the entropies.
  gap = np.asarray(mc["entropy"] - mc["expected_entropy"])
  assert gap.min() >= -1e-5 and gap.max() > 1e-3
  assert np.all(np.asarray(mc["entropy"]) <= np.log(4) + 1e-5)


class _CallFlagDropout(nn.Module):
  """Dropout configured at call time, with shared masks along the last axis."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Dense(8)(x)
    x = nn.Dropout(0.5, broadcast_dims=(1,))(x, deterministic=not train)
    return nn.Dropout(0.0)(x, deterministic=not train)


def test_any_dropout_flag_style_is_forced_on_exactly_as_flax_draws_it():
  model = _CallFlagDropout()
  x = jnp.ones((16, 5))
  variables = model.init(jax.random.key(0), x)
  rng = jax.random.key(3)
  forced = seg.apply_with_dropout(model, variables, x, rng)
  flax_train = model.apply(variables, x, train=True, rngs={"dropout": rng})
  np.testing.assert_array_equal(forced, flax_train)  # same masks as flax's own dropout
  assert np.any(np.asarray(forced) == 0)
  np.testing.assert_array_equal(forced == 0, (forced == 0)[:, :1].repeat(8, 1))


def _with_uncertainty(config, mc_samples, dropout_rate):
  with config.unlocked():
    config.uncertainty = ml_collections.ConfigDict(dict(mc_samples=mc_samples))
    config.model.dropout_rate = dropout_rate
  return config


def test_uncertainty_config_default_and_validation(tiny_config):
  with tiny_config.unlocked():
    del tiny_config["uncertainty"]
  assert tasks.get_task(tiny_config).mc_samples == 0  # configs without the block: off
  for bad in (-1, 1.5, True, "4"):
    with pytest.raises(ConfigError, match="config.uncertainty.mc_samples"):
      tasks.get_task(_with_uncertainty(tiny_config, bad, 0.3))


def test_summary_of_entropy_sums():
  config = ml_collections.ConfigDict(dict(
      dataset=dict(name="shapes", ignore_index=255, image_size=32),
      model=dict(name="unet", base_width=4, depth=2, dropout_rate=0.5),
      uncertainty=dict(mc_samples=2)))
  task = tasks.get_task(ml_collections.ConfigDict(dict(task="segmentation", **config)))
  det = np.diag([10, 0, 0, 0])
  mc = np.diag([6, 0, 0, 0])
  mc[0, 1] = 4  # 6 correct, 4 wrong pixels
  summary = task.summarize(dict(confusion=det, mc_confusion=mc, entropy_correct=1.2,
                                entropy_wrong=4.0, mutual_information=0.5))
  assert summary["pixel_accuracy"] == 1.0 and summary["mc_pixel_accuracy"] == 0.6
  np.testing.assert_allclose(summary["mean_entropy_correct"], 0.2)
  np.testing.assert_allclose(summary["mean_entropy_wrong"], 1.0)
  np.testing.assert_allclose(summary["mean_entropy"], 0.52)
  np.testing.assert_allclose(summary["mean_mutual_information"], 0.05)


def test_tiny_run_writes_entropy_maps_and_reports_mean_entropy(tiny_config, tmp_path):
  config = _with_uncertainty(tiny_config, 2, 0.3)
  workdir = str(tmp_path / "run")
  summary = loop.train_and_evaluate(config, workdir)  # all 4 devices: sharded eval
  final = summary["eval"]
  log_c = np.log(4)
  for key in ("mean_entropy", "mean_entropy_correct", "mean_mutual_information"):
    assert 0.0 <= final[key] <= log_c, key
  assert 0.0 <= final["mc_pixel_accuracy"] <= 1.0 and "mc_mIoU" in final
  assert "mIoU" in final and "iou/circle" in final  # deterministic metrics unchanged
  picture = os.path.join(workdir, "pictures", "eval_000006_entropy.png")
  assert summary["entropy_picture"] == picture
  assert summary["picture"] == os.path.join(workdir, "pictures", "eval_000006.png")
  image = np.asarray(Image.open(picture))
  assert image.ndim == 3 and image.shape[1] == 4 * (32 + 2) + 2  # image|truth|MC|entropy
  assert os.path.exists(os.path.join(workdir, "pictures", "eval_000003_entropy.png"))
  records = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  evals = [r for r in records if r["split"] == "eval"]
  assert len(evals) == 2 and all("mean_entropy" in r for r in evals)
  # Fixed sample keys: evaluating the same checkpoint again gives the same numbers.
  again = loop.train_and_evaluate(config, workdir, train=False)["eval"]
  for key in ("mean_entropy", "mean_entropy_wrong", "mc_mIoU", "mIoU"):
    np.testing.assert_equal(again[key], final[key])
