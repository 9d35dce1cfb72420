"""Faster R-CNN R50-FPN fine-tuned on your own COCO-format dataset: only a config change
from the COCO run (torchvision's fasterrcnn_resnet50_fpn; Ren et al. 2015, Lin et al.
2017).

python -m jaxseg.data.coco_format --name custom --data_dir DIR --images IMAGES \\
    --annotations train=train.json --annotations validation=val.json
./launch.sh train experiments/detection/faster_rcnn_coco_format.py \\
    --config.dataset.data_dir=DIR --config.init_from.weights=frcnn_coco.npz
Another dataset name: `--config.dataset.name=coco_format/NAME`. Classes, crowd flags and
image ids come from the instances JSON (jaxseg.data.coco_format); the same works with
faster_rcnn_coco.py and `--config.dataset.name=coco_format/NAME`, at COCO's schedule.

Weights: torchvision's COCO detector converted with `python -m jaxseg.weights torchvision
fasterrcnn_resnet50_fpn --pth fasterrcnn_resnet50_fpn_coco-258fb6c6.pth --out
frcnn_coco.npz` (docs/torchvision_weights.md); init_from is preset to take its ResNet-50
(`backbone`): the FPN, RPN and box head start fresh, since the box predictor's shape
depends on the number of classes and jaxseg loads one prefix. Without weights the
detector trains from scratch (needs far more data and steps).

Schedule: torchvision's fine-tuning tutorial (batch 2, SGD lr 0.005, momentum 0.9,
weight decay 5e-4, lr x 0.1 every 3 epochs, a warm-up), counted for ~1000 training images
(500 steps per epoch, 10 epochs); scale num_steps, decay_steps and warmup_steps with your
dataset's size. Images 1088 px letterboxed as in faster_rcnn_coco.py; max_boxes 100 with
"error": an image with more objects stops the run naming the key to raise.
"""
from jaxseg import configs

EPOCH = 500  # steps per epoch at batch 2 for a 1000-image training split


def get_config(arg=None):
  model, tiny_model = configs.torchvision_faster_rcnn()
  return configs.detection(
      arg, model=model, tiny_model=tiny_model,
      dataset=dict(name="coco_format/custom", image_size=1088, max_boxes=100,
                   max_boxes_overflow="error", cache=False),
      run=dict(batch_size=2, eval_batch_size=2, num_steps=10 * EPOCH, log_every=50,
               eval_every=2 * EPOCH, checkpoint_every=EPOCH),
      optimizer=dict(name="sgd", lr=0.005, momentum=0.9, nesterov=False, weight_decay=5e-4,
                     schedule="step", decay_steps=(3 * EPOCH, 6 * EPOCH, 9 * EPOCH),
                     decay_factor=0.1, warmup_steps=EPOCH, grad_clip_norm=0.0),
      init_from=dict(source_prefix="backbone", target_prefix="backbone")).lock()
