"""HyperQuest's CNN and the changes of its width and depth that keep what it has learned.

`QuestNet(width, depth, dropout)`: a stem (3x3 conv to `width` channels, ReLU, max-pool
by `stem_pool`), then `depth` 3x3 convolutions of `width` channels with ReLU and a 2x2
max-pool after layer depth/2 - 1, global average pooling, dropout and a linear
classifier. No normalization layers, so the transformations below are exact.

Up (Chen, Goodfellow & Shlens, "Net2Net", ICLR 2016):
- `widen` (Net2WiderNet): new unit j copies the incoming weights of unit g(j) (g(j) = j
  for the old units, random old units for the new ones); the outgoing weights of the
  copies of a unit are divided by its number of copies. The paper's symmetry-breaking
  noise is added so that it sums to zero over the copies of each unit: the function is
  unchanged (to float rounding) yet the copies get different gradients.
- `deepen` (Net2DeeperNet): after each of the `depth` layers an identity 3x3 convolution
  is inserted (centre tap = identity matrix, bias 0); ReLU(x) = x for x >= 0 so the
  outputs are unchanged, and the pool keeps its place (after new layer 2*depth/2 - 1).
Down (documented, not function-preserving; the game shows the accuracy right after):
- `narrow`: every layer keeps the `width` units whose incoming weights (kernel and bias)
  have the largest L2 norm, in their old order; the next layer keeps the matching inputs.
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
    x = (images - MEAN) / STD
    x = nn.relu(nn.Conv(self.width, (3, 3), kernel_init=he, name="stem")(x))
    x = max_pool(x, self.stem_pool)
    for i in range(self.depth):
      x = nn.relu(nn.Conv(self.width, (3, 3), kernel_init=he, name=f"conv_{i}")(x))
      if i == pool_after(self.depth):
        x = max_pool(x, 2)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, name="head")(x)


def layer_names(depth: int) -> list[str]:
  return ["stem"] + [f"conv_{i}" for i in range(depth)] + ["head"]


def _depth(params) -> int:
  return sum(1 for k in params if k.startswith("conv_"))


def _np(params):
  return jax.tree.map(np.asarray, params)


def widen(params, width: int, rng: np.random.Generator, noise: float = 0.1):
  """Net2WiderNet: the same function with `width` >= the current width units per layer."""
  params = _np(params)
  names = layer_names(_depth(params))
  old = params["stem"]["bias"].shape[0]
  if width < old:
    raise ValueError(f"widen: width {width} < current {old}")
  out = {}
  g = np.arange(old)  # mapping of the current layer's inputs
  for name in names:
    p = params[name]
    kernel, bias = p["kernel"], p["bias"]
    if name != "stem":  # inputs come from the previous layer's copies: split outgoing
      kernel = np.moveaxis(kernel, -2, 0)[g]  # input axis first: [in, ...]
      counts = np.bincount(g, minlength=old)[g].astype(np.float32)
      counts = counts.reshape((-1,) + (1,) * (kernel.ndim - 1))
      eps = rng.normal(0, noise, kernel.shape).astype(np.float32) * np.abs(kernel) / counts
      per_unit = np.zeros((old,) + kernel.shape[1:], np.float32)
      np.add.at(per_unit, g, eps)
      kernel = kernel / counts + eps - per_unit[g] / counts  # noise sums to 0 per unit
      kernel = np.moveaxis(kernel, 0, -2)
    if name != "head":
      g = np.concatenate([np.arange(old), rng.integers(0, old, width - old)])
      kernel, bias = kernel[..., g], bias[g]
    out[name] = {"kernel": kernel.astype(np.float32), "bias": bias.astype(np.float32)}
  return out


def deepen(params):
  """Net2DeeperNet: the same function with twice the depth (identity layers inserted)."""
  params = _np(params)
  depth = _depth(params)
  width = params["stem"]["bias"].shape[0]
  identity = np.zeros((3, 3, width, width), np.float32)
  identity[1, 1] = np.eye(width, dtype=np.float32)
  out = {"stem": params["stem"], "head": params["head"]}
  for i in range(depth):
    out[f"conv_{2 * i}"] = params[f"conv_{i}"]
    out[f"conv_{2 * i + 1}"] = {"kernel": identity.copy(), "bias": np.zeros(width, np.float32)}
  return out


def narrow(params, width: int):
  """Down: keep the `width` units per layer with the strongest incoming weights."""
  params = _np(params)
  names = layer_names(_depth(params))
  keep = None
  out = {}
  for name in names:
    kernel, bias = params[name]["kernel"], params[name]["bias"]
    if keep is not None:
      kernel = kernel[..., keep, :]
    if name != "head":
      norms = np.sqrt((kernel.reshape(-1, kernel.shape[-1]) ** 2).sum(0) + bias**2)
      keep = np.sort(np.argsort(-norms, kind="stable")[:width])
      kernel, bias = kernel[..., keep], bias[keep]
    out[name] = {"kernel": kernel, "bias": bias}
  return out


def shallow(params):
  """Down: half the depth, keeping layers 0, 2, 4, ... (see module doc)."""
  params = _np(params)
  depth = _depth(params)
  out = {"stem": params["stem"], "head": params["head"]}
  for i in range(depth // 2):
    out[f"conv_{i}"] = params[f"conv_{2 * i}"]
  return out


def resize(params, width: int, depth: int, rng: np.random.Generator):
  """Params of a (width, depth) net from those of another: Up by Net2Net, Down as
  documented (width first, then depth)."""
  current_width = np.shape(params["stem"]["bias"])[0]
  if width > current_width:
    params = widen(params, width, rng)
  elif width < current_width:
    params = narrow(params, width)
  while _depth(params) < depth:
    params = deepen(params)
  while _depth(params) > depth:
    params = shallow(params)
  return params
