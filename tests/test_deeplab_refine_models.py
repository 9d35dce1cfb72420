"""ResNet backbone, DeepLabv3+, Hypercolumns and RecurrentRefinement: shapes, parameter
counts (via jax.eval_shape, nothing compiled), one finite gradient step each.

XLA:CPU compile time dominates here, so shapes and counts use `jax.eval_shape`, and
variables for the few executed models are filled from numpy (`_numpy_init`, shapes from an
abstract `model.init`) instead of compiling each model's initializers (several seconds each).
"""
import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxseg.models.backbones.resnet import RESNET_CONFIGS, ResNet
from jaxseg.models.segmentation.deeplab import DeepLabV3Plus
from jaxseg.models.segmentation.hypercolumns import Hypercolumns
from jaxseg.models.segmentation.refinement import RecurrentRefinement

NUM_CLASSES = 3


def _abstract_init(model, shape):
  return jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                        jnp.zeros(shape, jnp.float32))


def _num_params(variables):
  return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(variables["params"]))


def _param_paths(variables):
  flat = flax.traverse_util.flatten_dict(variables["params"])
  return {"/".join(k) for k in flat}


def _numpy_init(model, shape, seed=0):
  """Concrete variables of `model` for inputs of `shape` without compiling `model.init`:
  conv kernels ~ N(0, 1/fan_in), BN scale/var 1, biases/means 0."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name in ("scale", "var"):
      return jnp.ones(leaf.shape, leaf.dtype)
    if name in ("bias", "mean"):
      return jnp.zeros(leaf.shape, leaf.dtype)
    fan_in = int(np.prod(leaf.shape[:-1]))
    return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, _abstract_init(model, shape))


def _images(shape=(2, 32, 32, 3), seed=0):
  return jax.random.uniform(jax.random.key(seed), shape)


def _check_train_step(model, images):
  """Init, one SGD step on pixel cross-entropy with train=True: finite loss and grads."""
  variables = _numpy_init(model, images.shape)
  labels = jax.random.randint(jax.random.key(1), images.shape[:3], 0, NUM_CLASSES)

  @jax.jit
  def step(params, batch_stats):
    def loss_fn(p):
      logits, state = model.apply({"params": p, "batch_stats": batch_stats}, images,
                                  train=True, mutable=["batch_stats"],
                                  rngs={"dropout": jax.random.key(2)})
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, (logits, state)
    (loss, (logits, state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    new_params = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads)
    return loss, logits, grads, new_params, state

  loss, logits, grads, new_params, state = step(variables["params"],
                                                variables["batch_stats"])
  assert logits.shape == images.shape[:3] + (NUM_CLASSES,)
  assert np.isfinite(float(loss))
  assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))
  assert all(np.all(np.isfinite(p)) for p in jax.tree_util.tree_leaves(new_params))
  assert "batch_stats" in state
  return variables


# ---------------------------------------------------------------------------- ResNet

@pytest.mark.parametrize("depth, expected", [(18, 11_176_512), (50, 23_508_032)])
def test_resnet_published_parameter_counts(depth, expected):
  # torchvision: 11,689,512 / 25,557,032 including the fc (513,000 / 2,049,000); params
  # only (conv kernels + BN scale/bias), not the BN running statistics.
  variables = _abstract_init(ResNet(**RESNET_CONFIGS[depth]), (1, 224, 224, 3))
  assert _num_params(variables) == expected
  feats = jax.eval_shape(lambda v, x: ResNet(**RESNET_CONFIGS[depth]).apply(v, x),
                         variables, jnp.zeros((1, 224, 224, 3)))
  assert feats["stride_32"].shape == (1, 7, 7, 512 if depth == 18 else 2048)
  assert feats["stride_4"].shape == (1, 56, 56, 64 if depth == 18 else 256)
  assert feats["stride_2"].shape == (1, 112, 112, 64)


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
@pytest.mark.parametrize("stem", ["imagenet", "small"])
def test_resnet_output_stride_and_dilation_keep_parameters(block, stem):
  counts = {}
  for os_ in (8, 16, 32):
    model = ResNet(stage_sizes=(1, 1, 2, 2), block=block, width=8, stem=stem,
                   output_stride=os_, multi_grid=(1, 2))
    variables = _abstract_init(model, (2, 64, 64, 3))
    feats = jax.eval_shape(lambda v, x, m=model: m.apply(v, x), variables,
                           jnp.zeros((2, 64, 64, 3)))
    assert sorted(feats) == ["stride_16", "stride_2", "stride_32", "stride_4", "stride_8"]
    for nominal in (4, 8, 16, 32):  # keys nominal, actual stride capped at output_stride
      side = 64 // min(nominal, os_)
      assert feats[f"stride_{nominal}"].shape[1:3] == (side, side)
    assert feats["stride_32"].shape[-1] == model.out_features
    counts[os_] = _num_params(variables)
  assert counts[8] == counts[16] == counts[32]


def test_resnet_rejects_bad_settings():
  with pytest.raises(ValueError, match="divisible by 16"):
    _abstract_init(ResNet(width=8, output_stride=16), (1, 40, 40, 3))
  with pytest.raises(ValueError, match="output_stride"):
    _abstract_init(ResNet(width=8, output_stride=4), (1, 32, 32, 3))
  with pytest.raises(ValueError, match="block"):
    _abstract_init(ResNet(width=8, block="dense"), (1, 32, 32, 3))


def test_resnet_frozen_bn_does_not_update_statistics():
  model = ResNet(stage_sizes=(1, 1, 1, 1), width=4, frozen_bn=True)
  x = _images((2, 32, 32, 3))
  variables = _numpy_init(model, x.shape)
  apply = jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))
  _, state = apply(variables, x)
  jax.tree_util.tree_map(np.testing.assert_array_equal, state["batch_stats"],
                         variables["batch_stats"])


# ---------------------------------------------------------------------------- DeepLabv3+

def test_deeplab_train_step_and_shapes():
  model = DeepLabV3Plus(NUM_CLASSES, width=8, aspp_features=16, low_level_features=8,
                        decoder_features=16, output_stride=16, dropout_rate=0.1)
  _check_train_step(model, _images())


def test_deeplab_aspp_branches_rates_and_ablation():
  small = dict(width=8, aspp_features=16, low_level_features=8, decoder_features=16)
  shape = (2, 64, 64, 3)
  counts = {}
  for os_ in (8, 16):
    model = DeepLabV3Plus(NUM_CLASSES, output_stride=os_, **small)
    variables = _abstract_init(model, shape)
    paths = _param_paths(variables)
    assert any(p.startswith("aspp/image_pooling/") for p in paths)
    assert sum(p.startswith("aspp/atrous") and p.endswith("kernel") for p in paths) >= 3
    out = jax.eval_shape(lambda v, x, m=model: m.apply(v, x), variables, jnp.zeros(shape))
    assert out.shape == shape[:3] + (NUM_CLASSES,)
    counts[os_] = _num_params(variables)
  assert DeepLabV3Plus(NUM_CLASSES, output_stride=16).rates() == (6, 12, 18)
  assert DeepLabV3Plus(NUM_CLASSES, output_stride=8).rates() == (12, 24, 36)
  assert counts[8] == counts[16]
  # The paper's depthwise-separable ASPP and decoder: same shapes, fewer parameters.
  sep = DeepLabV3Plus(NUM_CLASSES, conv_type="depthwise_separable", **small)
  sep_vars = _abstract_init(sep, shape)
  assert any("depthwise" in p for p in _param_paths(sep_vars))
  assert _num_params(sep_vars) < counts[16]
  out = jax.eval_shape(lambda v, x: sep.apply(v, x), sep_vars, jnp.zeros(shape))
  assert out.shape == shape[:3] + (NUM_CLASSES,)
  # aspp=False: equal-cost rate-1 baseline without image pooling.
  plain = _abstract_init(DeepLabV3Plus(NUM_CLASSES, aspp=False, **small), shape)
  assert not any("image_pooling" in p for p in _param_paths(plain))
  assert _num_params(plain) == counts[16]
  with pytest.raises(ValueError, match="divisible by 16"):
    _abstract_init(DeepLabV3Plus(NUM_CLASSES, **small), (1, 40, 40, 3))


# ---------------------------------------------------------------------------- Hypercolumns

def test_hypercolumns_train_step():
  model = Hypercolumns(NUM_CLASSES, widths=(8, 16, 16), hypercolumn_features=8,
                       classifier_features=16, dropout_rate=0.1)
  _check_train_step(model, _images())


@pytest.mark.parametrize("levels", [None, (0, 2), (1,)])
def test_hypercolumns_uses_requested_levels(levels):
  model = Hypercolumns(NUM_CLASSES, widths=(8, 8, 8, 8), levels=levels,
                       hypercolumn_features=4)
  variables = _abstract_init(model, (1, 32, 32, 3))
  used = {int(p.split("/")[0][len("reduce_level"):]) for p in _param_paths(variables)
          if p.startswith("reduce_level")}
  expected = set(range(4) if levels is None else levels)
  assert used == expected
  assert variables["params"]["classifier_hidden"]["Conv_0"]["kernel"].shape[2] == (
      4 * len(expected))
  out = jax.eval_shape(lambda v, x: model.apply(v, x), variables, jnp.zeros((1, 32, 32, 3)))
  assert out.shape == (1, 32, 32, NUM_CLASSES)
  with pytest.raises(ValueError, match="levels"):
    _abstract_init(Hypercolumns(NUM_CLASSES, widths=(8, 8), levels=(0, 2)), (1, 32, 32, 3))


# ---------------------------------------------------------------------------- refinement

def test_refinement_shares_weights_across_steps():
  shape = (2, 32, 32, 3)
  small = dict(features=8, num_convs=2, scales=(1.0, 0.5, 0.25))
  counts = {steps: _num_params(_abstract_init(
      RecurrentRefinement(NUM_CLASSES, refinement_steps=steps, **small), shape))
            for steps in (1, 3)}
  assert counts[1] == counts[3]
  one = RecurrentRefinement(NUM_CLASSES, refinement_steps=1, **small)
  two = RecurrentRefinement(NUM_CLASSES, refinement_steps=2, deep_supervision=True, **small)
  x = _images(shape)
  variables = _numpy_init(one, shape)
  out1 = jax.jit(one.apply)(variables, x)
  out2, state = jax.jit(functools.partial(two.apply, mutable=["intermediates"]))(variables, x)
  assert out1.shape == out2.shape == shape[:3] + (NUM_CLASSES,)
  assert not np.allclose(out1, out2)
  steps = state["intermediates"]["step_logits"]
  assert len(steps) == 2
  np.testing.assert_allclose(steps[0], out1, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(steps[1], out2)


def test_refinement_train_step():
  model = RecurrentRefinement(NUM_CLASSES, refinement_steps=2, scales=(1.0, 0.5),
                              features=8, num_convs=2, dropout_rate=0.1)
  _check_train_step(model, _images())


def test_refinement_combine_sum_and_concat():
  for combine, width in (("concat", 2 * 8), ("sum", 8)):
    model = RecurrentRefinement(NUM_CLASSES, scales=(1.0, 0.5), combine=combine, features=8)
    variables = _abstract_init(model, (1, 32, 32, 3))
    assert variables["params"]["step"]["classifier"]["kernel"].shape == (
        1, 1, width, NUM_CLASSES)


def test_refinement_rejects_fractional_scale():
  with pytest.raises(ValueError, match="scale"):
    _abstract_init(RecurrentRefinement(NUM_CLASSES, scales=(1.0, 0.3)), (1, 32, 32, 3))


@pytest.mark.parametrize("make", [
    lambda: DeepLabV3Plus(NUM_CLASSES, block="bottleneck", stem="small", width=4,
                          aspp_features=8, low_level_features=4, decoder_features=8,
                          output_stride=8, multi_grid=(1, 2, 4), dtype=jnp.bfloat16),
    lambda: Hypercolumns(NUM_CLASSES, widths=(4, 8), dtype=jnp.bfloat16),
    lambda: RecurrentRefinement(NUM_CLASSES, scales=(1.0, 0.5, 0.25), features=4,
                                dtype=jnp.bfloat16),
], ids=["deeplab", "hypercolumns", "refinement"])
def test_bfloat16_compute_float32_params(make):
  model = make()
  variables = _abstract_init(model, (1, 32, 32, 3))
  assert {p.dtype for p in jax.tree_util.tree_leaves(variables["params"])} == {jnp.dtype(jnp.float32)}
  out = jax.eval_shape(lambda v, x: model.apply(v, x), variables, jnp.zeros((1, 32, 32, 3)))
  assert out.shape == (1, 32, 32, NUM_CLASSES) and out.dtype == jnp.bfloat16
