"""SSD (Liu et al., ECCV 2016) on the embedded shapes data: default boxes on three feature
maps (strides 16 and 32 of a ResNet-18 of width 16, and one extra layer at stride 64),
matching at IoU 0.5, hard negative mining 3:1, smooth L1 + softmax.

./launch.sh train experiments/detection/ssd_shapes.py
Variants: `:small` (64 x 64, the study scale), `:tiny` (seconds; tests).

Scales s_k from 0.15 to 0.55 of the image over the three maps (eq. 4; shapes objects are
0.16-0.44 of it), aspect ratios {1, 2, 1/2} plus the extra box sqrt(s_k s_{k+1}):
4 default boxes per cell, 336 at 128 px. A first run with a fourth, stride-8 map (ResNet
stage 2, 32 channels; s 0.12-0.6, 1360 boxes) reached only AP50 0.689 after 1500 steps
(0.571 at 750): the shallow map's boxes were most of the boxes and its features the
weakest. 4000 steps, as YOLO's config; images scaled by 0.8-1.25 before the 128 px crop
or padding (config.dataset.augment).
"""
import ml_collections

from jaxseg import configs


def get_config(arg=None):
  c = configs.detection(
      arg,
      model=dict(
          name="ssd", backbone="resnet18", backbone_args=dict(width=16),
          backbone_levels=("stride_16", "stride_32"),
          ssd=dict(extra_layers=((64, 128, 2, 1),), s_min=0.15, s_max=0.55,
                   aspect_ratios=(1.0, 2.0, 0.5), iou_threshold=0.5, neg_pos_ratio=3.0,
                   score_threshold=0.01, nms_threshold=0.45, candidates_per_class=100,
                   detections_per_image=50)),
      tiny_model=dict(backbone_args=dict(width=4), backbone_levels=("stride_8", "stride_16"),
                      ssd=dict(extra_layers=((8, 8, 2, 1),), candidates_per_class=20,
                               detections_per_image=10)),
      small_model=dict(),
      run=dict(num_steps=4000, eval_every=1000, checkpoint_every=500))
  c.loss = ml_collections.ConfigDict(dict(ssd_classifier_weight=1.0, ssd_box_weight=1.0))
  # Scale jitter, SSD's "zoom in / zoom out" in small (Sec. 3.6: data augmentation is
  # crucial): AP50 0.863 / AP 0.594 at 4000 steps against 0.845 / 0.551 without.
  c.dataset.augment.min_scale = 0.8
  c.dataset.augment.max_scale = 1.25
  return c.lock()
