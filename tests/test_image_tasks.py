"""Classification, classification + localization and DeepPose: ops, losses and metrics
against hand-computed values and references, and one tiny end-to-end run per task."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, load_config
from jaxseg import ops
from jaxseg.errors import ConfigError
from jaxseg.tasks import classification as cls_task

LOCALIZE = os.path.join(REPO, "experiments", "localization", "localize_shapes.py")
CLASSIFY = os.path.join(REPO, "experiments", "classification", "classify_shapes.py")
DEEPPOSE = os.path.join(REPO, "experiments", "pose", "deeppose_stick_figures.py")


# -- box ops ------------------------------------------------------------------------------
def test_box_conversions_and_iou_by_hand():
  a = jnp.array([[0.0, 0.0, 4.0, 2.0], [1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 1.0, 1.0]])
  b = jnp.array([[2.0, 0.0, 6.0, 2.0], [1.0, 1.0, 3.0, 3.0], [2.0, 2.0, 3.0, 3.0]])
  # overlap 2x2 = 4, union 8 + 8 - 4 = 12; identical; disjoint.
  np.testing.assert_allclose(ops.boxes.elementwise_iou(a, b), [4 / 12, 1.0, 0.0], rtol=1e-6)
  cxcywh = ops.boxes.xyxy_to_cxcywh(a)
  np.testing.assert_allclose(cxcywh[0], [2.0, 1.0, 4.0, 2.0])
  np.testing.assert_allclose(ops.boxes.cxcywh_to_xyxy(cxcywh), a)
  np.testing.assert_allclose(ops.boxes.box_area(jnp.array([[3.0, 0, 1, 2]])), [0.0])
  np.testing.assert_allclose(ops.boxes.clip_boxes(jnp.array([[-2.0, 1, 9, 12]]), 10, 8),
                             [[0, 1, 8, 10]])
  # a degenerate pair has union 0: IoU 0, not NaN
  z = jnp.zeros((1, 4))
  assert float(ops.boxes.elementwise_iou(z, z)[0]) == 0.0


def _crop_reference(image, box, size):
  """Loop reference of ops.crop_and_resize for one box (zero-padded bilinear)."""
  height, width, channels = image.shape
  h, w = size
  out = np.zeros((h, w, channels))
  x1, y1, x2, y2 = box
  for i in range(h):
    for j in range(w):
      y = y1 + (i + 0.5) * (y2 - y1) / h - 0.5
      x = x1 + (j + 0.5) * (x2 - x1) / w - 0.5
      y0, x0 = int(np.floor(y)), int(np.floor(x))
      for yy in (y0, y0 + 1):
        for xx in (x0, x0 + 1):
          if 0 <= yy < height and 0 <= xx < width:
            out[i, j] += (1 - abs(y - yy)) * (1 - abs(x - xx)) * image[yy, xx]
  return out


def test_crop_and_resize_matches_loop_reference_and_tf():
  rng = np.random.default_rng(0)
  images = rng.normal(size=(2, 9, 11, 3)).astype(np.float32)
  boxes = np.array([[1.0, 2.0, 7.5, 8.0], [-3.0, -2.0, 6.0, 4.0], [0.0, 0.0, 11.0, 9.0]],
                   np.float32)
  index = np.array([0, 1, 1])
  out = np.asarray(ops.crop_and_resize(jnp.asarray(images), jnp.asarray(boxes),
                                       jnp.asarray(index), (5, 4)))
  for m in range(3):
    np.testing.assert_allclose(out[m], _crop_reference(images[index[m]], boxes[m], (5, 4)),
                               atol=1e-5)
  # The whole-image box at the image's own size is the identity.
  full = ops.crop_and_resize(jnp.asarray(images), jnp.array([[0.0, 0, 11, 9]]),
                             jnp.array([0]), (9, 11))
  np.testing.assert_allclose(full[0], images[0], atol=1e-6)
  # tf.image.crop_and_resize samples a box [a, b] (normalized) at a(H-1) + i s, s = (b -
  # a)(H-1)/(h-1); inside the image both are plain bilinear interpolation, so the box
  # with the same sample points must give the same crop.
  height, width, h, w = 9, 11, 5, 4
  a_y, b_y, a_x, b_x = 0.1, 0.8, 0.2, 0.9
  sy, sx = (b_y - a_y) * (height - 1) / (h - 1), (b_x - a_x) * (width - 1) / (w - 1)
  y1, x1 = a_y * (height - 1) + 0.5 - 0.5 * sy, a_x * (width - 1) + 0.5 - 0.5 * sx
  ours = ops.crop_and_resize(jnp.asarray(images), jnp.array([[x1, y1, x1 + w * sx,
                                                              y1 + h * sy]]),
                             jnp.array([1]), (h, w))
  theirs = tf.image.crop_and_resize(images, [[a_y, a_x, b_y, b_x]], [1], (h, w))
  np.testing.assert_allclose(ours[0], theirs.numpy()[0], atol=1e-5)


def test_crop_and_resize_gradient_reaches_images():
  images = jnp.ones((1, 6, 6, 1))
  grad = jax.grad(lambda x: ops.crop_and_resize(x, jnp.array([[1.0, 1, 3, 3]]),
                                                jnp.array([0]), (2, 2)).sum())(images)
  # the 2x2 samples sit exactly on pixel centres (1.5..2.5): weight 1 on 4 pixels
  expected = np.zeros((1, 6, 6, 1))
  expected[0, 1:3, 1:3] = 1
  np.testing.assert_allclose(grad, expected, atol=1e-6)


# -- losses ---------------------------------------------------------------------------------
def test_box_regression_losses_by_hand():
  pred = jnp.array([[0.5, 0.5, 0.2, 0.2]])
  target = jnp.array([[0.6, 0.5, 0.2, 0.0]])
  # L2: 0.1^2 + 0.2^2 = 0.05
  np.testing.assert_allclose(cls_task.box_regression_loss(pred, target, "l2"), [0.05],
                             rtol=1e-6)
  # smooth L1, beta 0.15: |0.1| < beta -> 0.5 * 0.01 / 0.15; |0.2| >= beta -> 0.2 - 0.075
  np.testing.assert_allclose(cls_task.box_regression_loss(pred, target, "smooth_l1", 0.15),
                             [0.005 / 0.15 + 0.125], rtol=1e-5)
  with pytest.raises(ConfigError, match="box_loss"):
    cls_task.box_regression_loss(pred, target, "l3")


def test_cross_entropy_with_label_smoothing_against_numpy():
  logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]], np.float32)
  labels = np.array([0, 1])
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  plain = -logp[np.arange(2), labels]
  np.testing.assert_allclose(cls_task.cross_entropy(jnp.asarray(logits), jnp.asarray(labels)),
                             plain, rtol=1e-6)
  eps = 0.1
  target = np.full((2, 3), eps / 3)
  target[np.arange(2), labels] += 1 - eps
  np.testing.assert_allclose(
      cls_task.cross_entropy(jnp.asarray(logits), jnp.asarray(labels), eps),
      -(target * logp).sum(-1), rtol=1e-6)


# -- tasks end to end ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def image_data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds_image"))


def _tiny(path, data_dir, **updates):
  config = load_config(path)
  config.dataset.data_dir = data_dir
  for key, value in updates.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def test_localization_metrics_by_hand(image_data_dir):
  from jaxseg import tasks  # pylint: disable=g-import-not-at-top
  task = tasks.get_task(_tiny(LOCALIZE, image_data_dir))
  size = task.config.dataset.image_size  # 32
  batch = {"label": jnp.array([0, 1, 2, 0]),
           "box": jnp.array([[0, 0, 16, 16], [8, 8, 24, 24], [0, 0, 32, 32], [1, 1, 2, 2]],
                            jnp.float32),
           "example_mask": jnp.array([True, True, True, False])}
  logits = jax.nn.one_hot(jnp.array([0, 2, 2, 1]), 3) * 10
  # predicted boxes as the network's normalized (cx, cy, w, h): exact, half-overlapping,
  # exact but the class is wrong (example 1 has label 1, predicted 2), padding
  pred_boxes = jnp.array([[0, 0, 16, 16], [8, 8, 24, 24], [0, 0, 32, 16], [0, 0, 4, 4]],
                         jnp.float32)
  out = {"logits": logits, "box": task.box_target(pred_boxes)}
  predictions = task.predictions(out)
  np.testing.assert_allclose(predictions["box"], pred_boxes, atol=1e-5)
  stats = task.eval_stats(None, batch, predictions)
  summary = task.summarize(jax.device_get(stats))
  assert summary["accuracy"] == pytest.approx(2 / 3)
  assert summary["mean_iou"] == pytest.approx((1 + 1 + 0.5) / 3, rel=1e-5)
  # example 0 right and IoU 1; example 1 wrong class; example 2 right, IoU 0.5 (>= 0.5)
  assert summary["correct_localization"] == pytest.approx(2 / 3)
  assert summary["accuracy/circle"] == 1.0 and summary["accuracy/square"] == 0.0
  # box targets are normalized centre / size
  np.testing.assert_allclose(task.box_target(jnp.array([[8.0, 0, 24, 16]])),
                             [[16 / size, 8 / size, 16 / size, 16 / size]])


def _run(config, workdir):
  from jaxseg.train import loop  # pylint: disable=g-import-not-at-top
  mesh = loop.make_mesh(jax.devices()[:2])
  return loop.train_and_evaluate(config, str(workdir), mesh=mesh)


@pytest.mark.parametrize("path,keys", [
    (LOCALIZE, ("accuracy", "mean_iou", "correct_localization")),
    (DEEPPOSE, ("PCK@0.2", "PCP", "stage1/PCK@0.2", "stage2/PCK@0.2", "mean_pixel_error")),
    (CLASSIFY, ("accuracy", "mean_class_accuracy")),
])
def test_task_trains_and_evaluates(path, keys, image_data_dir, tmp_path):
  summary = _run(_tiny(path, image_data_dir), tmp_path)
  metrics = summary["eval"]
  for key in keys:
    assert key in metrics and np.isfinite(metrics[key]), (key, metrics)
  assert os.path.exists(summary["picture"])
  lines = [json.loads(l) for l in open(summary["metrics"])]
  assert any(l["split"] == "train" and np.isfinite(l["loss"]) for l in lines)


def test_bad_backbone_name_is_one_config_error(image_data_dir):
  from jaxseg import tasks  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match="resnet19"):
    tasks.get_task(_tiny(LOCALIZE, image_data_dir, **{"model.backbone": "resnet19"}))


def test_pose_loss_masks_missing_joints_and_sums_stages(image_data_dir):
  from jaxseg import tasks  # pylint: disable=g-import-not-at-top
  task = tasks.get_task(_tiny(DEEPPOSE, image_data_dir))
  size = task.config.dataset.image_size  # 32
  joints = np.zeros((1, 14, 3), np.float32)
  joints[0, :, :2] = 16.0  # every joint at the image centre = normalized (0, 0)
  joints[0, :, 2] = 2
  joints[0, 3] = (0.0, 0.0, 0.0)  # missing: whatever is predicted there costs nothing
  stage1 = np.zeros((1, 14, 2), np.float32)
  stage1[0, 0] = (0.25, 0.0)  # one joint off by a quarter image width
  stage1[0, 3] = (5.0, 5.0)
  stage2 = np.zeros((1, 14, 2), np.float32)
  task.apply = lambda variables, images, rng=None, train=False: (
      jnp.stack([jnp.asarray(stage1), jnp.asarray(stage2)]), {})
  loss, (aux, _) = task.loss_fn(None, {"image": np.zeros((1, size, size, 3)),
                                       "joints": joints}, None, True)
  # stage 1: 0.25^2 over 13 labelled joints; stage 2: 0
  assert float(aux["stage1_l2"]) == pytest.approx(0.0625 / 13, rel=1e-5)
  assert float(aux["stage2_l2"]) == 0.0
  assert float(loss) == pytest.approx(0.0625 / 13, rel=1e-5)
  predictions = task.predict(None, np.zeros((1, size, size, 3)))
  assert predictions["stage_joints"].shape == (1, 2, 14, 2)  # batch-first
  np.testing.assert_allclose(predictions["stage_joints"][0, 0, 0], [16 + 8, 16])  # pixels
  np.testing.assert_allclose(predictions["joints"][0, 0], [16, 16])  # the last stage
