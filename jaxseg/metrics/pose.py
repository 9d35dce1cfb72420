"""Pose metrics as sums over a whole set: PCK (torso-normalized) and strict PCP.

`pck_stats` and `pcp_stats` run under `jit` (static shapes, masks) and return per-joint
or per-part counts that add up across batches and devices; `summarize` turns the sums
into fractions. Keypoints are ``[N, K, 3]`` ``(x, y, v)`` in pixels, ``v > 0`` labelled
(see `jaxseg.data.skeleton`); predictions ``[N, K, 2]`` (a third column is ignored).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.data.skeleton import JOINT_NAMES, PCP_LIMBS, TORSO_JOINTS


def _example_mask(example_mask, n: int):
  if example_mask is None:
    return jnp.ones((n,), bool)
  return jnp.asarray(example_mask, bool).reshape(n)


def pck_stats(pred, joints, threshold: float = 0.2, example_mask=None):
  """Per-joint PCK counts (DeepPose's PDJ): a joint is correct if its predicted position
  is within ``threshold`` times the torso diameter of the truth (Toshev & Szegedy,
  CVPR 2014). The torso diameter is the distance between `TORSO_JOINTS` (left shoulder,
  right hip). A joint counts if it is labelled, both torso joints are labelled, the
  diameter is > 0 and the example is not padding (``example_mask`` [N] bool).

  Returns ``{"pck_correct": int32 [K], "pck_count": int32 [K]}`` summed over the batch;
  `summarize` needs the same ``threshold``.
  """
  pred = jnp.asarray(pred, jnp.float32)[..., :2]
  joints = jnp.asarray(joints, jnp.float32)
  xy, labelled = joints[..., :2], joints[..., 2] > 0
  a, b = TORSO_JOINTS
  torso = jnp.linalg.norm(xy[:, a] - xy[:, b], axis=-1)  # [N]
  has_torso = labelled[:, a] & labelled[:, b] & (torso > 0)
  counted = labelled & (has_torso & _example_mask(example_mask, joints.shape[0]))[:, None]
  dist = jnp.linalg.norm(pred - xy, axis=-1)  # [N, K]
  correct = counted & (dist <= threshold * torso[:, None])
  return {"pck_correct": correct.sum(0, dtype=jnp.int32),
          "pck_count": counted.sum(0, dtype=jnp.int32)}


def _part_ends():
  """Two [L, K] float32 matrices averaging joints into each `PCP_LIMBS` end point."""
  ends = np.zeros((2, len(PCP_LIMBS), len(JOINT_NAMES)), np.float32)
  for l, (_, end_a, end_b) in enumerate(PCP_LIMBS):
    for e, end in enumerate((end_a, end_b)):
      ends[e, l, list(end)] = 1.0 / len(end)
  return ends


def pcp_stats(pred, joints, example_mask=None):
  """Per-part strict PCP counts over `PCP_LIMBS` (Ferrari et al., CVPR 2008, as used by
  DeepPose): a part is correct if both predicted end points lie within half the true
  part length of their true positions. It counts if every joint of both ends is
  labelled and the example is not padding. An end made of several joints (the torso's
  mid-hip and mid-shoulder) is their mean, for truth and prediction alike.

  Returns ``{"pcp_correct": int32 [L], "pcp_count": int32 [L]}`` summed over the batch.
  """
  pred = jnp.asarray(pred, jnp.float32)[..., :2]
  joints = jnp.asarray(joints, jnp.float32)
  ends = jnp.asarray(_part_ends())  # [2, L, K]
  uses = (ends > 0).any(0)  # [L, K]
  labelled = joints[..., 2] > 0  # [N, K]
  counted = (jnp.all(labelled[:, None, :] | ~uses, axis=-1)  # [N, L]
             & _example_mask(example_mask, joints.shape[0])[:, None])
  true = jnp.einsum("elk,nkd->enld", ends, joints[..., :2])  # [2, N, L, 2]
  guess = jnp.einsum("elk,nkd->enld", ends, pred)
  length = jnp.linalg.norm(true[0] - true[1], axis=-1)  # [N, L]
  err = jnp.linalg.norm(guess - true, axis=-1)  # [2, N, L]
  correct = counted & jnp.all(err <= 0.5 * length, axis=0)
  return {"pcp_correct": correct.sum(0, dtype=jnp.int32),
          "pcp_count": counted.sum(0, dtype=jnp.int32)}


def _ratio(correct, count) -> float:
  return float(correct / count) if count > 0 else float("nan")


def summarize(stats, pck_threshold: float = 0.2) -> dict[str, float]:
  """Fractions from summed stats: ``PCK@<threshold>`` over all counted joints and
  ``PCK/<joint>`` per joint; ``PCP`` over all counted parts and ``PCP/<part>`` per part.
  NaN where nothing counted. Keys of stats that are absent are left out.
  ``pck_threshold`` must be the threshold given to `pck_stats` (it only names the key).
  """
  stats = jax.device_get(stats)
  out = {}
  for prefix, key, names in (("PCK", "pck", JOINT_NAMES),
                             ("PCP", "pcp", [p[0] for p in PCP_LIMBS])):
    if f"{key}_correct" not in stats:
      continue
    correct = np.asarray(stats[f"{key}_correct"], np.int64)
    count = np.asarray(stats[f"{key}_count"], np.int64)
    total = f"PCK@{pck_threshold:g}" if key == "pck" else "PCP"
    out[total] = _ratio(correct.sum(), count.sum())
    for name, c, n in zip(names, correct, count):
      out[f"{prefix}/{name}"] = _ratio(c, n)
  return out
