"""Faster R-CNN on PASCAL VOC as in Ren, He, Girshick & Sun (NeurIPS 2015), VGG-16:
train on VOC 2007 trainval (TFDS `voc/2007` train+validation), evaluate on VOC 2007 test.

./launch.sh train experiments/detection/faster_rcnn_voc.py --config.dataset.data_dir=DIR \\
    --config.init_from.weights=vgg16.safetensors
(`tfds build voc/2007 --data_dir=DIR` once; jaxseg never downloads.) VOC 2012 (train ->
validation): `--config.dataset.name=voc/2012`. The paper's "07+12" training set (VOC 2007
trainval + VOC 2012 trainval) spans two TFDS datasets, which one jaxseg split cannot
name yet: this config is the paper's "07" row (VGG-16, 69.9% mAP in its Table 3).
Variants: `:tiny` (tests; a small VGG at 32 px). Shared defaults: jaxseg/configs.py.

The paper's settings, as jaxseg fields:
- backbone: VGG-16 without batch norm; the RPN and RoI pooling read conv5_3 (`stage5`,
  stride 16), no FPN. Initialized from torchvision's ImageNet VGG-16: save its state dict
  once (`safetensors.torch.save_file(torchvision.models.vgg16(weights="IMAGENET1K_V1")
  .state_dict(), "vgg16.safetensors")`) and pass it as init_from.weights; the rename
  rules below (layout torch, under `backbone`) map features.<i> onto the 13 convs and
  drop the classifier (the paper also starts fc6 / fc7 from ImageNet: jaxseg's box head
  flattens the pooled RoI in another order, so they start fresh here). The paper keeps
  conv1-conv2 fixed; jaxseg freezes all or nothing of what it loads, so all train.
- images: the paper rescales the short side to 600 px (long side <= 1000). jaxseg
  letterboxes into a square: the long side becomes image_size. VOC images are mostly
  500 x 375, so image_size 800 gives them 800 x 600, the paper's 600 px short side
  (portrait images get 600 x 800 the other way round); 800 is a multiple of VGG's 32.
- anchors: 3 scales (128, 256, 512 px) x 3 aspect ratios (0.5, 1, 2) on the stride-16
  map; RPN: 256 anchors per image, half positive (IoU >= 0.7; negative < 0.3), NMS 0.7,
  12000 / 2000 proposals before / after NMS in training, 6000 / 300 at test, proposals
  under 16 px dropped (py-faster-rcnn's RPN_MIN_SIZE). Cross-boundary anchors are kept
  (the paper ignores them in training): jaxseg's RPN has no such option.
- RoI head: RoI pooling 7 x 7, fc6 / fc7 4096, 128 RoIs per image, 25 % foreground (IoU
  >= 0.5), box targets scaled by (10, 10, 5, 5) (py-faster-rcnn's normalization); test:
  scores >= 0.05, per-class NMS 0.3, 100 detections per image. No dropout in fc6 / fc7.
- schedule: SGD, momentum 0.9, weight decay 5e-4, one image per mini-batch, lr 0.001 for
  60k mini-batches then 0.0001 for 20k (`schedule="step"`, no warm-up, no gradient
  clipping). On N devices set batch_size=N (a multiple of the device count) and scale
  lr by N (Goyal et al. 2017).
- augmentation: horizontal flips only.
Evaluation differs from the paper's: jaxseg reports COCO-style AP (101-point interpolation)
and AP50; VOC's 11-point mAP ignores `difficult` objects, which jaxseg's detection task
scores as ordinary ground truth, so AP50 here is not directly the paper's mAP.
"""
from jaxseg import configs

# torchvision vgg16 `features.<i>` conv indices, in order: 2, 2, 3, 3, 3 convs per stage.
VGG16_CONVS = ((1, (0, 2)), (2, (5, 7)), (3, (10, 12, 14)), (4, (17, 19, 21)),
               (5, (24, 26, 28)))
# torchvision's ImageNet VGG-16 state dict -> jaxseg's VGG (norm=False) under `backbone`.
VGG16_TORCHVISION_RENAME = (r"^classifier\..*=>",) + tuple(
    rf"^features\.{i}\.{torch}$=>params/stage{stage}/ConvNormAct_{k}/Conv_0/{flax}"
    for stage, indices in VGG16_CONVS for k, i in enumerate(indices)
    for torch, flax in (("weight", "kernel"), ("bias", "bias")))

TRAIN_STEPS, DECAY_STEP = 80_000, 60_000  # the paper: 60k at lr 1e-3, then 20k at 1e-4


def get_config(arg=None):
  return configs.detection(
      arg,
      model=dict(
          name="faster_rcnn", backbone="vgg16", backbone_args=dict(norm=False),
          backbone_levels=("stage5",), fpn=False,
          rpn=dict(anchor_sizes=((128.0, 256.0, 512.0),), aspect_ratios=(0.5, 1.0, 2.0),
                   head_channels=512, pre_nms_top_n_train=12000, post_nms_top_n_train=2000,
                   pre_nms_top_n_test=6000, post_nms_top_n_test=300, nms_threshold=0.7,
                   min_size=16.0, batch_size_per_image=256, positive_fraction=0.5,
                   fg_iou_threshold=0.7, bg_iou_threshold=0.3,
                   box_weights=(1.0, 1.0, 1.0, 1.0)),
          roi_heads=dict(pooler="roi_pool", pooler_resolution=7, representation_size=4096,
                         batch_size_per_image=128, positive_fraction=0.25,
                         fg_iou_threshold=0.5, bg_iou_threshold=0.5,
                         box_weights=(10.0, 10.0, 5.0, 5.0), score_threshold=0.05,
                         nms_threshold=0.3, detections_per_image=100)),
      tiny_model=dict(
          backbone_args=dict(stage_widths=(4, 4, 8, 8, 8), stage_convs=(1, 1, 1, 1, 1)),
          rpn=dict(anchor_sizes=((8.0, 16.0, 32.0),), head_channels=8,
                   pre_nms_top_n_train=64, post_nms_top_n_train=32, pre_nms_top_n_test=32,
                   post_nms_top_n_test=16, min_size=0.0, batch_size_per_image=32),
          roi_heads=dict(representation_size=16, batch_size_per_image=16,
                         detections_per_image=10)),
      dataset=dict(name="voc/2007", image_size=800,
                   max_boxes=64,  # VOC images have at most a few dozen objects
                   shuffle_buffer=1024),
      run=dict(batch_size=1, eval_batch_size=8, num_steps=TRAIN_STEPS, log_every=100,
               eval_every=20_000, checkpoint_every=2_000),
      optimizer=dict(name="sgd", lr=1e-3, momentum=0.9, nesterov=False, weight_decay=5e-4,
                     schedule="step", decay_steps=(DECAY_STEP,), decay_factor=0.1,
                     warmup_steps=0, grad_clip_norm=0.0),
      init_from=dict(layout="torch", target_prefix="backbone",
                     rename=VGG16_TORCHVISION_RENAME),
      small=dict(num_steps=20_000, eval_every=20_000, checkpoint_every=2_000,
                 dataset=dict(image_size=512),
                 optimizer=dict(decay_steps=(15_000,)))).lock()
