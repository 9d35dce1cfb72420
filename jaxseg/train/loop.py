"""The generic training loop: `train_and_evaluate(config, workdir)`.

Task-agnostic: it only calls the task contract (jaxseg.tasks). One code path for 1 or N
devices: train and eval steps are jitted once over a `Mesh` whose `data` axis splits the
batch, with the TrainState replicated (big_vision / flax-examples style).
"""
from __future__ import annotations

import functools
import json
import math
import os
import shutil
import signal
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec

from jaxseg import config_schema, tasks
from jaxseg.data import pipeline
from jaxseg.errors import CheckpointError, ConfigError, NonFiniteLossError
from jaxseg.train import checkpoint as ckpt_lib
from jaxseg.train import logging as log_lib
from jaxseg.train import multihost
from jaxseg.train import transfer
from jaxseg.train.optim import make_optimizer
from jaxseg.train.state import TrainState, create_state
from jaxseg.viz import save_png


def make_mesh(devices=None, fsdp: int = 1) -> jax.sharding.Mesh:
  """A mesh over `devices` (default: every device of every process). Axis `data` splits
  the batch; with `fsdp` > 1 a second axis `fsdp` of that size splits the batch too and
  shards the train state (`state_shardings`). Auto sharding: XLA propagates shardings
  (and inserts the all-gathers of sharded parameters), so model code never names an axis."""
  devices = jax.devices() if devices is None else list(devices)
  auto = jax.sharding.AxisType.Auto
  if fsdp == 1:
    return jax.make_mesh((len(devices),), ("data",), devices=devices, axis_types=(auto,))
  if not isinstance(fsdp, int) or fsdp < 1 or len(devices) % fsdp:
    raise ConfigError(f"--fsdp={fsdp} does not divide the {len(devices)} devices; expected "
                      f"a divisor of {len(devices)}")
  return jax.make_mesh((len(devices) // fsdp, fsdp), ("data", "fsdp"), devices=devices,
                       axis_types=(auto, auto))


def state_shardings(mesh, tree):
  """The train state's sharding rule, in one place (big_vision's `fsdp` rule): on a mesh
  with an `fsdp` axis of size k > 1 every floating-point array (parameters, optimizer
  moments, batch statistics) is split over it along its largest dimension divisible by k
  (the last of equal ones); integer arrays (step, PRNG key data), scalars and arrays
  without such a dimension are replicated. Without the axis everything is replicated."""
  k = dict(mesh.shape).get("fsdp", 1)
  replicated = NamedSharding(mesh, PartitionSpec())

  def rule(x):
    if k == 1 or not jnp.issubdtype(x.dtype, jnp.floating):
      return replicated
    dims = [d for d in range(len(x.shape)) if x.shape[d] >= k and x.shape[d] % k == 0]
    if not dims:
      return replicated
    split = max(dims, key=lambda d: (x.shape[d], d))
    return NamedSharding(mesh, PartitionSpec(*["fsdp" if d == split else None
                                               for d in range(len(x.shape))]))
  return jax.tree.map(rule, tree)


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
             "learning_rate": schedule(state.step), "state_finite": _finite_flags(new_state),
             **aux}
  return new_state, metrics


def jit_train_step(task, tx, schedule, abstract, mesh):
  """The trainer's jitted `train_step(state, batch)`: the state (donated) keeps the
  shardings of `abstract` (build_state's), the metrics are replicated. Also what
  bench/input_pipeline.py and bench/compile_time.py time."""
  return jax.jit(functools.partial(train_step, task, tx, schedule),
                 out_shardings=(jax.tree.map(lambda a: a.sharding, abstract),
                                NamedSharding(mesh, PartitionSpec())), donate_argnums=0)


def jit_eval_step(task, mesh):
  """The trainer's jitted `eval_step(variables, batch)` (replicated outputs)."""
  return jax.jit(functools.partial(eval_step, task),
                 out_shardings=NamedSharding(mesh, PartitionSpec()))


class _Sigterm:
  """Remembers a SIGTERM so the loop can checkpoint and stop between steps (main thread
  only; the handler it replaces is restored on exit). In a multi-process job JAX's
  preemption service takes the SIGTERM of any process instead, and `stop_before(step)`
  is true at the same step on every process."""

  def __init__(self):
    self.received = False
    self._previous = None
    self._synced = False

  def __enter__(self):
    self._synced = multihost.preemption_sync_available()
    if _is_main_thread() and not self._synced:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def stop_before(self, step: int) -> bool:
    """Whether to stop before training step `step + 1` (every process calls this at
    every step)."""
    if self._synced and not self.received:
      self.received = multihost.reached_preemption_sync_point(step)
    return self.received

  def _handle(self, signum, frame):
    del signum, frame
    self.received = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _is_main_thread():
  import threading  # pylint: disable=g-import-not-at-top
  return threading.current_thread() is threading.main_thread()


def is_due(step: int, every: int, last: int | None = None) -> bool:
  """Whether a periodic action (log, eval, checkpoint) runs after `step` (big_vision's
  `itstime`): every `every` steps, and at the last step."""
  return step % every == 0 or step == last


def _finite_flags(state: TrainState) -> dict:
  """One bool per part of the state: are all its floating-point values finite?"""
  def finite(tree):
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)
  return {"params": finite(state.params), "model_state": finite(state.model_state),
          "opt_state": finite(state.opt_state)}


_STATE_PARTS = {"params": "parameters", "model_state": "model state (e.g. BatchNorm statistics)",
                "opt_state": "optimizer state"}


def _check_finite(metrics, step: int, ckpt, config) -> None:
  """Stop before a diverged state can be saved: the loss, the gradient and update norms,
  and every floating-point value of the new state (params, batch statistics, optimizer
  state) must be finite."""
  finite = metrics.pop("state_finite")
  bad = [f"{k} = {float(metrics[k])}" for k in ("loss", "grad_norm", "update_norm")
         if not math.isfinite(float(metrics[k]))]
  bad += [f"non-finite {_STATE_PARTS[k]}" for k, ok in finite.items() if not bool(ok)]
  if bad:
    ckpt.wait()
    last = ckpt.latest_step()
    kept = (f"the last good checkpoint (step {last}) in {ckpt.directory} is intact"
            if last is not None else "no checkpoint was written")
    advice = "lower config.optimizer.lr"
    if not config.optimizer.get("grad_clip_norm"):
      advice += " or set config.optimizer.grad_clip_norm"
    raise NonFiniteLossError(f"training diverged at step {step}: {', '.join(bad)}; {kept}; "
                             f"{advice}")


def eval_step(task, variables, batch):
  """Statistics of one eval batch and the predictions for pictures (one compiled
  program; the statistics are computed from these predictions, so the forward passes
  -- several with Monte-Carlo dropout -- run once)."""
  predictions = task.predict_batch(variables, batch)
  return task.eval_stats(variables, batch, predictions), predictions


def evaluate(task, eval_fn, state, mesh, exports: dict | None = None):
  """Sum `eval_stats` over the whole eval set (in int64/float64 on the host); return the
  summary and the picture(s) `task.visualize` makes of the first batch. A task with
  `exports(total) -> {file name: JSON-able}` (detection: COCO ground truth and results)
  fills `exports` when it is given."""
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
  if exports is not None and hasattr(task, "exports"):
    exports.update(task.exports(total))
  return task.summarize(total), picture


def sum_stats(total, stats):
  """The default host-side accumulation of eval statistics: a sum (`total` is None at
  the first batch). A task keeping per-image results (detection) defines its own
  `accumulate(total, stats)` with the same signature."""
  return stats if total is None else jax.tree.map(np.add, total, stats)


def _widen(x):
  x = np.asarray(x)
  return x.astype(np.int64 if np.issubdtype(x.dtype, np.integer) else np.float64)


def check_workdir(workdir: str, train: bool) -> None:
  """A training workdir must be (or be creatable as) a writable directory; an evaluated
  one must hold checkpoints (it may be read-only)."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f"--workdir={workdir} is a file; expected a directory (new or a run's)")
  checkpoints = os.path.join(workdir, "checkpoints")
  if os.path.exists(checkpoints) and not os.path.isdir(checkpoints):
    raise ConfigError(f"--workdir={workdir} holds a file named checkpoints; expected the "
                      f"run's checkpoints directory (move the file away)")
  if not train:
    if not os.path.isdir(checkpoints):
      raise CheckpointError(f"no checkpoint to evaluate in workdir {workdir}")
    return
  existing = workdir
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ConfigError(f"--workdir={workdir}: {existing} is a file; expected a directory")
  for path in [existing] + ([checkpoints] if os.path.isdir(checkpoints) else []):
    if not os.access(path, os.W_OK | os.X_OK):
      raise ConfigError(f"--workdir={workdir} cannot be written ({path} is not writable); "
                        f"expected a writable directory")


def build_state(config, task, mesh):
  """(tx, schedule, init, abstract): the optimizer and its schedule, `init(rng)` (jitted
  over `mesh`) giving a fresh TrainState, and that state's abstract shapes
  (ShapeDtypeStructs with the shardings of `state_shardings`; nothing is computed)."""
  tx, schedule = make_optimizer(config.optimizer, config.num_steps,
                                frozen=transfer.frozen_mask(config))
  example = task.example_batch(mesh.size)

  def init(rng):
    return create_state(task.init(rng, example), tx, config.seed)

  shapes = jax.eval_shape(init, jax.random.key(config.seed))
  shardings = state_shardings(mesh, shapes)
  abstract = jax.tree.map(lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype,
                                                                   sharding=sharding),
                          shapes, shardings)
  # LLVM at -O1 instead of the default -O3: the initializers' programs compile 1.1-4x
  # faster (25 experiment configs, beside other jobs: classify_shapes 11.7 -> 4.5 s,
  # unet_shapes 32.8 -> 16.1 s) and give bit-identical variables for each of them (-O0
  # does not: some random initializers differ in the last bit); the program runs once,
  # so its speed does not matter.
  return tx, schedule, jax.jit(init, out_shardings=shardings,
                               compiler_options=INIT_COMPILER_OPTIONS), abstract


INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


def check_best_metric(config, task, abstract_variables, example) -> None:
  """`config.best_metric` must be a metric the task's eval produces: found by summarizing
  all-zero statistics of the eval step's output shapes (nothing runs)."""
  if not config.best_metric:
    return
  batch = {**example, "example_mask": np.ones(len(example["image"]), bool)}
  shapes, _ = jax.eval_shape(functools.partial(eval_step, task), abstract_variables, batch)
  zeros = jax.tree.map(lambda s: _widen(np.zeros(s.shape, s.dtype)), shapes)
  with np.errstate(all="ignore"):
    names = task.summarize(getattr(task, "accumulate", sum_stats)(None, zeros))
  if config.best_metric not in names:
    raise ConfigError(f"config.best_metric={config.best_metric!r} is not a metric of the "
                      f"{config.task} eval; expected one of {sorted(names)}")


def restore_or_init(config, ckpt, init, abstract, train: bool, source=None):
  """The newest readable checkpoint of the workdir (corrupt ones are moved aside), else,
  when training, a fresh state with `config.init_from` applied (`source`: already read,
  else read now)."""
  state = ckpt.restore(abstract) if ckpt.steps() else None
  if state is not None:
    logging.info("resumed from step %d in %s", int(state.step), ckpt.directory)
    return state
  if not train:
    raise CheckpointError(f"no readable checkpoint to evaluate in {ckpt.directory}")
  if source is None:
    source = transfer.load(config)
  return transfer.apply(source, init(jax.random.key(config.seed)))


def warn_config_changes(config, workdir: str) -> None:
  """A resumed or evaluated run whose config differs from the saved one: name the keys."""
  path = os.path.join(workdir, "config.json")
  try:
    with open(path) as f:
      saved = _flatten(json.load(f))
  except (OSError, ValueError):
    return
  now = _flatten(json.loads(json.dumps(config.to_dict())))
  changed = [f"{k}: {saved.get(k, '(absent)')!r} -> {now.get(k, '(absent)')!r}"
             for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
  if changed:
    logging.warning("the config differs from the one saved in %s: %s", path, "; ".join(changed))


def _flatten(tree, prefix=""):
  if not isinstance(tree, dict):
    return {prefix[:-1]: tree}
  out = {}
  for k, v in tree.items():
    out.update(_flatten(v, f"{prefix}{k}."))
  return out


def _writable(path: str) -> bool:
  return os.access(path, os.W_OK | os.X_OK)


class EvalRunner:
  """Evaluates a state, logs its metrics and saves its pictures (process 0); with
  `save=False` (a read-only workdir) it only returns the metrics."""

  def __init__(self, task, mesh, config, writer, picture_dir: str, save: bool):
    self.task, self.mesh, self.config = task, mesh, config
    self.fn = jit_eval_step(task, mesh)
    self.writer, self.picture_dir, self.save = writer, picture_dir, save
    self.results_dir = os.path.join(os.path.dirname(picture_dir), "results")
    self.pictures, self.results = {}, {}

  def __call__(self, state) -> dict:
    t0 = time.time()
    exports = {}
    metrics, picture = evaluate(self.task, self.fn, state, self.mesh, exports)
    step = int(jax.device_get(state.step))
    if self.save:
      self.writer.write(step, "eval", {**metrics, "eval_seconds": time.time() - t0})
    if self.save and exports and jax.process_index() == 0:
      # e.g. results/000750/{ground_truth,detections}.json: re-scorable by pycocotools
      directory = os.path.join(self.results_dir, f"{step:06d}")
      os.makedirs(directory, exist_ok=True)
      for name, data in exports.items():
        ckpt_lib.write_json_atomic(os.path.join(directory, name), data)
      self.results["results"] = directory
    if self.save and picture is not None and jax.process_index() == 0:
      # `visualize` gives one picture, or {name: picture} with "" the main one; each is
      # saved as eval_<step>.png / eval_<step>_<name>.png.
      pictures = picture if isinstance(picture, dict) else {"": picture}
      for name, image in pictures.items():
        path = save_png(image, os.path.join(
            self.picture_dir, f"eval_{step:06d}{'_' + name if name else ''}.png"))
        self.pictures["picture" if not name else f"{name}_picture"] = path
    logging.info("eval at step %d: %s", step, _format(metrics, self.config.best_metric))
    return metrics


def train_and_evaluate(config, workdir: str, mesh=None, train: bool = True,
                       stop_after: int | None = None) -> dict:
  """Train `config` in `workdir` (resuming from its newest readable checkpoint), evaluate,
  and return a summary: final eval metrics, the final state, and where checkpoints,
  metrics and pictures are.

  Every check that can fail on user input (config ranges, workdir, task and model,
  checkpoint compatibility, best_metric, the first batch) runs before anything is
  written; a run that fails before its first checkpoint leaves no new workdir behind.
  `train=False` only evaluates the latest checkpoint and needs no write access.
  `stop_after=k` stops after step k as if SIGTERM had arrived.
  """
  config_schema.validate(config)
  workdir = os.path.abspath(workdir)
  check_workdir(workdir, train)
  new_workdir = not os.path.exists(workdir)
  mesh = make_mesh() if mesh is None else mesh
  check_batch_sizes(config, mesh)
  task = tasks.get_task(config, workdir)
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), config.keep_checkpoints,
                               config.best_metric, config.best_mode,
                               read_only=not train and not _writable(workdir), clean_up=train)
  try:
    # A fresh start reads config.init_from first: a bad path fails before anything is traced.
    source = transfer.load(config) if train and not ckpt.steps() else None
    tx, schedule, init, abstract = build_state(config, task, mesh)
    check_best_metric(config, task, abstract.variables, task.example_batch(mesh.size))
  except BaseException:
    ckpt.close()  # no orbax thread left to complain at exit
    raise
  with _Sigterm() as sigterm:  # also over the final save and close
    try:
      summary = _run(config, workdir, mesh, task, tx, schedule, init, abstract, ckpt, train,
                     stop_after, sigterm, source)
    except BaseException:
      ckpt.close()
      if new_workdir and train and not ckpt.steps() and jax.process_index() == 0:
        shutil.rmtree(workdir, ignore_errors=True)  # only what this failed run created
      raise
    ckpt.close()
  return summary


def _run(config, workdir, mesh, task, tx, schedule, init, abstract, ckpt, train, stop_after,
         sigterm, source) -> dict:
  state = restore_or_init(config, ckpt, init, abstract, train, source)
  start_step = int(jax.device_get(state.step))
  if ckpt.steps():
    warn_config_changes(config, workdir)
  last_step = config.num_steps if train else start_step
  with multihost.primary_first("jaxseg: data ready"):  # a generated dataset is built once
    train_iter = task.train_data(start_step) if start_step < last_step else iter(())
    first_batch = next(train_iter, None)  # data errors surface before anything is written
    if first_batch is not None:
      task.validate_batch(first_batch)
    else:  # nothing left to train: the eval data is what this run reads
      next(iter(task.eval_data()), None)

  # From here on the run writes: config, metrics, pictures, checkpoints.
  save = train or _writable(workdir)
  if not save:
    logging.warning("workdir %s is read-only: the eval metrics are printed, not saved", workdir)
  if train:
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
      ckpt_lib.write_json_atomic(os.path.join(workdir, "config.json"), config.to_dict())
      for name, text in getattr(task, "workdir_files", dict)().items():
        ckpt_lib.write_text_atomic(os.path.join(workdir, name), text)
      log_lib.supersede_after(workdir, start_step)
  writer = log_lib.MetricWriter(workdir, enabled=save)
  run_eval = EvalRunner(task, mesh, config, writer, os.path.join(workdir, "pictures"), save)
  summary = {"workdir": workdir, "checkpoints": ckpt.directory,
             "metrics": writer.path, "start_step": start_step, "interrupted": False}

  step_fn = jit_train_step(task, tx, schedule, abstract, mesh)
  progress = _Progress(config.num_steps, start_step)
  eval_metrics = None
  pending = None  # metrics of the last dispatched step, checked one step later
  accumulated, window_start, window_steps = [], time.time(), 0

  def resolve(step, metrics):
    metrics = jax.device_get(metrics)
    _check_finite(metrics, step, ckpt, config)
    accumulated.append(metrics)

  try:
    for step in range(start_step, last_step):
      if sigterm.stop_before(step):  # arrived after the last step's checks, or before the first
        if pending is not None:
          resolve(*pending)
          pending = None
        if step > start_step:
          ckpt.save(step, state)
          ckpt.wait()
          logging.warning("stopped by SIGTERM: saved checkpoint at step %d in %s; run the "
                          "same command to resume", step, ckpt.directory)
        else:
          logging.warning("stopped by SIGTERM before training step %d; nothing new to save",
                          step + 1)
        summary["interrupted"] = True
        break
      batch = first_batch if step == start_step else next(train_iter)
      if step != start_step:
        task.validate_batch(batch)
      state, metrics = step_fn(state, pipeline.to_global(batch, mesh))
      done = step + 1
      # The previous step's metrics are fetched only now, so the host never waits for the
      # step it just dispatched -- except before logging or saving, where it must.
      if pending is not None:
        resolve(*pending)
      pending = (done, metrics)
      window_steps += 1
      last = config.num_steps
      if stop_after is not None and done >= stop_after and done != last:
        sigterm.received = True
      stopping = sigterm.received and done != last
      log_due = is_due(done, config.log_every, last)
      eval_due = is_due(done, config.eval_every, last)
      save_due = is_due(done, config.checkpoint_every) or stopping
      if log_due or eval_due or save_due:
        resolve(*pending)
        pending = None
      if log_due:
        rate = window_steps / max(time.time() - window_start, 1e-9)
        means = {k: float(np.mean([m[k] for m in accumulated])) for k in accumulated[-1]}
        writer.write(done, "train", {**means, "steps_per_second": rate})
        progress.update(done, means["loss"], rate)
        accumulated, window_start, window_steps = [], time.time(), 0
      if done == last and hasattr(task, "post_training"):  # e.g. R-CNN's SVMs
        state, fitted = task.post_training(state, workdir)
        if fitted:
          writer.write(done, "post_training", fitted)
      if eval_due:
        eval_metrics = run_eval(state)
        ckpt.save(done, state, eval_metrics)
      elif save_due:
        ckpt.save(done, state)
      if stopping:
        ckpt.wait()
        logging.warning("stopped early (SIGTERM or stop_after): saved checkpoint at step %d "
                        "in %s; run the same command to resume", done, ckpt.directory)
        summary["interrupted"] = True
        break
    progress.close()
    if eval_metrics is None and not summary["interrupted"]:
      eval_metrics = run_eval(state)  # e.g. re-running a finished workdir, or eval mode
    ckpt.wait()
  finally:
    writer.close()
  summary.update(run_eval.pictures, **run_eval.results)
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
