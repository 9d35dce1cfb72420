"""Classification + localization on single-object shapes (the issue's target: >= 0.95
class accuracy and >= 0.80 mean box IoU within 15 minutes on a 2-core CPU).

./launch.sh train experiments/localization/localize_shapes.py
One network, two heads: class scores (softmax loss) and the box (x, y, w, h) regressed
with L2; loss = CE + config.loss.box_weight * L2. Variants `:small` (ablation scale) and
`:tiny` (tests). Shared defaults: jaxseg/configs.py.
"""
from jaxseg import configs


def get_config(arg=None):
  return configs.image_task(
      arg, "localization",
      dataset=dict(name="shapes", image_size=64),
      model=dict(backbone="resnet18",
                 backbone_args=dict(width=16, stem="small", output_stride=16),
                 pool_size=4, fc_widths=(256,), dropout_rate=0.0),
      tiny_model=dict(backbone_args=dict(width=4, stem="small", stage_sizes=(1, 1, 1, 1)),
                      pool_size=2, fc_widths=(8,)),
      small_model=dict(backbone_args=dict(width=8, stem="small", output_stride=16)),
      loss=dict(box_loss="l2", box_weight=10.0),
      small=dict(num_steps=600, eval_every=600)).lock()
