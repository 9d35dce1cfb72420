"""Keypoint R-CNN (Mask R-CNN's keypoint head, He et al. 2017) on the embedded stick
figures: one person per 64 x 64 image, its box, mask and 14 LSP joints with visibility
(`stick_figures` detection source). Faster R-CNN R18-FPN plus the keypoint head (RoIAlign
14 x 14 -> 8 convs -> 4x4 transpose conv + bilinear x 2 -> 56 x 56 heatmaps, softmax over
positions per joint). Evaluated as box AP and keypoint AP ("keypoint_AP": COCO's OKS
with CrowdPose's sigmas for the 14 joints, `skeleton.OKS_SIGMAS`), exported as COCO JSON
(the person category carries its keypoints, skeleton and `kpt_oks_sigmas`).

./launch.sh train experiments/instance/keypoint_rcnn_stick_figures.py
Variants: `:small`, `:tiny` (tests). 800 steps of batch 8: a 1500-step run (commit
2a5ad8d) had keypoint AP 0.837 at step 750 already and ran 30 min under load. Flip augmentation stays off: a mirrored figure
with left / right swapped is not from the data's distribution (the right limbs are the
darker ones, see jaxseg/data/stick_figures.py).
"""
from jaxseg import configs


def get_config(arg=None):
  model, tiny_model, _ = configs.faster_rcnn_shapes_model()
  model["rpn"]["anchor_sizes"] = ((8.0,), (16.0,), (32.0,), (64.0,), (128.0,))
  model["roi_heads"].update(detections_per_image=10, instance_rois_per_image=8)
  model["keypoint_head"] = dict(conv_layers=(32,) * 8, resolution=14)
  tiny_model["keypoint_head"] = dict(conv_layers=(8, 8))
  c = configs.detection(
      arg, model, tiny_model,
      dataset=dict(name="stick_figures", image_size=64, max_boxes=1,
                   augment=dict(flip=False),
                   generator=dict(num_train=4000, num_validation=500)),
      run=dict(num_steps=800, eval_every=400, checkpoint_every=200),
      small=dict(num_steps=600, eval_every=600, checkpoint_every=200),
      task="instance_segmentation", best_metric="keypoint_AP")
  return c.lock()
