"""Human pose estimation by direct regression: DeepPose (Toshev & Szegedy, CVPR 2014).

The 14 LSP joints (jaxseg.data.skeleton) are regressed as coordinates normalized to the
image box (jaxseg.models.pose); every cascade stage has its own loss,

    loss = sum over stages of mean over labelled joints of ||y_pred - y_true||^2

(L2 on normalized coordinates; a joint counts if its visibility v > 0: missing joints, v =
0, and joints that augmentation moved out of the image are masked out of the loss and of
every metric). Metrics, of the last stage: PCK@0.2 (a joint is correct within 0.2 torso
diameters, left shoulder to right hip), strict PCP per limb, the mean pixel error; and
`stage<s>/PCK@0.2` for every stage s, so one run shows what each refinement stage adds.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxseg import viz
from jaxseg.data import skeleton
from jaxseg.metrics import pose as pose_metrics
from jaxseg.models.pose import DeepPose
from jaxseg.tasks.image_level import ImageLevelTask


class PoseTask(ImageLevelTask):
  """The task contract (jaxseg.tasks) for DeepPose."""
  REQUIRE = ("joints",)

  def build_model(self, model_config):
    fields = self.model_fields(model_config)
    return DeepPose(num_joints=skeleton.NUM_JOINTS, torso_joints=skeleton.TORSO_JOINTS,
                    dtype=self.dtype, **fields)

  def _scale(self):
    size = float(self.config.dataset.image_size)
    return jnp.array([size, size], jnp.float32)

  def to_pixels(self, normalized):
    return (normalized + 0.5) * self._scale()

  def loss_fn(self, variables, batch, rng, train: bool):
    stages, new_state = self.apply(variables, batch["image"], rng, train)  # [S, N, K, 2]
    joints = batch["joints"]
    labelled = (joints[..., 2] > 0).astype(jnp.float32)  # [N, K]
    target = joints[..., :2] / self._scale() - 0.5
    squared = jnp.sum((stages - target[None]) ** 2, axis=-1)  # [S, N, K]
    per_stage = jnp.sum(squared * labelled, axis=(1, 2)) / jnp.maximum(jnp.sum(labelled), 1)
    aux = {f"stage{s + 1}_l2": per_stage[s] for s in range(stages.shape[0])}
    return jnp.sum(per_stage), (aux, new_state)

  def predict(self, variables, images):
    stages, _ = self.apply(variables, images)
    pixels = self.to_pixels(stages)  # [S, N, K, 2]; predictions are batch-first
    return {"joints": pixels[-1], "stage_joints": jnp.moveaxis(pixels, 0, 1)}

  def eval_stats(self, variables, batch, predictions=None):
    if predictions is None:
      predictions = self.predict(variables, batch["image"])
    mask, joints = batch["example_mask"], batch["joints"]
    pred = predictions["joints"]
    stats = {**pose_metrics.pck_stats(pred, joints, 0.2, example_mask=mask),
             **pose_metrics.pcp_stats(pred, joints, example_mask=mask)}
    labelled = (joints[..., 2] > 0) & mask[:, None]
    error = jnp.linalg.norm(pred - joints[..., :2], axis=-1)
    stats["pixel_error"] = jnp.sum(jnp.where(labelled, error, 0.0))
    stats["labelled"] = jnp.sum(labelled)
    stages = predictions["stage_joints"]
    if stages.shape[1] > 1:
      stats["stages"] = [pose_metrics.pck_stats(stages[:, s], joints, 0.2, example_mask=mask)
                         for s in range(stages.shape[1])]
    return stats

  def summarize(self, stats):
    stats = dict(stats)
    stages = stats.pop("stages", [])
    summary = pose_metrics.summarize(stats)
    summary["mean_pixel_error"] = float(stats["pixel_error"]) / max(int(stats["labelled"]), 1)
    for s, stage_stats in enumerate(stages, start=1):
      summary[f"stage{s}/PCK@0.2"] = pose_metrics.summarize(stage_stats)["PCK@0.2"]
    return summary

  def visualize(self, batch, predictions, max_images: int = 8, scale: int = 3):
    """Rows of: the image with the true skeleton | the predicted skeleton (of the last
    stage; occluded joints hollow)."""
    rows = []
    for i in range(min(max_images, len(batch["image"]))):
      image = viz.upscale(viz.to_uint8(batch["image"][i]), scale)
      truth = np.asarray(batch["joints"][i]).copy()
      truth[:, :2] *= scale
      pred = np.concatenate([np.asarray(predictions["joints"][i]) * scale,
                             np.where(truth[:, 2:] > 0, 2.0, 0.0)], axis=-1)
      rows.append([viz.caption(viz.draw_skeleton(image, truth), "truth"),
                   viz.caption(viz.draw_skeleton(image, pred), "DeepPose")])
    return viz.grid(rows)
