"""Image classification on single-object shapes (circle / square / triangle): the
embedded default of the classification task.

./launch.sh train experiments/classification/classify_shapes.py
Variants `:small` and `:tiny`. Shared defaults: jaxseg/configs.py.
"""
from jaxseg import configs


def get_config(arg=None):
  return configs.image_task(
      arg, "classification",
      dataset=dict(name="shapes", image_size=64),
      model=dict(backbone="resnet18", backbone_args=dict(width=16, stem="small"),
                 fc_widths=(), dropout_rate=0.0),
      tiny_model=dict(backbone_args=dict(width=4, stem="small", stage_sizes=(1, 1, 1, 1))),
      small_model=dict(backbone_args=dict(width=8, stem="small")),
      small=dict(num_steps=500, eval_every=500)).lock()
