"""One point of the speed / accuracy study (Huang et al., CVPR 2017;
experiments/ablations/speed_accuracy.py): a meta-architecture x a backbone x an input
size, at the study scale (the `:small` schedule of the shapes configs: 600 steps of
batch 8).

  --config=experiments/detection/detector_grid.py:META,BACKBONE,SIZE
  META in faster_rcnn, ssd, yolo; BACKBONE in BACKBONES; SIZE an image size (a multiple
  of 32), e.g. `ssd,mobilenet_v2,128`.
Every detector reads the same backbone maps it reads in its shapes config (Faster R-CNN:
FPN over strides 4-32; SSD: strides 16, 32 and an extra layer; YOLO: the stride-16 map,
its grid = SIZE / 16); anchors and default boxes are fractions of the image, so they
scale with SIZE.
"""
import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# backbone -> config.model.backbone_args: "VGG-16-style" (5 stages of 3x3 convs,
# narrowed), ResNet-18 (width 16) and MobileNet v2 (alpha 0.5).
BACKBONES = {
    "vgg16": dict(stage_widths=(16, 32, 64, 128, 128), stage_convs=(2, 2, 3, 3, 3)),
    "resnet18": dict(width=16),
    "mobilenet_v2": dict(alpha=0.5),
}
METAS = {"faster_rcnn": "experiments/detection/faster_rcnn_shapes.py",
         "ssd": "experiments/detection/ssd_shapes.py",
         "yolo": "experiments/detection/yolo_shapes.py"}


def get_config(arg=None):
  try:
    meta, backbone, size = (arg or "").split(",")
    size = int(size)
  except ValueError:
    raise ValueError(f"detector_grid.py:{arg!r}; expected META,BACKBONE,SIZE, e.g. "
                     "ssd,resnet18,128") from None
  if meta not in METAS or backbone not in BACKBONES or size % 32:
    raise ValueError(f"detector_grid.py:{arg}: META one of {sorted(METAS)}, BACKBONE one "
                     f"of {sorted(BACKBONES)}, SIZE a multiple of 32")
  spec = importlib.util.spec_from_file_location("detector_grid_base",
                                                os.path.join(REPO, METAS[meta]))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config("small")
  c.unlock()
  c.model.backbone = backbone
  c.model.backbone_args = BACKBONES[backbone]
  c.dataset.image_size = size
  if meta == "yolo":
    c.model.yolo.grid_size = size // 16
  if meta == "faster_rcnn":  # anchors as the full config's at 128 px, scaled to SIZE
    c.model.rpn.anchor_sizes = tuple((16.0 * size / 128 * 2**i,) for i in range(5))
  return c.lock()
