"""VGG backbone and the lecture's semantic segmentation models: FCN-32s/16s/8s, DeconvNet,
the full-resolution FCN and the sliding-window classifier (tiny widths, CPU)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import ops
from jaxseg.models.backbones.vgg import VGG
from jaxseg.models.segmentation.deconvnet import DeconvNet
from jaxseg.models.segmentation.fcn import FCN, BilinearTransposeConv
from jaxseg.models.segmentation.fullres_fcn import FullResolutionFCN
from jaxseg.models.segmentation.sliding_window import (
  PatchClassifier,
  SlidingWindowClassifier,
)

NUM_CLASSES = 3


def _key(seed):
  # The "rbg" PRNG: on XLA:CPU here a threefry jax.random.normal takes 3-5 s to compile
  # (per shape), rbg 0.2 s; parameter initialisation is dominated by it.
  return jax.random.key(seed, impl="rbg")


def _images(n=2, h=16, w=16, seed=0):
  return jax.random.uniform(_key(seed), (n, h, w, 3))


def _init(model, images):
  return jax.jit(model.init)(_key(0), images)


def _apply(model, variables, images, **kwargs):
  return jax.jit(functools.partial(model.apply, **kwargs))(variables, images)


def _num_params(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _param_shapes(model, images):
  return jax.eval_shape(lambda: model.init(_key(0), images))["params"]


def _check_train_step(model, images):
  """Init, output shape, one SGD step: finite loss, every parameter leaf gets a gradient
  that changes it (or at least most of them), BatchNorm statistics update."""
  variables = _init(model, images)
  labels = jax.random.randint(_key(1), images.shape[:3], 0, NUM_CLASSES)

  @jax.jit
  def step(variables):
    def loss_fn(params):
      logits, state = model.apply({**variables, "params": params}, images, train=True,
                                  mutable=["batch_stats"], rngs={"dropout": _key(2)})
      onehot = jax.nn.one_hot(labels, NUM_CLASSES)
      loss = -(onehot * jax.nn.log_softmax(logits.astype(jnp.float32))).sum(-1).mean()
      return loss, (logits, state)
    (loss, (logits, state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        variables["params"])
    params = jax.tree.map(lambda p, g: p - 0.1 * g, variables["params"], grads)
    return loss, logits, {**variables, **state, "params": params}

  loss, logits, new = step(variables)
  assert logits.shape == images.shape[:3] + (NUM_CLASSES,)
  assert np.isfinite(float(loss))
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), variables["params"],
                         new["params"])
  assert any(jax.tree.leaves(changed))
  if "batch_stats" in variables:
    assert any(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.any(a != b)),
                                            variables["batch_stats"], new["batch_stats"])))
  return variables, new


# ----------------------------------------------------------------------------- VGG


def test_vgg16_conv_param_count():
  shapes = jax.eval_shape(lambda: VGG(norm=False).init(_key(0),
                                                       jnp.zeros((1, 32, 32, 3))))["params"]
  assert len(shapes) == 5
  assert sum(len(stage) for stage in shapes.values()) == 13  # 13 conv layers
  assert _num_params(shapes) == 14_714_688


def test_vgg_feature_dict_and_switches():
  model = VGG((4, 8), (1, 2), record_switches=True)
  out = jax.eval_shape(lambda: model.init_with_output(_key(0),
                                                      jnp.zeros((2, 8, 12, 3)))[0])
  assert out["stage1"].shape == (2, 8, 12, 4) and out["stride_2"].shape == (2, 4, 6, 4)
  assert out["stage2"].shape == (2, 4, 6, 8) and out["stride_4"].shape == (2, 2, 3, 8)
  assert out["switches_4"].shape == (2, 2, 3, 8) and out["switches_4"].dtype == jnp.int32
  with pytest.raises(ValueError, match="divisible by 4"):
    jax.eval_shape(lambda: model.init(_key(0), jnp.zeros((1, 6, 8, 3))))


# ----------------------------------------------------------------------------- FCN

FCN_TINY = {"stage_widths": (4, 4, 8), "stage_convs": (1, 1, 1), "head_width": 8,
            "head_kernel_size": 3}


def test_fcn_variants_have_their_score_layers():
  images = _images()
  expected = {"32s": set(), "16s": {"score_pool2", "upscore_pool2"},
              "8s": {"score_pool2", "upscore_pool2", "score_pool1", "upscore_pool1"}}
  for variant, extra in expected.items():
    params = _param_shapes(FCN(NUM_CLASSES, variant=variant, **FCN_TINY), images)
    assert set(params) == {"backbone", "fc6", "fc7", "score_fr"} | extra, variant
  # The paper's layout (5 stages) names the skips after VGG's pool4 and pool3.
  params = _param_shapes(FCN(NUM_CLASSES, variant="8s", stage_widths=(4,) * 5, head_width=8),
                         _images(1, 32, 32))
  assert {"score_pool4", "score_pool3", "upscore_pool4", "upscore_pool3"} <= set(params)
  assert params["score_pool3"]["kernel"].shape == (1, 1, 4, NUM_CLASSES)
  with pytest.raises(ValueError, match="divisible by 8"):
    _param_shapes(FCN(NUM_CLASSES, **FCN_TINY), _images(1, 12, 12))
  with pytest.raises(ValueError, match="variant"):
    _param_shapes(FCN(NUM_CLASSES, variant="4s", **FCN_TINY), images)


def test_fcn8s_train_step():
  _, new = _check_train_step(FCN(NUM_CLASSES, variant="8s", **FCN_TINY), _images())
  # The zero-initialised skip score layers start learning.
  assert float(jnp.abs(new["params"]["score_pool1"]["kernel"]).max()) > 0


def test_fcn_upscore_is_initialised_to_bilinear_upsampling():
  x = jax.random.normal(_key(3), (1, 6, 6, 2))
  y, _ = BilinearTransposeConv(2).init_with_output(_key(0), x)
  ref = ops.bilinear_upsample(x, 2)
  assert y.shape == ref.shape == (1, 12, 12, 2)
  np.testing.assert_allclose(y[:, 1:-1, 1:-1], ref[:, 1:-1, 1:-1], atol=1e-5)


# ----------------------------------------------------------------------------- DeconvNet

DECONV_TINY = {"stage_widths": (4, 8), "stage_convs": (1, 2), "fc_width": 8}


def test_deconvnet_train_step_and_param_layout():
  variables, _ = _check_train_step(DeconvNet(NUM_CLASSES, **DECONV_TINY), _images())
  params = variables["params"]
  assert {"encoder", "fc6", "fc7", "deconv_fc6", "deconv2_1", "deconv2_2", "deconv1_1",
          "classifier"} == set(params)
  # Mirror image: deconv2_2 narrows 8 -> 4 like the encoder's stage 2 widened 4 -> 8.
  assert params["deconv2_1"]["kernel"].shape == (3, 3, 8, 8)
  assert params["deconv2_2"]["kernel"].shape == (3, 3, 8, 4)
  assert params["deconv1_1"]["kernel"].shape == (3, 3, 4, 4)


def test_deconvnet_unpooling_uses_the_encoder_switches():
  model = DeconvNet(NUM_CLASSES, **DECONV_TINY)
  images = _images(1, 8, 8, seed=4)
  variables = _init(model, images)
  _, state = _apply(model, variables, images, capture_intermediates=True,
                    mutable=["intermediates"])
  inter = state["intermediates"]
  encoder = inter["encoder"]["__call__"][0]
  for stage in (1, 2):
    unpooled = np.asarray(inter[f"unpool{stage}"][0])
    pre_pool = np.asarray(encoder[f"stage{stage}"])
    switches = np.asarray(encoder[f"switches_{2**stage}"])
    n, h, w, c = pre_pool.shape
    at_switch = np.zeros(pre_pool.shape, bool)
    for b, i, j, k in np.ndindex(switches.shape):
      at_switch[b, switches[b, i, j, k] // w, switches[b, i, j, k] % w, k] = True
    # Exactly one switch per 2x2 block and channel, at a maximum of that block ...
    assert at_switch.reshape(n, h // 2, 2, w // 2, 2, c).sum(axis=(2, 4)).max() == 1
    block_max = pre_pool.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
    np.testing.assert_array_equal(pre_pool[at_switch],
                                  np.repeat(np.repeat(block_max, 2, 1), 2, 2)[at_switch])
    # ... and unpooling writes only there.
    assert np.count_nonzero(unpooled) > 0
    assert not np.any(unpooled[~at_switch])


# ----------------------------------------------------------------------------- full resolution


def test_fullres_fcn_keeps_resolution_and_param_count():
  widths = (4, 8, 4)
  model = FullResolutionFCN(NUM_CLASSES, widths=widths)
  images = _images(2, 10, 14)  # no divisibility constraint
  variables, _ = _check_train_step(model, images)
  _, state = _apply(model, variables, images, capture_intermediates=True,
                    mutable=["intermediates"])
  for name in ("conv1", "conv2", "conv3"):
    assert state["intermediates"][name]["__call__"][0].shape[1:3] == (10, 14)
  # 3x3 convs without bias + BatchNorm scale/bias, then the 1x1 classifier with bias.
  by_hand = (27 * 4 + 2 * 4) + (36 * 8 + 2 * 8) + (72 * 4 + 2 * 4) + (4 * 3 + 3)
  assert _num_params(variables["params"]) == by_hand
  plain = _param_shapes(FullResolutionFCN(NUM_CLASSES, widths=widths, norm=False), images)
  assert _num_params(plain) == (27 * 4 + 4) + (36 * 8 + 8) + (72 * 4 + 4) + (4 * 3 + 3)
  # The lecture's example: 512x512 input, 10 classes, every map at 512x512.
  out = jax.eval_shape(lambda: FullResolutionFCN(10).init_with_output(
      _key(0), jnp.zeros((1, 512, 512, 3)))[0])
  assert out.shape == (1, 512, 512, 10)


# ----------------------------------------------------------------------------- sliding window

SLIDING_TINY = {"patch_size": 7, "conv_widths": (4,), "hidden_widths": (8,)}


def test_sliding_window_train_step():
  _check_train_step(SlidingWindowClassifier(NUM_CLASSES, **SLIDING_TINY), _images(2, 8, 8))


def test_sliding_equals_convolutional_inference():
  images = _images(2, 10, 12, seed=5)
  sliding = SlidingWindowClassifier(NUM_CLASSES, **SLIDING_TINY)
  conv = SlidingWindowClassifier(NUM_CLASSES, inference="convolutional", **SLIDING_TINY)
  chunked = SlidingWindowClassifier(NUM_CLASSES, chunk_size=50, **SLIDING_TINY)
  variables = _init(sliding, images)
  # Same parameters whichever way the model is initialised.
  assert (jax.tree.map(lambda a: a.shape, jax.eval_shape(conv.init, _key(0), images))
          == jax.tree.map(jnp.shape, variables))
  # Non-trivial BatchNorm statistics: one training-mode pass (chunk by chunk).
  _, state = _apply(chunked, variables, images, train=True, mutable=["batch_stats"])
  variables = {**variables, **state}
  dense = _apply(sliding, variables, images)
  assert dense.shape == (2, 10, 12, NUM_CLASSES)
  np.testing.assert_allclose(_apply(conv, variables, images), dense, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(_apply(chunked, variables, images), dense, atol=1e-5, rtol=1e-5)
  # Per pixel it really is the patch classifier on the patch around that pixel.
  padded = jnp.pad((images - jnp.asarray(sliding.pixel_mean)) / jnp.asarray(sliding.pixel_std),
                   ((0, 0), (3, 3), (3, 3), (0, 0)), mode="reflect")
  patch_net = PatchClassifier(NUM_CLASSES, **SLIDING_TINY)
  assert patch_net.fc_input_size() == 2 and patch_net.extent() == 6  # 7 -conv-> 5 -pool-> 2
  single = _apply(patch_net, {k: tree["patch_net"] for k, tree in variables.items()},
                           padded[1:2, 4:11, 6:13])[0, 0, 0]
  np.testing.assert_allclose(single, dense[1, 4, 6], atol=1e-5, rtol=1e-5)


def test_sliding_window_rejects_bad_patch_sizes():
  with pytest.raises(ValueError, match="odd"):
    _param_shapes(SlidingWindowClassifier(NUM_CLASSES, patch_size=8), _images(1, 16, 16))
  with pytest.raises(ValueError, match="too small"):
    _param_shapes(SlidingWindowClassifier(NUM_CLASSES, patch_size=5, conv_widths=(4, 4)),
                  _images(1, 16, 16))
