"""DeconvNet (Noh, Hong & Han, ICCV 2015) on shapes: VGG-style encoder whose max pools
remember their switches, mirrored decoder of max unpooling + deconvolution layers.

Variants `:small` (ablations), `:tiny` (tests).
"""
from jaxseg import configs


def get_config(arg=None):
  return configs.segmentation_shapes(
      arg,
      model=dict(name="deconvnet", stage_widths=(16, 32, 64, 128), stage_convs=(2, 2, 2, 2),
                 fc_width=128, deconv_kernel_size=3, conv_type="standard", norm=True,
                 dropout_rate=0.0),
      tiny_model=dict(stage_widths=(4, 8), stage_convs=(1, 1), fc_width=8),
      small_model=dict(stage_widths=(8, 16, 32, 64), fc_width=64)).lock()
