"""Sliding-window patch classifier on shapes (Farabet et al. 2013; Pinheiro & Collobert
2014): classifies the centre pixel of the patch around every pixel.

`model.inference`: "sliding" cuts out every patch and classifies it alone (no shared
computation, the lecture's inefficient baseline); "convolutional" runs the same weights
as one fully convolutional pass (identical logits). Training uses "convolutional";
evaluate the same checkpoint with `--config.model.inference=sliding` to time the
difference (experiments/ablations/sliding_window.py). Variants `:small`, `:tiny`.
"""
from ml_collections.config_dict import placeholder

from jaxseg import configs


def get_config(arg=None):
  return configs.segmentation_shapes(
      arg,
      model=dict(name="sliding_window", patch_size=23, conv_widths=(16, 32, 64),
                 hidden_widths=(64,), inference="convolutional", chunk_size=placeholder(int),
                 pad_mode="reflect", norm=True, dropout_rate=0.0),
      tiny_model=dict(patch_size=7, conv_widths=(4,), hidden_widths=(8,)),
      small_model=dict(patch_size=15, conv_widths=(16, 32), hidden_widths=(64,))).lock()
