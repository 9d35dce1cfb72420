"""Metrics as JSON lines (`workdir/metrics.jsonl`) and TensorBoard event files.

One record per (step, split) for readers: a run resumed from step s moves the records of
steps after s (written before the interruption, then replayed) to
`metrics.superseded.jsonl`, so nothing is deleted and nothing is counted twice."""
from __future__ import annotations

import json
import math
import os

import jax
import numpy as np


class MetricWriter:
  """Appends `{"step": s, "split": ..., **metrics}` lines; process 0 only, and only when
  `enabled` (an evaluation of a read-only workdir writes nothing)."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled and jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    self._written = None  # (step, split) pairs in the file, read at the first write
    if self.enabled:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      self._tb = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, split: str, metrics: dict) -> None:
    """Append a record; an earlier record of the same (step, split) -- e.g. the eval of a
    finished run evaluated again -- moves to metrics.superseded.jsonl first."""
    if not self.enabled:
      return
    if self._written is None:
      self._written = set()
      if os.path.exists(self.path):
        with open(self.path) as f:
          for line in f:
            try:
              record = json.loads(line)
              self._written.add((record["step"], record["split"]))
            except (ValueError, KeyError, TypeError):
              pass  # a damaged line is left alone
    if (int(step), split) in self._written:
      supersede(os.path.dirname(self.path),
                lambda r: r["step"] == int(step) and r["split"] == split)
    values = {k: float(np.asarray(v)) for k, v in metrics.items()}
    record = {"step": int(step), "split": split,
              **{k: (v if math.isfinite(v) else str(v)) for k, v in values.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    self._written.add((int(step), split))
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with self._tb.as_default(step=int(step)):
      for k, v in values.items():
        tf.summary.scalar(f"{split}/{k}", v)
    self._tb.flush()

  def close(self):
    if self._tb is not None:
      self._tb.close()


def supersede_after(workdir: str, step: int) -> int:
  """Move the records of steps after `step` from metrics.jsonl to metrics.superseded.jsonl
  (appended; the rest rewritten atomically). Returns how many moved."""
  return supersede(workdir, lambda r: r["step"] > step)


def supersede(workdir: str, is_old) -> int:
  """Move the records for which `is_old(record)` holds to metrics.superseded.jsonl."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  keep, moved = [], []
  for line in lines:
    try:
      old = bool(is_old(json.loads(line)))
    except (ValueError, KeyError, TypeError):
      old = False  # not ours to judge: kept as it is
    (moved if old else keep).append(line)
  if moved:
    with open(os.path.join(workdir, "metrics.superseded.jsonl"), "a") as f:
      f.writelines(moved)
      f.flush()
      os.fsync(f.fileno())
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
      f.writelines(keep)
    os.replace(tmp, path)
  return len(moved)


def read_metrics(workdir: str) -> list[dict]:
  """All records of `workdir/metrics.jsonl` (for tests and ablation tables)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
