"""FCN-32s / 16s / 8s (Long, Shelhamer & Darrell, CVPR 2015) on a VGG-style backbone.

`model.variant`: "32s" (pool5 scores upsampled 32x), "16s" (+ pool4 skip), "8s"
(+ pool3 skip). Variants `:small` (ablations), `:tiny` (tests).
"""
from jaxseg import configs


def get_config(arg=None):
  return configs.segmentation_shapes(
      arg,
      model=dict(name="fcn", variant="8s", stage_widths=(16, 32, 64, 128, 128),
                 stage_convs=(2, 2, 3, 3, 3), head_width=128, head_kernel_size=3,
                 upsample="transpose", conv_type="standard", norm=True, dropout_rate=0.0),
      tiny_model=dict(stage_widths=(4, 8, 8), stage_convs=(1, 1, 1), head_width=8,
                      head_kernel_size=1),
      small_model=dict(stage_widths=(8, 16, 32, 64, 64), stage_convs=(1, 1, 2, 2, 2),
                       head_width=64)).lock()
