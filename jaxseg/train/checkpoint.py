"""Orbax checkpoints of the TrainState: the last N plus the best by an eval metric.

Saves are atomic (orbax writes to a temporary directory and renames it), so a run killed
mid-save keeps its previous checkpoints. A workdir whose checkpoint does not fit the
current config is reported with the first mismatching parameter path, and nothing in it
is touched.
"""
from __future__ import annotations

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from jaxseg.errors import CheckpointError


class Checkpointer:
  """`save(state, metrics=None)`, `restore_or(state)`; metrics rank the best checkpoint."""

  def __init__(self, directory: str, keep: int, best_metric: str, best_mode: str):
    if best_mode not in ("max", "min"):
      raise CheckpointError(f"best_mode={best_mode!r}; expected 'max' or 'min'")
    policies = [checkpoint_managers.LatestN(n=keep)]
    if best_metric:
      policies.append(checkpoint_managers.BestN(
          get_metric_fn=lambda m: m[best_metric], reverse=best_mode == "min", n=1,
          keep_checkpoints_without_metrics=False))
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory, item_handlers=ocp.StandardCheckpointHandler(),
        options=ocp.CheckpointManagerOptions(
            preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
            cleanup_tmp_directories=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, metrics: dict | None = None):
    if step in self.manager.all_steps():
      return
    metrics = None if metrics is None else {k: float(v) for k, v in metrics.items()
                                            if np.isscalar(v) and np.isfinite(v)}
    self.manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)

  def wait(self):
    self.manager.wait_until_finished()

  def restore(self, abstract_state, step: int | None = None):
    """Restore `step` (default: latest) into the structure/shardings of `abstract_state`."""
    step = self.latest_step() if step is None else step
    self._check_compatible(abstract_state, step)
    try:
      return self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
    except (ValueError, KeyError, TypeError) as e:
      raise CheckpointError(f"checkpoint {self.directory}/{step} does not fit this config "
                            f"({str(e).splitlines()[0]}); use a new --workdir") from None

  def _check_compatible(self, abstract_state, step: int):
    saved = self.manager.item_metadata(step)
    saved = getattr(saved, "tree", saved)
    want = _shapes(abstract_state)
    have = _shapes(saved) if saved is not None else want
    for path in sorted(set(want) | set(have), key=lambda p: (not p.startswith("params"), p)):
      if want.get(path) != have.get(path):
        raise CheckpointError(
            f"the workdir holds a checkpoint of an incompatible config: {path} is "
            f"{_describe(have.get(path))} in {self.directory}/{step} but "
            f"{_describe(want.get(path))} in this config; use a new --workdir or the "
            f"original config")

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def _shapes(tree) -> dict[str, tuple]:
  flat = jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda x: hasattr(x, "shape") and not isinstance(x, dict))[0]
  return {jax.tree_util.keystr(path, simple=True, separator="/"): tuple(leaf.shape)
          for path, leaf in flat if hasattr(leaf, "shape")}


def _describe(shape):
  return "absent" if shape is None else f"shape {shape}"


def write_json_atomic(path: str, data) -> None:
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(data, f, indent=2, sort_keys=True)
  os.replace(tmp, path)
