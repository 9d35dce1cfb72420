"""R-CNN's post-hoc stages (Girshick, Donahue, Darrell & Malik, CVPR 2014, section 2.3 and
appendices B-C), run once after the softmax fine-tuning the trainer does:

1. Feature cache: the fine-tuned network's features ("fc7") of every training image's
   ground-truth boxes and its first `cache_proposals` proposals, written to
   `<workdir>/rcnn_feature_cache/features.f16` (float16 memmap; the paper's cache was
   hundreds of GB for VOC) with the boxes beside it. Its size is reported.
2. One linear SVM per class (L2-regularised squared hinge, the liblinear primal R-CNN
   used, solved with L-BFGS), positives = the class's ground-truth boxes, negatives =
   proposals below `negative_iou` (0.3) IoU with every box of the class, mined hard:
   start from `initial_negatives` random ones; each round adds every cached negative
   inside the margin (score > -1) and refits, until none is new or `mining_rounds`.
3. One ridge regressor per class from features to the box deltas (t_x, t_y, t_w, t_h;
   appendix C) of the proposals with IoU >= `regression_iou` (0.6) with a box of the
   class, lambda = `ridge_lambda` (1000 in the paper), bias unregularised.

Features are scaled to a mean L2 norm of 20 first (as the paper's code does); the scale
is folded into the weights, which go into the detector's "post_hoc" collection
(`RegionClassifier`) with `fitted` = 1. Settings: `config.rcnn_stages` (defaults below).
"""
from __future__ import annotations

import os
import time

import jax
import numpy as np
import scipy.optimize
from absl import logging

from jaxseg.errors import ConfigError
from jaxseg.metrics.boxes import box_iou

DEFAULTS = dict(cache_proposals=100, negative_iou=0.3, initial_negatives=2000,
                mining_rounds=3, svm_c=1e-3, svm_positive_weight=2.0, regression_iou=0.6,
                ridge_lambda=1000.0, feature_norm=20.0)
CACHE_DIR = "rcnn_feature_cache"


def settings(config) -> dict:
  s = dict(DEFAULTS)
  given = config.get("rcnn_stages")
  if given is not None:
    given = given.to_dict() if hasattr(given, "to_dict") else dict(given)
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
      raise ConfigError(f"config.rcnn_stages has no field {', '.join(unknown)}; it takes "
                        f"{', '.join(sorted(DEFAULTS))}")
    s.update(given)
  return s


# -- 1. feature cache ----------------------------------------------------------------------
def cache_features(task, variables, directory: str, cache_proposals: int):
  """Features of every training image's gt boxes + first proposals -> (memmap features
  [N, R, D] float16, boxes [N, R, 4], valid [N, R], is_gt [N, R], gt boxes [N, M, 4],
  gt labels [N, M], gt valid [N, M])."""
  from jaxseg.models.detection import RegionClassifier  # pylint: disable=g-import-not-at-top
  features_of = jax.jit(lambda v, images, regions: task.model.apply(
      v, images, regions, method=RegionClassifier.features))
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, "features.f16")
  rows, features, n = [], None, 0
  for batch in task.ordered_batches("train"):
    gt_ok = batch["valid"] & ~batch["is_crowd"]
    k = min(cache_proposals, batch["proposals"].shape[1])
    regions = np.concatenate([batch["boxes"], batch["proposals"][:, :k]], 1)
    valid = np.concatenate([gt_ok, batch["proposal_valid"][:, :k]], 1)
    feats = np.asarray(features_of(variables, batch["image"], regions), np.float16)
    real = np.asarray(batch["example_mask"]) > 0
    if features is None:  # sized for the whole split (loaded by now) at the first batch
      total = task.proposal_time("train")[1]
      features = np.lib.format.open_memmap(path, "w+", np.float16,
                                           (total,) + feats.shape[1:])
    m = int(real.sum())
    features[n:n + m] = feats[real]
    n += m
    is_gt = np.zeros(valid.shape, bool)
    is_gt[:, :batch["boxes"].shape[1]] = True
    rows.append({"boxes": regions[real], "valid": valid[real], "is_gt": is_gt[real],
                 "gt_boxes": batch["boxes"][real], "gt_labels": batch["labels"][real],
                 "gt_valid": gt_ok[real]})
  features.flush()
  cat = {key: np.concatenate([r[key] for r in rows]) for key in rows[0]}
  return features[:n], cat


# -- 2. SVMs with hard-negative mining ------------------------------------------------------
def fit_linear_svm(x, y, c: float, positive_weight: float = 1.0):
  """min_w,b 0.5 |w|^2 + c sum_i weight_i max(0, 1 - y_i (w.x_i + b))^2 (L2-loss SVM,
  liblinear's default primal; the bias unregularised) by L-BFGS. y in {-1, +1}."""
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  weight = c * np.where(y > 0, positive_weight, 1.0)
  d = x.shape[1]

  def objective(theta):
    w, b = theta[:d], theta[d]
    margin = 1.0 - y * (x @ w + b)
    active = margin > 0
    slack = np.where(active, margin, 0.0)
    loss = 0.5 * w @ w + np.sum(weight * slack ** 2)
    g = -2.0 * weight * slack * y  # d loss / d score
    return loss, np.concatenate([w + x.T @ g, [g.sum()]])

  result = scipy.optimize.minimize(objective, np.zeros(d + 1), jac=True, method="L-BFGS-B",
                                   options={"maxiter": 500})
  return result.x[:d], result.x[d]


def _scores(features, rows, w, b, chunk: int = 4096):
  out = np.empty(len(rows), np.float64)
  for i in range(0, len(rows), chunk):
    out[i:i + chunk] = features[rows[i:i + chunk]] @ w + b
  return out


def fit_svms(flat, data, num_classes, s, rng):
  """Per class (1..C): (kernel [D, C], bias [C], statistics)."""
  d = flat.shape[1]
  kernel, bias = np.zeros((d, num_classes - 1)), np.zeros(num_classes - 1)
  stats = {"svm_rounds": 0, "svm_hard_negatives": 0}
  for cls in range(1, num_classes):
    gt_of_class = data["gt_valid"] & (data["gt_labels"] == cls)
    positives = np.nonzero(data["is_gt_flat"] & (data["label_flat"] == cls))[0]
    iou = _max_iou(data, gt_of_class)
    negatives = np.nonzero(data["valid_flat"] & ~data["is_gt_flat"]
                           & (iou < s["negative_iou"]))[0]
    if not len(positives) or not len(negatives):
      logging.warning("R-CNN SVM for class %d: %d positives, %d negatives; left at zero",
                      cls, len(positives), len(negatives))
      continue
    chosen = rng.choice(negatives, min(len(negatives), s["initial_negatives"]), replace=False)
    for rounds in range(1, s["mining_rounds"] + 1):
      rows = np.concatenate([positives, chosen])
      y = np.concatenate([np.ones(len(positives)), -np.ones(len(chosen))])
      w, b = fit_linear_svm(flat[rows], y, s["svm_c"],
                            s["svm_positive_weight"])
      hard = negatives[_scores(flat, negatives, w, b) > -1.0]
      new = np.setdiff1d(hard, chosen)
      if not len(new):
        break
      chosen = np.concatenate([chosen, new])
    stats["svm_rounds"] = max(stats["svm_rounds"], rounds)
    stats["svm_hard_negatives"] += len(chosen)
    kernel[:, cls - 1], bias[cls - 1] = w, b
  return kernel, bias, stats


def _max_iou(data, gt_mask):
  """Per cached region (flattened), its best IoU with the gt boxes where `gt_mask`."""
  n, r = data["valid"].shape
  out = np.zeros((n, r))
  for i in np.nonzero(gt_mask.any(1))[0]:
    out[i] = box_iou(data["boxes"][i], data["gt_boxes"][i][gt_mask[i]]).max(1)
  return out.reshape(-1)


# -- 3. ridge box regressors ----------------------------------------------------------------
def encode(gt, boxes):
  """R-CNN's regression targets (appendix C): t_x = (G_x - P_x) / P_w, t_y likewise,
  t_w = log(G_w / P_w), t_h = log(G_h / P_h) (centres and sizes)."""
  pw, ph = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
  gw, gh = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
  px, py = boxes[:, 0] + pw / 2, boxes[:, 1] + ph / 2
  gx, gy = gt[:, 0] + gw / 2, gt[:, 1] + gh / 2
  return np.stack([(gx - px) / pw, (gy - py) / ph, np.log(gw / pw), np.log(gh / ph)], -1)


def fit_ridge(x, t, lam: float):
  """min_W,b |X W + b - T|^2 + lam |W|^2 (bias unregularised) in closed form."""
  x = np.asarray(x, np.float64)
  mean_x, mean_t = x.mean(0), t.mean(0)
  xc = x - mean_x
  w = np.linalg.solve(xc.T @ xc + lam * np.eye(x.shape[1]), xc.T @ (t - mean_t))
  return w, mean_t - mean_x @ w


def fit_regressors(flat, data, num_classes, s):
  d = flat.shape[1]
  kernel, bias = np.zeros((d, num_classes - 1, 4)), np.zeros((num_classes - 1, 4))
  n, r = data["valid"].shape
  count = 0
  for cls in range(1, num_classes):
    rows, targets = [], []
    gt_of_class = data["gt_valid"] & (data["gt_labels"] == cls)
    for i in np.nonzero(gt_of_class.any(1))[0]:
      keep = data["valid"][i] & ~data["is_gt"][i]
      gts = data["gt_boxes"][i][gt_of_class[i]]
      iou = box_iou(data["boxes"][i], gts)
      best = iou.argmax(1)
      ok = keep & (iou.max(1) >= s["regression_iou"])
      if ok.any():
        rows.append(i * r + np.nonzero(ok)[0])
        targets.append(encode(gts[best[ok]], data["boxes"][i][ok]))
    if not rows:
      continue
    rows, targets = np.concatenate(rows), np.concatenate(targets)
    count += len(rows)
    kernel[:, cls - 1], bias[cls - 1] = fit_ridge(flat[rows], targets, s["ridge_lambda"])
  return kernel, bias, {"ridge_examples": count}


# -- all stages ---------------------------------------------------------------------------
def fit(task, state, workdir: str):
  """(state with the fitted "post_hoc" weights, metrics) -- the module docstring."""
  s = settings(task.config)
  model = task.model
  t0 = time.time()
  features, data = cache_features(task, state.variables, os.path.join(workdir, CACHE_DIR),
                                  s["cache_proposals"])
  seconds_cache = time.time() - t0
  n, r, d = features.shape
  flat = features.reshape(n * r, d)
  norms = np.linalg.norm(flat[data["valid"].reshape(-1)].astype(np.float32), axis=1)
  scale = s["feature_norm"] / max(float(norms.mean()) if len(norms) else 1.0, 1e-6)
  scaled = _Scaled(flat, scale)
  gt_label_per_region = np.full((n, r), -1, np.int64)
  m = data["gt_labels"].shape[1]
  gt_label_per_region[:, :m] = np.where(data["gt_valid"], data["gt_labels"], -1)
  data.update(valid_flat=data["valid"].reshape(-1), is_gt_flat=(
      data["is_gt"] & data["valid"]).reshape(-1), label_flat=gt_label_per_region.reshape(-1))
  rng = np.random.default_rng(int(task.config.seed))
  post = dict(jax.device_get(state.model_state["post_hoc"]))
  metrics = {"feature_cache_bytes": float(os.path.getsize(
      os.path.join(workdir, CACHE_DIR, "features.f16"))), "feature_cache_regions": float(n * r),
      "feature_cache_seconds": seconds_cache}
  if model.classifier == "svm":
    t0 = time.time()
    kernel, bias, stats = fit_svms(scaled, data, model.num_classes, s, rng)
    post.update(svm_kernel=kernel * scale, svm_bias=bias)
    metrics.update({k: float(v) for k, v in stats.items()}, svm_seconds=time.time() - t0)
  if model.box_regression:
    t0 = time.time()
    kernel, bias, stats = fit_regressors(scaled, data, model.num_classes, s)
    post.update(box_kernel=kernel * scale, box_bias=bias)
    metrics.update({k: float(v) for k, v in stats.items()}, ridge_seconds=time.time() - t0)
  post["fitted"] = np.ones_like(post["fitted"])
  post = {k: np.asarray(v, np.float32) for k, v in post.items()}
  logging.info("R-CNN post-hoc stages: %s", ", ".join(f"{k}={v:.4g}" for k, v in
                                                       metrics.items()))
  return state.replace(model_state={**state.model_state, "post_hoc": post}), metrics


class _Scaled:
  """Rows of a float16 memmap, read as float64 and multiplied by `scale`."""

  def __init__(self, array, scale: float):
    self.array, self.scale, self.shape = array, scale, array.shape

  def __getitem__(self, rows):
    return self.array[rows].astype(np.float64) * self.scale
