"""The training state: one pytree holding everything a resumed run needs."""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
  """step, params, non-trainable model state (batch statistics), optimizer state, and the
  run's base PRNG key data (the key of step s is `fold_in(key, s)`)."""
  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any
  rng: jax.Array  # uint32 key data of jax.random.key(seed)

  @property
  def variables(self):
    return {"params": self.params, **self.model_state}

  def step_key(self):
    return jax.random.fold_in(jax.random.wrap_key_data(self.rng), self.step)


def create_state(variables, tx, seed: int) -> TrainState:
  variables = dict(variables)
  params = variables.pop("params")
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
                    opt_state=tx.init(params),
                    rng=jax.random.key_data(jax.random.key(seed)))
