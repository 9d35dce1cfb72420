"""U-Net (Ronneberger et al. 2015) on the embedded shapes data: the README's main job.

./launch.sh train experiments/segmentation/unet_shapes.py
Variants: `:small` (ablation scale), `:tiny` (seconds; tests); any key overridden with
`--config.optimizer.lr=3e-3`. Shared defaults: jaxseg/configs.py.
"""
from ml_collections.config_dict import placeholder

from jaxseg import configs


def get_config(arg=None):
  return configs.segmentation_shapes(
      arg,
      model=dict(name="unet", base_width=12, depth=4, downsample="maxpool",
                 upsample="transpose", upsample_kernel=placeholder(int), conv_type="standard", norm=True,
                 dropout_rate=0.0),
      tiny_model=dict(base_width=4, depth=2),
      small_model=dict(base_width=8, depth=3)).lock()
