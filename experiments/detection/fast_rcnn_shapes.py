"""Fast R-CNN (Girshick, ICCV 2015) on the embedded shapes data: the backbone runs once
per image, each selective-search proposal is RoI-pooled from its map (7 x 7 max pooling,
the paper's; `--config.model.roi_heads.pooler=roi_align` for RoIAlign) -> fc6, fc7 ->
softmax + smooth-L1 class-specific box regression, trained jointly; 64 RoIs per image,
25% foreground at IoU >= 0.5, as in the paper.

./launch.sh train experiments/detection/fast_rcnn_shapes.py
Variants: `:small` (64 x 64, the rcnn_family study scale), `:tiny` (tests). The proposals
(config.proposals, `jaxseg.data.region_proposals`) are computed once per split and
cached; their time per image is reported at eval as `proposal_seconds_per_image`.
The detector is Faster R-CNN's parts without the RPN (`jaxseg.models.detection`).
"""
import ml_collections

from jaxseg import configs
from jaxseg.data import region_proposals


def get_config(arg=None):
  c = configs.detection_shapes(
      arg,
      model=dict(
          name="fast_rcnn", backbone="resnet18", backbone_args=dict(width=16),
          backbone_levels=("stride_8",), fpn=False,
          roi_heads=dict(pooler="roi_pool", pooler_resolution=7, representation_size=256,
                         batch_size_per_image=64, positive_fraction=0.25,
                         fg_iou_threshold=0.5, bg_iou_threshold=0.5,
                         box_weights=(10.0, 10.0, 5.0, 5.0), score_threshold=0.05,
                         nms_threshold=0.3, detections_per_image=50)),
      tiny_model=dict(backbone_args=dict(width=4),
                      roi_heads=dict(representation_size=16, batch_size_per_image=16,
                                     detections_per_image=10)),
      small_model=dict())
  c.loss = ml_collections.ConfigDict(dict(roi_classifier_weight=1.0, roi_box_weight=1.0))
  c.proposals = region_proposals.default_config(max_proposals=300)
  if arg == "small":
    c.proposals.max_proposals = 200
  elif arg == "tiny":
    c.proposals = region_proposals.default_config(
        max_proposals=24, method="sliding_windows", scales=(8.0, 16.0),
        aspect_ratios=(1.0,))
  return c.lock()
