"""Recurrent (iterative) refinement with multi-scale input.

Pinheiro & Collobert, "Recurrent Convolutional Neural Networks for Scene Labeling",
ICML 2014: one convolutional network f labels every pixel from the image *and* its own
previous label map, and is applied again and again with the same weights, each
application correcting the previous one; the lecture's "iterative refinement: apply the
CNN again and again to its own output; more iterations, better result". Multi-scale input
(Farabet et al. TPAMI 2013; the lecture's "image at 3 scales -> CNN -> upscale ->
combine") is folded into f: its input is processed at each of `scales` by one shared
trunk, and the features, resized back to the input resolution, are combined before the
classifier.

Step t computes  logits_t = f(image, softmax(logits_{t-1}))  with logits_0 replaced by
uniform probabilities (`initial_probs="uniform"`) or zeros. All steps share one `f`
(one submodule instance called in a Python loop), so parameters — BatchNorm scale/bias
and running statistics included — do not grow with `refinement_steps`. Gradients flow
through the whole recurrence (as in the paper's training).

Deep supervision: the model returns the final step's logits only. With
`deep_supervision=True` it also sows every step's logits (final step included) into the
"intermediates" collection: call
`model.apply(variables, images, train=True, mutable=["batch_stats", "intermediates"],
rngs=...)` and read `state["intermediates"]["step_logits"]`, a tuple of
`refinement_steps` arrays [N, H, W, num_classes], to add a loss per step. (Averaging the
logits of the steps is not the same thing and is deliberately not offered.)
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg import ops
from jaxseg.models.layers import ConvBlock
from jaxseg.models.segmentation.base import SegmentationModel

COMBINE_METHODS = ("concat", "sum")
INITIAL_PROBS = ("uniform", "zeros")


def _scaled_size(size: int, scale: float) -> int:
  scaled = size * scale
  if scaled < 1 or abs(scaled - round(scaled)) > 1e-6:
    raise ValueError(f"scale {scale} of image size {size} is not a positive whole number "
                     f"of pixels; choose scales s with size * s integral")
  return int(round(scaled))


class RefinementStep(nn.Module):
  """f: (normalized image, previous class probabilities) -> logits, multi-scale.

  The input (image ++ probabilities) is resized to each scale, passed through one shared
  trunk (a ConvBlock of `num_convs` 3x3 convs), the features are bilinearly resized back
  to H x W and combined (concatenated or summed), then dropout and a 1x1 classifier.
  """
  num_classes: int
  features: int = 32
  num_convs: int = 3
  scales: Sequence[float] = (1.0,)
  combine: str = "concat"
  conv_type: str = "standard"
  norm: bool = True
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, probs, train: bool):
    _, h, w, _ = x.shape
    inputs = jnp.concatenate([x, probs.astype(x.dtype)], axis=-1)
    trunk = ConvBlock(self.features, num_convs=self.num_convs, norm=self.norm,
                      conv_type=self.conv_type, dtype=self.dtype, name="trunk")
    feats = []
    for scale in self.scales:
      size = (_scaled_size(h, scale), _scaled_size(w, scale))
      xs = inputs if size == (h, w) else ops.resize(inputs, size, "bilinear")
      f = trunk(xs, train)
      feats.append(f if size == (h, w) else ops.resize(f, (h, w), "bilinear"))
    if self.combine == "concat":
      y = jnp.concatenate(feats, axis=-1)
    elif self.combine == "sum":
      y = sum(feats[1:], feats[0])
    else:
      raise ValueError(f"unknown combine {self.combine!r}; expected one of "
                       f"{COMBINE_METHODS}")
    y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
    return nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="classifier")(y)


class RecurrentRefinement(SegmentationModel):
  """Recurrent CNN (Pinheiro & Collobert ICML 2014) with multi-scale input.

  Returns the logits [N, H, W, num_classes] of the last of `refinement_steps`
  applications of one shared `RefinementStep` (see the module docstring). Fields:
    refinement_steps: number of applications of f (>= 1); does not change parameters.
    scales: input scales processed by the shared trunk, e.g. (1.0, 0.5, 0.25).
    combine: "concat" or "sum" of the per-scale features.
    features / num_convs: width and depth of the trunk.
    initial_probs: "uniform" (1/C) or "zeros" as the first step's label input.
    deep_supervision: sow every step's logits as intermediates/step_logits.
  H * s and W * s must be whole numbers for every scale s.
  """
  refinement_steps: int = 2
  scales: Sequence[float] = (1.0,)
  combine: str = "concat"
  features: int = 32
  num_convs: int = 3
  initial_probs: str = "uniform"
  deep_supervision: bool = False
  conv_type: str = "standard"

  @nn.compact
  def __call__(self, images, train: bool = False):
    if self.refinement_steps < 1:
      raise ValueError(f"refinement_steps must be >= 1, got {self.refinement_steps}")
    if self.combine not in COMBINE_METHODS:
      raise ValueError(f"unknown combine {self.combine!r}; expected one of "
                       f"{COMBINE_METHODS}")
    if not self.scales:
      raise ValueError("scales must name at least one input scale, e.g. (1.0,)")
    n, h, w, _ = images.shape
    for s in self.scales:  # fail early, with the scale named
      _scaled_size(h, s)
      _scaled_size(w, s)
    x = self.normalize(images)
    if self.initial_probs == "uniform":
      probs = jnp.full((n, h, w, self.num_classes), 1.0 / self.num_classes, self.dtype)
    elif self.initial_probs == "zeros":
      probs = jnp.zeros((n, h, w, self.num_classes), self.dtype)
    else:
      raise ValueError(f"unknown initial_probs {self.initial_probs!r}; expected one of "
                       f"{INITIAL_PROBS}")
    step = RefinementStep(self.num_classes, self.features, self.num_convs, self.scales,
                          self.combine, self.conv_type, self.norm, self.dropout_rate,
                          self.dtype, name="step")
    logits = None
    for _ in range(self.refinement_steps):
      logits = step(x, probs, train)
      if self.deep_supervision:
        self.sow("intermediates", "step_logits", logits)
      probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
    return logits
