"""ImageNet-1k classification (TFDS `imagenet2012`, prepared from the manual download in
a data_dir: `tfds build imagenet2012 --manual_dir=... --data_dir=DIR`).

./launch.sh train experiments/classification/classify_imagenet2012.py \
    --config.dataset.data_dir=DIR [--config.model.backbone=resnet50|vgg16|googlenet|...]
ResNet-50 at 224x224: scale jitter and flips for training, resize to 256 + centre crop
224 (eval_crop 0.875) for evaluation; SGD 0.1 x batch/256, momentum 0.9, weight decay
1e-4, 90 epochs with cosine decay and 5 warm-up epochs (Goyal et al. 2017). Reports top-1
and top-5 accuracy. Any registered backbone works (`--config.model.backbone`).
"""
from jaxseg import configs

EPOCH = 1_281_167 // 256  # steps per epoch at batch 256


def get_config(arg=None):
  c = configs.image_task(
      arg, "classification",
      dataset=dict(name="imagenet2012", image_size=224, eval_crop=0.875,
                   augment=dict(flip=True, min_scale=1.0, max_scale=1.3)),
      model=dict(backbone="resnet50", backbone_args=dict(), fc_widths=None,
                 dropout_rate=0.0),
      tiny_model=dict(backbone="resnet18",
                      backbone_args=dict(width=4, stem="small", stage_sizes=(1, 1, 1, 1))),
      small_model=dict(backbone="resnet18"),
      small=dict(num_steps=1000, eval_every=1000))
  if arg is None:
    c.batch_size, c.eval_batch_size = 256, 250
    c.num_steps, c.eval_every, c.checkpoint_every = 90 * EPOCH, 5 * EPOCH, 1000
    c.dataset.shuffle_buffer = 16384
    c.dataset.cache = False
    c.optimizer.update(name="sgd", lr=0.1, momentum=0.9, nesterov=False, weight_decay=1e-4,
                       warmup_steps=5 * EPOCH, grad_clip_norm=0.0)
  return c.lock()
