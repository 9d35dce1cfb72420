"""The generic training loop: `train_and_evaluate(config, workdir)`.

Task-agnostic: it only calls the task contract (jaxseg.tasks). One code path for 1 or N
devices: train and eval steps are jitted once over a `Mesh` whose `data` axis splits the
batch, with the TrainState replicated (big_vision / flax-examples style).
"""
from __future__ import annotations

import functools
import math
import os
import signal
import sys
import time

import jax
import numpy as np
import optax
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec

from jaxseg import tasks
from jaxseg.data import pipeline
from jaxseg.errors import CheckpointError, ConfigError, NonFiniteLossError
from jaxseg.train import checkpoint as ckpt_lib
from jaxseg.train import logging as log_lib
from jaxseg.train import transfer
from jaxseg.train.optim import make_optimizer
from jaxseg.train.state import TrainState, create_state
from jaxseg.viz import save_png


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh, axis name `data`, over `devices` (default: every device of every
  process). Auto sharding: XLA propagates shardings, so model code never names an axis."""
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), ("data",), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


def check_batch_sizes(config, mesh) -> None:
  n = mesh.size
  for key in ("batch_size", "eval_batch_size"):
    value = config[key]
    if value <= 0 or value % n:
      raise ConfigError(f"config.{key}={value} is not divisible by the number of devices "
                        f"({n}); expected a positive multiple of {n}")


def train_step(task, tx, schedule, state: TrainState, batch):
  """One optimizer step; returns the new state and scalar metrics of this batch."""
  rng = state.step_key()

  def loss_of(params):
    return task.loss_fn({"params": params, **state.model_state}, batch, rng, train=True)

  (loss, (aux, new_model_state)), grads = jax.value_and_grad(loss_of, has_aux=True)(
      state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                            model_state={**state.model_state, **new_model_state})
  metrics = {"loss": loss, "grad_norm": optax.global_norm(grads),
             "update_norm": optax.global_norm(updates),
             "learning_rate": schedule(state.step), **aux}
  return new_state, metrics


class _Sigterm:
  """Remembers a SIGTERM so the loop can checkpoint and stop between steps."""

  def __init__(self):
    self.received = False
    self._previous = None

  def __enter__(self):
    if _is_main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.received = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _is_main_thread():
  import threading  # pylint: disable=g-import-not-at-top
  return threading.current_thread() is threading.main_thread()


def _check_finite(metrics, step: int, ckpt) -> None:
  """Stop before a diverged state can be saved: loss, gradients and the update must all
  be finite (a finite loss with a NaN update would poison the next checkpoint)."""
  bad = [k for k in ("loss", "grad_norm", "update_norm") if not math.isfinite(float(metrics[k]))]
  if bad:
    ckpt.wait()
    last = ckpt.latest_step()
    kept = (f"the last good checkpoint (step {last}) in {ckpt.directory} is intact"
            if last is not None else "no checkpoint was written")
    raise NonFiniteLossError(f"training diverged at step {step}: {', '.join(bad)} = "
                             f"{', '.join(str(float(metrics[k])) for k in bad)}; {kept}; lower "
                             f"config.optimizer.lr or set config.optimizer.grad_clip_norm")


def eval_step(task, variables, batch):
  """Statistics of one eval batch and the predictions for pictures (one compiled
  program; the statistics are computed from these predictions, so the forward passes
  -- several with Monte-Carlo dropout -- run once)."""
  predictions = task.predict(variables, batch["image"])
  return task.eval_stats(variables, batch, predictions), predictions


def evaluate(task, eval_fn, state, mesh):
  """Sum `eval_stats` over the whole eval set (in int64/float64 on the host); return the
  summary and the picture(s) `task.visualize` makes of the first batch."""
  total, picture = None, None
  variables = state.variables
  accumulate = getattr(task, "accumulate", sum_stats)
  for batch in task.eval_data():
    stats, predictions = eval_fn(variables, pipeline.to_global(batch, mesh))
    stats = jax.tree.map(_widen, jax.device_get(stats))
    total = accumulate(total, stats)
    if picture is None and jax.process_index() == 0:
      real = np.asarray(batch["example_mask"])
      local = {k: v[real] for k, v in batch.items()}
      predictions = jax.tree.map(lambda p: np.asarray(p)[:len(real)][real],
                                 jax.device_get(predictions))
      picture = task.visualize(local, predictions)
  return task.summarize(total), picture


def sum_stats(total, stats):
  """The default host-side accumulation of eval statistics: a sum (`total` is None at
  the first batch). A task keeping per-image results (detection) defines its own
  `accumulate(total, stats)` with the same signature."""
  return stats if total is None else jax.tree.map(np.add, total, stats)


def _widen(x):
  x = np.asarray(x)
  return x.astype(np.int64 if np.issubdtype(x.dtype, np.integer) else np.float64)


def train_and_evaluate(config, workdir: str, mesh=None, train: bool = True,
                       stop_after: int | None = None) -> dict:
  """Train `config` in `workdir` (resuming from its latest checkpoint), evaluate, and
  return a summary: final eval metrics, the final state, and where checkpoints, metrics
  and pictures are.

  `train=False` only evaluates the workdir's latest checkpoint. `stop_after=k` stops
  after step k as if SIGTERM had arrived (checkpoint, then return `interrupted`).
  """
  workdir = os.path.abspath(workdir)
  mesh = make_mesh() if mesh is None else mesh
  check_batch_sizes(config, mesh)
  task = tasks.get_task(config)
  if not train and not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise CheckpointError(f"no checkpoint to evaluate in workdir {workdir}")
  os.makedirs(workdir, exist_ok=True)
  replicated = NamedSharding(mesh, PartitionSpec())
  tx, schedule = make_optimizer(config.optimizer, config.num_steps,
                                frozen=transfer.frozen_mask(config))

  example = task.example_batch(mesh.size)

  @functools.partial(jax.jit, out_shardings=replicated)
  def init(rng):
    return create_state(task.init(rng, example), tx, config.seed)

  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), config.keep_checkpoints,
                               config.best_metric, config.best_mode)
  init_rng = jax.random.key(config.seed)
  if not train and ckpt.latest_step() is None:
    raise CheckpointError(f"no checkpoint to evaluate in {ckpt.directory}")
  if ckpt.latest_step() is not None:
    abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
                            jax.eval_shape(init, init_rng))
    state = ckpt.restore(abstract)
    logging.info("resumed from step %d in %s", int(state.step), ckpt.directory)
  else:  # a fresh start: only here does config.init_from load anything
    source = transfer.load(config)  # read before init compiles: a bad path fails fast
    state = transfer.apply(source, init(init_rng))
  if train:
    ckpt_lib.write_json_atomic(os.path.join(workdir, "config.json"), config.to_dict())
  start_step = int(jax.device_get(state.step))

  step_fn = jax.jit(functools.partial(train_step, task, tx, schedule),
                    out_shardings=(replicated, replicated), donate_argnums=0)
  eval_fn = jax.jit(functools.partial(eval_step, task), out_shardings=replicated)
  writer = log_lib.MetricWriter(workdir)
  picture_dir = os.path.join(workdir, "pictures")
  summary = {"workdir": workdir, "checkpoints": ckpt.directory,
             "metrics": writer.path, "start_step": start_step, "interrupted": False}

  def run_eval(state):
    t0 = time.time()
    eval_metrics, picture = evaluate(task, eval_fn, state, mesh)
    step = int(jax.device_get(state.step))
    writer.write(step, "eval", {**eval_metrics, "eval_seconds": time.time() - t0})
    if picture is not None and jax.process_index() == 0:
      # `visualize` gives one picture, or {name: picture} with "" the main one; each is
      # saved as eval_<step>.png / eval_<step>_<name>.png.
      pictures = picture if isinstance(picture, dict) else {"": picture}
      for name, image in pictures.items():
        path = save_png(image, os.path.join(
            picture_dir, f"eval_{step:06d}{'_' + name if name else ''}.png"))
        summary["picture" if not name else f"{name}_picture"] = path
    logging.info("eval at step %d: %s", step, _format(eval_metrics, config.best_metric))
    return eval_metrics

  progress = _Progress(config.num_steps, start_step)
  eval_metrics = None
  pending = None  # metrics of the last dispatched step, checked one step later
  accumulated, window_start, window_steps = [], time.time(), 0

  def resolve(step, metrics):
    metrics = jax.device_get(metrics)
    _check_finite(metrics, step, ckpt)
    accumulated.append(metrics)

  with _Sigterm() as sigterm:
    last_step = config.num_steps if train else start_step
    train_iter = task.train_data(start_step) if start_step < last_step else iter(())
    for step in range(start_step, last_step):
      batch = next(train_iter)
      task.validate_batch(batch)
      state, metrics = step_fn(state, pipeline.to_global(batch, mesh))
      done = step + 1
      # The previous step's metrics are fetched only now, so the host never waits for the
      # step it just dispatched -- except before logging or saving, where it must.
      if pending is not None:
        resolve(*pending)
      pending = (done, metrics)
      window_steps += 1
      is_last = done == config.num_steps
      if stop_after is not None and done >= stop_after and not is_last:
        sigterm.received = True
      if (is_last or sigterm.received or done % config.log_every == 0
          or done % config.eval_every == 0 or done % config.checkpoint_every == 0):
        resolve(*pending)
        pending = None
      if done % config.log_every == 0 or is_last:
        rate = window_steps / max(time.time() - window_start, 1e-9)
        means = {k: float(np.mean([m[k] for m in accumulated])) for k in accumulated[-1]}
        writer.write(done, "train", {**means, "steps_per_second": rate})
        progress.update(done, means["loss"], rate)
        accumulated, window_start, window_steps = [], time.time(), 0
      if done % config.eval_every == 0 or is_last:
        eval_metrics = run_eval(state)
        ckpt.save(done, state, eval_metrics)
      elif done % config.checkpoint_every == 0 or sigterm.received:
        ckpt.save(done, state)
      if sigterm.received:
        ckpt.wait()
        logging.warning("stopped early (SIGTERM or stop_after): saved checkpoint at step %d "
                        "in %s; run the same command to resume", done, ckpt.directory)
        summary["interrupted"] = True
        break
  progress.close()
  if eval_metrics is None and not summary["interrupted"]:
    eval_metrics = run_eval(state)  # e.g. re-running a finished workdir
  ckpt.close()
  writer.close()
  summary.update(final_step=int(jax.device_get(state.step)), eval=eval_metrics or {},
                 state=state)
  return summary


def _format(metrics: dict, first: str) -> str:
  keys = [first] + [k for k in metrics if k != first and "/" not in k]
  return ", ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics)


class _Progress:
  """tqdm progress bar on a terminal; periodic log lines otherwise."""

  def __init__(self, total: int, initial: int):
    self.bar = None
    if jax.process_index() == 0 and sys.stderr.isatty():
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
    self.total = total

  def update(self, step: int, loss: float, rate: float):
    if self.bar is not None:
      self.bar.n = step
      self.bar.set_postfix(loss=f"{loss:.4f}", refresh=True)
    else:
      logging.info("step %d/%d  loss %.4f  %.2f step/s", step, self.total, loss, rate)

  def close(self):
    if self.bar is not None:
      self.bar.close()
