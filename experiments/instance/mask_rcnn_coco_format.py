"""Mask R-CNN R50-FPN fine-tuned on your own COCO-format instance dataset (polygons or
RLE masks): only a config change from the COCO run (torchvision's maskrcnn_resnet50_fpn;
He et al. 2017).

python -m jaxseg.data.coco_format --name custom --data_dir DIR --images IMAGES \\
    --annotations train=train.json --annotations validation=val.json
./launch.sh train experiments/instance/mask_rcnn_coco_format.py \\
    --config.dataset.data_dir=DIR --config.init_from.weights=mrcnn_coco.npz
Another dataset name: `--config.dataset.name=coco_format/NAME`. Classes, masks
(`segmentation`: polygons, or RLE compressed or not; an annotation without one gets its
box's pixels), crowd flags and image ids come from the instances JSON
(jaxseg.data.coco_format); a polygon of fewer than 3 points, an RLE of another size than
its image or an empty mask with a non-empty box is one `jaxseg: error:` naming the
annotation. With keypoints in a category, take keypoint_rcnn_coco.py the same way.

Weights: torchvision's COCO Mask R-CNN converted with `python -m jaxseg.weights
torchvision maskrcnn_resnet50_fpn --pth maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth --out
mrcnn_coco.npz` (docs/torchvision_weights.md); init_from is preset to take its ResNet-50
(`backbone`): the FPN, RPN and heads start fresh, since the predictors' shapes depend on
the number of classes and jaxseg loads one prefix. Without weights the detector trains
from scratch (needs far more data and steps).

Model: `configs.torchvision_mask_rcnn` (torchvision's fields). Schedule:
experiments/detection/faster_rcnn_coco_format.py's (torchvision's fine-tuning tutorial,
which fine-tunes this very Mask R-CNN: batch 2, SGD lr 0.005, momentum 0.9, weight decay
5e-4, lr x 0.1 every 3 epochs, a warm-up), counted for ~1000 training images (500 steps
per epoch, 10 epochs); scale num_steps, decay_steps and warmup_steps with your dataset's
size. Images 1088 px letterboxed, max_boxes 100 with "error", horizontal flips.
Evaluated as box AP and mask AP ("mask_AP", COCO `segm`), exported as COCO JSON with RLE
masks at the source size.
"""
from jaxseg import configs

EPOCH = 500  # steps per epoch at batch 2 for a 1000-image training split


def get_config(arg=None):
  model, tiny_model = configs.torchvision_mask_rcnn()
  return configs.detection(
      arg, model=model, tiny_model=tiny_model,
      dataset=dict(name="coco_format/custom", image_size=1088, max_boxes=100,
                   max_boxes_overflow="error", cache=False, augment=dict(flip=True)),
      run=dict(batch_size=2, eval_batch_size=2, num_steps=10 * EPOCH, log_every=50,
               eval_every=2 * EPOCH, checkpoint_every=EPOCH),
      optimizer=dict(name="sgd", lr=0.005, momentum=0.9, nesterov=False, weight_decay=5e-4,
                     schedule="step", decay_steps=(3 * EPOCH, 6 * EPOCH, 9 * EPOCH),
                     decay_factor=0.1, warmup_steps=EPOCH, grad_clip_norm=0.0),
      init_from=dict(source_prefix="backbone", target_prefix="backbone"),
      task="instance_segmentation", best_metric="mask_AP").lock()
