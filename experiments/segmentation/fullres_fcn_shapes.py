"""Full-resolution FCN on shapes: 3x3 stride-1 pad-1 convolutions that never downsample,
channels 16-32-64-128-64-32 (the lecture's seminar example), then a 1x1 classifier.

Variants `:small` (ablations), `:tiny` (tests).
"""
from jaxseg import configs


def get_config(arg=None):
  return configs.segmentation_shapes(
      arg,
      model=dict(name="fullres_fcn", widths=(16, 32, 64, 128, 64, 32), kernel_size=3,
                 conv_type="standard", norm=True, dropout_rate=0.0),
      tiny_model=dict(widths=(4, 8, 4))).lock()
