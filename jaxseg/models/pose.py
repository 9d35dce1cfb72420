"""DeepPose (Toshev & Szegedy, "DeepPose: Human Pose Estimation via Deep Neural Networks",
CVPR 2014): regress every joint's coordinates directly, then refine each joint with a
cascade of regressors that look at a crop around its current estimate.

Coordinates are normalized to the image box, as the paper's N(y; b): a joint at pixel
(x, y) of an H x W image is ((x - W/2) / W, (y - H/2) / H), so the image centre is 0 and
the image spans [-0.5, 0.5].

Stage 1: a backbone with a fully-connected head regresses all K joints from the image.
Stage s >= 2: for each joint i, a square box centred on its stage s-1 estimate with side
`crop_scale * diam` (diam = torso diameter of the stage s-1 estimate, the distance between
left shoulder and right hip, as in the paper, at least `min_crop_fraction` of the image) is
cropped and resized to `crop_size`; the stage's network (same for every joint, its own
parameters per stage) regresses all K joints relative to that box and the i-th output
becomes the displacement of joint i: y_i^s = y_i^{s-1} + side * psi_i(crop_i) / image size.

Training (all stages at once): each stage's input estimate is `stop_gradient`-ed, so
stage s learns only from its own loss, as in the paper's stage-by-stage training; while
training, the estimate a stage crops around is jittered with Gaussian noise of
`train_noise * diam` (the paper's augmentation with displacements drawn from the previous
stage's error distribution, simplified to an isotropic Gaussian). The paper trains the
stages one after another; training them together costs one run and gives each stage the
improving estimates of the previous one.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg import ops
from jaxseg.models.heads import BackboneWithHeads


class DeepPose(nn.Module):
  """The DeepPose cascade. `__call__(images, train)` -> normalized joints of every stage,
  [stages, N, K, 2] (x, y). Fields: `backbone`, `backbone_args`, `fc_widths`,
  `pool_size`, `dropout_rate` of the stage-1 regressor (jaxseg.models.heads);
  `refine_backbone` / `refine_backbone_args` / `refine_fc_widths` / `refine_pool_size`
  of the refinement regressors (default: the stage-1 backbone; their output layer starts at zero, so a new stage
  starts as the identity); `stages` (1 = no cascade),
  `crop_size`, `crop_scale` (sigma of the paper), `min_crop_fraction`, `train_noise`,
  `torso_joints` (indices of the two joints whose distance is the torso diameter)."""
  num_joints: int = 14
  backbone: str = "resnet18"
  backbone_args: Any = None
  fc_widths: Any = None
  pool_size: Any = None
  dropout_rate: float = 0.0
  stages: int = 1
  refine_backbone: Any = None
  refine_backbone_args: Any = None
  refine_fc_widths: Any = None
  refine_pool_size: Any = None
  crop_size: int = 32
  crop_scale: float = 2.0
  min_crop_fraction: float = 0.1
  train_noise: float = 0.1
  torso_joints: tuple[int, int] = (9, 2)
  pixel_mean: tuple = (0.485, 0.456, 0.406)
  pixel_std: tuple = (0.229, 0.224, 0.225)
  dtype: Any = jnp.float32

  def _regressor(self, backbone, backbone_args, fc_widths, pool_size, name, refine=False):
    return BackboneWithHeads(
        backbone=backbone, backbone_args=backbone_args, fc_widths=fc_widths,
        pool_size=pool_size, heads={"joints": 2 * self.num_joints},
        dropout_rate=self.dropout_rate, zero_init_heads=refine,
        pixel_mean=self.pixel_mean, pixel_std=self.pixel_std, dtype=self.dtype, name=name)

  @nn.compact
  def __call__(self, images, train: bool = False):
    if self.stages < 1:
      raise ValueError(f"DeepPose needs stages >= 1, got {self.stages}")
    n, height, width, _ = images.shape
    k = self.num_joints
    scale = jnp.array([width, height], jnp.float32)
    joints = self._regressor(self.backbone, self.backbone_args, self.fc_widths,
                             self.pool_size, "stage1")(
        images, train)["joints"].reshape(n, k, 2)
    outputs = [joints]
    for stage in range(2, self.stages + 1):
      previous = jax.lax.stop_gradient(joints)
      pixels = (previous + 0.5) * scale  # [N, K, 2]
      a, b = self.torso_joints
      diam = jnp.linalg.norm(pixels[:, a] - pixels[:, b], axis=-1)  # [N]
      side = jnp.maximum(self.crop_scale * diam, self.min_crop_fraction * max(height, width))
      if train and self.train_noise:
        noise = jax.random.normal(self.make_rng("dropout"), pixels.shape)
        pixels = pixels + noise * (self.train_noise * diam)[:, None, None]
      side = jnp.broadcast_to(side[:, None], (n, k))
      centres = pixels.reshape(n * k, 2)
      half = side.reshape(n * k, 1) / 2
      boxes = jnp.concatenate([centres - half, centres + half], axis=-1)
      crops = ops.crop_and_resize(images, boxes, jnp.repeat(jnp.arange(n), k),
                                  (self.crop_size, self.crop_size))
      refine = self._regressor(self.refine_backbone or self.backbone,
                               self.refine_backbone_args or self.backbone_args,
                               self.refine_fc_widths, self.refine_pool_size,
                               f"stage{stage}", refine=True)
      out = refine(crops, train)["joints"].reshape(n, k, k, 2)
      delta = out[:, jnp.arange(k), jnp.arange(k)]  # joint i's output on crop i: [N, K, 2]
      joints = (pixels + delta * side[..., None]) / scale - 0.5
      outputs.append(joints)
    return jnp.stack(outputs).astype(jnp.float32)
