"""Mask R-CNN R50-FPN on COCO 2017 instances (train2017 -> val2017), torchvision's
`maskrcnn_resnet50_fpn` recipe (He et al. 2017 with the FPN of Lin et al. 2017;
torchvision's references/detection: 37.9 box AP, 34.6 mask AP).

TFDS's catalog `coco/2017` has boxes but NO masks, so the data is COCO's own JSON built
with jaxseg's COCO-format builder (polygons and crowd RLEs decoded to masks; offline,
nothing is downloaded). From the official train2017/, val2017/ and annotations/ of
https://cocodataset.org (annotations_trainval2017.zip), once:

python -m jaxseg.data.coco_format --name coco2017_instances --data_dir DIR \\
    --images train=COCO/train2017 --images validation=COCO/val2017 \\
    --annotations train=COCO/annotations/instances_train2017.json \\
    --annotations validation=COCO/annotations/instances_val2017.json
./launch.sh train experiments/instance/mask_rcnn_coco.py --config.dataset.data_dir=DIR \\
    --config.init_from.weights=r50_imagenet.npz

The ImageNet ResNet-50 comes from torchvision's checkpoint: `python -m jaxseg.weights
torchvision resnet50 --pth resnet50-0676ba61.pth --out r50_imagenet.npz`
(docs/transfer.md); init_from is preset to load it under `backbone` (FPN and heads start
fresh). Variants: `:small` (Detectron's 1x schedule at 832 px), `:tiny` (tests: the same
dataset name, 32 px, a tiny model).

The settings, as jaxseg fields:
- model: exactly torchvision's (`configs.torchvision_mask_rcnn`, the field set of
  `jaxseg.weights.torchvision.MASKRCNN_RESNET50_FPN`, so converted maskrcnn_resnet50_fpn
  weights load): faster_rcnn_coco.py's Faster R-CNN plus the mask head (RoIAlign 14 x 14
  over the FPN levels -> 4 x 256 3x3 convs -> 2x2 transpose conv -> an 80 + 1 class
  28 x 28 mask per RoI, sigmoid BCE on the ground-truth class); loss weights all 1 as
  torchvision's sum of losses.
- schedule, images, objects: faster_rcnn_coco.py's, from the same function
  (`configs.torchvision_coco_recipe`): 26 epochs of 118287 images at batch 16, SGD lr
  0.02, momentum 0.9, weight decay 1e-4, lr x 0.1 at epochs 16 and 22, a 1000-step
  warm-up; 1088 px letterboxed (about torchvision's 800 px short side); horizontal flips;
  max_boxes 100 with "error" (COCO 2017 images have fewer). Crowd regions (iscrowd=1,
  RLE masks) are left out of the training targets and are "ignore" regions in the
  evaluation; images without annotations are kept (torchvision drops ~1k).
- evaluation: box AP and mask AP (COCO `segm`, "mask_AP", the best checkpoint's metric)
  on val2017, exported as COCO JSON with RLE masks at the source size (results/<step>/),
  which pycocotools scores unchanged against instances_val2017.json.
- memory: batches carry each object's full-image mask (max_boxes x 1088 x 1088 uint8:
  ~118 MB per image), so the host pipeline needs a few GB per batch of 16.
"""
from jaxseg import configs


def get_config(arg=None):
  model, tiny_model = configs.torchvision_mask_rcnn()
  recipe = configs.torchvision_coco_recipe(epochs=26, lr_steps=(16, 22))
  recipe["dataset"].update(name="coco_format/coco2017_instances", augment=dict(flip=True))
  return configs.detection(arg, model=model, tiny_model=tiny_model,
                           task="instance_segmentation", best_metric="mask_AP",
                           **recipe).lock()
