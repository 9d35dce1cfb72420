"""Classification + localization on Oxford-IIIT Pet (TFDS `oxford_iiit_pet`, prepared in
a data_dir): the breed (or `--config.dataset.label=species`) and the pet's head box
(`head_bbox`). TFDS gives head boxes only for the train split, so this config trains on
train[:90%] and evaluates on train[90%:] (jaxseg.data.image_sources).

./launch.sh train experiments/localization/localize_pets.py --config.dataset.data_dir=DIR
ResNet-50 at 224x224 (stretch-resized, so the box scales with the image), box as (x, y,
w, h) regressed with smooth L1; start the backbone from an ImageNet run with
`--config.init_from.*` (docs/transfer.md).
"""
from jaxseg import configs


def get_config(arg=None):
  c = configs.image_task(
      arg, "localization",
      dataset=dict(name="oxford_iiit_pet", image_size=224, label="breed",
                   augment=dict(flip=True, min_scale=1.0, max_scale=1.2,
                                min_box_fraction=0.9)),
      model=dict(backbone="resnet50", backbone_args=dict(output_stride=16), pool_size=7,
                 fc_widths=(512,), dropout_rate=0.0),
      tiny_model=dict(backbone="resnet18", pool_size=2, fc_widths=(8,),
                      backbone_args=dict(width=4, stem="small", stage_sizes=(1, 1, 1, 1))),
      small_model=dict(backbone="resnet18"),
      loss=dict(box_loss="smooth_l1", box_weight=10.0),
      small=dict(num_steps=500, eval_every=500))
  if arg is None:
    c.num_steps, c.eval_every = 3000, 1000
    c.optimizer.update(lr=1e-3, warmup_steps=100)
  return c.lock()
