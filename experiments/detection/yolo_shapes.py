"""YOLO (Redmon et al., CVPR 2016) on the embedded shapes data: one network from the image
to an S x S x (5B + C) tensor, no proposals.

./launch.sh train experiments/detection/yolo_shapes.py
Variants: `:small` (64 x 64, the study scale), `:tiny` (seconds; tests). The lecture's
variant (B base boxes per cell regressed with dx, dy, dw, dh and a confidence, C + 1
class scores with the background): --config.model.yolo.parametrization=lecture.
The paper's fully connected head (any grid on any image): --config.model.yolo.head=fc
--config.model.yolo.grid_size=7 --config.model.backbone_levels="('stride_32',)".

The grid here is the conv head's: S = image_size / 16 (8 x 8 cells of 16 px at 128 px;
shapes objects are 20-56 px), B = 2 boxes per cell; the paper's 7 x 7 (448 px, stride 64,
fully connected head) is the model's default. Loss weights are the paper's:
lambda_coord = 5, lambda_noobj = 0.5 (config.loss.yolo_coord_weight,
yolo_noobject_weight).
"""
import ml_collections

from jaxseg import configs


def get_config(arg=None):
  c = configs.detection(
      arg,
      model=dict(
          name="yolo", backbone="resnet18", backbone_args=dict(width=16),
          backbone_levels=("stride_16",),
          yolo=dict(head="conv", grid_size=8, boxes_per_cell=2, conv_width=128,
                    parametrization="paper", score_threshold=0.01, nms_threshold=0.5,
                    detections_per_image=50)),
      tiny_model=dict(backbone_args=dict(width=4),
                      yolo=dict(grid_size=2, conv_width=8, detections_per_image=10)),
      small_model=dict(yolo=dict(grid_size=4)),
      run=dict(num_steps=4000, eval_every=1000, checkpoint_every=500))
  c.loss = ml_collections.ConfigDict(dict(yolo_coord_weight=5.0, yolo_object_weight=1.0,
                                          yolo_noobject_weight=0.5, yolo_class_weight=1.0))
  return c.lock()
