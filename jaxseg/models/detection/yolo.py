"""YOLO (Redmon, Divvala, Girshick & Farhadi, "You Only Look Once: Unified, Real-Time
Object Detection", CVPR 2016): one network from the image to an S x S x (5B + C) tensor,
no proposals (CS231n lecture, "Object detection" 7).

    images [B, H, W, 3] in [0, 1] -> normalised -> backbone map `backbone_level` ->
    head -> [B, S, S, 5B + C'] -> per cell: B boxes x (4 coordinates, confidence), then
    C' class outputs.

Heads (`head`): "fc" (the paper's: a 3x3 conv, flatten, a hidden fully connected layer,
dropout 0.5, a fully connected layer to S * S * (5B + C'); any S fits any image size) or
"conv" (a 3x3 conv and a 1x1 conv on the map itself: the map must be S x S, i.e.
grid_size = image_size / the level's stride, else a one-line config error). Activations
are leaky ReLU (0.1), as in the paper.

Box parametrizations (`parametrization`), one model:
- "paper": box (x, y, sqrt w, sqrt h, confidence), x, y the centre's offset in its cell,
  w, h fractions of the image, C' = C conditional class probabilities. The paper's outputs
  are linear; here each is squashed into its range (logistic for the five box numbers,
  softmax for the classes), as most reimplementations do; the loss is the paper's
  sum-squared error on those values. Responsible box: of the B boxes of the cell holding
  an object's centre, the one whose prediction has the highest IoU with it; confidence
  target = that IoU; class probabilities count only in cells with an object.
- "lecture" (the lecture's variant): B base boxes centred in each cell (`base_boxes`,
  (width, height) fractions of the image), each regressed to a final box with (dx, dy,
  dw, dh) (`ops.boxes.encode` / `decode`, `box_weights`) and a confidence; C' = C + 1
  class scores per cell, background included (softmax CE over every cell). Responsible
  box: the base box of highest IoU with the object; confidence target = the IoU of its
  regressed box with the object.
Either way the cell holding an object's centre is responsible for it; when several
centres fall in one cell the first ground-truth row wins (one object per cell, as in the
paper). Loss terms (`losses.yolo_terms`; `loss_terms`): yolo_coord, yolo_object,
yolo_noobject, yolo_class, weighted by config.loss (the paper: lambda_coord = 5,
lambda_noobj = 0.5, the others 1).

Test time: class-specific confidence = confidence x class probability of every box and
class (the lecture variant: background left out), then `roi_heads.postprocess` (score >
score_threshold, per-class NMS, the best `detections_per_image`).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg import losses, ops
from jaxseg.errors import ConfigError
from jaxseg.models.detection.body import backbone_maps
from jaxseg.models.detection.roi_heads import postprocess
from jaxseg.models.heads import IMAGENET_MEAN, IMAGENET_STD

PARAMETRIZATIONS = ("paper", "lecture")
HEADS = ("fc", "conv")
LOSS_TERMS = ("yolo_coord", "yolo_object", "yolo_noobject", "yolo_class")


def assign_cells(gt_boxes, gt_valid, image_hw, grid_size: int):
  """The responsible cell of each object: the one holding its box centre (Redmon et al.
  2016, sec. 2). gt_boxes [B, M, 4] pixel xyxy, gt_valid [B, M] -> (ground-truth row of
  each cell [B, S * S] int32, -1 where none; has_object [B, S * S]); cells row-major.
  Several centres in one cell: the first valid row wins."""
  height, width = image_hw
  s = grid_size
  cx = (gt_boxes[..., 0] + gt_boxes[..., 2]) / 2
  cy = (gt_boxes[..., 1] + gt_boxes[..., 3]) / 2
  col = jnp.clip(jnp.floor(cx * s / width), 0, s - 1).astype(jnp.int32)
  row = jnp.clip(jnp.floor(cy * s / height), 0, s - 1).astype(jnp.int32)
  cell = row * s + col  # [B, M]
  hit = (cell[:, None, :] == jnp.arange(s * s)[None, :, None]) & gt_valid[:, None, :]
  has_object = jnp.any(hit, -1)
  return jnp.where(has_object, jnp.argmax(hit, -1).astype(jnp.int32), -1), has_object


def default_base_boxes(boxes_per_cell: int):
  """B squares of sides (b + 1) / (B + 1) of the image (e.g. B = 3: 1/4, 1/2, 3/4)."""
  return tuple(((b + 1) / (boxes_per_cell + 1),) * 2 for b in range(boxes_per_cell))


class YOLO(nn.Module):
  """YOLO (see the module docstring). `__call__(images, train, targets)` -> detections
  {boxes, scores, classes, valid, proposal_valid (the S*S*B boxes scored)} or, with
  targets {boxes, labels, valid}, the loss terms and diagnostics."""
  backbone: nn.Module
  num_classes: int  # including the background (class 0)
  backbone_level: str = "stride_32"
  grid_size: int = 7
  boxes_per_cell: int = 2
  head: str = "fc"
  conv_width: int = 256
  hidden_size: int = 512  # the paper's 4096
  dropout_rate: float = 0.5
  parametrization: str = "paper"
  base_boxes: Sequence[Sequence[float]] | None = None  # lecture: (w, h) image fractions
  box_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)
  score_threshold: float = 0.05
  nms_threshold: float = 0.5
  detections_per_image: int = 100
  min_size: float = 1e-2
  pixel_mean: Sequence[float] = IMAGENET_MEAN
  pixel_std: Sequence[float] = IMAGENET_STD
  dtype: Any = jnp.float32

  loss_terms = LOSS_TERMS
  needs_proposals = False

  @property
  def class_outputs(self) -> int:
    return self.num_classes - 1 if self.parametrization == "paper" else self.num_classes

  def base_box_pixels(self, image_hw):
    """[S * S, B, 4] pixel xyxy base boxes of the lecture variant."""
    height, width = image_hw
    sizes = self.base_boxes or default_base_boxes(self.boxes_per_cell)
    boxes = ops.anchors.yolo_grid_boxes((height, width), self.grid_size,
                                        [(w * width, h * height) for w, h in sizes])
    return jnp.asarray(boxes).reshape(self.grid_size ** 2, self.boxes_per_cell, 4)

  def outputs(self, images, train: bool):
    """Raw head outputs [B, S * S, 5B + C']."""
    x, = backbone_maps(self.backbone, images, (self.backbone_level,), self.pixel_mean,
                       self.pixel_std, train)
    x = x.astype(self.dtype)
    s, depth = self.grid_size, 5 * self.boxes_per_cell + self.class_outputs
    x = nn.leaky_relu(nn.Conv(self.conv_width, (3, 3), dtype=self.dtype, name="conv")(x), 0.1)
    if self.head == "conv":
      if x.shape[1:3] != (s, s):
        raise ValueError(
            f"config.model.yolo.grid_size={s} does not fit the conv head: the "
            f"{self.backbone_level} map of a {images.shape[1]}x{images.shape[2]} image is "
            f"{x.shape[1]}x{x.shape[2]}; expected grid_size = image_size / stride "
            f"(config.dataset.image_size) or config.model.yolo.head='fc'")
      out = nn.Conv(depth, (1, 1), dtype=self.dtype, name="output")(x)
    else:
      x = x.reshape(x.shape[0], -1)
      x = nn.leaky_relu(nn.Dense(self.hidden_size, dtype=self.dtype, name="hidden")(x), 0.1)
      x = nn.Dropout(self.dropout_rate, deterministic=not train, rng_collection="sampling")(x)
      out = nn.Dense(s * s * depth, dtype=self.dtype, name="output")(x)
    return out.astype(jnp.float32).reshape(images.shape[0], s * s, depth)

  def decode(self, out, image_hw):
    """(boxes [B, S*S, K, 4] pixel xyxy, coordinates [B, S*S, K, 4] as regressed,
    confidence [B, S*S, K], class outputs [B, S*S, C'] (paper: probabilities; lecture:
    logits))."""
    b, n, _ = out.shape
    k = self.boxes_per_cell
    box = out[..., :5 * k].reshape(b, n, k, 5)
    confidence = jax.nn.sigmoid(box[..., 4])
    height, width = image_hw
    if self.parametrization == "paper":
      coords = jax.nn.sigmoid(box[..., :4])  # x, y in the cell; sqrt w, sqrt h
      s = self.grid_size
      cells = jnp.arange(n)
      col = (cells % s).astype(jnp.float32)[None, :, None]
      row = (cells // s).astype(jnp.float32)[None, :, None]
      cx = (col + coords[..., 0]) * width / s
      cy = (row + coords[..., 1]) * height / s
      w = jnp.square(coords[..., 2]) * width
      h = jnp.square(coords[..., 3]) * height
      boxes = jnp.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
      classes = jax.nn.softmax(out[..., 5 * k:], -1)
    else:
      coords = box[..., :4]  # dx, dy, dw, dh relative to the base boxes
      boxes = ops.boxes.decode(coords, self.base_box_pixels(image_hw)[None], self.box_weights)
      classes = out[..., 5 * k:]
    return boxes, coords, confidence, classes

  @nn.compact
  def __call__(self, images, train: bool = False, targets=None):
    if self.parametrization not in PARAMETRIZATIONS:
      raise ValueError(f"config.model.yolo.parametrization={self.parametrization!r}; "
                       f"expected one of {PARAMETRIZATIONS}")
    if self.head not in HEADS:
      raise ValueError(f"config.model.yolo.head={self.head!r}; expected one of {HEADS}")
    image_hw = tuple(images.shape[1:3])
    boxes, coords, confidence, classes = self.decode(self.outputs(images, train), image_hw)
    if targets is None:
      return self.detect(boxes, confidence, classes, image_hw)
    return self.losses(boxes, coords, confidence, classes, targets, image_hw)

  def detect(self, boxes, confidence, classes, image_hw):
    b, n, k, _ = boxes.shape
    probs = classes if self.parametrization == "paper" else jax.nn.softmax(classes, -1)[..., 1:]
    scores = (confidence[..., None] * probs[:, :, None, :]).reshape(b, n * k, -1)
    boxes = boxes.reshape(b, n * k, 4)
    valid = jnp.ones((b, n * k), bool)
    out = postprocess(scores, None, boxes, valid, image_hw, self.box_weights,
                      self.score_threshold, self.nms_threshold, self.detections_per_image,
                      self.min_size)
    return {**out, "proposal_valid": valid}

  def losses(self, boxes, coords, confidence, classes, targets, image_hw):
    gt_boxes = targets["boxes"].astype(jnp.float32)
    gt_labels = targets["labels"]
    gt_index, has_object = assign_cells(gt_boxes, targets["valid"].astype(bool), image_hw,
                                        self.grid_size)
    safe = jnp.maximum(gt_index, 0)
    gt = jnp.take_along_axis(gt_boxes, safe[..., None], 1)  # [B, N, 4]
    label = jnp.take_along_axis(gt_labels, safe, 1)  # 1..C
    iou = ops.boxes.elementwise_iou(jax.lax.stop_gradient(boxes), gt[:, :, None, :])
    height, width = image_hw
    if self.parametrization == "paper":
      s = self.grid_size
      g = ops.boxes.xyxy_to_cxcywh(gt)
      cells = jnp.arange(gt.shape[1])
      coord_targets = jnp.stack([
          g[..., 0] * s / width - (cells % s), g[..., 1] * s / height - (cells // s),
          jnp.sqrt(jnp.maximum(g[..., 2], 0) / width),
          jnp.sqrt(jnp.maximum(g[..., 3], 0) / height)], -1)[:, :, None, :]
      choice = iou  # the predicted box of highest IoU
      class_targets, class_loss = label - 1, "sse"
    else:
      base = self.base_box_pixels(image_hw)[None]
      coord_targets = ops.boxes.encode(gt[:, :, None, :], base, self.box_weights)
      choice = ops.boxes.elementwise_iou(base, gt[:, :, None, :])  # the base box
      class_targets, class_loss = jnp.where(has_object, label, 0), "softmax"
    responsible = (jax.nn.one_hot(jnp.argmax(choice, -1), self.boxes_per_cell, dtype=bool)
                   & has_object[..., None])
    terms = losses.yolo_terms(coords, jax.lax.stop_gradient(coord_targets), confidence,
                              jax.lax.stop_gradient(iou), responsible, classes,
                              class_targets, has_object, class_loss)
    terms["yolo_objects"] = jnp.sum(has_object) / gt_boxes.shape[0]
    terms["yolo_mean_iou"] = (jnp.sum(jnp.where(responsible, iou, 0.0))
                              / losses.normalizer(responsible))
    return terms


def build_yolo(num_classes: int, dtype, backbone: nn.Module, backbone_levels, fields: dict,
               extra: dict) -> YOLO:
  """The YOLO of config.model: `fields` = config.model.yolo; one backbone level."""
  levels = tuple(backbone_levels)
  if len(levels) != 1:
    raise ConfigError(f"config.model.backbone_levels={levels}; YOLO reads one map")
  fields = dict(fields)
  if fields.get("parametrization", "paper") not in PARAMETRIZATIONS:
    raise ConfigError(f"config.model.yolo.parametrization={fields['parametrization']!r}; "
                      f"expected one of {PARAMETRIZATIONS}")
  if fields.get("head", "fc") not in HEADS:
    raise ConfigError(f"config.model.yolo.head={fields['head']!r}; expected one of {HEADS}")
  b = int(fields.get("boxes_per_cell", 2))
  base = fields.get("base_boxes")
  if base is not None and len(base) != b:
    raise ConfigError(f"config.model.yolo.base_boxes has {len(base)} (w, h) pairs; expected "
                      f"boxes_per_cell={b}")
  if "base_boxes" in fields and base is not None:
    fields["base_boxes"] = tuple(tuple(float(v) for v in p) for p in base)
  return YOLO(backbone=backbone, num_classes=num_classes, backbone_level=levels[0],
              dtype=dtype, **fields, **extra)
