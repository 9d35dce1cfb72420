"""Metrics as JSON lines (`workdir/metrics.jsonl`) and TensorBoard event files."""
from __future__ import annotations

import json
import math
import os

import jax
import numpy as np


class MetricWriter:
  """Appends `{"step": s, "split": ..., **metrics}` lines; process 0 only."""

  def __init__(self, workdir: str):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if self.enabled:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      self._tb = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, split: str, metrics: dict) -> None:
    if not self.enabled:
      return
    values = {k: float(np.asarray(v)) for k, v in metrics.items()}
    record = {"step": int(step), "split": split,
              **{k: (v if math.isfinite(v) else str(v)) for k, v in values.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with self._tb.as_default(step=int(step)):
      for k, v in values.items():
        tf.summary.scalar(f"{split}/{k}", v)
    self._tb.flush()

  def close(self):
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
  """All records of `workdir/metrics.jsonl` (for tests and ablation tables)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
