"""Instance segmentation and keypoints on real data: the COCO 2017 Mask R-CNN / keypoint
R-CNN configs and the COCO-format custom config (torchvision's model fields and recipe),
their `:tiny` variants on tiny fixtures in the real COCO format (polygon and RLE masks,
crowd RLEs, COCO's person category with 17 keypoints and its skeleton) built with
`jaxseg.data.coco_format`: the training batches hold the fixture's masks and keypoints,
and one jitted loss evaluation (keypoint R-CNN's) gives every term."""
import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

from conftest import REPO, load_config
from test_faster_rcnn import host_init
from jaxseg import config_schema, tasks
from jaxseg.data import coco_format
from jaxseg.formats import rle
from jaxseg.metrics.coco import COCO_KEYPOINT_SIGMAS
from jaxseg.train.optim import make_schedule
from jaxseg.weights import torchvision as tvw

INSTANCE = os.path.join(REPO, "experiments", "instance")
DETECTION = os.path.join(REPO, "experiments", "detection")
MASK_COCO = os.path.join(INSTANCE, "mask_rcnn_coco.py")
KEYPOINT_COCO = os.path.join(INSTANCE, "keypoint_rcnn_coco.py")
MASK_COCO_FORMAT = os.path.join(INSTANCE, "mask_rcnn_coco_format.py")

COCO_KEYPOINTS = [  # COCO's person category, as in person_keypoints_train2017.json
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"]
COCO_SKELETON = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7],
                 [6, 8], [7, 9], [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5],
                 [4, 6], [5, 7]]


def _lr(config, step):
  return float(make_schedule(config.optimizer, config.num_steps)(step))


def _model(config):
  model = config.model.to_dict()
  model.pop("dtype")
  return model


def _loss_weights_are_ones(config, terms):
  assert all(config.loss[f"{t}_weight"] == 1.0 for t in terms)  # torchvision's plain sum


# -- the full configs: torchvision's model and recipe ------------------------------------
def test_coco_instance_configs_are_torchvisions():
  frcnn = load_config(os.path.join(DETECTION, "faster_rcnn_coco.py"), None)
  mask = load_config(MASK_COCO, None)
  keypoint = load_config(KEYPOINT_COCO, None)
  for c in (mask, keypoint):
    config_schema.validate(c)
    assert c.task == "instance_segmentation" and c.dataset.name.startswith("coco_format/")
    assert c.dataset.image_size == frcnn.dataset.image_size
    assert c.dataset.max_boxes == 100 and c.dataset.max_boxes_overflow == "error"
    assert c.init_from.to_dict() == frcnn.init_from.to_dict()
    _loss_weights_are_ones(c, ("rpn_objectness", "rpn_box", "roi_classifier", "roi_box",
                               "roi_mask", "roi_keypoint"))
  assert _model(mask) == tvw.MASKRCNN_RESNET50_FPN  # converted weights load
  assert _model(keypoint) == tvw.KEYPOINTRCNN_RESNET50_FPN
  assert mask.best_metric == "mask_AP" and keypoint.best_metric == "keypoint_AP"
  # Mask R-CNN: exactly faster_rcnn_coco.py's schedule (26 epochs, x 0.1 at 16 and 22)
  for key in ("batch_size", "eval_batch_size", "num_steps", "eval_every"):
    assert mask[key] == frcnn[key], key
  assert mask.optimizer.to_dict() == frcnn.optimizer.to_dict()
  assert mask.dataset.augment.flip and frcnn.dataset.augment.flip
  # keypoint R-CNN: the same optimizer, 46 epochs, x 0.1 at 36 and 43, scale jitter
  epoch = keypoint.num_steps // 46
  assert keypoint.batch_size == 16 and epoch == 56_599 // 16
  np.testing.assert_allclose(
      [_lr(keypoint, s) for s in (1_000, 36 * epoch - 1, 36 * epoch, 43 * epoch)],
      [0.02, 0.02, 0.002, 0.0002], rtol=1e-5)
  assert keypoint.optimizer.momentum == 0.9 and keypoint.optimizer.weight_decay == 1e-4
  assert keypoint.dataset.augment.min_scale == pytest.approx(640 / 800)
  for c in (load_config(MASK_COCO, "small"), load_config(KEYPOINT_COCO, "small")):
    epoch = c.num_steps // 12  # Detectron's 1x: 12 epochs, x 0.1 at 8 and 11, 832 px
    assert c.optimizer.decay_steps == (8 * epoch, 11 * epoch)
    assert c.dataset.image_size == 832 and c.dataset.image_size % 64 == 0
  # the custom-data config: faster_rcnn_coco_format.py's fine-tuning schedule
  custom = load_config(MASK_COCO_FORMAT, None)
  ref = load_config(os.path.join(DETECTION, "faster_rcnn_coco_format.py"), None)
  config_schema.validate(custom)
  assert _model(custom) == tvw.MASKRCNN_RESNET50_FPN
  assert custom.optimizer.to_dict() == ref.optimizer.to_dict()
  assert custom.num_steps == ref.num_steps and custom.batch_size == ref.batch_size
  assert custom.dataset.name == "coco_format/custom" and custom.best_metric == "mask_AP"


# -- tiny fixtures in the real COCO format ------------------------------------------------
def _uncompressed_rle(mask):
  """COCO's uncompressed RLE (column-major runs, starting with zeros) of a 0/1 mask."""
  flat = mask.ravel(order="F").astype(np.int64)
  changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
  return {"size": list(mask.shape), "counts": np.diff(np.concatenate([[0], changes])).tolist()}


def _rect(h, w, x0, y0, x1, y1):
  mask = np.zeros((h, w), np.uint8)
  mask[y0:y1, x0:x1] = 1
  return mask


def _write(tmp_path, sizes, categories, annotations, name):
  folder = tmp_path / "images"
  folder.mkdir(exist_ok=True)
  for i, (h, w) in enumerate(sizes):
    Image.fromarray(np.full((h, w, 3), 30 + 50 * i, np.uint8)).save(folder / f"{i}.png")
  data = {"images": [{"id": 10 + i, "file_name": f"{i}.png", "width": w, "height": h}
                     for i, (h, w) in enumerate(sizes)],
          "categories": categories, "annotations": annotations}
  path = tmp_path / f"{name}.json"
  path.write_text(json.dumps(data))
  return str(folder), str(path)


INSTANCE_SIZES = ((48, 64), (64, 48), (40, 40), (32, 64))  # (H, W) of images 10..13


def _instance_annotations():
  """(annotations, [(label, is_crowd, area in source pixels, image index)])."""
  car_rle = _uncompressed_rle(_rect(48, 64, 44, 20, 60, 44))  # 16 x 24
  compressed = rle.encode(_rect(40, 40, 5, 10, 35, 30))  # 30 x 20, a compressed string
  compressed = {"size": list(compressed["size"]), "counts": compressed["counts"].decode()}
  crowd = _uncompressed_rle(_rect(32, 64, 0, 0, 20, 32))  # 20 x 32
  anns = [  # image id, category id, bbox, segmentation, iscrowd
      (10, 1, [8, 6, 32, 24], [[8, 6, 40, 6, 40, 30, 8, 30]], 0),  # polygon 32 x 24
      (10, 3, [44, 20, 16, 24], car_rle, 0),
      (11, 3, [4, 4, 40, 56], [[4, 4, 44, 4, 4, 60]], 0),  # triangle, area 1120
      (12, 1, [5, 10, 30, 20], compressed, 0),
      (13, 1, [0, 0, 20, 32], crowd, 1),
      (13, 1, [24, 4, 36, 24], [[24, 4, 60, 4, 60, 16, 24, 16],  # two polygons: 36 x 12
                                [24, 20, 42, 20, 42, 28, 24, 28]], 0),  # + 18 x 8
  ]
  annotations = [{"id": n + 1, "image_id": i, "category_id": c, "bbox": b, "segmentation": s,
                  "iscrowd": crowd, "area": 0.0} for n, (i, c, b, s, crowd) in enumerate(anns)]
  label = {1: 1, 3: 2}  # person, car: labels in increasing category id
  areas = (768, 384, 1120, 600, 640, 36 * 12 + 18 * 8)
  want = [(label[c], crowd, area, i - 10) for (i, c, _, _, crowd), area in zip(anns, areas)]
  return annotations, want


def _instance_data(tmp_path, names):
  annotations, want = _instance_annotations()
  images, path = _write(tmp_path, INSTANCE_SIZES,
                        [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
                        annotations, "instances")
  data_dir = str(tmp_path / "tfds")
  for name in names:
    coco_format.build(name, data_dir=data_dir, images=images,
                      annotations={"train": path, "validation": path})
  return data_dir, want


def _task(path, data_dir):
  c = load_config(path, "tiny")
  c.dataset.data_dir = data_dir  # the only change
  config_schema.validate(c)
  return c, tasks.get_task(c)


def _mask_box(mask):
  rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
  return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)


def _check_masks(batch, want, size):
  """Every fixture object once: its label, crowd flag and mask area scaled (letterbox:
  size / long side), the mask inside its box; padded rows empty."""
  valid = batch["valid"]
  assert batch["masks"].shape == (*valid.shape, size, size)
  assert batch["masks"].dtype == np.uint8 and not batch["masks"][~valid].any()
  got = sorted((int(l), bool(c), int(m.sum()), tuple(b))
               for l, c, m, b in zip(batch["labels"][valid], batch["is_crowd"][valid],
                                     batch["masks"][valid], batch["boxes"][valid]))
  scaled = sorted((l, bool(c), a * (size / max(INSTANCE_SIZES[i])) ** 2)
                  for l, c, a, i in want)
  assert [g[:2] for g in got] == [w[:2] for w in scaled]
  for (_, _, area, box), (_, _, want_area) in zip(got, scaled):
    assert abs(area - want_area) <= 0.15 * want_area + 4, (area, want_area)
  for m, b in zip(batch["masks"][valid], batch["boxes"][valid]):
    np.testing.assert_allclose(_mask_box(m), b, atol=1.01)


def _loss_terms(task, batch):
  variables = host_init(task.init, jax.random.key(0), task.example_batch(4))
  loss, (terms, _) = jax.jit(lambda v, b: task.loss_fn(v, b, jax.random.key(1), True))(
      variables, batch)
  assert np.isfinite(float(loss))
  return {k: float(v) for k, v in terms.items()}


def test_mask_rcnn_coco_and_coco_format_tiny_on_a_coco_fixture(tmp_path):
  """Polygons (one and two per object), uncompressed and compressed RLEs and a crowd RLE
  reach the training batches of both Mask R-CNN configs as masks of the right area inside
  their boxes, with their classes and crowd flags."""
  data_dir, want = _instance_data(tmp_path, ("coco2017_instances", "custom"))
  for path in (MASK_COCO, MASK_COCO_FORMAT):
    c, task = _task(path, data_dir)
    assert task.class_names == ("background", "person", "car")
    assert task.instance_outputs == ("masks",) and c.dataset.image_size == 32
    batch = next(task.train_data(0))  # the 4 images, shuffled and maybe flipped
    _check_masks(batch, want, 32)
    task.validate_batch(batch)
  # one jitted loss in this file (~15 s to compile here): the keypoint test's


KEYPOINT_SIZES = ((48, 64), (64, 32), (40, 64), (64, 48))


def _keypoint_annotations():
  """Five people in four images (KEYPOINT_SIZES; every long side 64), told apart by their
  boxes' aspect ratios; keypoints inside their boxes with v = 0, 1 and 2."""
  rng = np.random.default_rng(0)
  people = [(10, [6, 4, 20, 40]), (10, [34, 10, 26, 30]), (11, [4, 8, 24, 56]),
            (12, [10, 5, 40, 30]), (13, [5, 5, 40, 20])]
  annotations = []
  for n, (image_id, (x, y, w, h)) in enumerate(people):
    xy = np.stack([rng.integers(x, x + w, 17), rng.integers(y, y + h, 17)], 1)
    v = rng.integers(0, 3, 17)
    v[:2] = (2, 1)
    kps = np.concatenate([xy * (v > 0)[:, None], v[:, None]], 1)
    annotations.append({"id": n + 1, "image_id": image_id, "category_id": 1,
                        "bbox": [x, y, w, h], "iscrowd": 0, "area": float(w * h),
                        "num_keypoints": int((v > 0).sum()),
                        "keypoints": kps.reshape(-1).tolist()})
  return annotations


def test_keypoint_rcnn_coco_tiny_on_a_person_keypoints_fixture(tmp_path):
  """COCO's person category (17 keypoints, its skeleton, no kpt_oks_sigmas): the task
  takes the skeleton and COCO's OKS sigmas, and each keypoint reaches the training batch
  at its scaled position (pixel centres: + 0.5) with its visibility; roi_keypoint trains."""
  annotations = _keypoint_annotations()
  person = {"id": 1, "name": "person", "supercategory": "person",
            "keypoints": COCO_KEYPOINTS, "skeleton": COCO_SKELETON}
  images, path = _write(tmp_path, KEYPOINT_SIZES, [person], annotations, "keypoints")
  data_dir = str(tmp_path / "tfds")
  coco_format.build("coco2017_person_keypoints", data_dir=data_dir, images=images,
                    annotations={"train": path, "validation": path})
  c, task = _task(KEYPOINT_COCO, data_dir)
  assert task.class_names == ("background", "person") and task.instance_outputs == (
      "keypoints",)
  assert task.keypoint_names == tuple(COCO_KEYPOINTS)
  assert task.skeleton == tuple((a - 1, b - 1) for a, b in COCO_SKELETON)
  np.testing.assert_allclose(task.keypoint_sigmas, COCO_KEYPOINT_SIGMAS)
  assert c.dataset.augment.flip  # as torchvision: the source's left/right swap is used
  flipped = next(task.train_data(0))
  task.validate_batch(flipped)
  with c.unlocked():
    c.dataset.augment.flip = False  # the positions below are checked without flips
  batch = next(task.train_data(0))
  task.validate_batch(batch)
  valid = batch["valid"]
  assert batch["keypoints"].shape == (*valid.shape, 17, 3) and valid.sum() == 5
  assert not batch["keypoints"][~valid].any()
  # scale jitter (letterbox side in [0.8, 1] x 32, no flip): each person's scale is its
  # box's size over the source's; match people by their source box's aspect ratio
  seen = set()
  for box, kps in zip(batch["boxes"][valid], batch["keypoints"][valid]):
    ratio = (box[3] - box[1]) / (box[2] - box[0])
    ann = min(annotations, key=lambda a: abs(a["bbox"][3] / a["bbox"][2] - ratio))
    seen.add(ann["id"])
    x, y, w, h = ann["bbox"]
    s = (box[2:] - box[:2]) / [w, h]  # per axis: the resized sides are whole pixels
    assert np.all((0.8 * 32 / 64 - 0.02 <= s) & (s <= 32 / 64 + 1e-3)), s  # long sides 64
    src = np.asarray(ann["keypoints"], np.float32).reshape(17, 3)
    np.testing.assert_array_equal(kps[:, 2], src[:, 2])
    shown = src[:, 2] > 0
    want = box[:2] + (src[:, :2] + 0.5 - [x, y]) * s
    np.testing.assert_allclose(kps[shown, :2], want[shown], atol=0.05)
    assert not kps[~shown].any()
  assert seen == {1, 2, 3, 4, 5}
  terms = _loss_terms(task, batch)
  assert terms["roi_keypoint"] > 0 and all(np.isfinite(list(terms.values())))
