"""Hypercolumns (Hariharan et al. CVPR 2015) on shapes: per-pixel features from several
depths of a convolutional trunk, upsampled and concatenated, then a per-pixel classifier.

Variants `:small` (ablations), `:tiny` (tests).
"""
from ml_collections.config_dict import placeholder

from jaxseg import configs


def get_config(arg=None):
  return configs.segmentation_shapes(
      arg,
      model=dict(name="hypercolumns", widths=(16, 32, 64, 128), convs_per_stage=2,
                 levels=placeholder(tuple), hypercolumn_features=32, classifier_features=64,
                 conv_type="standard", norm=True, dropout_rate=0.0),
      tiny_model=dict(widths=(4, 8), hypercolumn_features=4, classifier_features=8),
      small_model=dict(widths=(8, 16, 32, 64), hypercolumn_features=16,
                       classifier_features=32)).lock()
