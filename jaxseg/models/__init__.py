"""Model registry: every flax.linen model of jaxseg, selectable by `config.model.name`.

Segmentation models share one contract: `Model(num_classes, **fields)(images, train)`
maps images [N, H, W, 3] in [0, 1] to logits [N, H, W, num_classes], and each has
`dropout_rate` (Monte-Carlo dropout) and `norm` fields.
"""
from __future__ import annotations

import functools

from jaxseg.errors import ConfigError
from jaxseg.models.segmentation.deconvnet import DeconvNet
from jaxseg.models.segmentation.deeplab import DeepLabV3Plus
from jaxseg.models.segmentation.encoder_decoder import EncoderDecoder
from jaxseg.models.segmentation.fcn import FCN
from jaxseg.models.segmentation.fullres_fcn import FullResolutionFCN
from jaxseg.models.segmentation.hypercolumns import Hypercolumns
from jaxseg.models.segmentation.refinement import RecurrentRefinement
from jaxseg.models.segmentation.sliding_window import SlidingWindowClassifier

SEGMENTATION_MODELS = {
    "sliding_window": SlidingWindowClassifier,
    "fullres_fcn": FullResolutionFCN,
    "encoder_decoder": functools.partial(EncoderDecoder, skip_connections=False),
    "unet": functools.partial(EncoderDecoder, skip_connections=True),
    "fcn": FCN,  # variant 32s | 16s | 8s
    "deconvnet": DeconvNet,
    "deeplabv3plus": DeepLabV3Plus,
    "recurrent_refinement": RecurrentRefinement,  # + multi-scale input
    "hypercolumns": Hypercolumns,
}


def get_segmentation_model(name: str, **kwargs):
  """Instantiate the segmentation model registered as `name` with `kwargs`."""
  if name not in SEGMENTATION_MODELS:
    raise ConfigError(f"unknown model name {name!r} in config.model.name; expected one of "
                      f"{sorted(SEGMENTATION_MODELS)}")
  try:
    return SEGMENTATION_MODELS[name](**kwargs)
  except TypeError as e:
    raise ConfigError(f"config.model does not fit model {name!r}: {e}") from None
