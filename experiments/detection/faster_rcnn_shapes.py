"""Faster R-CNN (Ren et al. 2015) with FPN (Lin et al. 2017) on the embedded shapes data:
the detection main job.

./launch.sh train experiments/detection/faster_rcnn_shapes.py
Variants: `:small` (64x64, the study scale), `:tiny` (seconds; tests); any key overridden
with e.g. `--config.model.roi_heads.pooler=roi_align --config.model.fpn=False
--config.model.backbone_levels="('stride_16',)"`. Shared defaults: jaxseg/configs.py.

Shapes objects are 20-56 px at 128 x 128, so the anchors are a quarter of the COCO
ones: one size per pyramid level P2..P6 (16 .. 256 px), 3 aspect ratios; without FPN
give one level 3 sizes (e.g. rpn.anchor_sizes=((16, 32, 64),)).
"""
from jaxseg import configs


def get_config(arg=None):
  return configs.detection_shapes(
      arg,
      model=dict(
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
                         nms_threshold=0.5, detections_per_image=50)),
      tiny_model=dict(
          backbone_args=dict(width=4), backbone_levels=("stride_8", "stride_16"),
          fpn_channels=8,
          rpn=dict(anchor_sizes=((8.0,), (16.0,), (32.0,)), pre_nms_top_n_train=64,
                   post_nms_top_n_train=32, pre_nms_top_n_test=32, post_nms_top_n_test=16,
                   batch_size_per_image=32),
          roi_heads=dict(representation_size=16, batch_size_per_image=16,
                         detections_per_image=10)),
      small_model=dict(
          rpn=dict(anchor_sizes=((8.0,), (16.0,), (32.0,), (64.0,), (128.0,))))).lock()
