"""Mask R-CNN's mask and keypoint heads (He et al. 2017): targets and losses by hand,
test-time decoding against torch's bicubic resize, paste-back against torchvision's, the
instance-segmentation eval against pycocotools on its own exported JSON, bad configs, and
tiny end-to-end runs of both configs."""
import contextlib
import io
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, load_config
from jaxseg import ops, tasks, viz
from jaxseg.errors import ConfigError
from jaxseg.models.detection import instance_heads
from jaxseg.train import loop
from jaxseg.weights import torchvision as tvw

MASK_CONFIG = os.path.join(REPO, "experiments", "instance", "mask_rcnn_shapes.py")
KEYPOINT_CONFIG = os.path.join(REPO, "experiments", "instance",
                               "keypoint_rcnn_stick_figures.py")


def test_mask_targets_and_loss_by_hand():
  """The left half of a 16 x 8 box is the object: a 28 x 28 target has 14 ones per row;
  the loss reads only the ground-truth class's logits and is ln 2 at zero logits."""
  masks = np.zeros((1, 2, 32, 32), np.float32)
  masks[0, 1, 4:12, 8:16] = 1  # object 1: columns 8..15 of the box x 8..24
  rois = jnp.array([[[8.0, 4, 24, 12]]])
  target = instance_heads.mask_targets(masks, rois, jnp.array([[1]]), 28)
  expected = np.zeros((28, 28), np.float32)
  expected[:, :14] = 1
  np.testing.assert_array_equal(target[0, 0], expected)
  logits = np.zeros((1, 1, 28, 28, 3), np.float32)
  logits[..., 0] = 50.0  # another class's channel: ignored
  classes, positive = jnp.array([[2]]), jnp.array([[True]])
  assert float(instance_heads.mask_loss(logits, classes, target, positive)) == pytest.approx(
      np.log(2.0), rel=1e-6)
  logits[..., 2] = np.where(expected > 0, 30.0, -30.0)
  assert float(instance_heads.mask_loss(logits, classes, target, positive)) < 1e-10
  assert float(instance_heads.mask_loss(logits, classes, target, ~positive)) == 0.0


def test_keypoint_targets_by_hand():
  """Cells floor((x - x1) * 56 / w); the right / bottom edge is the last cell; a keypoint
  outside the RoI or unlabelled (v = 0) has no target."""
  kp = np.zeros((1, 1, 4, 3), np.float32)
  kp[0, 0] = [[10.0, 20.0, 2], [30.0, 40.0, 1], [5.0, 25.0, 2], [15.0, 25.0, 0]]
  rois = jnp.array([[[10.0, 20, 30, 40]]])  # 20 x 20 px: 2.8 cells per pixel
  cells, labelled = instance_heads.keypoint_targets(kp, rois, jnp.array([[0]]), 56)
  np.testing.assert_array_equal(labelled[0, 0], [True, True, False, False])
  assert int(cells[0, 0, 0]) == 0 and int(cells[0, 0, 1]) == 55 * 56 + 55
  heatmaps = np.zeros((1, 1, 56, 56, 4), np.float32)
  heatmaps[0, 0, 0, 0, 0] = 100.0  # keypoint 0 predicted at its target cell
  loss = float(instance_heads.keypoint_loss(heatmaps, cells, labelled))
  assert loss == pytest.approx(np.log(56 * 56) / 2, rel=1e-4)  # keypoint 1: uniform


def test_heatmaps_to_keypoints_equal_torch_bicubic():
  """Each map resized bicubically (torch's F.interpolate, align_corners=False) to the
  box's ceil size, the arg-max cell centre in image pixels, its value the score."""
  tvw.hide_triton()  # before anything imports torch._dynamo (see hide_triton)
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  heatmaps = rng.normal(size=(1, 3, 56, 56, 2)).astype(np.float32)
  boxes = np.array([[[3.2, 5.0, 40.7, 21.3], [0.0, 0.0, 10.5, 60.0],
                     [7.0, 8.0, 7.5, 30.0]]], np.float32)
  xy, scores = instance_heads.heatmaps_to_keypoints(jnp.asarray(heatmaps),
                                                    jnp.asarray(boxes), 64)
  for d, (x1, y1, x2, y2) in enumerate(boxes[0]):
    w, h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    nw, nh = int(np.ceil(w)), int(np.ceil(h))
    maps = torch.from_numpy(np.moveaxis(heatmaps[0, d], -1, 0)[:, None])
    up = torch.nn.functional.interpolate(maps, size=(nh, nw), mode="bicubic",
                                         align_corners=False)[:, 0].numpy()
    for k in range(2):
      pos = int(np.argmax(up[k]))
      yi, xi = divmod(pos, nw)
      np.testing.assert_allclose(xy[0, d, k], [x1 + (xi + 0.5) * w / nw,
                                               y1 + (yi + 0.5) * h / nh], atol=1e-4)
      np.testing.assert_allclose(scores[0, d, k], up[k].max(), rtol=1e-4, atol=1e-4)


def test_paste_masks_box_of_ones_and_torchvision_convention():
  """jaxseg's paste of an all-ones mask is exactly the pixels inside an integer box;
  the torchvision convention equals torchvision's paste_masks_in_image."""
  pasted = ops.roi.paste_masks(np.ones((1, 28, 28)), np.array([[2.0, 3, 10, 9]]), 16, 16)
  expected = np.zeros((16, 16), bool)
  expected[3:9, 2:10] = True
  np.testing.assert_array_equal(pasted[0] >= 0.5, expected)
  tvw.hide_triton()
  tv_roi_heads = pytest.importorskip("torchvision.models.detection.roi_heads")
  import torch  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  masks = rng.uniform(size=(4, 28, 28)).astype(np.float32)
  boxes = np.array([[2.3, 3.1, 30.2, 20.9], [-4.0, 10.0, 12.0, 50.0], [20.0, 5.5, 47.9, 9.0],
                    [0.0, 0.0, 48.0, 40.0]], np.float32)
  ours = ops.roi.paste_masks(masks, boxes, 40, 48, "torchvision")
  theirs = tv_roi_heads.paste_masks_in_image(torch.from_numpy(masks[:, None]),
                                             torch.from_numpy(boxes), (40, 48))[:, 0].numpy()
  np.testing.assert_allclose(ours, theirs, atol=1e-5)


def _task(path, data_dir=None):
  c = load_config(path, "tiny")
  if data_dir is not None:
    c.dataset.data_dir = data_dir
  return tasks.get_task(c)


def _instance_eval(task, seed=0):
  """Accumulated eval statistics of 3 + 2 images: ground-truth rectangles with masks or
  keypoints, detections that jitter them (masks thinned at random, keypoints moved),
  plus false positives."""
  rng = np.random.default_rng(seed)
  size, m, d = task.config.dataset.image_size, task.max_boxes, 6
  k = len(task.keypoint_names)
  total = None
  for n in (3, 2):
    s = {"image_id": np.arange(n) + (0 if total is None else 3),
         "scale_xy": np.ones((n, 2), np.float32), "orig_size": np.full((n, 2), size),
         "example_mask": np.ones(n, bool), "num_proposals": np.full(n, 16),
         "gt_boxes": np.full((n, m, 4), -1.0, np.float32), "gt_labels": np.full((n, m), -1),
         "gt_valid": np.zeros((n, m), bool), "gt_is_crowd": np.zeros((n, m), bool),
         "det_boxes": np.full((n, d, 4), -1.0, np.float32),
         "det_scores": np.zeros((n, d), np.float32), "det_classes": np.full((n, d), -1),
         "det_valid": np.zeros((n, d), bool)}
    if "masks" in task.instance_outputs:
      s["gt_masks"] = np.zeros((n, m, size, size), np.uint8)
      s["det_masks"] = np.zeros((n, d, 28, 28), np.float32)
    if "keypoints" in task.instance_outputs:
      s["gt_keypoints"] = np.zeros((n, m, k, 3), np.float32)
      s["det_keypoints"] = np.zeros((n, d, k, 2), np.float32)
      s["det_keypoint_scores"] = np.zeros((n, d, k), np.float32)
    for i in range(n):
      for j in range(rng.integers(1, m + 1)):
        x1, y1 = rng.integers(0, size // 2, 2)
        x2, y2 = x1 + rng.integers(6, size // 2), y1 + rng.integers(6, size // 2)
        label = rng.integers(1, task.num_classes)
        s["gt_boxes"][i, j], s["gt_labels"][i, j], s["gt_valid"][i, j] = (
            [x1, y1, x2, y2], label, True)
        if "gt_masks" in s:
          s["gt_masks"][i, j, y1:y2, x1:x2] = 1
        if "gt_keypoints" in s:
          s["gt_keypoints"][i, j] = np.stack(
              [rng.uniform(x1, x2, k), rng.uniform(y1, y2, k), rng.integers(0, 3, k)], -1)
          s["gt_keypoints"][i, j, s["gt_keypoints"][i, j, :, 2] == 0] = 0
        for r in (2 * j, 2 * j + 1):  # a jittered hit and a shifted, weaker one
          if r >= d:
            continue
          shift = rng.normal(0, 1.5, 4) + (0 if r == 2 * j else rng.uniform(3, 8))
          s["det_boxes"][i, r] = np.clip([x1, y1, x2, y2] + shift, 0, size)
          s["det_scores"][i, r] = rng.uniform(0.1, 1.0)
          s["det_classes"][i, r] = label if rng.uniform() < 0.8 else rng.integers(
              1, task.num_classes)
          s["det_valid"][i, r] = True
          if "det_masks" in s:
            s["det_masks"][i, r] = rng.uniform(0.45, 1.0, (28, 28))
          if "det_keypoints" in s:
            s["det_keypoints"][i, r] = (s["gt_keypoints"][i, j, :, :2]
                                        + rng.normal(0, 1 + 2 * (r % 2), (k, 2)))
    total = task.accumulate(total, s)
  return total


def _pycocotools(exports, iou_type, tmp_path):
  from pycocotools.coco import COCO  # pylint: disable=g-import-not-at-top
  from pycocotools.cocoeval import COCOeval  # pylint: disable=g-import-not-at-top
  paths = {}
  for name, content in exports.items():
    paths[name] = str(tmp_path / name)
    with open(paths[name], "w") as f:
      json.dump(content, f)
  with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(paths["ground_truth.json"])
    ev = COCOeval(gt, gt.loadRes(paths["detections.json"]), iou_type)
    if iou_type == "keypoints":  # the exported category carries the sigmas it used
      ev.params.kpt_oks_sigmas = np.array(gt.loadCats(gt.getCatIds())[0]["kpt_oks_sigmas"])
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
  return ev.stats


@pytest.mark.parametrize("path,iou_type,prefix,names", [
    (MASK_CONFIG, "segm", "mask_", ("AP", "AP50", "AP75", "APs", "APm", "APl")),
    (KEYPOINT_CONFIG, "keypoints", "keypoint_", ("AP", "AP50", "AP75", "APm", "APl")),
])
def test_instance_eval_equals_pycocotools_on_its_exported_json(path, iou_type, prefix, names,
                                                               tmp_path):
  task = _task(path)
  total = _instance_eval(task)
  summary = task.summarize(total)
  stats = _pycocotools(task.exports(total), iou_type, tmp_path)
  assert summary[prefix + "AP"] > 0.05  # the jitter leaves something to score
  for k, name in enumerate(names):
    assert summary[prefix + name] == pytest.approx(stats[k], abs=1e-9), name
  box = _pycocotools(task.exports(total), "bbox", tmp_path)
  assert summary["AP"] == pytest.approx(box[0], abs=1e-9)


def test_pictures_draw_masks_and_skeletons():
  for path in (MASK_CONFIG, KEYPOINT_CONFIG):
    task = _task(path)
    t = _instance_eval(task, seed=2)[0]
    n = len(t["image_id"])
    batch = {"image": np.full((n, 32, 32, 3), 0.5, np.float32), "boxes": t["gt_boxes"],
             "labels": t["gt_labels"], "valid": t["gt_valid"], "is_crowd": t["gt_is_crowd"]}
    if "masks" in task.instance_outputs:
      batch["masks"] = np.zeros((n, task.max_boxes, 32, 32), np.uint8)
      batch["masks"][t["gt_valid"]] = 1
    if "keypoints" in task.instance_outputs:
      batch["keypoints"] = np.zeros((n, task.max_boxes, len(task.keypoint_names), 3))
      batch["keypoints"][..., :2], batch["keypoints"][..., 2] = 16.0, 2
    predictions = {"boxes": t["det_boxes"], "scores": np.ones_like(t["det_scores"]),
                   "classes": t["det_classes"], "valid": t["det_valid"]}
    if "masks" in task.instance_outputs:
      predictions["masks"] = np.ones((n, t["det_boxes"].shape[1], 28, 28), np.float32)
    if "keypoints" in task.instance_outputs:
      predictions["keypoints"] = np.full((n, t["det_boxes"].shape[1],
                                          len(task.keypoint_names), 2), 16.0)
    drawn = task.visualize(batch, predictions)[""]
    assert drawn.dtype == np.uint8
    # masks fill their boxes with the class colour; keypoints add a dot at the centre
    assert len(np.unique(drawn.reshape(-1, 3), axis=0)) > 4
  # instance colours: two objects of one class get two colours
  masks = np.zeros((2, 8, 8), bool)
  masks[0, :, :4], masks[1, :, 4:] = True, True
  image = viz.draw_detections(np.zeros((8, 8, 3), np.uint8), np.array([[0, 0, 4, 8],
                              [4, 0, 8, 8]]), [1, 1], masks=masks, mask_alpha=1.0,
                              instance_colours=True)
  assert not np.array_equal(image[4, 1], image[4, 6])


def test_bad_instance_configs_are_config_errors():
  for path, key, value, error in (
      (MASK_CONFIG, "model.keypoint_head", {"conv_layers": (8,)}, "no keypoints"),
      (KEYPOINT_CONFIG, "dataset.skeleton", [["left_knee", "left_toe"]], "left_toe.*lacks"),
      (MASK_CONFIG, "model.mask_head.depth", 3, "mask_head has no field depth")):
    c = load_config(path, "tiny")
    parent, name = key.rsplit(".", 1)
    with c.unlocked():
      node = c
      for part in parent.split("."):
        node = node[part]
      node[name] = value
    with pytest.raises(ConfigError, match=error):
      tasks.get_task(c)


def test_tiny_mask_and_keypoint_rcnn_trains_and_evaluates_end_to_end(data_dir, tmp_path):
  """Both heads at once on the stick figures (they have masks and keypoints): one run
  covers the data, training, eval and export paths of each."""
  c = load_config(KEYPOINT_CONFIG, "tiny")
  c.dataset.data_dir = data_dir
  with c.unlocked():
    c.model.mask_head = {"conv_layers": (8,)}
  summary = loop.train_and_evaluate(c, str(tmp_path / "run"),
                                    mesh=loop.make_mesh(jax.devices()[:2]))
  assert summary["final_step"] == c.num_steps
  assert {"AP", "mask_AP", "keypoint_AP"} <= set(summary["eval"])
  with open(os.path.join(summary["results"], "detections.json")) as f:
    results = json.load(f)
  assert results and all("segmentation" in r and "keypoints" in r for r in results)
