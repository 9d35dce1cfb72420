"""Training, evaluation and per-epoch orbax checkpoints of one HyperQuest network.

State: jaxseg's `TrainState` (params, BatchNorm statistics, optimizer state, step, base
PRNG key); accuracies are measured with the running statistics. Optimizer:
SGD with momentum (`config.momentum`) and L2 weight decay, wrapped in
`optax.inject_hyperparams`, so the game's learning rate and weight decay live in the
optimizer state and change without touching the momentum. A width or depth change
rebuilds the variables (`net.resize`) and starts a fresh optimizer state (the momentum
of the old shapes does not fit). Each epoch is a fresh permutation of the training set,
a function of (seed, epoch number); the last partial batch is dropped. Steps are jitted,
one function per (width, depth, dropout).
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from jaxseg.hyperquest import net
from jaxseg.tasks.classification import cross_entropy
from jaxseg.train.state import TrainState, create_state


def _sgd(learning_rate, weight_decay, momentum):
  return optax.chain(optax.add_decayed_weights(weight_decay),
                     optax.sgd(learning_rate, momentum=momentum))


def _arch(hp: dict) -> tuple:
  return int(hp["width"]), int(hp["depth"]), float(hp["dropout"])


class Trainer:
  """Builds, trains, evaluates, resizes and checkpoints networks for one game config."""

  def __init__(self, config, num_classes: int):
    self.config = config
    self.num_classes = num_classes
    self.tx = optax.inject_hyperparams(functools.partial(_sgd, momentum=config.momentum))(
        learning_rate=0.0, weight_decay=0.0)
    self._checkpointer = ocp.StandardCheckpointer()

  def model(self, hp: dict) -> net.QuestNet:
    width, depth, dropout = _arch(hp)
    return net.QuestNet(width, depth, dropout, self.num_classes, self.config.stem_pool)

  def init_state(self, hp: dict, seed: int) -> TrainState:
    images = jnp.zeros((1,) + (32, 32, 3), jnp.float32)
    variables = self.model(hp).init(jax.random.key(seed), images)
    return self.with_hyperparams(create_state(variables, self.tx, seed), hp)

  def abstract_state(self, hp: dict):
    return jax.eval_shape(lambda: self.init_state(hp, 0))

  @staticmethod
  def with_hyperparams(state: TrainState, hp: dict) -> TrainState:
    """`state` with the learning rate and weight decay of `hp` in its optimizer state."""
    opt = state.opt_state
    hyper = dict(opt.hyperparams)
    hyper["learning_rate"] = jnp.asarray(hp["lr"], jnp.float32)
    hyper["weight_decay"] = jnp.asarray(hp["weight_decay"], jnp.float32)
    return state.replace(opt_state=opt._replace(hyperparams=hyper))

  def change(self, state: TrainState, old: dict, new: dict,
             rng: np.random.Generator) -> TrainState:
    """`state` moved from hyperparameters `old` to `new` (Net2Net Up / documented Down
    for width and depth; a fresh optimizer state when the shapes change)."""
    if (old["width"], old["depth"]) != (new["width"], new["depth"]):
      variables = net.resize(state.variables, int(new["width"]), int(new["depth"]), rng)
      variables = jax.tree.map(jnp.asarray, variables)
      params = variables.pop("params")
      state = state.replace(params=params, model_state=variables,
                            opt_state=self.tx.init(params))
    return self.with_hyperparams(state, new)

  # -- jitted functions, one per architecture ---------------------------------------
  @functools.lru_cache(maxsize=32)
  def _step(self, arch) -> Callable:
    model = net.QuestNet(*arch, self.num_classes, self.config.stem_pool)
    tx = self.tx

    def step(state, images, labels, index):
      x = images[index].astype(jnp.float32) / 255.0
      y = labels[index]

      def loss_fn(params):
        logits, model_state = model.apply(
            {"params": params, **state.model_state}, x, train=True,
            rngs={"dropout": state.step_key()}, mutable=["batch_stats"])
        return jnp.mean(cross_entropy(logits, y)), (logits, model_state)

      (loss, (logits, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          state.params)
      updates, opt_state = tx.update(grads, state.opt_state, state.params)
      correct = jnp.sum(jnp.argmax(logits, -1) == y)
      return (state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                            model_state=model_state, opt_state=opt_state), loss, correct)

    return jax.jit(step)

  @functools.lru_cache(maxsize=32)
  def _logits(self, arch) -> Callable:
    model = net.QuestNet(*arch, self.num_classes, self.config.stem_pool)
    return jax.jit(lambda variables, images: model.apply(
        variables, images.astype(jnp.float32) / 255.0))

  def train_epoch(self, state: TrainState, hp: dict, images, labels, seed: int,
                  progress: Callable[[float], None] | None = None):
    """One epoch; returns (state, train accuracy, mean loss) measured on its batches
    (with dropout, as the model trained)."""
    b = self.config.batch_size
    n = len(labels) // b
    order = np.random.default_rng(seed).permutation(len(labels))[:n * b].reshape(n, b)
    step = self._step(_arch(hp))
    correct, losses = 0, []
    for i in range(n):
      state, loss, c = step(state, images, labels, jnp.asarray(order[i]))
      correct += c
      losses.append(loss)
      if progress is not None and (i % 5 == 4 or i == n - 1):
        progress((i + 1) / n)
    return state, float(correct) / (n * b), float(jnp.mean(jnp.stack(losses)))

  def logits(self, state: TrainState, hp: dict, images) -> np.ndarray:
    fn = self._logits(_arch(hp))
    b = self.config.eval_batch_size
    return np.concatenate([np.asarray(fn(state.variables, images[i:i + b]))
                           for i in range(0, len(images), b)])

  def accuracy(self, state: TrainState, hp: dict, images, labels) -> float:
    logits = self.logits(state, hp, images)
    return float(np.mean(np.argmax(logits, -1) == np.asarray(labels)))

  # -- checkpoints ------------------------------------------------------------------
  def save(self, path: str, state: TrainState) -> None:
    self._checkpointer.save(path, state, force=True)
    self._checkpointer.wait_until_finished()

  def restore(self, path: str, hp: dict) -> TrainState:
    return self._checkpointer.restore(path, self.abstract_state(hp))
