"""Shared defaults of the experiment configs (experiments/<task>/<name>.py).

An experiment file names its model and calls a function here, so every segmentation
experiment trains with the same data, loss and optimizer unless it says otherwise, and
an ablation changes exactly the keys it lists. Variants (the `:arg` of `--config=file:arg`):

- none:    the full run on 128x128 shapes (the README's main job uses it);
- `small`: the ablation scale -- 64x64 shapes, 1000 steps at lr 5e-3, one eval at the
           end (two to four minutes per model on a 2-core CPU). A short-budget regime
           (a width-8 U-Net reaches mIoU ~0.5-0.6, not the main job's 0.9): ablations
           compare runs trained alike, not converged accuracies;
- `tiny`:  32x32, a handful of steps, tiny widths (tests and smoke runs).
"""
from __future__ import annotations

import copy

import ml_collections

from jaxseg.train import transfer

VARIANTS = ("small", "tiny")


def optimizer_config(**overrides) -> ml_collections.ConfigDict:
  """config.optimizer (jaxseg.train.optim): AdamW, cosine decay after a linear warm-up,
  global-norm gradient clipping; the SGD / step-schedule fields are there to override."""
  c = ml_collections.ConfigDict(dict(
      name="adamw", lr=2e-3, schedule="cosine", warmup_steps=50, final_lr_fraction=0.01,
      decay_steps=(), decay_factor=0.1, momentum=0.9, nesterov=False, b1=0.9, b2=0.999,
      weight_decay=1e-4, grad_clip_norm=1.0))
  c.update(overrides)
  return c


def check_variant(arg) -> None:
  if arg not in (None, "", *VARIANTS):
    raise ValueError(f"unknown config variant {arg!r}; expected one of {VARIANTS} or none")


def run_config(task: str, best_metric: str, *, batch_size: int, eval_batch_size: int,
               num_steps: int, log_every: int, eval_every: int,
               checkpoint_every: int) -> ml_collections.ConfigDict:
  """The run keys every config has: task, seed, batch sizes, schedule of logs, evals and
  checkpoints (the last 2 kept, plus the best by `best_metric`, higher is better)."""
  return ml_collections.ConfigDict(dict(
      task=task, seed=0, batch_size=batch_size, eval_batch_size=eval_batch_size,
      num_steps=num_steps, log_every=log_every, eval_every=eval_every,
      checkpoint_every=checkpoint_every, keep_checkpoints=2, best_metric=best_metric,
      best_mode="max"))


def shrink_to_tiny(c: ml_collections.ConfigDict, num_steps: int, eval_every: int,
                   warmup_steps: int) -> None:
  """The `tiny` variant's common part (tests, smoke runs): batches of 4, 32x32 images,
  16 / 8 generated examples, a log every 2 steps and a checkpoint every 2."""
  c.batch_size = c.eval_batch_size = 4
  c.num_steps = num_steps
  c.log_every = 2
  c.eval_every = eval_every
  c.checkpoint_every = 2
  c.dataset.image_size = 32
  c.dataset.generator.num_train = 16
  c.dataset.generator.num_validation = 8
  c.optimizer.warmup_steps = warmup_steps


def segmentation_shapes(arg, model: dict, tiny_model: dict,
                        small_model: dict | None = None) -> ml_collections.ConfigDict:
  """The segmentation config on the embedded shapes data, unlocked.

  `model` is config.model (`name` plus the model's fields); `tiny_model` / `small_model`
  override it in the `tiny` / `small` variants.
  """
  check_variant(arg)
  c = run_config("segmentation", "mIoU", batch_size=8, eval_batch_size=8, num_steps=1200,
                 log_every=20, eval_every=600, checkpoint_every=100)

  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = "shapes"
  c.dataset.data_dir = ml_collections.config_dict.placeholder(str)
  c.dataset.image_size = 128
  c.dataset.ignore_index = 255
  c.dataset.train_split = ml_collections.config_dict.placeholder(str)
  c.dataset.eval_split = ml_collections.config_dict.placeholder(str)
  c.dataset.cache = True
  c.dataset.shuffle_buffer = 4096
  c.dataset.shard_by_process = False  # True: each process reads only its share (multihost.md)
  # Scale jitter off: the shapes splits share one scale. With jitter on (0.8-1.25) and
  # width 16, 1150 steps reached only mIoU 0.835 in the 10-minute budget.
  c.dataset.augment = ml_collections.ConfigDict(dict(flip=True, min_scale=1.0, max_scale=1.0))
  # crop_size: train on random crops of this side (None: whole image_size images).
  c.dataset.augment.crop_size = ml_collections.config_dict.placeholder(int)
  c.dataset.generator = ml_collections.ConfigDict(dict(
      num_train=2000, num_validation=500, min_objects=1, max_objects=4,
      class_probs=ml_collections.config_dict.placeholder(tuple)))

  c.model = ml_collections.ConfigDict(dict(model, dtype="float32"))

  c.loss = ml_collections.ConfigDict(dict(ce_weight=1.0, dice_weight=0.5))
  # Monte-Carlo dropout at evaluation (needs model.dropout_rate > 0): mc_samples > 0
  # writes per-pixel predictive-entropy maps beside the prediction pictures.
  c.uncertainty = ml_collections.ConfigDict(dict(mc_samples=0))

  c.optimizer = optimizer_config(warmup_steps=50)

  # Transfer learning: initialize (part of) the model from a run or a weights file
  # (docs/transfer.md); applied only at a fresh start.
  c.init_from = transfer.default_config()

  if arg == "small":
    c.num_steps = 1000
    c.eval_every = 1000
    c.checkpoint_every = 250
    c.log_every = 50
    c.optimizer.lr = 5e-3
    c.dataset.image_size = 64
    c.model.update(small_model or {})
  elif arg == "tiny":  # a few seconds on CPU: tests and smoke runs
    shrink_to_tiny(c, num_steps=6, eval_every=3, warmup_steps=2)
    c.dataset.augment.min_scale, c.dataset.augment.max_scale = 0.8, 1.25  # exercise scaling
    c.model.update(tiny_model)
  return c


IMAGE_TASKS = ("classification", "localization", "pose")


def image_task(arg, task: str, dataset: dict, model: dict, tiny_model: dict,
               small_model: dict | None = None, loss: dict | None = None,
               small: dict | None = None) -> ml_collections.ConfigDict:
  """The config of an image-level task (classification, localization, pose), unlocked.

  `dataset` overrides the dataset defaults (name, image_size, generator, augment, ...);
  `model` is config.model (backbone, backbone_args, fc_widths, dropout_rate, and for pose
  the cascade fields); `loss` config.loss. Variants: `small` applies `small` (top-level
  keys, e.g. num_steps) and `small_model`; `tiny` shrinks everything for tests.
  """
  check_variant(arg)
  if task not in IMAGE_TASKS:
    raise ValueError(f"unknown image task {task!r}; expected one of {IMAGE_TASKS}")
  placeholder = ml_collections.config_dict.placeholder
  best_metric = {"classification": "accuracy", "localization": "correct_localization",
                 "pose": "PCK@0.2"}[task]
  c = run_config(task, best_metric, batch_size=32, eval_batch_size=64, num_steps=2000,
                 log_every=50, eval_every=1000, checkpoint_every=500)

  d = ml_collections.ConfigDict()
  d.name = "shapes"
  d.data_dir = placeholder(str)
  d.image_size = 64
  d.train_split = placeholder(str)
  d.eval_split = placeholder(str)
  d.eval_crop = placeholder(float)  # e.g. 0.875: resize the short side, centre crop
  d.label = "breed"  # oxford_iiit_pet: "breed" (37 classes) or "species" (cat, dog)
  d.cache = True
  d.shuffle_buffer = 2048  # a smaller buffer refills faster at each epoch start
  d.shard_by_process = False  # True: each process reads only its share (multihost.md)
  d.augment = ml_collections.ConfigDict(dict(flip=task != "pose", min_scale=1.0,
                                             max_scale=1.0, min_box_fraction=0.5))
  d.generator = ml_collections.ConfigDict(dict(
      num_train=8000, num_validation=1000, min_objects=1, max_objects=1,
      class_probs=placeholder(tuple)))
  for key, value in dataset.items():
    if isinstance(value, dict):
      d[key].update(value)
    else:
      d[key] = value
  c.dataset = d

  c.model = ml_collections.ConfigDict(dict(model, dtype="float32"))
  c.loss = ml_collections.ConfigDict(dict(label_smoothing=0.0, box_loss="l2", box_weight=10.0,
                                          smooth_l1_beta=0.05))
  c.loss.update(loss or {})

  c.init_from = transfer.default_config()  # docs/transfer.md; only at a fresh start

  c.optimizer = optimizer_config(warmup_steps=100)

  if arg == "small":
    c.update(small or {})
    c.model.update(small_model or {})
  elif arg == "tiny":
    shrink_to_tiny(c, num_steps=4, eval_every=4, warmup_steps=1)
    c.model.update(tiny_model)
  return c


def detection(arg, model: dict, tiny_model: dict, small_model: dict | None = None, *,
              dataset: dict | None = None, run: dict | None = None,
              optimizer: dict | None = None, init_from: dict | None = None,
              small: dict | None = None, task: str = "detection",
              best_metric: str = "AP", loss: dict | None = None) -> ml_collections.ConfigDict:
  """The detection config (task `detection`), unlocked: the shapes main job's defaults,
  then the experiment's overrides, then the variant.

  `model` is config.model (`name` plus the detector's fields: backbone, backbone_args,
  backbone_levels, fpn, fpn_channels, rpn, roi_heads); `tiny_model` / `small_model`
  override it (dicts merged one level deep) in the `tiny` / `small` variants.
  `dataset` (config.dataset keys, dicts merged: name, image_size, max_boxes, augment, ...),
  `run` (top-level keys: batch sizes, num_steps, eval_every, ...), `optimizer` and
  `init_from` override the defaults of the full run; `small` does so in the `small` variant
  (top-level keys and `dataset` / `optimizer` dicts; default: the shapes study scale).
  `tiny` (tests) is the same for every dataset: 32x32, batches of 4, 4 steps, max_boxes 4.
  config.loss holds one `<term>_weight` per loss term of `jaxseg.tasks.detection` (Mask
  R-CNN's roi_mask and roi_keypoint included: a model with config.model.mask_head /
  .keypoint_head trains them). `task` "instance_segmentation" is the same task (an
  alias naming what the run is for); `best_metric` e.g. "mask_AP". `loss`: config.loss
  instead (another model's terms, e.g. dense captioning's).
  """
  check_variant(arg)
  placeholder = ml_collections.config_dict.placeholder
  # Faster R-CNN R18-FPN (width 16) on 128 px shapes, measured on the shared 2-core
  # machine (2026-12-06): 1500 steps -> AP 0.736 / AP50 0.930 (0.691 / 0.909 at step
  # 1000); a 1000-step schedule -> only AP 0.634 / AP50 0.850. 0.36 s per step in the
  # least loaded stretch (1.2 s median while two other jobs shared the cores).
  c = run_config(task, best_metric, batch_size=8, eval_batch_size=8, num_steps=1500,
                 log_every=50, eval_every=750, checkpoint_every=250)

  d = ml_collections.ConfigDict()
  d.name = "shapes"
  d.data_dir = placeholder(str)
  d.image_size = 128
  d.max_boxes = 8  # padded ground-truth rows per image (shapes has at most max_objects)
  d.max_boxes_overflow = "error"  # more objects than max_boxes: "error" or "keep_largest"
  d.resize = "letterbox"
  d.train_split = placeholder(str)
  d.eval_split = placeholder(str)
  d.cache = True
  d.shuffle_buffer = 2048
  d.shard_by_process = False  # True: each process reads only its share (multihost.md)
  d.crowd_max_area = 0
  d.augment = ml_collections.ConfigDict(dict(flip=True, min_scale=1.0, max_scale=1.0,
                                             min_visible_fraction=0.0))
  d.generator = ml_collections.ConfigDict(dict(  # the shapes generator (other sets: unused)
      num_train=2000, num_validation=500, min_objects=1, max_objects=4,
      class_probs=placeholder(tuple)))
  c.dataset = d

  c.model = ml_collections.ConfigDict(dict(model, dtype="float32"))
  c.loss = ml_collections.ConfigDict(loss or dict(
      rpn_objectness_weight=1.0, rpn_box_weight=1.0, roi_classifier_weight=1.0,
      roi_box_weight=1.0, roi_mask_weight=1.0, roi_keypoint_weight=1.0))
  c.optimizer = optimizer_config(lr=1e-3, warmup_steps=100, weight_decay=1e-4,
                                 grad_clip_norm=10.0)
  c.init_from = transfer.default_config()  # docs/transfer.md; only at a fresh start
  c.dataset.update(dataset or {})
  c.update(run or {})
  c.optimizer.update(optimizer or {})
  c.init_from.update(init_from or {})

  def merge(overrides):
    for key, value in (overrides or {}).items():
      if isinstance(value, dict) and isinstance(c.model.get(key), ml_collections.ConfigDict):
        c.model[key].update(value)
      else:
        c.model[key] = value

  if arg == "small":
    if small is None:
      c.num_steps = 600
      c.eval_every = 600
      c.checkpoint_every = 200
      c.dataset.image_size = 64
    else:
      c.update(small)
    merge(small_model)
  elif arg == "tiny":  # a few seconds on CPU: tests and smoke runs
    shrink_to_tiny(c, num_steps=4, eval_every=4, warmup_steps=1)
    c.dataset.max_boxes = 4
    merge(tiny_model)
  return c


def faster_rcnn_shapes_model() -> tuple[dict, dict, dict]:
  """(config.model, its tiny override, its small override) of Faster R-CNN R18-FPN on the
  128 px shapes (experiments/detection/faster_rcnn_shapes.py; Mask R-CNN adds its head).
  Shapes objects are 20-56 px at 128 x 128, so the anchors are a quarter of the COCO
  ones: one size per pyramid level P2..P6 (16 .. 256 px), 3 aspect ratios."""
  model = dict(
      name="faster_rcnn", backbone="resnet18", backbone_args=dict(width=16),
      backbone_levels=("stride_4", "stride_8", "stride_16", "stride_32"),
      fpn=True, fpn_channels=64,
      rpn=dict(anchor_sizes=((16.0,), (32.0,), (64.0,), (128.0,), (256.0,)),
               aspect_ratios=(0.5, 1.0, 2.0), pre_nms_top_n_train=600,
               post_nms_top_n_train=300, pre_nms_top_n_test=300, post_nms_top_n_test=100,
               nms_threshold=0.7, batch_size_per_image=128, positive_fraction=0.5,
               fg_iou_threshold=0.7, bg_iou_threshold=0.3,
               box_weights=(1.0, 1.0, 1.0, 1.0)),
      roi_heads=dict(pooler="multilevel", pooler_resolution=7, sampling_ratio=2,
                     representation_size=256, batch_size_per_image=128,
                     positive_fraction=0.25, fg_iou_threshold=0.5, bg_iou_threshold=0.5,
                     box_weights=(10.0, 10.0, 5.0, 5.0), score_threshold=0.05,
                     nms_threshold=0.5, detections_per_image=50))
  tiny = dict(
      backbone_args=dict(width=4), backbone_levels=("stride_8", "stride_16"),
      fpn_channels=8,
      rpn=dict(anchor_sizes=((8.0,), (16.0,), (32.0,)), pre_nms_top_n_train=64,
               post_nms_top_n_train=32, pre_nms_top_n_test=32, post_nms_top_n_test=16,
               batch_size_per_image=32),
      roi_heads=dict(representation_size=16, batch_size_per_image=16,
                     detections_per_image=10))
  small = dict(rpn=dict(anchor_sizes=((8.0,), (16.0,), (32.0,), (64.0,), (128.0,))))
  return model, tiny, small


def detection_shapes(arg, model: dict, tiny_model: dict, small_model: dict | None = None,
                     **options) -> ml_collections.ConfigDict:
  """The detection config on the embedded shapes data (`detection` with its defaults;
  `options`: its keyword arguments, e.g. task, best_metric)."""
  return detection(arg, model, tiny_model, small_model, **options)


def torchvision_faster_rcnn() -> tuple[dict, dict]:
  """(config.model, its `tiny` override) of torchvision's fasterrcnn_resnet50_fpn
  (`jaxseg.weights.torchvision.FASTERRCNN_RESNET50_FPN`: ResNet-50 with frozen batch norm,
  FPN P2-P6, anchors 32-512 px one size per level x 3 ratios, torchvision's conventions),
  so converted torchvision weights load (docs/torchvision_weights.md). The tiny override
  (tests) keeps its fields but shrinks widths, levels and top-k."""
  from jaxseg.weights import torchvision as tvw  # pylint: disable=g-import-not-at-top
  tiny = dict(
      backbone_args=dict(width=4, stage_sizes=(1, 1, 1, 1)),
      backbone_levels=("stride_8", "stride_16"), fpn_channels=8,
      rpn=dict(anchor_sizes=((8.0,), (16.0,), (32.0,)), pre_nms_top_n_train=64,
               post_nms_top_n_train=32, pre_nms_top_n_test=32, post_nms_top_n_test=16,
               batch_size_per_image=32),
      roi_heads=dict(representation_size=16, batch_size_per_image=16,
                     detections_per_image=10))
  return copy.deepcopy(tvw.FASTERRCNN_RESNET50_FPN), tiny


def torchvision_mask_rcnn() -> tuple[dict, dict]:
  """(config.model, its `tiny` override) of torchvision's maskrcnn_resnet50_fpn
  (`jaxseg.weights.torchvision.MASKRCNN_RESNET50_FPN`: `torchvision_faster_rcnn`'s model
  plus the mask head, 4 x 256 convs, a 2 x 2 transpose conv, 28 x 28 masks per class), so
  converted torchvision weights load (docs/torchvision_weights.md). The tiny override
  (tests) is Faster R-CNN's with two 8-wide mask convs."""
  from jaxseg.weights import torchvision as tvw  # pylint: disable=g-import-not-at-top
  _, tiny = torchvision_faster_rcnn()
  tiny["mask_head"] = dict(conv_layers=(8, 8))
  return copy.deepcopy(tvw.MASKRCNN_RESNET50_FPN), tiny


def torchvision_keypoint_rcnn() -> tuple[dict, dict]:
  """(config.model, its `tiny` override) of torchvision's keypointrcnn_resnet50_fpn
  (`jaxseg.weights.torchvision.KEYPOINTRCNN_RESNET50_FPN`: `torchvision_faster_rcnn`'s model
  plus the keypoint head, 8 x 512 convs, a 4 x 4 transpose conv and bilinear x 2 to 56 x 56
  heatmaps, decoded at each box's size up to 1333 px; the dataset gives the number of
  keypoints), so converted torchvision weights load. The tiny override (tests, 32 px) is
  Faster R-CNN's with two 8-wide keypoint convs and max_size 32."""
  from jaxseg.weights import torchvision as tvw  # pylint: disable=g-import-not-at-top
  _, tiny = torchvision_faster_rcnn()
  tiny["keypoint_head"] = dict(conv_layers=(8, 8), max_size=32)
  return copy.deepcopy(tvw.KEYPOINTRCNN_RESNET50_FPN), tiny


COCO_TRAIN_IMAGES = 118_287  # COCO 2017 train: TFDS coco/2017 train, instances_train2017


def torchvision_coco_recipe(*, epochs: int = 26, lr_steps: tuple[int, int] = (16, 22),
                            train_images: int = COCO_TRAIN_IMAGES,
                            batch_size: int = 16) -> dict:
  """`detection` keyword arguments (dataset, run, optimizer, init_from, small) of
  torchvision's references/detection recipe on COCO, as experiments/detection/
  faster_rcnn_coco.py sets it: batch 16 (8 GPUs x 2), SGD lr 0.02 * batch / 16,
  momentum 0.9, weight decay 1e-4, lr x 0.1 at the `lr_steps` epochs, a 1000-step
  warm-up, no clipping, `epochs` of `train_images` images (Faster / Mask R-CNN: 26, (16,
  22); keypoint R-CNN: 46, (36, 43)); images 1088 px letterboxed, max_boxes 100 with
  "error", no cache; init_from takes an ImageNet ResNet-50 under `backbone`; `small`:
  Detectron's 1x (12 epochs, x 0.1 at 8 and 11) at 832 px. The dataset name is the
  caller's."""
  epoch = train_images // batch_size
  return dict(
      dataset=dict(image_size=1088, max_boxes=100, max_boxes_overflow="error", cache=False),
      run=dict(batch_size=batch_size, eval_batch_size=8, num_steps=epochs * epoch,
               log_every=100, eval_every=2 * epoch, checkpoint_every=2_000),
      optimizer=dict(name="sgd", lr=0.02 * batch_size / 16, momentum=0.9, nesterov=False,
                     weight_decay=1e-4, schedule="step",
                     decay_steps=tuple(e * epoch for e in lr_steps), decay_factor=0.1,
                     warmup_steps=1_000, grad_clip_norm=0.0),
      init_from=dict(source_prefix="backbone", target_prefix="backbone"),
      small=dict(num_steps=12 * epoch, dataset=dict(image_size=832),
                 optimizer=dict(decay_steps=(8 * epoch, 11 * epoch))))


def torchvision_ssd300() -> tuple[dict, dict]:
  """(config.model, its `tiny` override) of SSD300 (Liu et al. 2016) as torchvision's
  ssd300_vgg16 (`jaxseg.weights.torchvision.SSD300_VGG16`: its VGG-16, conv4_3 L2 norm,
  extra layers, default boxes and postprocessing), so converted torchvision weights load.
  The tiny override (tests, 32 px) shrinks the VGG and keeps 3 maps (conv4_3, fc7, one
  extra layer)."""
  from jaxseg.weights import torchvision as tvw  # pylint: disable=g-import-not-at-top
  tiny = dict(
      backbone_args=dict(stage_widths=(4, 4, 8, 8, 8), stage_convs=(1, 1, 1, 1, 1),
                         fc_width=8),
      ssd=dict(extra_layers=((8, 8, 2, 1),), aspect_ratios=((2.0,), (2.0, 3.0), (2.0,)),
               scales=(0.1, 0.3, 0.6, 0.9), steps=(8.0, 16.0, 32.0),
               candidates_per_class=20, detections_per_image=10))
  return copy.deepcopy(tvw.SSD300_VGG16), tiny
