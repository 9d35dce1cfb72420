"""The sliding-window detector, R-CNN and Fast R-CNN: their regions, R-CNN's post-hoc
solvers against closed forms and hand-computed values, and R-CNN's whole pipeline (fine-
tune -> feature cache -> SVMs -> ridge -> checkpoint -> predict) run by the trainer."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from conftest import REPO, load_config
from jaxseg import ops, predict, tasks
from jaxseg.train import loop, rcnn_stages

DETECTION = os.path.join(REPO, "experiments", "detection")


def _task(name):
  return tasks.get_task(load_config(os.path.join(DETECTION, f"{name}_shapes.py"), "tiny"))


def _init(task, batch):
  return jax.jit(task.init)(jax.random.key(0), batch)


def _rows_of(boxes, candidates):
  """Whether each box [N, 4] is (to 1e-4 px) one of `candidates` [M, 4]."""
  d = np.abs(np.asarray(boxes)[:, None, :] - np.asarray(candidates)[None, :, :]).max(-1)
  return d.min(1) < 1e-4


# -- regions --------------------------------------------------------------------------------
def test_sliding_window_scores_every_window_and_detects_windows():
  task = _task("sliding_window")
  batch = task.example_batch(2)
  batch["image"] = np.random.default_rng(0).random(batch["image"].shape, np.float32)
  variables = _init(task, batch)
  out = jax.jit(task.predict_batch)(variables, batch)
  m = task.model
  size = task.config.dataset.image_size
  windows = m.windows((size, size))
  assert len(windows) == ops.proposals.num_sliding_windows(
      size, size, tuple(m.window_scales), tuple(m.window_aspect_ratios),
      m.window_stride_fraction)
  np.testing.assert_array_equal(np.asarray(out["num_proposals"]), [len(windows)] * 2)
  valid = np.asarray(out["valid"])
  assert valid.any()
  assert _rows_of(np.asarray(out["boxes"])[valid], windows).all()  # no box regression


def test_region_warp_adds_rcnn_context():
  """With context p, a region fills s - 2p of the s x s crop: the warp equals RoIAlign of
  the region grown by s / (s - 2p) about its centre."""
  task = _task("rcnn")
  m = task.model.clone(context_padding=4.0)
  images = jnp.asarray(np.random.default_rng(1).random((1, 32, 32, 3), np.float32))
  region = jnp.asarray([[[8.0, 10.0, 20.0, 18.0]]])
  crops = m.warp(images, region)
  grow = 32 / (32 - 8)
  cx, cy, hw, hh = 14.0, 14.0, 6.0 * grow, 4.0 * grow
  grown = jnp.asarray([[[cx - hw, cy - hh, cx + hw, cy + hh]]])
  expected = ops.roi.roi_align(images, grown, 32, 1.0, 2, True)
  np.testing.assert_allclose(np.asarray(crops).reshape(-1),
                             np.asarray(expected).reshape(-1), atol=1e-6)


def test_fast_rcnn_detects_from_the_given_proposals():
  """Fast R-CNN without box regression (its bbox_pred zeroed) returns proposals; the
  backbone ran once per image whatever their number (`needs_proposals`)."""
  task = _task("fast_rcnn")
  assert task.model.needs_proposals and "rpn_box" not in task.loss_terms
  batch = task.example_batch(1)
  rng = np.random.default_rng(2)
  batch["image"] = rng.random(batch["image"].shape, np.float32)
  p = batch["proposals"].shape[1]
  xy = rng.uniform(0, 16, (p, 2))
  batch["proposals"][0] = np.concatenate([xy, xy + rng.uniform(4, 16, (p, 2))], -1)
  batch["proposal_valid"][0, :p // 2] = True
  variables = _init(task, batch)
  predictor = dict(variables["params"]["roi_heads"]["box_predictor"])
  predictor["bbox_pred"] = jax.tree.map(jnp.zeros_like, predictor["bbox_pred"])
  params = dict(variables["params"])
  params["roi_heads"] = {**params["roi_heads"], "box_predictor": predictor}
  out = jax.jit(task.predict_batch)({**variables, "params": params}, batch)
  valid = np.asarray(out["valid"][0])
  assert valid.any() and int(out["num_proposals"][0]) == p // 2
  assert _rows_of(np.asarray(out["boxes"][0])[valid], batch["proposals"][0, :p // 2]).all()


# -- R-CNN's post-hoc solvers ---------------------------------------------------------------
def test_linear_svm_hand_computed():
  """x = +-1 with y = x: by symmetry b = 0 and 0.5 w^2 + 2c (1 - w)^2 is least at
  w = 4c / (1 + 4c), 0.8 for c = 1. With class weights and random data: the optimality
  conditions (a vanishing gradient) hold at the solution."""
  w, b = rcnn_stages.fit_linear_svm(np.array([[1.0], [-1.0]]), np.array([1.0, -1.0]), 1.0)
  np.testing.assert_allclose([w[0], b], [0.8, 0.0], atol=1e-5)
  x = np.random.default_rng(3).normal(size=(40, 3))
  y = np.where(x[:, 0] + 0.3 * x[:, 1] > 0, 1.0, -1.0)
  w, b = rcnn_stages.fit_linear_svm(x, y, 0.5, positive_weight=2.0)
  weight = 0.5 * np.where(y > 0, 2.0, 1.0)
  slack = np.maximum(0, 1 - y * (x @ w + b))
  g = -2 * weight * slack * y  # the gradient of the objective vanishes at the optimum
  np.testing.assert_allclose(w + x.T @ g, 0, atol=1e-4)
  assert abs(g.sum()) < 1e-4


def test_ridge_equals_the_augmented_least_squares():
  rng = np.random.default_rng(4)
  x, t = rng.normal(size=(30, 5)), rng.normal(size=(30, 4))
  w, b = rcnn_stages.fit_ridge(x, t, 3.0)
  # min |[X 1] [W; b] - T|^2 + 3 |W|^2 as one least-squares problem (b unregularised)
  a = np.block([[x, np.ones((30, 1))], [np.sqrt(3.0) * np.eye(5), np.zeros((5, 1))]])
  solution = np.linalg.lstsq(a, np.concatenate([t, np.zeros((5, 4))]), rcond=None)[0]
  np.testing.assert_allclose(w, solution[:5], atol=1e-10)
  np.testing.assert_allclose(b, solution[5], atol=1e-10)


def test_rcnn_regression_targets_hand_computed():
  proposal = np.array([[10.0, 20.0, 30.0, 60.0]])  # centre (20, 40), 20 x 40
  gt = np.array([[12.0, 16.0, 52.0, 56.0]])  # centre (32, 36), 40 x 40
  np.testing.assert_allclose(rcnn_stages.encode(gt, proposal),
                             [[12 / 20, -4 / 40, np.log(2.0), 0.0]], atol=1e-12)
  # the detector decodes them back (RegionClassifier.BOX_WEIGHTS are 1)
  back = ops.boxes.decode(jnp.asarray(rcnn_stages.encode(gt, proposal), jnp.float32),
                          jnp.asarray(proposal, jnp.float32), (1.0, 1.0, 1.0, 1.0))
  np.testing.assert_allclose(np.asarray(back), gt, atol=1e-4)


def test_hard_negative_mining_finds_the_negatives_inside_the_margin():
  """One positive region per image, many easy negatives and a few hard ones (features
  near the positives'); starting from 2 random negatives, mining adds the hard ones and
  the final SVM puts every negative below every positive."""
  rng = np.random.default_rng(5)
  n, r, d = 30, 10, 4
  feats = rng.normal(-3, 0.5, (n, r, d))
  feats[:, 0] = rng.normal(3, 0.5, (n, d))  # row 0: the ground-truth box
  hard = rng.random((n, r)) < 0.1
  hard[:, 0] = False
  feats[hard] = rng.normal(1.5, 0.5, (hard.sum(), d))
  boxes = np.tile(np.array([0.0, 0.0, 1.0, 1.0]), (n, r, 1))
  boxes[:, 1:] += np.arange(1, r)[None, :, None] * 10  # no overlap with the gt box
  data = {"boxes": boxes, "valid": np.ones((n, r), bool),
          "is_gt": np.zeros((n, r), bool), "gt_boxes": boxes[:, :1],
          "gt_labels": np.ones((n, 1), np.int64), "gt_valid": np.ones((n, 1), bool)}
  data["is_gt"][:, 0] = True
  label = np.full((n, r), -1)
  label[:, 0] = 1
  data.update(valid_flat=data["valid"].reshape(-1), is_gt_flat=data["is_gt"].reshape(-1),
              label_flat=label.reshape(-1))
  s = dict(rcnn_stages.DEFAULTS, initial_negatives=2, mining_rounds=5, svm_c=1.0)
  kernel, bias, stats = rcnn_stages.fit_svms(feats.reshape(n * r, d), data, 2, s,
                                             np.random.default_rng(0))
  scores = feats.reshape(n * r, d) @ kernel[:, 0] + bias[0]
  negatives = ~data["is_gt_flat"]
  assert stats["svm_hard_negatives"] >= hard.sum() > 2
  assert scores[negatives].max() < scores[~negatives].min()


# -- the whole of R-CNN, run by the trainer -------------------------------------------------
def test_rcnn_stages_run_by_the_trainer_then_predict(data_dir, tmp_path):
  config = load_config(os.path.join(DETECTION, "rcnn_shapes.py"), "tiny")
  config.dataset.data_dir = data_dir
  workdir = str(tmp_path / "run")
  summary = loop.train_and_evaluate(config, workdir, mesh=loop.make_mesh(jax.devices()[:2]))
  assert summary["final_step"] == config.num_steps
  assert summary["eval"]["proposals_per_image"] > 0
  assert summary["eval"]["proposal_seconds_per_image"] > 0
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  post = [m for m in records if m["split"] == "post_training"]
  assert len(post) == 1 and post[0]["step"] == config.num_steps
  cache = os.path.join(workdir, rcnn_stages.CACHE_DIR, "features.f16")
  features = np.load(cache, mmap_mode="r")
  assert post[0]["feature_cache_bytes"] == os.path.getsize(cache)
  dim = config.model.region_classifier.representation_size
  regions = config.dataset.max_boxes + config.rcnn_stages.cache_proposals
  assert features.shape[1:] == (regions, dim) and features.dtype == np.float16
  assert post[0]["feature_cache_regions"] == features.shape[0] * regions
  # The fitted weights are in the final checkpoint, and used: the SVMs score its features.
  fitted = jax.device_get(summary["state"].model_state["post_hoc"])
  assert float(fitted["fitted"]) == 1.0 and np.abs(fitted["svm_kernel"]).sum() > 0
  _, restored = predict.restore(config, workdir)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored.model_state["post_hoc"]),
               fitted)
  # `./launch.sh predict` computes an image's proposals on the host for R-CNN.
  path = str(tmp_path / "photo.png")
  Image.fromarray(np.random.default_rng(6).integers(0, 256, (40, 56, 3), np.uint8)).save(path)
  record, = predict.predict_files(config, [path], workdir, str(tmp_path / "out"),
                                  score_threshold=0.0)
  for d in record["detections"]:
    assert 0 <= d["box"][0] <= d["box"][2] <= 56 and 0 <= d["box"][1] <= d["box"][3] <= 40
