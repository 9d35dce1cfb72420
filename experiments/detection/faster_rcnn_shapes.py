"""Faster R-CNN (Ren et al. 2015) with FPN (Lin et al. 2017) on the embedded shapes data:
the detection main job.

./launch.sh train experiments/detection/faster_rcnn_shapes.py
Variants: `:small` (64x64, the study scale), `:tiny` (seconds; tests); any key overridden
with e.g. `--config.model.roi_heads.pooler=roi_align --config.model.fpn=False
--config.model.backbone_levels="('stride_16',)"`. Shared defaults: jaxseg/configs.py
(the model: `configs.faster_rcnn_shapes_model`).

Shapes objects are 20-56 px at 128 x 128, so the anchors are a quarter of the COCO
ones: one size per pyramid level P2..P6 (16 .. 256 px), 3 aspect ratios; without FPN
give one level 3 sizes (e.g. rpn.anchor_sizes=((16, 32, 64),)).
"""
from jaxseg import configs


def get_config(arg=None):
  model, tiny_model, small_model = configs.faster_rcnn_shapes_model()
  return configs.detection_shapes(arg, model, tiny_model, small_model).lock()
