"""Faster R-CNN R50-FPN on COCO 2017 (train2017 -> val2017; TFDS `coco/2017` train ->
validation), torchvision's `fasterrcnn_resnet50_fpn` recipe (Ren et al. 2015 with the FPN
of Lin et al. 2017; torchvision's references/detection: 37.0 box AP).

./launch.sh train experiments/detection/faster_rcnn_coco.py --config.dataset.data_dir=DIR \\
    --config.init_from.weights=r50_imagenet.npz
(`tfds build coco/2017 --data_dir=DIR` once; jaxseg never downloads.) The ImageNet
ResNet-50 comes from torchvision's checkpoint: `python -m jaxseg.weights torchvision
resnet50 --pth resnet50-0676ba61.pth --out r50_imagenet.npz` (docs/transfer.md); init_from
is preset to load it under `backbone` (FPN and heads start fresh). Variants: `:tiny`.

The settings, as jaxseg fields:
- model: exactly torchvision's (`configs.torchvision_faster_rcnn`): ResNet-50 with frozen
  batch norm, FPN P2-P6, anchors 32, 64, 128, 256, 512 px (one per level) x ratios 0.5, 1,
  2, RPN 2000 / 2000 proposals in training and 1000 / 1000 at test, RoIAlign 7 x 7 over
  the levels, 512 RoIs per image, 100 detections. torchvision also freezes the stem and
  layer1 (trainable_backbone_layers=3); jaxseg freezes all or nothing of what it loads,
  so they train here.
- images: torchvision resizes the short side to 800 (long side <= 1333); jaxseg
  letterboxes into a square whose side is the long side: 1088 gives the common 640 x 480
  COCO image 1088 x 816, about torchvision's 800 px short side. 1088 is a multiple of 64,
  so P6's grid is exact.
- objects: max_boxes 100 with max_boxes_overflow="error": COCO 2017 images have fewer
  than 100 annotations (crowd regions included), so nothing is dropped, and an image with
  more stops the run naming the key instead of losing objects silently. Crowd regions
  (iscrowd=1) are left out of the training targets and are "ignore" regions in the
  evaluation (COCO's rule). torchvision drops the ~1k train images without annotations;
  jaxseg keeps them (every anchor negative).
- schedule: torchvision's 26 epochs at batch 16, SGD lr 0.02, momentum 0.9, weight decay
  1e-4, lr x 0.1 at epochs 16 and 22, a 1000-step linear warm-up (from 0 here, from
  0.001 x lr in torchvision); no gradient clipping. With a smaller batch B scale lr to
  0.02 * B / 16 and the steps by 16 / B.
- augmentation: horizontal flips only. The decoded train set is not cached (~100 GB).
"""
from jaxseg import configs

TRAIN_IMAGES, BATCH = 118_287, 16  # TFDS coco/2017 train; torchvision's 8 GPUs x 2
STEPS_PER_EPOCH = TRAIN_IMAGES // BATCH


def get_config(arg=None):
  model, tiny_model = configs.torchvision_faster_rcnn()
  return configs.detection(
      arg, model=model, tiny_model=tiny_model,
      dataset=dict(name="coco/2017", image_size=1088, max_boxes=100,
                   max_boxes_overflow="error", cache=False),
      run=dict(batch_size=BATCH, eval_batch_size=8, num_steps=26 * STEPS_PER_EPOCH,
               log_every=100, eval_every=2 * STEPS_PER_EPOCH, checkpoint_every=2_000),
      optimizer=dict(name="sgd", lr=0.02, momentum=0.9, nesterov=False, weight_decay=1e-4,
                     schedule="step",
                     decay_steps=(16 * STEPS_PER_EPOCH, 22 * STEPS_PER_EPOCH),
                     decay_factor=0.1, warmup_steps=1_000, grad_clip_norm=0.0),
      init_from=dict(source_prefix="backbone", target_prefix="backbone"),
      small=dict(num_steps=12 * STEPS_PER_EPOCH, dataset=dict(image_size=832),
                 optimizer=dict(decay_steps=(8 * STEPS_PER_EPOCH, 11 * STEPS_PER_EPOCH)))
  ).lock()
