"""Orbax checkpoints of the TrainState: the last N plus the best by an eval metric.

- Saves are atomic (orbax writes to a temporary directory and renames it), so a run killed
  mid-save keeps its previous checkpoints.
- Each checkpoint carries its eval metrics (orbax's `metrics` item, written because
  `best_fn` is set), so the best one is known after a restart and retention is the same
  with or without restarts.
- A checkpoint that cannot be read (truncated array file, missing manifest or metadata,
  empty step folder) is reported in one warning, moved aside to `checkpoints/corrupt/<step>`
  (never deleted) and the newest readable one is restored instead.
- A checkpoint that is readable but does not fit the current config is reported with the
  first mismatching parameter path, and nothing in the workdir is touched.
- `read_only=True` (eval of a read-only workdir) never writes: corrupt steps are skipped,
  not moved. `clean_up=False` (eval) leaves unfinished saves of a running training alone.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers

from jaxseg.errors import CheckpointError

CORRUPT_DIR = "corrupt"


class Checkpointer:
  """`save(step, state, metrics=None)`, `restore(abstract_state)`, `latest_step()`;
  metrics rank the best checkpoint."""

  def __init__(self, directory: str, keep: int, best_metric: str, best_mode: str,
               read_only: bool = False, clean_up: bool = True):
    if best_mode not in ("max", "min"):
      raise CheckpointError(f"best_mode={best_mode!r}; expected 'max' or 'min'")
    self.directory = os.path.abspath(directory)
    self.read_only = read_only
    self.best_metric = best_metric
    policies = [checkpoint_managers.LatestN(n=keep)]
    best_fn = None
    if best_metric:
      best_fn = lambda m: m[best_metric]  # pylint: disable=unnecessary-lambda-assignment
      policies.append(checkpoint_managers.BestN(
          get_metric_fn=best_fn, reverse=best_mode == "min", n=1,
          keep_checkpoints_without_metrics=False))
    self._options = dict(
        preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
        best_fn=best_fn, best_mode=best_mode, create=False,
        cleanup_tmp_directories=clean_up and not read_only, read_only=read_only,
        **({"save_interval_steps": 0} if read_only else {}))
    self.manager = self._open()
    self._pending = None

  def _open(self):
    return ocp.CheckpointManager(self.directory, item_handlers=ocp.StandardCheckpointHandler(),
                                 options=ocp.CheckpointManagerOptions(**self._options))

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, metrics: dict | None = None):
    if step in self.manager.all_steps():
      return
    os.makedirs(self.directory, exist_ok=True)
    metrics = None if metrics is None else {k: float(v) for k, v in metrics.items()
                                            if np.isscalar(v) and np.isfinite(v)}
    if metrics is not None and self.best_metric not in metrics:
      metrics = None  # ranked only by a metric it has
    with self._writing(step):
      self.manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)
    self._pending = step

  def wait(self):
    with self._writing(self._pending):
      self.manager.wait_until_finished()

  @contextlib.contextmanager
  def _writing(self, step):
    """A failed write (disk full, permissions) of `step` -- saves finish in the background,
    so it may surface at the next save or wait -- is one CheckpointError; the unfinished
    temporary folder is removed, the committed checkpoints are untouched."""
    try:
      yield
    except (OSError, ValueError, RuntimeError) as e:
      if isinstance(e, CheckpointError):
        raise
      for name in os.listdir(self.directory) if os.path.isdir(self.directory) else ():
        if ".orbax-checkpoint-tmp" in name:
          shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
          step = name.split(".")[0]
      kept = sorted(int(n) for n in os.listdir(self.directory) if n.isdigit())
      reason = "no space left on device" if "No space left" in str(e) else _first_line(e)
      raise CheckpointError(
          f"cannot write checkpoint {step} in {self.directory}: {reason}; the previous "
          f"checkpoints {kept or '(none)'} are intact: free space (or fix the directory) and "
          f"run the same command to resume") from None

  def restore(self, abstract_state, step: int | None = None):
    """Restore `step` (default: the newest readable one) into the structure/shardings of
    `abstract_state`; None when there is no readable checkpoint at all."""
    if step is not None:
      return self._restore_step(abstract_state, step)
    for step in reversed(self.steps()):
      try:
        return self._restore_step(abstract_state, step)
      except _Corrupt as e:
        self._set_aside(step, str(e))
    return None

  def _restore_step(self, abstract_state, step: int):
    self._check_compatible(abstract_state, step)
    try:
      return self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
    except Exception as e:  # pylint: disable=broad-except
      # The metadata fits (checked above), so a failing read is a damaged checkpoint.
      raise _Corrupt(_first_line(e)) from None

  def _set_aside(self, step: int, why: str):
    source = os.path.join(self.directory, str(step))
    if self.read_only:
      logging.warning("checkpoint %s is unreadable (%s); skipping it (read-only: left in "
                      "place)", source, why)
      return
    target = os.path.join(self.directory, CORRUPT_DIR, str(step))
    suffix = 1
    while os.path.exists(target):
      target = os.path.join(self.directory, CORRUPT_DIR, f"{step}.{suffix}")
      suffix += 1
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.move(source, target)
    logging.warning("checkpoint %s is unreadable (%s); moved it to %s and falling back to "
                    "the previous checkpoint", source, why, target)
    self.manager.reload()

  def _check_compatible(self, abstract_state, step: int):
    try:
      saved = self.manager.item_metadata(step)
    except Exception as e:  # pylint: disable=broad-except
      raise _Corrupt(f"its metadata cannot be read: {_first_line(e)}") from None
    saved = getattr(saved, "tree", saved)
    if not saved:
      raise _Corrupt("it holds no array metadata")
    want, have = _shapes(abstract_state), _shapes(saved)
    for path in sorted(set(want) | set(have), key=lambda p: (not p.startswith("params"), p)):
      if want.get(path) != have.get(path):
        raise CheckpointError(
            f"the workdir holds a checkpoint of an incompatible config: {path} is "
            f"{_describe(have.get(path))} in {self.directory}/{step} but "
            f"{_describe(want.get(path))} in this config; use a new --workdir or the "
            f"original config")

  def close(self):
    try:
      self.wait()
    finally:
      self.manager.close()


class _Corrupt(Exception):
  """A checkpoint step that cannot be read."""


def _first_line(e: BaseException) -> str:
  text = str(e).strip() or type(e).__name__
  return f"{type(e).__name__}: {text.splitlines()[0][:200]}"


def _shapes(tree) -> dict[str, tuple]:
  flat = jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda x: hasattr(x, "shape") and not isinstance(x, dict))[0]
  return {jax.tree_util.keystr(path, simple=True, separator="/"): tuple(leaf.shape)
          for path, leaf in flat if hasattr(leaf, "shape")}


def _describe(shape):
  return "absent" if shape is None else f"shape {shape}"


def write_text_atomic(path: str, text: str) -> None:
  """`text` into `path` through a temporary file and a rename (never half-written)."""
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def write_json_atomic(path: str, data) -> None:
  write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True))
