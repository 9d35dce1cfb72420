"""Model registry: every flax.linen model of jaxseg, selectable by `config.model.name`."""
from __future__ import annotations

import functools

from jaxseg.errors import ConfigError
from jaxseg.models.segmentation.encoder_decoder import EncoderDecoder

SEGMENTATION_MODELS = {
    "unet": functools.partial(EncoderDecoder, skip_connections=True),
    "encoder_decoder": functools.partial(EncoderDecoder, skip_connections=False),
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
