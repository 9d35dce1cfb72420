"""Image classification on CIFAR-10 (TFDS `cifar10`, prepared in a data_dir: jaxseg never
downloads; `python -m tensorflow_datasets.scripts.download_and_prepare --datasets=cifar10
--data_dir=DIR` once, then `--config.dataset.data_dir=DIR`).

./launch.sh train experiments/classification/classify_cifar10.py --config.dataset.data_dir=DIR
ResNet-18 with the small stem at 32x32, scale jitter (1-1.25, then a 32x32 crop) and
flips, SGD + Nesterov momentum with cosine decay over 100 epochs (He et al. 2016's CIFAR
recipe with a cosine schedule).
"""
from jaxseg import configs


def get_config(arg=None):
  c = configs.image_task(
      arg, "classification",
      dataset=dict(name="cifar10", image_size=32,
                   augment=dict(flip=True, min_scale=1.0, max_scale=1.25)),
      model=dict(backbone="resnet18", backbone_args=dict(width=64, stem="small"),
                 fc_widths=(), dropout_rate=0.0),
      tiny_model=dict(backbone_args=dict(width=4, stem="small", stage_sizes=(1, 1, 1, 1))),
      small_model=dict(backbone_args=dict(width=16, stem="small")),
      small=dict(num_steps=2000, eval_every=1000))
  if arg is None:
    c.batch_size, c.eval_batch_size = 128, 200
    c.num_steps, c.eval_every, c.checkpoint_every = 39000, 3900, 1000  # 100 epochs
    c.optimizer.update(name="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                       warmup_steps=390)
  return c.lock()
