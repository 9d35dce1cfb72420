"""Oxford-IIIT Pet classification (TFDS `oxford_iiit_pet`, prepared in a data_dir): 37
breeds, or cat vs dog with `--config.dataset.label=species`.

./launch.sh train experiments/classification/classify_pets.py --config.dataset.data_dir=DIR
Typically fine-tuned from an ImageNet backbone (the lecture's transfer learning):
    --config.init_from.checkpoint=runs/classify_imagenet2012 \
    --config.init_from.source_prefix=backbone --config.init_from.target_prefix=backbone
ResNet-50 at 224x224, eval resize 256 + centre crop.
"""
from jaxseg import configs


def get_config(arg=None):
  c = configs.image_task(
      arg, "classification",
      dataset=dict(name="oxford_iiit_pet", image_size=224, eval_crop=0.875, label="breed",
                   augment=dict(flip=True, min_scale=1.0, max_scale=1.3)),
      model=dict(backbone="resnet50", backbone_args=dict(), fc_widths=None,
                 dropout_rate=0.0),
      tiny_model=dict(backbone="resnet18",
                      backbone_args=dict(width=4, stem="small", stage_sizes=(1, 1, 1, 1))),
      small_model=dict(backbone="resnet18"),
      small=dict(num_steps=500, eval_every=500))
  if arg is None:
    c.num_steps, c.eval_every = 3000, 1000  # ~26 epochs of the 3680 training images
    c.optimizer.update(lr=1e-3, warmup_steps=100)
  return c.lock()
