"""Mask R-CNN (He et al. 2017) on the embedded shapes data: the detection main job's
Faster R-CNN R18-FPN (`configs.faster_rcnn_shapes_model`) plus the mask head (RoIAlign
14 x 14 -> 4 convs -> 2x transpose conv -> a 28 x 28 mask per class, sigmoid BCE on the
ground-truth class). Evaluated as box AP, mask AP (COCO `segm`: "mask_AP", "mask_AP50")
and exported as COCO JSON with RLE masks (results/<step>/).

./launch.sh train experiments/instance/mask_rcnn_shapes.py
Variants: `:small` (64 x 64, the mask_overhead study's scale), `:tiny` (tests).
The paper's head has 256-channel convs and trains on every foreground RoI (up to 128 of
512 per image); here 32 channels and 8 foreground RoIs per image, drawn at random
(`roi_heads.instance_rois_per_image`): the head's convolutions over 14 x 14 RoIs would
otherwise cost ten times the backbone on this CPU.
"""
from jaxseg import configs


def get_config(arg=None):
  model, tiny_model, small_model = configs.faster_rcnn_shapes_model()
  model["mask_head"] = dict(conv_layers=(32, 32, 32, 32), resolution=14)
  model["roi_heads"]["instance_rois_per_image"] = 8
  tiny_model["mask_head"] = dict(conv_layers=(8, 8))
  return configs.detection_shapes(arg, model, tiny_model, small_model,
                                  task="instance_segmentation",
                                  best_metric="mask_AP").lock()
