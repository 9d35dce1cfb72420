"""Classification + localization on single-object shapes (the issue's target: >= 0.95
class accuracy and >= 0.80 mean box IoU within 15 minutes on a 2-core CPU).

./launch.sh train experiments/localization/localize_shapes.py
One network, two heads: class scores (softmax loss) and the box (x, y, w, h) regressed
with L2; loss = CE + config.loss.box_weight * L2. The network is a VGG-style stack
(Simonyan & Zisserman 2015) with batch norm, widths 16-32-64-128, whose stride-16 map is
flattened (4x4) into a 256-d fc layer feeding both heads: full-resolution first convs
and a flattened map (which keeps where the object is) learned both heads faster here
than a ResNet-18 with global pooling. Variants `:small` (ablation scale) and
`:tiny` (tests). Shared defaults: jaxseg/configs.py.
"""
from jaxseg import configs


def get_config(arg=None):
  c = configs.image_task(
      arg, "localization",
      dataset=dict(name="shapes", image_size=64),
      model=dict(backbone="vgg16",
                 backbone_args=dict(stage_widths=(16, 32, 64, 128), stage_convs=(2, 2, 2, 2)),
                 pool_size=4, fc_widths=(256,), dropout_rate=0.0),
      tiny_model=dict(backbone_args=dict(stage_widths=(4, 4, 8, 8), stage_convs=(1, 1, 1, 1)),
                      pool_size=2, fc_widths=(8,)),
      small_model=dict(backbone_args=dict(stage_widths=(8, 16, 32, 64))),
      loss=dict(box_loss="l2", box_weight=30.0),
      small=dict(num_steps=500, eval_every=500))
  if arg is None:
    c.num_steps, c.eval_every = 3000, 1500
  return c.lock()
