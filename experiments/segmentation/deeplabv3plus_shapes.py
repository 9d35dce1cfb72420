"""DeepLab v3+ (Chen et al. ECCV 2018) on shapes: atrous ResNet backbone at output stride
8 (or 16), ASPP with image pooling, decoder fused with stride-4 features.

Shapes images are small, so the ASPP rates are (2, 4, 6) on the stride-8 map instead of
the paper's (12, 24, 36) for 513x513 crops. `model.conv_type="depthwise_separable"` gives
the paper's separable ASPP and decoder; `model.aspp=False` the equal-cost rate-1
baseline. Variants `:small` (ablations), `:tiny` (tests).
"""
from jaxseg import configs


def get_config(arg=None):
  return configs.segmentation_shapes(
      arg,
      model=dict(name="deeplabv3plus", stage_sizes=(2, 2, 2, 2), block="basic", width=16,
                 stem="small", output_stride=8, multi_grid=(1, 2, 4), aspp=True,
                 image_pooling=True,                 atrous_rates=(2, 4, 6), aspp_features=64, low_level_features=16,
                 decoder_features=64, conv_type="depthwise_separable", norm=True,
                 dropout_rate=0.0),
      tiny_model=dict(stage_sizes=(1, 1, 1, 1), width=4, multi_grid=(1,), aspp_features=8,
                      low_level_features=4, decoder_features=8),
      small_model=dict(stage_sizes=(1, 1, 1, 1), width=8, aspp_features=32,
                       low_level_features=8, decoder_features=32)).lock()
