"""Semantic segmentation metrics from a confusion matrix accumulated over a whole set."""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def confusion_matrix(labels, predictions, num_classes: int, ignore_index: int = 255):
  """[C, C] int32 counts, rows = true class, columns = predicted; ignored pixels excluded.

  Labels outside [0, C) other than `ignore_index` must be rejected before this point.
  """
  valid = (labels != ignore_index).reshape(-1)
  index = jnp.where(valid, labels.reshape(-1) * num_classes + predictions.reshape(-1), 0)
  counts = jnp.zeros(num_classes * num_classes, jnp.int32).at[index].add(valid.astype(jnp.int32))
  return counts.reshape(num_classes, num_classes)


def summarize_confusion(confusion, class_names: Sequence[str]) -> dict[str, float]:
  """Pixel accuracy, per-class and mean IoU and Dice from a confusion matrix.

  IoU_c = TP / (TP + FP + FN); Dice_c = 2TP / (2TP + FP + FN). Means are over the classes
  that occur in the ground truth or the predictions (union > 0); others are NaN per class.
  """
  cm = np.asarray(jax.device_get(confusion), np.float64)
  tp = np.diag(cm)
  fp = cm.sum(axis=0) - tp
  fn = cm.sum(axis=1) - tp
  union = tp + fp + fn
  with np.errstate(invalid="ignore", divide="ignore"):
    iou = np.where(union > 0, tp / union, np.nan)
    dice = np.where(union > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
  total = cm.sum()
  summary = {
      "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
      "mIoU": float(np.nanmean(iou)) if np.any(union > 0) else float("nan"),
      "mean_dice": float(np.nanmean(dice)) if np.any(union > 0) else float("nan"),
  }
  for name, i, d in zip(class_names, iou, dice):
    summary[f"iou/{name}"] = float(i)
    summary[f"dice/{name}"] = float(d)
  return summary


def checkerboard_energy(logits):
  """Per-image checkerboard and gradient energies [N] of dense outputs [N, H, W, C].

  For each image and class map z: checkerboard = mean((z00 - z01 - z10 + z11)^2) / 4 over
  all 2x2 neighbourhoods, gradient = mean of the squared horizontal and vertical forward
  differences. Summed over images, their ratio (`checkerboard_score`) is 0 for smooth
  maps and straight edges, 1/2 for white noise and 1 for a pure +-a checkerboard: the
  artifact transpose convolutions leave (Odena, Dumoulin & Olah, Distill 2016).
  """
  z = logits.astype(jnp.float32)
  cb = z[:, :-1, :-1] - z[:, :-1, 1:] - z[:, 1:, :-1] + z[:, 1:, 1:]
  gx = z[:, :, 1:] - z[:, :, :-1]
  gy = z[:, 1:] - z[:, :-1]
  return {"checkerboard": jnp.mean(cb**2, axis=(1, 2, 3)) / 4,
          "gradient": (jnp.mean(gx**2, axis=(1, 2, 3)) + jnp.mean(gy**2, axis=(1, 2, 3))) / 2}


def checkerboard_score(energy) -> float:
  """Summed checkerboard over summed gradient energy (0 smooth, 1/2 noise, 1 pure)."""
  grad = float(np.sum(energy["gradient"]))
  return float(np.sum(energy["checkerboard"])) / grad if grad > 0 else float("nan")
