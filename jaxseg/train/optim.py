"""Optimizers and learning-rate schedules from `config.optimizer`."""
from __future__ import annotations

import jax
import optax

from jaxseg.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step")


def make_schedule(c, num_steps: int) -> optax.Schedule:
  """Linear warm-up over `c.warmup_steps`, then constant, cosine decay to
  `c.lr * c.final_lr_fraction`, or step decay by `c.decay_factor` at `c.decay_steps`."""
  warmup = min(c.warmup_steps, num_steps)
  rest = max(num_steps - warmup, 1)
  if c.schedule == "constant":
    main = optax.constant_schedule(c.lr)
  elif c.schedule == "cosine":
    main = optax.cosine_decay_schedule(c.lr, rest, alpha=c.final_lr_fraction)
  elif c.schedule == "step":
    boundaries = {int(s) - warmup: c.decay_factor for s in c.decay_steps if int(s) > warmup}
    main = optax.piecewise_constant_schedule(c.lr, boundaries)
  else:
    raise ConfigError(f"unknown config.optimizer.schedule {c.schedule!r}; expected one of "
                      f"{SCHEDULES}")
  if warmup == 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, c.lr, warmup), main], [warmup])


def make_optimizer(c, num_steps: int, frozen=None
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """SGD with momentum, Adam or AdamW, with optional global-norm gradient clipping and
  weight decay (decoupled for AdamW, L2-coupled for SGD/Adam).

  `frozen`: optional function of the params giving a pytree of bools; parameters marked
  True get zero updates (no weight decay either, and their gradients do not count in the
  clipping norm), e.g. `jaxseg.train.transfer.frozen_mask(config)`.
  """
  schedule = make_schedule(c, num_steps)
  if c.name == "sgd":
    opt = optax.sgd(schedule, momentum=c.momentum or None, nesterov=c.nesterov)
  elif c.name == "adam":
    opt = optax.adam(schedule, b1=c.b1, b2=c.b2)
  elif c.name == "adamw":
    opt = optax.adamw(schedule, b1=c.b1, b2=c.b2, weight_decay=c.weight_decay)
  else:
    raise ConfigError(f"unknown config.optimizer.name {c.name!r}; expected one of {OPTIMIZERS}")
  chain = []
  if c.grad_clip_norm:
    chain.append(optax.clip_by_global_norm(c.grad_clip_norm))
  if c.weight_decay and c.name != "adamw":
    chain.append(optax.add_decayed_weights(c.weight_decay))
  tx = optax.chain(*chain, opt)
  if frozen is not None:
    tx = optax.multi_transform(
        {"trainable": tx, "frozen": optax.set_to_zero()},
        lambda params: jax.tree.map(lambda f: "frozen" if f else "trainable", frozen(params)))
  return tx, schedule
