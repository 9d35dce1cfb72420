"""Keypoint R-CNN R50-FPN on COCO 2017 person keypoints (train2017 -> val2017),
torchvision's `keypointrcnn_resnet50_fpn` recipe (He et al. 2017, the keypoint head of
Mask R-CNN, with the FPN of Lin et al. 2017; torchvision's references/detection: 54.6
box AP, 65.0 keypoint AP).

TFDS's catalog `coco/2017` has NO keypoints (nor masks), so the data is COCO's own
person_keypoints JSON built with jaxseg's COCO-format builder (offline). torchvision
(references/detection/coco_utils.py) trains only on the images whose annotations have
at least 10 visible keypoints in all and a box wider and taller than 1 px; the first
command writes that subset of the official JSON, the second builds the dataset:

python - <<'PY'
import json
d = json.load(open("COCO/annotations/person_keypoints_train2017.json"))
anns = {}
for a in d["annotations"]: anns.setdefault(a["image_id"], []).append(a)
keep = {i for i, a in anns.items() if any(b["bbox"][2] > 1 and b["bbox"][3] > 1 for b in a)
        and sum(v > 0 for b in a for v in b["keypoints"][2::3]) >= 10}
d["images"] = [i for i in d["images"] if i["id"] in keep]
d["annotations"] = [a for a in d["annotations"] if a["image_id"] in keep]
json.dump(d, open("person_keypoints_train2017_torchvision.json", "w")); print(len(keep))
PY
python -m jaxseg.data.coco_format --name coco2017_person_keypoints --data_dir DIR \\
    --images train=COCO/train2017 --images validation=COCO/val2017 \\
    --annotations train=person_keypoints_train2017_torchvision.json \\
    --annotations validation=COCO/annotations/person_keypoints_val2017.json
./launch.sh train experiments/instance/keypoint_rcnn_coco.py --config.dataset.data_dir=DIR \\
    --config.init_from.weights=r50_imagenet.npz

The ImageNet ResNet-50: `python -m jaxseg.weights torchvision resnet50 --pth
resnet50-0676ba61.pth --out r50_imagenet.npz` (docs/transfer.md), loaded under
`backbone`. Variants: `:small` (Detectron's 1x schedule at 832 px), `:tiny` (tests).

The settings, as jaxseg fields:
- model: exactly torchvision's (`configs.torchvision_keypoint_rcnn`, the field set of
  `jaxseg.weights.torchvision.KEYPOINTRCNN_RESNET50_FPN`, so converted
  keypointrcnn_resnet50_fpn weights load): faster_rcnn_coco.py's Faster R-CNN (2
  classes: background, person) plus the keypoint head (RoIAlign 14 x 14 -> 8 x 512 3x3
  convs -> 4x4 transpose conv + bilinear x 2 -> 17 heatmaps of 56 x 56, softmax over
  positions per keypoint); the dataset gives the 17 keypoints, their skeleton and
  left/right swap; loss weights all 1 as torchvision's sum of losses.
- schedule: torchvision's keypoint schedule through `configs.torchvision_coco_recipe`
  (faster_rcnn_coco.py's optimizer, batch, warm-up, images and objects): 46 epochs, lr x
  0.1 at epochs 36 and 43, counted over TRAIN_IMAGES below; if the snippet prints
  another count, scale num_steps, decay_steps and eval_every by it / TRAIN_IMAGES.
- scale jitter: torchvision's KeypointRCNN draws the short side from 640..800 in
  training; here the letterboxed side is drawn from [0.8, 1] x 1088 (augment min_scale).
- flips: as torchvision, with COCO's left/right keypoint swap (the source's
  flip_permutation, from the keypoint names).
- evaluation: box AP and keypoint AP (OKS with COCO's 17 sigmas, "keypoint_AP", the
  best checkpoint's metric) on val2017, exported as COCO JSON (the person category
  carries its keypoints, skeleton and kpt_oks_sigmas) that pycocotools scores unchanged.
"""
from jaxseg import configs

# train2017 images with a visible person keypoint (Detectron2's count); torchvision's
# >= 10 rule above keeps somewhat fewer: the snippet prints the exact number.
TRAIN_IMAGES = 56_599


def get_config(arg=None):
  model, tiny_model = configs.torchvision_keypoint_rcnn()
  recipe = configs.torchvision_coco_recipe(epochs=46, lr_steps=(36, 43),
                                           train_images=TRAIN_IMAGES)
  recipe["dataset"].update(name="coco_format/coco2017_person_keypoints",
                           augment=dict(flip=True, min_scale=640 / 800, max_scale=1.0))
  return configs.detection(arg, model=model, tiny_model=tiny_model,
                           task="instance_segmentation", best_metric="keypoint_AP",
                           **recipe).lock()
