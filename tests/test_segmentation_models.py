"""Every registered segmentation model, through its experiment config: one train step and
one full evaluation on tiny inputs, sharded over 2 forced CPU devices."""
import functools
import glob
import os

import jax
import numpy as np
import pytest

from jaxseg import models, tasks
from jaxseg.train import loop
from jaxseg.train.optim import make_optimizer
from jaxseg.train.state import create_state
from conftest import REPO, load_config

CONFIGS = sorted(glob.glob(os.path.join(REPO, "experiments", "segmentation", "*_shapes.py")))


def test_every_registered_model_has_an_experiment_config():
  names = {load_config(path).model.name for path in CONFIGS}
  assert names == set(models.SEGMENTATION_MODELS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.basename(p)[:-len("_shapes.py")])
def test_train_step_and_eval_on_two_devices(path, data_dir):
  config = load_config(path)
  config.dataset.data_dir = data_dir
  config.optimizer.warmup_steps = 0  # a non-zero learning rate at step 0
  mesh = loop.make_mesh(jax.devices()[:2])
  task = tasks.get_task(config)
  tx, schedule = make_optimizer(config.optimizer, config.num_steps)
  state = create_state(task.init(jax.random.key(0), task.example_batch(2)), tx, 0)
  before = jax.tree.map(np.asarray, state.params)
  step = jax.jit(functools.partial(loop.train_step, task, tx, schedule))
  batch = next(task.train_data())
  state, metrics = step(state, loop.pipeline.to_global(batch, mesh))
  assert np.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), before, state.params)
  assert sum(jax.tree.leaves(changed)) >= 0.5 * len(jax.tree.leaves(changed))
  summary, picture = loop.evaluate(task, jax.jit(functools.partial(loop.eval_step, task)),
                                   state, mesh)
  assert 0.0 <= summary["pixel_accuracy"] <= 1.0 and "mIoU" in summary
  assert picture.dtype == np.uint8 and picture.ndim == 3


def test_deep_supervision_loss_is_the_mean_over_refinement_steps(data_dir):
  from jaxseg import losses  # pylint: disable=g-import-not-at-top
  config = load_config(os.path.join(REPO, "experiments", "segmentation",
                                    "recurrent_refinement_shapes.py"))
  config.dataset.data_dir = data_dir
  task = tasks.get_task(config)
  batch = next(task.train_data())
  variables = task.init(jax.random.key(0), batch)
  loss, (aux, _) = jax.jit(lambda v: task.loss_fn(v, batch, jax.random.key(1), True))(variables)
  _, state = task.model.apply(variables, batch["image"], train=True,
                              mutable=["batch_stats", "intermediates"])
  steps = state["intermediates"]["step_logits"]
  assert len(steps) == config.model.refinement_steps == 2
  per_step = [config.loss.ce_weight * losses.softmax_cross_entropy(z, batch["label"], 255)
              + config.loss.dice_weight * losses.soft_dice_loss(z, batch["label"], 255)
              for z in steps]
  np.testing.assert_allclose(loss, np.mean(per_step), rtol=1e-5)
  assert abs(per_step[0] - per_step[1]) > 1e-6  # the steps differ, so the mean matters
  np.testing.assert_allclose(aux["cross_entropy"],
                             losses.softmax_cross_entropy(steps[-1], batch["label"], 255),
                             rtol=1e-5)


def test_a_model_option_the_model_cannot_take_is_a_config_error(tiny_config):
  from jaxseg.errors import ConfigError  # pylint: disable=g-import-not-at-top
  tiny_config.model.depth = 6  # 32x32 images cannot be halved 6 times
  with pytest.raises(ConfigError, match=r"config.model \(unet\) at image_size 32: .*divisible"):
    tasks.get_task(tiny_config)
  tiny_config.model.depth = 2
  tiny_config.model.upsample = "pixelshuffle"
  with pytest.raises(ConfigError, match="unknown upsample method 'pixelshuffle'"):
    tasks.get_task(tiny_config)
