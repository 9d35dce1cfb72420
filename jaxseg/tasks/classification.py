"""Image classification, and classification + localization (CS231n lecture 11).

Classification: a backbone (`config.model.backbone`, any of jaxseg.models.backbones) with
a softmax classifier; loss softmax cross-entropy (optionally label-smoothed); metrics
top-1 / top-5 accuracy, mean per-class accuracy and the mean loss.

Classification + localization (one object per image): the same network with a second
head regressing the box as (x, y, w, h) = (centre x, centre y, width, height), each
divided by the image size, so targets lie in [0, 1]:

    loss = CE(class scores, label) + config.loss.box_weight * box_loss(box, true box)

`box_loss` "l2" is the lecture's L2 loss, the squared error summed over the 4 numbers
(averaged over the batch); "smooth_l1" is Fast R-CNN's (Girshick, ICCV 2015), quadratic
below `config.loss.smooth_l1_beta` and linear above. The weight is the hyperparameter the
lecture names. Metrics: `accuracy`, `mean_iou` (IoU of predicted and true box, the
predicted box clipped to the image), `correct_localization` (fraction with the right class
AND IoU >= 0.5, the ImageNet localization criterion).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import ops, viz
from jaxseg.errors import ConfigError
from jaxseg.models.heads import BackboneWithHeads
from jaxseg.tasks.image_level import ImageLevelTask

BOX_LOSSES = ("l2", "smooth_l1")
MAX_CONFUSION_CLASSES = 100  # per-class accuracy is reported up to this many classes


def box_regression_loss(pred, target, kind: str = "l2", beta: float = 0.05):
  """Per-example box loss, summed over the 4 coordinates: [N, 4] x 2 -> [N] (float32)."""
  diff = pred.astype(jnp.float32) - target.astype(jnp.float32)
  if kind == "l2":
    return jnp.sum(diff**2, axis=-1)
  if kind == "smooth_l1":
    a = jnp.abs(diff)
    return jnp.sum(jnp.where(a < beta, 0.5 * a**2 / beta, a - 0.5 * beta), axis=-1)
  raise ConfigError(f"config.loss.box_loss={kind!r}; expected one of {BOX_LOSSES}")


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
  """Per-example softmax cross-entropy (float32), with optional label smoothing."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]
  if label_smoothing:
    nll = (1 - label_smoothing) * nll - label_smoothing * jnp.mean(logp, axis=-1)
  return nll


class ClassificationTask(ImageLevelTask):
  """The task contract (jaxseg.tasks) for image classification."""
  REQUIRE = ("label",)

  def heads(self) -> dict:
    return {"logits": self.num_classes}

  def build_model(self, model_config):
    fields = self.model_fields(model_config)
    return BackboneWithHeads(heads=self.heads(), dtype=self.dtype, **fields)

  def top_k(self) -> tuple[int, ...]:
    return (1, 5) if self.num_classes > 5 else (1,)

  def loss_fn(self, variables, batch, rng, train: bool):
    out, new_state = self.apply(variables, batch["image"], rng, train)
    ce = jnp.mean(cross_entropy(out["logits"], batch["label"],
                                self.config.loss.get("label_smoothing", 0.0)))
    accuracy = jnp.mean(jnp.argmax(out["logits"], -1) == batch["label"])
    return ce, ({"cross_entropy": ce, "accuracy": accuracy}, new_state)

  def predict(self, variables, images):
    out, _ = self.apply(variables, images)
    return self.predictions(out)

  def predictions(self, out):
    """Model outputs -> predictions: top class, its probability, the top-k classes."""
    probs = jax.nn.softmax(out["logits"].astype(jnp.float32), -1)
    k = max(self.top_k())
    top_probs, top_labels = jax.lax.top_k(probs, k)
    return {"logits": out["logits"], "label": top_labels[:, 0], "score": top_probs[:, 0],
            "top_labels": top_labels}

  def eval_stats(self, variables, batch, predictions=None):
    if predictions is None:
      predictions = self.predict(variables, batch["image"])
    mask = batch["example_mask"]
    labels = batch["label"]
    stats = {"count": jnp.sum(mask),
             "loss": jnp.sum(jnp.where(mask, cross_entropy(predictions["logits"], labels), 0))}
    for k in self.top_k():
      hit = jnp.any(predictions["top_labels"][:, :k] == labels[:, None], axis=-1)
      stats[f"top{k}"] = jnp.sum(hit & mask)
    if self.num_classes <= MAX_CONFUSION_CLASSES:
      index = labels * self.num_classes + predictions["label"]
      stats["confusion"] = jnp.zeros(self.num_classes**2, jnp.int32).at[index].add(
          mask.astype(jnp.int32)).reshape(self.num_classes, self.num_classes)
    return stats

  def summarize(self, stats):
    count = max(int(stats["count"]), 1)
    summary = {"accuracy": float(stats["top1"]) / count,
               "cross_entropy": float(stats["loss"]) / count}
    if "top5" in stats:
      summary["top5_accuracy"] = float(stats["top5"]) / count
    if "confusion" in stats:
      cm = np.asarray(stats["confusion"], np.float64)
      support = cm.sum(1)
      per_class = np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)
      summary["mean_class_accuracy"] = float(np.nanmean(per_class)) if (support > 0).any() \
          else float("nan")
      if self.num_classes <= 20:
        summary.update({f"accuracy/{name}": float(a)
                        for name, a in zip(self.class_names, per_class)})
    return summary

  def caption(self, batch, predictions, i: int) -> str:
    true = self.class_names[int(batch["label"][i])]
    pred = self.class_names[int(predictions["label"][i])]
    return f"{pred} {float(predictions['score'][i]):.2f}" + ("" if pred == true else f" ({true})")

  def visualize(self, batch, predictions, max_images: int = 16):
    """Images with the predicted class and its probability (the true class in brackets
    where wrong); localization adds the true box (white) and the predicted one."""
    tiles = []
    for i in range(min(max_images, len(batch["image"]))):
      tile = self.draw(batch, predictions, i)
      tiles.append(viz.caption(tile, self.caption(batch, predictions, i)))
    return viz.grid([tiles[r:r + 8] for r in range(0, len(tiles), 8)])

  def draw(self, batch, predictions, i: int):
    return viz.upscale(viz.to_uint8(batch["image"][i]), 2)


class LocalizationTask(ClassificationTask):
  """Classification + localization: class scores and one box per image (see module doc)."""
  REQUIRE = ("label", "box")

  def __init__(self, config):
    super().__init__(config)
    if config.loss.box_loss not in BOX_LOSSES:
      raise ConfigError(f"config.loss.box_loss={config.loss.box_loss!r}; expected one of "
                        f"{BOX_LOSSES}")

  def heads(self) -> dict:
    return {"logits": self.num_classes, "box": 4}

  def top_k(self) -> tuple[int, ...]:
    return (1,)

  def _size(self):
    return float(self.config.dataset.image_size)

  def box_target(self, boxes):
    """Pixel xyxy -> normalized (centre x, centre y, w, h)."""
    return ops.boxes.xyxy_to_cxcywh(boxes) / self._size()

  def decode_box(self, box):
    """Normalized (cx, cy, w, h) -> pixel xyxy clipped to the image."""
    size = self._size()
    return ops.boxes.clip_boxes(ops.boxes.cxcywh_to_xyxy(box.astype(jnp.float32) * size),
                                size, size)

  def loss_fn(self, variables, batch, rng, train: bool):
    out, new_state = self.apply(variables, batch["image"], rng, train)
    c = self.config.loss
    ce = jnp.mean(cross_entropy(out["logits"], batch["label"], c.get("label_smoothing", 0.0)))
    box = jnp.mean(box_regression_loss(out["box"], self.box_target(batch["box"]), c.box_loss,
                                       c.smooth_l1_beta))
    iou = ops.boxes.elementwise_iou(self.decode_box(out["box"]), batch["box"])
    accuracy = jnp.mean(jnp.argmax(out["logits"], -1) == batch["label"])
    loss = ce + c.box_weight * box
    return loss, ({"cross_entropy": ce, "box_loss": box, "accuracy": accuracy,
                   "mean_iou": jnp.mean(iou)}, new_state)

  def predictions(self, out):
    return {**super().predictions(out), "box": self.decode_box(out["box"])}

  def eval_stats(self, variables, batch, predictions=None):
    if predictions is None:
      predictions = self.predict(variables, batch["image"])
    stats = super().eval_stats(variables, batch, predictions)
    mask = batch["example_mask"]
    iou = ops.boxes.elementwise_iou(predictions["box"], batch["box"])
    correct = predictions["label"] == batch["label"]
    stats.update(iou=jnp.sum(jnp.where(mask, iou, 0.0)),
                 iou50=jnp.sum(mask & (iou >= 0.5)),
                 localized=jnp.sum(mask & correct & (iou >= 0.5)))
    return stats

  def summarize(self, stats):
    summary = super().summarize(stats)
    count = max(int(stats["count"]), 1)
    summary.update(mean_iou=float(stats["iou"]) / count,
                   iou_at_50=float(stats["iou50"]) / count,
                   correct_localization=float(stats["localized"]) / count)
    return summary

  def draw(self, batch, predictions, i: int, scale: int = 2):
    image = viz.upscale(viz.to_uint8(batch["image"][i]), scale)
    image = viz.draw_boxes(image, np.asarray(batch["box"][i:i + 1]) * scale,
                           colours=[(255, 255, 255)])
    label = int(predictions["label"][i])
    return viz.draw_boxes(image, np.asarray(predictions["box"][i:i + 1]) * scale,
                          colours=[tuple(int(v) for v in viz.palette(self.num_classes + 1)[label + 1])])
