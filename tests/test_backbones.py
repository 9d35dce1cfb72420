"""Classification backbones and BackboneWithHeads: published parameter counts (shapes only),
feature-map strides and widths, one SGD step per architecture at a tiny width, registry
errors, heads and dropout."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxseg.errors import ConfigError
from jaxseg.models.backbones import BACKBONES, get_backbone
from jaxseg.models.backbones.mobilenet import make_divisible
from jaxseg.models.heads import BackboneWithHeads, adaptive_avg_pool
from jaxseg.models.layers import ConvNormAct


def _count(tree):
  return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(tree))


def _shapes(module, x, **kwargs):
  """Variables of `module` as shapes only (nothing compiled or computed)."""
  return jax.eval_shape(lambda a: module.init(jax.random.key(0), a, **kwargs), x)


def _numpy_variables(module, x, seed=0, **kwargs):
  """Variables drawn with NumPy (no jax.random kernels to compile): kernels N(0, 1/fan_in),
  biases and BN means 0, BN scales and variances 1."""
  rng = np.random.default_rng(seed)

  def draw(path, v):
    key = path[-1].key
    if key in ("scale", "var"):
      return np.ones(v.shape, np.float32)
    if key == "kernel":
      fan_in = int(np.prod(v.shape[:-1]))
      return (rng.standard_normal(v.shape) / np.sqrt(fan_in)).astype(np.float32)
    return np.zeros(v.shape, np.float32)

  return jax.tree_util.tree_map_with_path(draw, _shapes(module, x, **kwargs))


# --- published parameter counts and feature maps (full size, shapes only) -----------------

# References: torchvision's model parameter counts (conv/fc weights and biases, BatchNorm
# scale and bias; BN running statistics are buffers, so only "params" are counted), and
# Keras' MobileNet trainable count. GoogLeNet: torchvision's 6,624,904 is the 3x3 "5x5"
# branch (branch5_kernel=3); the paper's 5x5 kernels add 16 * 23,808 weights = 7,005,832
# (the paper's "6.8M" sums its Table 1 in units of 1024).
PUBLISHED = [
    ("vgg16", {"norm": False}, 138_357_544),  # torchvision vgg16
    ("resnet18", None, 11_689_512),
    ("resnet34", None, 21_797_672),
    ("resnet50", None, 25_557_032),
    ("resnet101", None, 44_549_160),
    ("resnet152", None, 60_192_808),
    ("googlenet", {"branch5_kernel": 3}, 6_624_904),  # torchvision googlenet, no aux
    ("googlenet", None, 6_624_904 + 16 * 23_808),  # paper's 5x5 kernels
    ("densenet121", None, 7_978_856),  # torchvision densenet121
    ("mobilenet_v1", None, 4_231_976),  # Keras MobileNet(alpha=1), trainable parameters
    ("mobilenet_v2", None, 3_504_872),  # torchvision mobilenet_v2
]

# Channels of stride_4/8/16/32 at full size, from the papers' tables.
CHANNELS = {
    "vgg16": (128, 256, 512, 512),
    "resnet18": (64, 128, 256, 512),
    "resnet34": (64, 128, 256, 512),
    "resnet50": (256, 512, 1024, 2048),
    "resnet101": (256, 512, 1024, 2048),
    "resnet152": (256, 512, 1024, 2048),
    "googlenet": (192, 480, 832, 1024),  # conv3, inception 3b, 4e, 5b
    "densenet121": (256, 512, 1024, 1024),  # 64 + 6*32; 128 + 12*32; 256 + 24*32; 512 + 16*32
    "mobilenet_v1": (128, 256, 512, 1024),
    "mobilenet_v2": (24, 32, 96, 1280),
}


def test_registry_names():
  assert sorted(BACKBONES) == sorted(CHANNELS)


@pytest.mark.parametrize("name,args,expected", PUBLISHED)
def test_published_parameter_counts_and_feature_strides(name, args, expected):
  """One trace (eval_shape, in training mode) of the full-size model at 224x256 gives both
  the parameter count (VGG's adaptive 7x7 pool makes it size-independent) and the
  backbone's maps."""
  model = BackboneWithHeads(name, {"logits": 1000}, backbone_args=args)
  variables = jax.eval_shape(
      lambda a: model.init(jax.random.key(0), a, train=True,
                           capture_intermediates=lambda m, _: m.name == "backbone"),
      jax.ShapeDtypeStruct((1, 224, 256, 3), jnp.float32))
  count = _count(variables["params"])
  assert abs(count - expected) <= 0.01 * expected, (name, count, expected)
  assert count == expected  # every layout here reproduces its reference exactly
  features, = variables["intermediates"]["backbone"]["__call__"]
  for stride, channels in zip((4, 8, 16, 32), CHANNELS[name]):
    assert features[f"stride_{stride}"].shape == (1, 224 // stride, 256 // stride, channels)


@pytest.mark.parametrize("name", sorted(CHANNELS))
def test_backbone_needs_sizes_divisible_by_32(name):
  with pytest.raises(ValueError, match="divisible by 32.*48x64"):
    _shapes(get_backbone(name), jax.ShapeDtypeStruct((1, 48, 64, 3), jnp.float32))


def test_tiny_densenet_widths():
  """init 8, growth 4, one layer per block: 8+4=12 -> /2 = 6, +4 = 10 -> 5, +4 = 9 -> 4, +4."""
  model = get_backbone("densenet121", growth_rate=4, block_config=(1, 1, 1, 1),
                       num_init_features=8)
  x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  features = jax.eval_shape(lambda v, a: model.apply(v, a, train=False), _shapes(model, x), x)
  assert [features[f"stride_{s}"].shape[-1] for s in (4, 8, 16, 32)] == [12, 10, 9, 8]


# --- one SGD step per architecture at a tiny width --------------------------------------

# Tiny widths and the fewest layers that still reach stride 32: compiles dominate here, and
# BatchNorm doubles them, so only VGG (the cheapest) trains with it, checking that
# BackboneWithHeads passes `train` down and returns updated batch statistics; the others
# train their norm=False variant (convs with bias). The BatchNorm training path of every
# full-size backbone is traced by test_published_parameter_counts_and_feature_strides.
TINY = {
    "vgg16": dict(stage_widths=(8, 8, 8, 8, 8), stage_convs=(1, 1, 1, 1, 1)),
    "resnet18": dict(width=8, stage_sizes=(1, 1, 1, 1), norm=False),
    "resnet50": dict(width=4, stage_sizes=(1, 1, 1, 1), norm=False),
    "googlenet": dict(width=1 / 8, stages=(("3a",), ("4a",), ("5a",)), norm=False),
    "densenet121": dict(growth_rate=4, block_config=(1, 1, 1, 1), num_init_features=8,
                        norm=False),
    "mobilenet_v1": dict(alpha=0.25, layers=((64, 2), (128, 2), (256, 2), (512, 2)),
                         norm=False),
    # the last group's second block has an identity shortcut
    "mobilenet_v2": dict(alpha=0.25, last_channels=32, norm=False,
                         blocks=((1, 16, 1, 2), (6, 24, 1, 2), (6, 32, 1, 2), (6, 64, 2, 2))),
}

FIRST_CONV = {"vgg16": ("stage1", "ConvNormAct_0", "Conv_0"), "resnet18": ("stem_conv", "Conv_0"),
              "resnet50": ("stem_conv", "Conv_0"), "googlenet": ("conv1", "Conv_0"),
              "densenet121": ("stem_conv", "Conv_0"), "mobilenet_v1": ("conv1", "Conv_0"),
              "mobilenet_v2": ("conv1", "Conv_0")}


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_backbone_takes_a_finite_sgd_step(name):
  """64x64 inputs: at 32x32 the stride-32 maps are 1x1, and BatchNorm over a batch of 2
  maps them to +-1 whatever the input, which all but stops the gradient."""
  model = BackboneWithHeads(name, {"logits": 3, "box": 4}, backbone_args=TINY[name],
                            fc_widths=(8,))
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.uniform(0, 1, (2, 64, 64, 3)), jnp.float32)
  labels = jnp.asarray([0, 2])
  boxes = jnp.asarray(rng.uniform(0, 1, (2, 4)), jnp.float32)
  variables = _numpy_variables(model, images)
  batch_stats = variables.get("batch_stats", {})
  tx = optax.sgd(0.1)

  @jax.jit
  def step(params, batch_stats):
    def loss_fn(p):
      out, updates = model.apply({"params": p, "batch_stats": batch_stats}, images,
                                 train=True, mutable=["batch_stats"])
      loss = optax.softmax_cross_entropy_with_integer_labels(out["logits"], labels).mean()
      return loss + jnp.mean((out["box"] - boxes)**2), updates
    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    deltas, _ = tx.update(grads, tx.init(params))
    return loss, optax.apply_updates(params, deltas), updates.get("batch_stats", {})

  loss, params, new_stats = step(variables["params"], batch_stats)
  assert np.isfinite(float(loss))
  assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(params))
  # The first conv's kernel moves (the gradient crosses the whole backbone), and so do at
  # least 90% of all kernels: without BatchNorm a tiny random network can have a dead
  # ReLU channel, and some BN scales and biases have a structurally zero gradient (a
  # per-channel shift or scale that the next BatchNorm removes), so not every leaf moves.
  first_old, first_new = variables["params"]["backbone"], params["backbone"]
  for key in FIRST_CONV[name]:
    first_old, first_new = first_old[key], first_new[key]
  assert first_old["kernel"].shape[2] == 3  # it reads the image
  assert not np.array_equal(first_old["kernel"], first_new["kernel"])
  old = jax.tree_util.tree_leaves_with_path(variables["params"])
  new = jax.tree.leaves(params)
  kernels = {jax.tree_util.keystr(p): not np.array_equal(a, np.asarray(b))
             for (p, a), b in zip(old, new) if p[-1].key == "kernel"}
  assert len(kernels) >= 8 and np.mean(list(kernels.values())) >= 0.9, kernels
  # BatchNorm (VGG here) updated its running statistics from the batch
  assert bool(batch_stats) == (name == "vgg16")
  assert all(not np.array_equal(a, np.asarray(b)) for a, b in
             zip(jax.tree.leaves(batch_stats), jax.tree.leaves(new_stats)))


# --- registry errors ------------------------------------------------------------------------

def test_unknown_backbone_name_lists_the_known_names():
  with pytest.raises(ConfigError, match=r"'resnet19'.*'resnet18'.*'vgg16'"):
    get_backbone("resnet19")


def test_unknown_backbone_argument_is_a_config_error():
  with pytest.raises(ConfigError, match=r"'mobilenet_v2' takes no argument width.*alpha"):
    get_backbone("mobilenet_v2", width=8)
  with pytest.raises(ConfigError, match="unknown backbone 'foo'"):
    _shapes(BackboneWithHeads("foo", {"logits": 2}), jnp.zeros((1, 32, 32, 3)))


def test_registry_passes_fields_and_resnet_depth():
  model = get_backbone("resnet50", width=16)
  assert (model.width, model.block, tuple(model.stage_sizes)) == (16, "bottleneck", (3, 4, 6, 3))


# --- BackboneWithHeads ------------------------------------------------------------------

X = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
TINY_VGG = dict(stage_widths=(4, 4, 4, 4, 6), stage_convs=(1, 1, 1, 1, 1), norm=False)


def test_head_shapes_names_and_dtypes():
  model = BackboneWithHeads("vgg16", ml_collections.ConfigDict({"logits": 5, "box": 4}),
                            backbone_args=ml_collections.ConfigDict(TINY_VGG), fc_widths=(7,),
                            dtype=jnp.bfloat16)
  variables = _shapes(model, X)
  params = variables["params"]
  assert sorted(params) == ["backbone", "box", "fc1", "logits"]
  assert params["fc1"]["kernel"].shape == (6, 7)  # global average pool of 6 channels
  assert params["logits"]["kernel"].shape == (7, 5) and params["box"]["kernel"].shape == (7, 4)
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(params))
  out = jax.eval_shape(lambda v, a: model.apply(v, a), variables, X)
  assert {k: (v.shape, v.dtype) for k, v in out.items()} == {
      "logits": ((2, 5), jnp.float32), "box": ((2, 4), jnp.float32)}
  embedding = jax.eval_shape(lambda v, a: model.apply(v, a, method="embed"), variables, X)
  assert embedding.shape == (2, 7)


def test_default_classifiers():
  """None: VGG's 7x7 pool -> fc 4096 -> fc 4096; others global average pool, no hidden."""
  vgg = _shapes(BackboneWithHeads("vgg16", {"joints": 28}, backbone_args=TINY_VGG), X)
  assert vgg["params"]["fc1"]["kernel"].shape == (7 * 7 * 6, 4096)
  assert vgg["params"]["fc2"]["kernel"].shape == (4096, 4096)
  assert vgg["params"]["joints"]["kernel"].shape == (4096, 28)
  mobile = _shapes(BackboneWithHeads("mobilenet_v1", {"logits": 3},
                                     backbone_args={"alpha": 0.25}), X)["params"]
  assert sorted(mobile) == ["backbone", "logits"]
  assert mobile["logits"]["kernel"].shape == (256, 3)


def test_bad_heads_are_config_errors():
  with pytest.raises(ConfigError, match="at least one head"):
    _shapes(BackboneWithHeads("vgg16", {}, backbone_args=TINY_VGG), X)
  with pytest.raises(ConfigError, match="head 'box' has size 0; expected a positive integer"):
    _shapes(BackboneWithHeads("vgg16", {"box": 0}, backbone_args=TINY_VGG), X)
  with pytest.raises(ConfigError, match="head name 'fc1' is taken"):
    _shapes(BackboneWithHeads("vgg16", {"fc1": 2}, backbone_args=TINY_VGG), X)


def test_dropout_only_when_training():
  model = BackboneWithHeads("vgg16", {"logits": 16}, backbone_args=TINY_VGG, fc_widths=(32,),
                            dropout_rate=0.5)
  images = jnp.asarray(np.random.default_rng(1).uniform(0, 1, (2, 32, 32, 3)), jnp.float32)
  variables = _numpy_variables(model, images)

  def jitted(m, train):
    return jax.jit(lambda rng: m.apply(variables, images, train=train,
                                       rngs={"dropout": rng})["logits"])

  evaluate, train = jitted(model, False), jitted(model, True)
  key1, key2 = jax.random.key(1), jax.random.key(2)
  evaluated = evaluate(key1)
  np.testing.assert_array_equal(evaluated, evaluate(key2))
  trained1, trained2 = train(key1), train(key2)
  assert not np.allclose(trained1, evaluated) and not np.allclose(trained1, trained2)
  np.testing.assert_array_equal(trained1, train(key1))
  # rate 0: training computes the same function as evaluation (no BatchNorm here)
  no_dropout = jitted(model.clone(dropout_rate=0.0), True)
  np.testing.assert_allclose(no_dropout(key1), evaluated, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [1, 3, 7, 14, 9])
def test_adaptive_avg_pool_matches_numpy(size):
  x = np.random.default_rng(size).standard_normal((1, size, size + 2, 2)).astype(np.float32)
  expected = np.zeros((1, 7, 7, 2), np.float32)
  for i in range(7):
    for j in range(7):
      rows = slice(i * size // 7, -(-(i + 1) * size // 7))
      cols = slice(j * (size + 2) // 7, -(-(j + 1) * (size + 2) // 7))
      expected[0, i, j] = x[0, rows, cols].mean(axis=(0, 1))
  np.testing.assert_allclose(adaptive_avg_pool(jnp.asarray(x), 7), expected, rtol=1e-5,
                             atol=1e-6)
  if size == 7:  # 7x7 -> 7x7 is the identity
    np.testing.assert_array_equal(adaptive_avg_pool(jnp.asarray(x[:, :, :7]), 7), x[:, :, :7])


# --- layers used by the MobileNets -----------------------------------------------------

def test_make_divisible_by_hand():
  # 32*0.25 = 8; 16*0.25 = 4 -> at least 8; 96*0.35 = 33.6 -> 32; 1280*1.4 = 1792;
  # 24*0.5 = 12 -> 16 (round half up); 20 -> 24 (16 would be < 90% of 20)
  assert [make_divisible(v) for v in (8, 4, 33.6, 1792, 12, 20)] == [8, 8, 32, 1792, 16, 24]


def test_conv_norm_act_relu6_and_depthwise():
  x = jax.ShapeDtypeStruct((1, 4, 4, 5), jnp.float32)
  depthwise = ConvNormAct(5, 3, conv_type="depthwise", activation="relu6")
  params = _shapes(depthwise, x, train=False)["params"]
  assert params["DepthwiseConv_0"]["kernel"].shape == (3, 3, 1, 5)
  assert _count(params) == 3 * 3 * 5 + 2 * 5  # depthwise kernel + BN scale/bias
  with pytest.raises(ValueError, match="features 6 must equal the input's 5"):
    _shapes(ConvNormAct(6, 3, conv_type="depthwise"), x, train=False)
  # a 1x1 conv with identity kernel, no norm: relu6 clamps to [0, 6]
  conv = ConvNormAct(2, 1, norm=False, activation="relu6")
  inputs = jnp.asarray([[[[-3.0, 2.0], [7.5, 6.0]]]])
  variables = {"params": {"Conv_0": {"kernel": jnp.eye(2)[None, None], "bias": jnp.zeros(2)}}}
  np.testing.assert_array_equal(conv.apply(variables, inputs, train=False),
                                [[[[0.0, 2.0], [6.0, 6.0]]]])
  with pytest.raises(ValueError, match="unknown activation 'gelu'"):
    ConvNormAct(2, 1, norm=False, activation="gelu").apply(variables, inputs, train=False)
