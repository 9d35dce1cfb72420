"""What every task class shares (DESIGN.md's task contract, jaxseg.tasks): the config,
the compute dtype, the model's own checks turned into one-line ConfigErrors, and `init`.

A subclass builds `self.model` (a flax.linen module called as `model(images, train=...)`)
and defines `example_batch(batch_size)`, then calls `self.check_model(...)`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxseg.errors import ConfigError

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(model_config):
  """config.model.dtype (default float32) as a jnp dtype; a ConfigError if unknown."""
  dtype = model_config.get("dtype", "float32")
  if dtype not in DTYPES:
    raise ConfigError(f"config.model.dtype={dtype!r}; expected one of {sorted(DTYPES)}")
  return DTYPES[dtype]


def model_fields(model_config, drop=("dtype",)) -> dict:
  """config.model as keyword arguments (ConfigDicts turned into dicts), less `drop`."""
  return {key: value.to_dict() if hasattr(value, "to_dict") else value
          for key, value in model_config.items() if key not in drop}


class Task:
  """Config, model checks and initialization shared by the task classes."""

  def __init__(self, config):
    self.config = config

  def example_batch(self, batch_size: int):
    raise NotImplementedError

  def check_model(self, name: str = "", size: int | None = None) -> None:
    """Trace `init` on an example batch (nothing runs; of `size` x `size` images where the
    task's example_batch takes a size): the model's own errors (an unknown option, an
    image size it cannot take) become one ConfigError line."""
    try:
      batch = self.example_batch(1) if size is None else self.example_batch(1, size)
      jax.eval_shape(self.init, jax.random.key(0), batch)
    except (ValueError, TypeError) as e:
      what = f"config.model ({name})" if name else "config.model"
      at = (f"image_size {self.config.dataset.image_size}" if size is None
            else f"dataset.augment.crop_size {size}")
      raise ConfigError(f"{what} at {at}: {e}") from None

  def predict_batch(self, variables, batch):
    """`predict` on a batch: what the trainer's eval step and `./launch.sh predict` call,
    so a task whose model reads more than the images (e.g. Fast R-CNN's proposals) can
    take them from the batch."""
    return self.predict(variables, batch["image"])

  def init(self, rng, batch):
    params_rng, dropout_rng = jax.random.split(rng)
    return self.model.init({"params": params_rng, "dropout": dropout_rng}, batch["image"],
                           train=False)
