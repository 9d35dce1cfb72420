"""Encoder-decoder FCN without skips (Long et al. 2015; Noh et al. 2015) on shapes.

Downsampling `model.downsample` (maxpool | strided), upsampling `model.upsample` (any of
jaxseg.models.layers.UPSAMPLE_METHODS). Variants `:small` (ablations), `:tiny` (tests).
"""
from ml_collections.config_dict import placeholder

from jaxseg import configs


def get_config(arg=None):
  return configs.segmentation_shapes(
      arg,
      model=dict(name="encoder_decoder", base_width=12, depth=4, downsample="maxpool",
                 upsample="transpose", upsample_kernel=placeholder(int), conv_type="standard",
                 norm=True, dropout_rate=0.0),
      tiny_model=dict(base_width=4, depth=2),
      small_model=dict(base_width=8, depth=3)).lock()
