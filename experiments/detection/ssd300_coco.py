"""SSD300 on COCO 2017 (train2017 -> val2017; TFDS `coco/2017` train -> validation),
torchvision's `ssd300_vgg16` recipe (Liu et al. 2016; torchvision's references/detection:
25.1 box AP with its SSD augmentation).

./launch.sh train experiments/detection/ssd300_coco.py --config.dataset.data_dir=DIR \\
    --config.init_from.weights=vgg16.safetensors
Variants: `:tiny` (tests).

The settings, as jaxseg fields (the model as in experiments/detection/ssd300_voc.py):
- jaxseg's coco/2017 source has 81 classes (contiguous ids, background included);
  torchvision's COCO weights have 91-way heads (COCO's original ids): convert them with
  `python -m jaxseg.weights torchvision ssd300_vgg16 --pth FILE.pth --out FILE.npz` and
  use them with `build_detector("ssd", 91, **SSD300_VGG16 fields)`
  (jaxseg.weights.torchvision.convert_ssd300_vgg16), not with this config's 81-way heads.
- images stretched to 300 x 300; max_boxes 100 (COCO 2017 images have fewer).
- schedule: torchvision's 120 epochs at batch 32 (4 GPUs x 8), SGD lr 0.002, momentum 0.9,
  weight decay 5e-4, lr x 0.1 at epochs 80 and 110; flips only (its SSD crops, zoom-out and
  photometric distortion are not in jaxseg's pipeline).
"""
import ml_collections

from jaxseg import configs
from jaxseg.weights.torchvision import SSD_VGG16_IMAGENET_RENAME

TRAIN_IMAGES, BATCH = 118_287, 32
STEPS_PER_EPOCH = TRAIN_IMAGES // BATCH


def get_config(arg=None):
  model, tiny_model = configs.torchvision_ssd300()
  c = configs.detection(
      arg, model=model, tiny_model=tiny_model,
      dataset=dict(name="coco/2017", image_size=300, resize="stretch", max_boxes=100,
                   max_boxes_overflow="error", cache=False,
                   augment=dict(flip=True, min_scale=1.0, max_scale=1.0)),
      run=dict(batch_size=BATCH, eval_batch_size=32, num_steps=120 * STEPS_PER_EPOCH,
               log_every=100, eval_every=10 * STEPS_PER_EPOCH, checkpoint_every=2_000),
      optimizer=dict(name="sgd", lr=0.002, momentum=0.9, nesterov=False, weight_decay=5e-4,
                     schedule="step",
                     decay_steps=(80 * STEPS_PER_EPOCH, 110 * STEPS_PER_EPOCH),
                     decay_factor=0.1, warmup_steps=0, grad_clip_norm=0.0),
      init_from=dict(layout="torch", target_prefix="backbone",
                     rename=SSD_VGG16_IMAGENET_RENAME),
      small=dict(num_steps=40 * STEPS_PER_EPOCH,
                 optimizer=dict(decay_steps=(27 * STEPS_PER_EPOCH, 37 * STEPS_PER_EPOCH))))
  c.loss = ml_collections.ConfigDict(dict(ssd_classifier_weight=1.0, ssd_box_weight=1.0))
  return c.lock()
