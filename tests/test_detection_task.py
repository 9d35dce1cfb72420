"""The detection task: compile once whatever the object counts, the COCO bridge against
pycocotools, bad input, pictures, and a tiny end-to-end run of the trainer."""
import contextlib
import io
import json
import os

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from conftest import REPO, load_config
from test_faster_rcnn import host_init
from jaxseg import tasks
from jaxseg.data import pipeline
from jaxseg.errors import ConfigError, DataError
from jaxseg.train import loop
from jaxseg.train.optim import make_optimizer
from jaxseg.train.state import create_state

CONFIG = os.path.join(REPO, "experiments", "detection", "faster_rcnn_shapes.py")


@pytest.fixture
def config(data_dir):
  c = load_config(CONFIG, "tiny")
  c.dataset.data_dir = data_dir
  return c


@pytest.fixture(scope="module")
def task():
  c = load_config(CONFIG, "tiny")
  return tasks.get_task(c)


def _batch(task, counts, seed):
  """A training batch with counts[i] objects in image i (0 allowed)."""
  rng = np.random.default_rng(seed)
  batch = task.example_batch(len(counts))
  size = task.config.dataset.image_size
  batch["image"] = rng.uniform(0, 1, batch["image"].shape).astype(np.float32)
  for i, n in enumerate(counts):
    for j in range(n):
      x, y = rng.uniform(0, size * 0.6, 2)
      w, h = rng.uniform(3, size * 0.4, 2)
      batch["boxes"][i, j] = [x, y, x + w, y + h]
      batch["labels"][i, j] = rng.integers(1, task.num_classes)
      batch["valid"][i, j] = True
  return batch


def test_train_step_compiles_once_over_varying_object_counts(task):
  """>= 20 steps, 0..max_boxes objects per image: one compilation, finite losses."""
  mesh = loop.make_mesh(jax.devices()[:2])  # as the end-to-end test (shared compiles)
  tx, schedule = make_optimizer(task.config.optimizer, task.config.num_steps)
  example = task.example_batch(4)
  replicated = NamedSharding(mesh, PartitionSpec())  # as the trainer: no sharding change
  variables = host_init(task.init, jax.random.key(0), example)
  state = jax.jit(lambda v: create_state(v, tx, seed=0), out_shardings=replicated)(variables)
  traces = []

  def train_step(state, batch):
    traces.append(1)  # runs once per trace
    return loop.train_step(task, tx, schedule, state, batch)

  step_fn = jax.jit(train_step, out_shardings=(replicated, replicated), donate_argnums=0)
  m = task.max_boxes
  rng = np.random.default_rng(0)
  seen = set()
  for s in range(21):
    counts = [0] * 4 if s == 0 else rng.integers(0, m + 1, 4).tolist()
    seen.add(tuple(counts))
    batch = _batch(task, counts, s)
    task.validate_batch(batch)
    state, metrics = step_fn(state, pipeline.to_global(batch, mesh))
    assert np.isfinite(float(metrics["loss"])), (s, counts)
  assert len(seen) > 5
  assert len(traces) == 1 and step_fn._cache_size() == 1  # pylint: disable=protected-access
  for term in ("rpn_objectness", "rpn_box", "roi_classifier", "roi_box"):
    assert term in metrics


def _random_eval(task, num_images=6, seed=0):
  """Accumulated eval stats of random detections and ground truth (two batches), with
  a crowd, empty images and a non-unit scale_xy."""
  rng = np.random.default_rng(seed)
  m, d = task.max_boxes, 7
  total = None
  for b in range(2):
    n = num_images // 2
    gt_boxes = np.full((n, m, 4), -1.0)
    gt_labels = np.full((n, m), -1)
    gt_valid = np.zeros((n, m), bool)
    gt_crowd = np.zeros((n, m), bool)
    det_boxes = np.full((n, d, 4), -1.0)
    det_scores = np.zeros((n, d))
    det_classes = np.full((n, d), -1)
    det_valid = np.zeros((n, d), bool)
    for i in range(n):
      k = rng.integers(0, m + 1)
      for j in range(k):
        x, y = rng.uniform(0, 60, 2)
        w, h = rng.uniform(4, 60, 2)
        gt_boxes[i, j] = [x, y, x + w, y + h]
        gt_labels[i, j] = rng.integers(1, task.num_classes)
        gt_valid[i, j] = True
      gt_crowd[i, 0] = k > 0 and rng.uniform() < 0.3
      for j in range(rng.integers(0, d + 1)):
        if k and rng.uniform() < 0.7:  # near a gt
          src = gt_boxes[i, rng.integers(0, k)]
          box = src + rng.normal(0, 3, 4)
          cls = gt_labels[i, rng.integers(0, k)] if rng.uniform() < 0.2 else \
              gt_labels[i, j % k]
        else:
          x, y = rng.uniform(0, 60, 2)
          box = np.array([x, y, x + rng.uniform(2, 40), y + rng.uniform(2, 40)])
          cls = rng.integers(1, task.num_classes)
        box[2:] = np.maximum(box[2:], box[:2] + 1)
        det_boxes[i, j], det_classes[i, j] = box, cls
        det_scores[i, j] = rng.uniform()
        det_valid[i, j] = True
    stats = {"det_boxes": det_boxes, "det_scores": det_scores, "det_classes": det_classes,
             "det_valid": det_valid.astype(np.float64), "gt_boxes": gt_boxes,
             "gt_labels": gt_labels, "gt_valid": gt_valid.astype(np.float64),
             "gt_is_crowd": gt_crowd.astype(np.float64),
             "image_id": np.arange(n) + 100 * b + 1, "scale_xy": np.full((n, 2), 0.5),
             "num_proposals": np.full((n,), 16.0),
             "example_mask": np.arange(n) < n - (b == 1)}  # a padded example
    total = task.accumulate(total, stats)
  return total


def test_summarize_equals_pycocotools(task):
  from pycocotools.coco import COCO  # pylint: disable=g-import-not-at-top
  from pycocotools.cocoeval import COCOeval  # pylint: disable=g-import-not-at-top
  total = _random_eval(task)
  summary = task.summarize(total)
  # The ground truth and results rebuilt here from the raw arrays, independently.
  images, anns, dets = [], [], []
  for t in total:
    for i, image_id in enumerate(t["image_id"]):
      images.append({"id": int(image_id)})
      s = 1 / t["scale_xy"][i]
      for j in np.flatnonzero(t["gt_valid"][i] > 0):
        x1, y1, x2, y2 = t["gt_boxes"][i, j] * np.tile(s, 2)
        anns.append({"id": len(anns) + 1, "image_id": int(image_id),
                     "category_id": int(t["gt_labels"][i, j]),
                     "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                     "iscrowd": int(t["gt_is_crowd"][i, j] > 0)})
      for j in np.flatnonzero(t["det_valid"][i] > 0):
        x1, y1, x2, y2 = t["det_boxes"][i, j] * np.tile(s, 2)
        dets.append({"image_id": int(image_id), "category_id": int(t["det_classes"][i, j]),
                     "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(t["det_scores"][i, j])})
  assert len(images) == 5  # 3 + 3 examples, the padded one dropped
  coco = COCO()
  coco.dataset = {"images": images, "annotations": anns,
                  "categories": [{"id": k, "name": n}
                                 for k, n in enumerate(task.class_names) if k]}
  with contextlib.redirect_stdout(io.StringIO()):
    coco.createIndex()
    ev = COCOeval(coco, coco.loadRes(dets), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
  names = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR")
  for k, name in enumerate(names):
    assert summary[name] == pytest.approx(ev.stats[k], abs=1e-9), name
  assert summary["AP"] > 0
  for k, cat in enumerate(ev.params.catIds):
    p = ev.eval["precision"][:, :, k, 0, -1]
    expected = np.mean(p[p > -1]) if (p > -1).any() else np.nan
    np.testing.assert_allclose(summary[f"AP/{task.class_names[cat]}"], expected, atol=1e-9)


def test_summarize_of_nothing_and_visualize(task):
  total = _random_eval(task, seed=1)
  nothing = task.accumulate(None, {**total[0], "example_mask": np.zeros(3, bool)})
  assert task.summarize(nothing)["AP"] <= 0
  t = total[0]
  batch = {"image": np.zeros((3, 32, 32, 3), np.float32), "boxes": t["gt_boxes"] / 4,
           "labels": t["gt_labels"], "valid": t["gt_valid"] > 0, "is_crowd": t["gt_is_crowd"] > 0}
  predictions = {"boxes": t["det_boxes"] / 4, "scores": t["det_scores"],
                 "classes": t["det_classes"], "valid": t["det_valid"] > 0}
  pictures = task.visualize(batch, predictions)
  assert set(pictures) == {"", "pr"}
  assert pictures[""].dtype == np.uint8 and pictures[""].shape[0] >= 3 * 64
  pr = pictures["pr"]
  assert pr.shape == (320, 512, 3) and pr.dtype == np.uint8
  before = pr.copy()
  task.summarize(total)  # redraws the PR picture in place from the whole set
  assert pr.shape == (320, 512, 3) and not np.array_equal(before, pr)


def test_bad_boxes_and_labels_are_data_errors(task):
  batch = _batch(task, [2, 1], 0)
  batch["image_id"] = np.array([7, 8])
  bad = {**batch, "boxes": batch["boxes"].copy()}
  bad["boxes"][1, 0, 2] = bad["boxes"][1, 0, 0]  # zero width
  with pytest.raises(DataError, match=r"image 8: object 0 has an empty or non-finite box"):
    task.validate_batch(bad)
  bad = {**batch, "labels": batch["labels"].copy()}
  bad["labels"][0, 1] = task.num_classes
  with pytest.raises(DataError, match=r"image 7: object 1 has class id 4; expected 1..3"):
    task.validate_batch(bad)
  task.validate_batch(batch)


def test_bad_configs_are_one_line_config_errors():
  c = load_config(CONFIG, "tiny")
  c.model.roi_heads.pooler = "roi_pool"  # one level only, FPN gives several
  with pytest.raises(ConfigError, match="multilevel"):
    tasks.get_task(c)
  c = load_config(CONFIG, "tiny")
  c.model.rpn.anchor_sizes = ((8.0,), (16.0,))  # 3 levels with FPN's extra P6
  with pytest.raises(ConfigError, match="anchor_sizes has 2 levels"):
    tasks.get_task(c)
  c = load_config(CONFIG, "tiny")
  with c.unlocked():
    del c.loss["roi_box_weight"]
  with pytest.raises(ConfigError, match="roi_box_weight"):
    tasks.get_task(c)


def test_tiny_config_trains_and_evaluates_end_to_end(config, tmp_path):
  summary = loop.train_and_evaluate(config, str(tmp_path / "run"),
                                    mesh=loop.make_mesh(jax.devices()[:2]))
  assert summary["final_step"] == config.num_steps
  for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR", "AP/circle"):
    assert key in summary["eval"]
  assert os.path.exists(summary["picture"]) and os.path.exists(summary["pr_picture"])
  # The run's COCO JSON files re-score to the logged figures with pycocotools, unchanged.
  from pycocotools.coco import COCO  # pylint: disable=g-import-not-at-top
  from pycocotools.cocoeval import COCOeval  # pylint: disable=g-import-not-at-top
  gt_path = os.path.join(summary["results"], "ground_truth.json")
  dt_path = os.path.join(summary["results"], "detections.json")
  gt = COCO(gt_path)
  with open(dt_path) as f:
    has_detections = bool(json.load(f))
  assert has_detections  # the tiny run detects something, so the check runs
  if has_detections:
    evaluator = COCOeval(gt, gt.loadRes(dt_path), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    np.testing.assert_allclose(evaluator.stats[[0, 1, 2, 8]], [summary["eval"][k] for k in
                               ("AP", "AP50", "AP75", "AR")], atol=1e-6)


def test_more_objects_than_max_boxes_is_an_error_naming_the_key(config):
  from jaxseg import tasks  # pylint: disable=g-import-not-at-top
  with config.unlocked():
    config.dataset.max_boxes = 1  # the tiny shapes images have up to 4 objects
  task = tasks.get_task(config)
  with pytest.raises(DataError, match=r"image \d+ has [2-4] objects, more than "
                     r"config.dataset.max_boxes=1; raise config.dataset.max_boxes"):
    next(task.train_data(0))
  with pytest.raises(DataError, match="config.dataset.max_boxes=1"):
    list(task.eval_data())
  with config.unlocked():
    config.dataset.max_boxes_overflow = "keep_largest"
  batch = next(tasks.get_task(config).train_data(0))
  assert batch["valid"].shape[1] == 1
