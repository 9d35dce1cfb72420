"""HyperQuest's CNN and the changes of its width and depth that keep what it has learned.

`QuestNet(width, depth, dropout)`: a stem (3x3 conv to `width` channels, max-pool by
`stem_pool`, BatchNorm, ReLU: pooling first makes the full-resolution part 16x cheaper on
CPU, measured 14.5 -> 8.1 CPU seconds per epoch at width 64 / depth 4), then `depth` layers of 3x3 conv (`width` channels), BatchNorm
(Ioffe & Szegedy 2015) and ReLU with a 2x2 max-pool after layer depth/2 - 1, global
average pooling, dropout and a linear classifier (zero-initialized). The transformations
below act on the variables (params and BatchNorm statistics) and are exact for the
network in evaluation mode (BatchNorm with its running statistics), which is what the
game's accuracies measure.

Up (Chen, Goodfellow & Shlens, "Net2Net", ICLR 2016):
- `widen` (Net2WiderNet): new unit j copies unit g(j) (its kernel, BatchNorm scale, bias,
  mean and variance; g(j) = j for the old units, random old units for the new ones); the
  next layer's weights from the copies of a unit are divided by its number of copies.
  The paper's symmetry-breaking noise is added so that it sums to zero over the copies
  of each unit: the function is unchanged (to float rounding), yet the copies get
  different gradients.
- `deepen` (Net2DeeperNet): after each of the `depth` layers an identity layer is
  inserted: 3x3 conv with the identity matrix at its centre tap, BatchNorm with scale 1,
  bias 0, mean 0 and variance 1 - eps (so it divides by exactly 1); ReLU(x) = x for the
  non-negative inputs, and the pool keeps its place (after new layer 2*depth/2 - 1).
Down (documented, not function-preserving; the game shows the accuracy right after):
- `narrow`: every layer keeps the `width` units with the largest |BatchNorm scale| (the
  channel-importance measure of network slimming, Liu et al., ICCV 2017), in their old
  order; the next layer keeps the matching inputs.
- `shallow`: keeps layers 0, 2, 4, ... (drops every second layer: exactly the layers
  `deepen` inserted when the depth came from Up); the pool moves with the structure.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

MEAN, STD = 0.5, 0.25  # input normalization of [0, 1] images


def max_pool(x, k: int):
  """k x k max-pool, stride k, by reshape + max (faster than select-and-scatter on CPU)."""
  if k == 1:
    return x
  n, h, w, c = x.shape
  return x.reshape(n, h // k, k, w // k, k, c).max(axis=(2, 4))


def pool_after(depth: int) -> int:
  """Index of the body layer followed by the 2x2 max-pool."""
  return depth // 2 - 1


BN_EPSILON = 1e-5


class QuestNet(nn.Module):
  """See module doc. Input: NHWC float images in [0, 1]; output: logits."""
  width: int
  depth: int
  dropout: float
  num_classes: int = 10
  stem_pool: int = 4

  @nn.compact
  def __call__(self, images, train: bool = False):
    he = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")

    def layer(x, conv, bn, pool=1):
      x = nn.Conv(self.width, (3, 3), use_bias=False, kernel_init=he, name=conv)(x)
      x = max_pool(x, pool)  # before BatchNorm: normalizes 1/pool^2 of the pixels
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=BN_EPSILON,
                       name=bn)(x)
      return nn.relu(x)

    x = layer((images - MEAN) / STD, "stem", "stem_bn", self.stem_pool)
    for i in range(self.depth):
      x = layer(x, f"conv_{i}", f"bn_{i}")
      if i == pool_after(self.depth):
        x = max_pool(x, 2)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, name="head")(x)


def _layers(depth: int) -> list[tuple[str, str]]:
  """(conv, BatchNorm) names of the hidden layers, input to output."""
  return [("stem", "stem_bn")] + [(f"conv_{i}", f"bn_{i}") for i in range(depth)]


def _depth(variables) -> int:
  return sum(1 for k in variables["params"] if k.startswith("conv_"))


def _copy(variables):
  return jax.tree.map(lambda a: np.array(a, np.float32), dict(variables))


def _units(variables, conv: str, bn: str, index):
  """Keep / copy the output units `index` of one layer (kernel and BatchNorm)."""
  p, s = variables["params"], variables["batch_stats"]
  p[conv]["kernel"] = p[conv]["kernel"][..., index]
  p[bn] = {k: v[index] for k, v in p[bn].items()}
  s[bn] = {k: v[index] for k, v in s[bn].items()}


def _inputs(variables) -> list[tuple[dict, str]]:
  """(params entry, kernel key) of each layer fed by a hidden layer, in order."""
  p = variables["params"]
  return [(p[conv], "kernel") for conv, _ in _layers(_depth(variables))[1:]] + [
      (p["head"], "kernel")]


def widen(variables, width: int, rng: np.random.Generator, noise: float = 0.1):
  """Net2WiderNet: the same function with `width` >= the current width units per layer."""
  v = _copy(variables)
  old = v["params"]["stem"]["kernel"].shape[-1]
  if width < old:
    raise ValueError(f"widen: width {width} < current {old}")
  for (conv, bn), (consumer, key) in zip(_layers(_depth(v)), _inputs(v)):
    g = np.concatenate([np.arange(old), rng.integers(0, old, width - old)])
    _units(v, conv, bn, g)
    kernel = np.moveaxis(consumer[key], -2, 0)[g]  # input axis first: [in, ...]
    counts = np.bincount(g, minlength=old)[g].astype(np.float32)
    counts = counts.reshape((-1,) + (1,) * (kernel.ndim - 1))
    eps = rng.normal(0, noise, kernel.shape).astype(np.float32) * np.abs(kernel) / counts
    per_unit = np.zeros((old,) + kernel.shape[1:], np.float32)
    np.add.at(per_unit, g, eps)
    kernel = kernel / counts + eps - per_unit[g] / counts  # noise sums to 0 per unit
    consumer[key] = np.moveaxis(kernel, 0, -2)
  return v


def deepen(variables):
  """Net2DeeperNet: the same function with twice the depth (identity layers inserted)."""
  v = _copy(variables)
  depth = _depth(v)
  width = v["params"]["stem"]["kernel"].shape[-1]
  identity = np.zeros((3, 3, width, width), np.float32)
  identity[1, 1] = np.eye(width, dtype=np.float32)
  p, s = v["params"], v["batch_stats"]
  new_p = {"stem": p["stem"], "stem_bn": p["stem_bn"], "head": p["head"]}
  new_s = {"stem_bn": s["stem_bn"]}
  for i in range(depth):
    new_p[f"conv_{2 * i}"], new_p[f"bn_{2 * i}"] = p[f"conv_{i}"], p[f"bn_{i}"]
    new_s[f"bn_{2 * i}"] = s[f"bn_{i}"]
    new_p[f"conv_{2 * i + 1}"] = {"kernel": identity.copy()}
    new_p[f"bn_{2 * i + 1}"] = {"scale": np.ones(width, np.float32),
                                "bias": np.zeros(width, np.float32)}
    new_s[f"bn_{2 * i + 1}"] = {"mean": np.zeros(width, np.float32),
                                "var": np.full(width, 1 - BN_EPSILON, np.float32)}
  return {"params": new_p, "batch_stats": new_s}


def narrow(variables, width: int):
  """Down: keep the `width` units per layer with the largest |BatchNorm scale|."""
  v = _copy(variables)
  for (conv, bn), (consumer, key) in zip(_layers(_depth(v)), _inputs(v)):
    strength = np.abs(v["params"][bn]["scale"])
    keep = np.sort(np.argsort(-strength, kind="stable")[:width])
    _units(v, conv, bn, keep)
    consumer[key] = consumer[key][..., keep, :]
  return v


def shallow(variables):
  """Down: half the depth, keeping layers 0, 2, 4, ... (see module doc)."""
  v = _copy(variables)
  p, s = v["params"], v["batch_stats"]
  new_p = {"stem": p["stem"], "stem_bn": p["stem_bn"], "head": p["head"]}
  new_s = {"stem_bn": s["stem_bn"]}
  for i in range(_depth(v) // 2):
    new_p[f"conv_{i}"], new_p[f"bn_{i}"] = p[f"conv_{2 * i}"], p[f"bn_{2 * i}"]
    new_s[f"bn_{i}"] = s[f"bn_{2 * i}"]
  return {"params": new_p, "batch_stats": new_s}


def resize(variables, width: int, depth: int, rng: np.random.Generator):
  """Variables ({"params", "batch_stats"}) of a (width, depth) net from another's: Up by
  Net2Net, Down as documented (width first, then depth)."""
  current_width = np.shape(variables["params"]["stem"]["kernel"])[-1]
  if width > current_width:
    variables = widen(variables, width, rng)
  elif width < current_width:
    variables = narrow(variables, width)
  while _depth(variables) < depth:
    variables = deepen(variables)
  while _depth(variables) > depth:
    variables = shallow(variables)
  return variables
