"""R-CNN (Girshick, Donahue, Darrell & Malik, CVPR 2014) on the embedded shapes data, the
paper's separate stages run by one command:

1. selective search ('fast' mode) proposals, computed once per split and cached;
2. each proposal grown by 16/227 of context and warped to 32 x 32 -> a CNN (ResNet-18,
   width 16, small stem, pooled, fc 128) fine-tuned with softmax over C + 1 classes on 32 regions per
   image (25% foreground at IoU >= 0.5);
3. after the last step (`jaxseg.train.rcnn_stages`): the features of every training
   image's boxes and proposals cached on disk (its size is logged as
   feature_cache_bytes), one linear SVM per class with hard-negative mining (negatives
   below IoU 0.3) and one ridge box regressor per class (IoU >= 0.6, lambda 1000);
4. test: every proposal warped and scored by the SVMs, boxes regressed, per-class NMS
   at 0.3.

./launch.sh train experiments/detection/rcnn_shapes.py
Variants: `:small` (64 x 64, the rcnn_family study scale), `:tiny` (tests). Softmax
scores instead of the SVMs: --config.model.region_classifier.classifier=softmax; no
box regression: --config.model.region_classifier.box_regression=False.
"""
import ml_collections

from jaxseg import configs
from jaxseg.data import region_proposals
from jaxseg.train import rcnn_stages


def get_config(arg=None):
  c = configs.detection_shapes(
      arg,
      model=dict(
          name="rcnn", backbone="resnet18", backbone_args=dict(width=16, stem="small"),
          region_classifier=dict(
              crop_size=32, context_padding=32 * 16 / 227, representation_size=128,
              classifier="svm", box_regression=True, batch_size_per_image=32,
              positive_fraction=0.25, fg_iou_threshold=0.5, bg_iou_threshold=0.5,
              score_threshold=0.05, nms_threshold=0.3, detections_per_image=50)),
      tiny_model=dict(backbone_args=dict(width=4),
                      region_classifier=dict(crop_size=32, context_padding=0.0,
                                             representation_size=16, batch_size_per_image=8,
                                             detections_per_image=10)),
      small_model=dict())
  c.loss = ml_collections.ConfigDict(dict(roi_classifier_weight=1.0))
  c.proposals = region_proposals.default_config(max_proposals=300)
  c.rcnn_stages = ml_collections.ConfigDict(rcnn_stages.DEFAULTS)
  if arg == "small":
    c.proposals.max_proposals = 200
    # A crop CNN from scratch learns shapes slowly (chance at step 300): the paper starts
    # from ImageNet weights instead (config.init_from, docs/transfer.md).
    c.update(num_steps=1500, eval_every=1500, checkpoint_every=500)
  elif arg == "tiny":
    c.proposals = region_proposals.default_config(
        max_proposals=24, method="sliding_windows", scales=(8.0, 16.0),
        aspect_ratios=(1.0,))
    c.rcnn_stages.update(cache_proposals=12, initial_negatives=50, mining_rounds=2)
  return c.lock()
