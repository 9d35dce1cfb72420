"""The lecture's sliding-window detector on the embedded shapes data: a crop classifier
over C + 1 classes (background included) applied to every window of 3 scales x 3
aspect ratios (stride a quarter of the window), then per-class NMS. The windows are the
boxes (no regression); their number per image is reported as windows_per_image.

./launch.sh train experiments/detection/sliding_window_shapes.py
Variants: `:small` (64 x 64, the rcnn_family study scale), `:tiny` (tests). The crop
network, its training (sampled windows, 25% foreground at IoU >= 0.5) and the warp are
R-CNN's (`jaxseg.models.detection.RegionClassifier`); only the regions differ.
"""
import ml_collections

from jaxseg import configs


def get_config(arg=None):
  c = configs.detection_shapes(
      arg,
      model=dict(
          name="sliding_window", backbone="resnet18", backbone_args=dict(width=16, stem="small"),
          region_classifier=dict(
              crop_size=32, representation_size=128, window_scales=(24.0, 40.0, 56.0),
              window_aspect_ratios=(0.5, 1.0, 2.0), window_stride_fraction=0.25,
              batch_size_per_image=32, positive_fraction=0.25, fg_iou_threshold=0.5,
              bg_iou_threshold=0.5, score_threshold=0.05, nms_threshold=0.3,
              detections_per_image=50)),
      tiny_model=dict(backbone_args=dict(width=4),
                      region_classifier=dict(crop_size=32, representation_size=16,
                                             window_scales=(8.0, 16.0),
                                             window_aspect_ratios=(1.0,),
                                             window_stride_fraction=0.5,
                                             batch_size_per_image=8,
                                             detections_per_image=10)),
      small_model=dict(region_classifier=dict(window_scales=(12.0, 20.0, 28.0))))
  c.loss = ml_collections.ConfigDict(dict(roi_classifier_weight=1.0))
  if arg == "small":  # a crop CNN from scratch learns shapes slowly (chance at step 300)
    c.update(num_steps=1500, eval_every=1500, checkpoint_every=500)
  return c.lock()
