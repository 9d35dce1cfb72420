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
