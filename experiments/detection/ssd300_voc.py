"""SSD300 on PASCAL VOC as in Liu et al. (ECCV 2016), VGG-16: train on VOC 2007 trainval
(TFDS `voc/2007` train+validation), evaluate on VOC 2007 test (the paper's "07" row:
68.0 mAP; 74.3 with 07+12).

./launch.sh train experiments/detection/ssd300_voc.py --config.dataset.data_dir=DIR \\
    --config.init_from.weights=vgg16.safetensors
(`tfds build voc/2007 --data_dir=DIR` once; jaxseg never downloads; vgg16.safetensors as
in experiments/detection/faster_rcnn_voc.py.) Torchvision's COCO SSD300 instead:
`python -m jaxseg.weights torchvision ssd300_vgg16 --pth ssd300_vgg16_coco-b556d3b4.pth
--out ssd300.npz` and experiments/detection/ssd300_coco.py. Variants: `:tiny` (tests).

The paper's settings, as jaxseg fields:
- model: SSD300 exactly as torchvision builds it (`configs.torchvision_ssd300`,
  jaxseg.weights.torchvision.SSD300_VGG16): VGG-16 with fc6 / fc7 as a dilated 3x3 and a
  1x1 conv, pool5 3x3 stride 1, conv4_3 L2-normalised (scale 20), extra layers conv8_2 ..
  conv11_2; default boxes on 38, 19, 10, 5, 3, 1 px maps, 4 or 6 per cell (8732),
  matching at IoU 0.5, hard negatives 3:1, smooth L1 + softmax (alpha 1); test: score >
  0.01, 400 per class, NMS 0.45, 200 per image.
- init: ImageNet VGG-16 conv1_1 .. conv5_3 from torchvision (init_from rules
  jaxseg.weights.torchvision.SSD_VGG16_IMAGENET_RENAME); the paper also subsamples
  fc6 / fc7 from ImageNet's fc layers: here they start fresh.
- images: stretched to 300 x 300 (`resize="stretch"`, as the paper and torchvision).
- schedule: SGD, momentum 0.9, weight decay 5e-4, batch 32, lr 1e-3 for 40k iterations
  then 1e-4 and 1e-5 for 10k each.
- augmentation: horizontal flips and scale jitter only; the paper's random IoU-constrained
  crops, zoom-out and photometric distortions (+8.8 mAP in its Table 2) are not in
  jaxseg's detection pipeline, so expect a lower mAP than the paper's.
Evaluation: COCO-style AP and AP50 (not VOC's 11-point mAP; `difficult` objects count).
"""
import ml_collections

from jaxseg import configs
from jaxseg.weights.torchvision import SSD_VGG16_IMAGENET_RENAME

TRAIN_STEPS, DECAY_STEPS = 60_000, (40_000, 50_000)


def get_config(arg=None):
  model, tiny_model = configs.torchvision_ssd300()
  c = configs.detection(
      arg, model=model, tiny_model=tiny_model,
      dataset=dict(name="voc/2007", image_size=300, resize="stretch", max_boxes=64,
                   shuffle_buffer=1024,
                   augment=dict(flip=True, min_scale=1.0, max_scale=1.0)),
      run=dict(batch_size=32, eval_batch_size=32, num_steps=TRAIN_STEPS, log_every=100,
               eval_every=20_000, checkpoint_every=2_000),
      optimizer=dict(name="sgd", lr=1e-3, momentum=0.9, nesterov=False, weight_decay=5e-4,
                     schedule="step", decay_steps=DECAY_STEPS, decay_factor=0.1,
                     warmup_steps=0, grad_clip_norm=0.0),
      init_from=dict(layout="torch", target_prefix="backbone",
                     rename=SSD_VGG16_IMAGENET_RENAME),
      small=dict(num_steps=20_000, eval_every=20_000, checkpoint_every=2_000,
                 optimizer=dict(decay_steps=(15_000, 18_000))))
  c.loss = ml_collections.ConfigDict(dict(ssd_classifier_weight=1.0, ssd_box_weight=1.0))
  return c.lock()
