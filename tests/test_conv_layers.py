"""Convolution variants (atrous, depthwise-separable, spatially separable) and every
upsampling method of `layers.Upsample`: parameter counts by hand, shapes, receptive fields."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import ops
from jaxseg.models import layers
from jaxseg.models.layers import ConvBlock, ConvNormAct, TransposeConv2x, Upsample


def _count(tree):
  return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(tree))


def _shapes(module, *args, **kwargs):
  """Variables of `module` as shapes only (no compile, no compute)."""
  return jax.eval_shape(lambda *a: module.init(jax.random.key(0), *a, **kwargs), *args)


def _random_variables(module, *args, seed=0, **kwargs):
  """Variables of `module` filled with NumPy normals: no RNG kernels to compile."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda v: rng.standard_normal(v.shape).astype(np.float32),
                      _shapes(module, *args, **kwargs))


def _normal(seed, shape):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


X32 = jax.ShapeDtypeStruct((1, 8, 8, 32), jnp.float32)


@pytest.mark.parametrize("conv_type,norm,expected_params,expected_stats", [
    # standard: 3*3*32*64 weights; BN scale + bias 2*64 (no conv bias before BN)
    ("standard", True, 3 * 3 * 32 * 64 + 2 * 64, 2 * 64),
    ("standard", False, 3 * 3 * 32 * 64 + 64, 0),
    # depthwise 3*3*32, BN 2*32 after it (MobileNet), pointwise 32*64, BN 2*64
    ("depthwise_separable", True, 3 * 3 * 32 + 2 * 32 + 32 * 64 + 2 * 64, 2 * 32 + 2 * 64),
    ("depthwise_separable", False, 3 * 3 * 32 + 32 + 32 * 64 + 64, 0),
    # 3x1 conv 32->64 (no bias), 1x3 conv 64->64, BN 2*64
    ("spatially_separable", True, 3 * 32 * 64 + 3 * 64 * 64 + 2 * 64, 2 * 64),
    ("spatially_separable", False, 3 * 32 * 64 + 3 * 64 * 64 + 64, 0),
])
def test_conv_variant_parameter_counts(conv_type, norm, expected_params, expected_stats):
  variables = _shapes(ConvNormAct(64, 3, norm=norm, conv_type=conv_type), X32, train=False)
  assert _count(variables["params"]) == expected_params
  assert _count(variables.get("batch_stats", {})) == expected_stats


def test_depthwise_separable_is_cheaper_than_standard():
  standard = _count(_shapes(ConvNormAct(64, norm=False), X32, train=False)["params"])
  separable = _count(_shapes(ConvNormAct(64, norm=False, conv_type="depthwise_separable"),
                             X32, train=False)["params"])
  assert separable < standard / 7  # 2432 vs 18496 (1/F_out + 1/k^2 of the weights)


@pytest.mark.parametrize("conv_type", layers.CONV_TYPES)
@pytest.mark.parametrize("strides,dilation", [(1, 1), (2, 1), (1, 2)])
def test_conv_variant_output_shapes(conv_type, strides, dilation):
  x = jax.ShapeDtypeStruct((2, 12, 10, 3), jnp.float32)
  module = ConvNormAct(5, strides=strides, dilation=dilation, conv_type=conv_type)
  variables = _shapes(module, x, train=False)
  y = jax.eval_shape(lambda v, a: module.apply(v, a, train=False), variables, x)
  assert y.shape == (2, 12 // strides, 10 // strides, 5)


def test_conv_block_passes_conv_type_and_dilation():
  x = jnp.ones((1, 15, 15, 2))
  block = ConvBlock(4, conv_type="depthwise_separable", dilation=3)
  params = _shapes(block, x, train=False)["params"]
  assert params["ConvNormAct_0"]["DepthwiseSeparableConv_0"]["depthwise"]["kernel"].shape == (
      3, 3, 1, 2)
  # the dilation reaches the conv: the receptive field of two dilated 3x3 convs is 13x13
  assert _receptive_field(block, x) == (13, 13)


def _input_gradient_support(module, x):
  """Where d out[centre] / d x != 0, with positive weights (so that no ReLU is inactive and
  no weights cancel) and a positive input."""
  rng = np.random.default_rng(1)
  variables = jax.tree_util.tree_map_with_path(
      lambda path, v: (np.ones(v.shape, np.float32) if path[-1].key == "var" else
                       np.zeros(v.shape, np.float32) if path[-1].key == "mean" else
                       rng.uniform(0.1, 1.0, v.shape).astype(np.float32)),
      _shapes(module, x, train=False))
  h, w = x.shape[1] // 2, x.shape[2] // 2
  grad = jax.jit(jax.grad(lambda v: module.apply(variables, v, train=False)[0, h, w].sum()))(x)
  return np.abs(np.asarray(grad[0]).sum(-1)) > 0


def _receptive_field(module, x):
  support = np.argwhere(_input_gradient_support(module, x))
  return tuple(int(v) for v in support.max(0) - support.min(0) + 1)


@pytest.mark.parametrize("conv_type", layers.CONV_TYPES)
@pytest.mark.parametrize("dilation", [1, 2, 3])
def test_dilation_gives_the_expected_receptive_field(conv_type, dilation):
  """One dilated 3x3 conv sees a (2d+1) x (2d+1) window, but only its 9 dilated taps."""
  nonzero = _input_gradient_support(
      ConvNormAct(3, norm=False, conv_type=conv_type, dilation=dilation), jnp.ones((1, 11, 11, 2)))
  assert nonzero.sum() == 9
  taps = np.zeros((11, 11), bool)
  taps[5 - dilation:6 + dilation:dilation, 5 - dilation:6 + dilation:dilation] = True
  np.testing.assert_array_equal(nonzero, taps)


def test_unknown_conv_type_names_the_allowed_values():
  with pytest.raises(ValueError, match=r"unknown conv_type 'octave'.*standard.*"
                                       r"depthwise_separable.*spatially_separable"):
    _shapes(ConvNormAct(4, conv_type="octave"), X32, train=False)


# --- Upsample -------------------------------------------------------------------------------

ALL_METHODS = layers.UPSAMPLE_METHODS + ("resize",)
LEARNABLE = ("transpose", "resize_conv", "resize", "subpixel")


def _reference_upsample(method, variables, x, switches):
  """What each Upsample method computes, written with the ops (factor 2, defaults)."""
  params = variables.get("params", {})
  if method in LEARNABLE:
    kernel, bias = params["kernel"], params["bias"]
    if method == "transpose":
      return ops.conv_transpose(x, kernel, 2) + bias
    if method == "subpixel":
      return ops.subpixel_conv(x, kernel, 2) + bias
    return ops.resize_conv(x, kernel, 2, "bilinear") + bias
  if "project" in params:  # 1x1 projection before the fixed upsampling
    x = x @ params["project"]["kernel"] + params["project"]["bias"]
  if method == "max_unpool":
    return ops.max_unpool(x, switches, (2 * x.shape[1], 2 * x.shape[2]))
  return {"nearest": ops.nearest_upsample, "bed_of_nails": ops.bed_of_nails_upsample,
          "bilinear": ops.bilinear_upsample}[method](x, 2)


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("cin", [4, 6])  # equal to / different from features
def test_every_upsample_method_doubles_and_has_features_channels(method, cin):
  x = _normal(0, (2, 3, 5, cin))
  switches = None
  if method == "max_unpool":
    _, switches = ops.max_pool_with_argmax(_normal(1, (2, 6, 10, 4)), 2)
  module = Upsample(4, method)
  variables = _random_variables(module, x, switches=switches)
  assert bool(variables) == (method in LEARNABLE or cin != 4)  # project only if needed
  y = jax.jit(lambda v, a: module.apply(v, a, switches=switches))(variables, x)
  assert y.shape == (2, 6, 10, 4)
  np.testing.assert_allclose(y, _reference_upsample(method, variables, x, switches),
                             rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method,kernel_size,factor", [
    ("transpose", 4, 2), ("transpose", 3, 2), ("transpose", 1, 2), ("transpose", 6, 3),
    ("transpose", 3, 3), ("resize_conv", 5, 2), ("subpixel", 1, 3), ("nearest", None, 3),
    ("bilinear", None, 4), ("bed_of_nails", None, 3)])
def test_upsample_factor_and_kernel_size(method, kernel_size, factor):
  x = jax.ShapeDtypeStruct((1, 3, 4, 2), jnp.float32)
  y = jax.eval_shape(lambda a: Upsample(5, method, factor, kernel_size).init_with_output(
      jax.random.key(0), a)[0], x)
  assert y.shape == (1, 3 * factor, 4 * factor, 5)


def test_overlapping_transpose_upsample_is_the_padded_conv_transpose():
  x = _normal(1, (1, 3, 3, 2))
  module = Upsample(3, "transpose", kernel_size=4)  # classic 2x deconvolution, padding 1
  variables = _random_variables(module, x)
  kernel, bias = variables["params"]["kernel"], variables["params"]["bias"]
  assert kernel.shape == (4, 4, 2, 3)
  np.testing.assert_allclose(module.apply(variables, x),
                             ops.conv_transpose(x, kernel, 2, 1) + bias, rtol=1e-5, atol=1e-5)


def test_default_transpose_upsample_equals_transpose_conv_2x():
  x = _normal(2, (2, 3, 4, 3))
  variables = _random_variables(Upsample(5), x)
  assert variables["params"]["kernel"].shape == (2, 2, 3, 5)
  np.testing.assert_allclose(Upsample(5).apply(variables, x),
                             TransposeConv2x(5).apply(variables, x), rtol=1e-5, atol=1e-5)


def test_learnable_upsample_parameters():
  x = jnp.ones((1, 3, 3, 6))
  sub = _shapes(Upsample(4, "subpixel"), x)["params"]
  assert sub["kernel"].shape == (3, 3, 6, 2 * 2 * 4) and sub["bias"].shape == (4,)
  resize = _shapes(Upsample(4, "resize_conv"), x)["params"]
  assert resize["kernel"].shape == (3, 3, 6, 4) and resize["bias"].shape == (4,)
  assert jax.tree.map(lambda v: v.shape, _shapes(Upsample(4, "resize"), x)) == jax.tree.map(
      lambda v: v.shape, _shapes(Upsample(4, "resize_conv"), x))
  # initialisation: lecun_normal kernel, zero bias
  variables = jax.jit(Upsample(4, "transpose", kernel_size=4).init)(jax.random.key(0), x)["params"]
  assert float(jnp.abs(variables["bias"]).max()) == 0.0
  assert 0.5 < float(variables["kernel"].std() * np.sqrt(4 * 4 * 6)) < 1.5


@pytest.mark.parametrize("cin", [3, 5])
def test_max_unpool_upsample_uses_the_switches(cin):
  features = _normal(3, (2, 6, 4, 3))
  pooled, switches = ops.max_pool_with_argmax(features, 2)
  x = pooled if cin == 3 else _normal(4, (2, 3, 2, cin))
  module = Upsample(3, "max_unpool")
  variables = _random_variables(module, x, switches=switches)
  y = np.asarray(module.apply(variables, x, switches=switches))
  if cin == 3:  # no projection: the maxima go back exactly where they were
    assert not variables
    kept = y != 0
    np.testing.assert_array_equal(y[kept], np.asarray(features)[kept])
    assert kept.sum() == pooled.size
  # non-zero entries only at the switches: one per 2x2 block and channel
  at_switch = np.asarray(ops.max_unpool(jnp.ones_like(pooled), switches, (6, 4))) != 0
  assert not np.any((y != 0) & ~at_switch)
  assert (y != 0).sum() == pooled.size


@pytest.mark.parametrize("switches,pattern", [
    (None, "needs switches of shape \\(2, 3, 2, 4\\).*got None"),
    (jnp.zeros((2, 3, 2, 3), jnp.int32), "got \\(2, 3, 2, 3\\)")])
def test_max_unpool_upsample_needs_matching_switches(switches, pattern):
  with pytest.raises(ValueError, match=pattern):
    _shapes(Upsample(4, "max_unpool"), jnp.ones((2, 3, 2, 5)), switches=switches)


def test_unknown_upsample_method():
  with pytest.raises(ValueError, match="unknown upsample method 'magic'"):
    _shapes(Upsample(4, "magic"), jnp.ones((1, 2, 2, 4)))
