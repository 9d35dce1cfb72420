"""bench/profile_step.py: its HLO classes on a tiny U-Net step (every convolution of the
model found in its three roles) and its trace reading (a traced step's thunks add up to
the busy time of that step, never more than its wall time)."""
import collections
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from conftest import REPO, load_bench

sys.path.insert(0, os.path.join(REPO, "bench"))


def _tiny_unet():
  from jaxseg import tasks
  train_step = load_bench("train_step")
  config = train_step.load_config(os.path.join(REPO, "experiments", "segmentation",
                                               "unet_shapes.py:tiny"))
  task = tasks.get_task(config)
  images = jnp.asarray(np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32))
  labels = jnp.zeros((2, 32, 32), jnp.int32)
  return task, train_step.build_jax_step(task.model, "jaxseg", images, labels)


def test_every_convolution_is_classed_forward_input_or_filter_gradient(tmp_path):
  profile = load_bench("profile_step")
  task, step = _tiny_unet()
  instructions, computations = profile.parse_hlo(step["hlo"])
  classes = collections.Counter(
      profile.op_class(name, instructions, computations).split(" (")[0]
      for name, inst in instructions.items()
      if inst["opcode"] == "convolution" or "convolution" in computations.get(
          inst["calls"], ()))
  params = jax.tree_util.tree_flatten_with_path(
      task.model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)["params"])
  kernels_3x3 = sum(1 for path, leaf in params[0]
                    if "Conv_0" in jax.tree_util.keystr(path) and leaf.shape[:2] == (3, 3))
  assert kernels_3x3 == 10
  # Each 3 x 3 layer: one forward, one filter gradient, one input gradient (not the first
  # layer: the images need none); the 1 x 1 classifier's forward stays a convolution, its
  # gradients become dots.
  assert classes == {"conv forward": kernels_3x3 + 1, "conv filter-grad": kernels_3x3,
                     "conv input-grad": kernels_3x3 - 1}

  trace_dir = str(tmp_path / "trace")
  step["run"](1)
  with jax.profiler.trace(trace_dir):
    wall = step["run"](2)
  times = profile.thunk_times(trace_dir)
  convolutions = [n for n in times if profile.op_class(n, instructions, computations)
                  .startswith("conv ")]
  assert len(convolutions) >= 2 * kernels_3x3
  assert 0 < sum(times.values()) <= sum(wall) * 1.05
