"""Detection on real data: the VOC and COCO configs (the papers' settings, their data
pipelines on mocked TFDS data) and a COCO-format custom dataset trained end to end by
the trainer with only a config change.

TFDS's random mock data (`mock_data(num_examples=...)`) draws bbox corners independently,
so its boxes are degenerate (x2 < x1) and jaxseg's pipeline rightly rejects them; the
mocks here yield crafted examples with the catalog builders' real features instead
(`_mock` of test_detection_data: offline, TFDS falls back to MockPolicy.USE_CODE).
"""
import json
import os

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from conftest import REPO, load_config
from test_detection_data import _coco_example, _mock, _voc_example, _write_coco
from test_faster_rcnn import host_init
from jaxseg import config_schema, tasks
from jaxseg.data import coco_format, pipeline
from jaxseg.train import loop, transfer
from jaxseg.train.optim import make_optimizer, make_schedule
from jaxseg.train.state import create_state

CONFIGS = os.path.join(REPO, "experiments", "detection")
VOC = os.path.join(CONFIGS, "faster_rcnn_voc.py")
COCO = os.path.join(CONFIGS, "faster_rcnn_coco.py")
COCO_FORMAT = os.path.join(CONFIGS, "faster_rcnn_coco_format.py")


def _lr(config, step):
  return float(make_schedule(config.optimizer, config.num_steps)(step))


# -- the full configs ---------------------------------------------------------------------
def test_voc_config_is_the_papers():
  c = load_config(VOC, None)
  config_schema.validate(c)
  assert c.dataset.name == "voc/2007" and c.dataset.image_size == 800
  assert c.model.backbone == "vgg16" and not c.model.fpn
  assert c.model.backbone_levels == ("stage5",)  # conv5_3, stride 16
  assert c.model.rpn.anchor_sizes == ((128.0, 256.0, 512.0),)
  assert c.model.rpn.aspect_ratios == (0.5, 1.0, 2.0)
  assert c.model.rpn.post_nms_top_n_test == 300 and c.model.roi_heads.pooler == "roi_pool"
  # lr 1e-3 for 60k mini-batches of one image, then 1e-4 for 20k (SGD, momentum 0.9)
  assert c.batch_size == 1 and c.num_steps == 80_000 and c.optimizer.name == "sgd"
  np.testing.assert_allclose([_lr(c, s) for s in (0, 59_999, 60_000, 79_999)],
                             [1e-3, 1e-3, 1e-4, 1e-4], rtol=1e-6)
  task = tasks.get_task(c)  # traces the whole VGG-16 detector at 800 px
  assert task.num_classes == 21 and task.class_names[15] == "person"


def test_voc_init_from_maps_torchvision_vgg16_onto_the_backbone():
  """The preset rename rules take a torchvision vgg16 state dict (names and OIHW shapes as
  torchvision's) onto every backbone array, and the classifier nowhere."""
  c = load_config(VOC, None)
  task = tasks.get_task(c)
  model = transfer.flatten(jax.eval_shape(task.init, jax.random.key(0), task.example_batch(1)))
  widths, convs = (64, 128, 256, 512, 512), (2, 2, 3, 3, 3)
  state_dict, index, channels = {}, 0, 3
  for width, n in zip(widths, convs):
    for _ in range(n):
      state_dict[f"features.{index}.weight"] = np.zeros((width, channels, 3, 3), np.float32)
      state_dict[f"features.{index}.bias"] = np.full((width,), index, np.float32)
      channels, index = width, index + 2
    index += 1  # the max pooling
  for k, (out, inp) in zip((0, 3, 6), ((4096, 25088), (4096, 4096), (1000, 4096))):
    state_dict[f"classifier.{k}.weight"] = np.zeros((out, 1), np.float32)  # never read
    state_dict[f"classifier.{k}.bias"] = np.zeros((out,), np.float32)
  assert index == 31  # torchvision's features.30 is the last pooling
  mapped = transfer.map_names(state_dict, c.init_from)
  transfer.check_fits(mapped, model, "backbone", "vgg16")  # every backbone array, right shape
  assert len(mapped) == 26 and all(k.startswith("params/backbone/stage") for k in mapped)
  # conv5_3 (features.28) is the third conv of stage 5; kernels go OIHW -> HWIO
  np.testing.assert_array_equal(mapped["params/backbone/stage5/ConvNormAct_2/Conv_0/bias"], 28)
  assert mapped["params/backbone/stage1/ConvNormAct_0/Conv_0/kernel"].shape == (3, 3, 3, 64)


def test_coco_config_is_torchvisions():
  c = load_config(COCO, None)
  config_schema.validate(c)
  from jaxseg.weights import torchvision as tvw  # pylint: disable=g-import-not-at-top
  model = c.model.to_dict()
  model.pop("dtype")
  assert model == tvw.FASTERRCNN_RESNET50_FPN  # its converted weights load
  assert c.dataset.name == "coco/2017" and c.dataset.image_size % 64 == 0
  assert c.dataset.max_boxes >= 100 and c.dataset.max_boxes_overflow == "error"
  # 26 epochs of 118287 images at batch 16; lr 0.02, x 0.1 at epochs 16 and 22
  epoch = 118_287 // 16
  assert c.batch_size == 16 and c.num_steps == 26 * epoch
  np.testing.assert_allclose(
      [_lr(c, s) for s in (1_000, 16 * epoch - 1, 16 * epoch, 22 * epoch, 26 * epoch - 1)],
      [0.02, 0.02, 0.002, 0.0002, 0.0002], rtol=1e-5)
  assert tasks.get_task(c).num_classes == 81


# -- the pipelines on mocked TFDS data ------------------------------------------------------
def _check_batch(batch, task, size, batch_size):
  """Shapes, dtypes and ranges of a detection batch; returns its valid mask."""
  m = task.max_boxes
  assert batch["image"].shape == (batch_size, size, size, 3)
  assert batch["image"].dtype == np.float32
  assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
  assert batch["boxes"].shape == (batch_size, m, 4) and batch["boxes"].dtype == np.float32
  assert batch["labels"].shape == (batch_size, m) and batch["labels"].dtype == np.int32
  valid = batch["valid"]
  assert valid.dtype == bool and valid.any()
  boxes, labels = batch["boxes"][valid], batch["labels"][valid]
  assert np.all(boxes >= 0) and np.all(boxes <= size)
  assert np.all(boxes[:, 2:] > boxes[:, :2])
  assert np.all((labels >= 1) & (labels < task.num_classes))
  assert np.all(batch["boxes"][~valid] == -1) and np.all(batch["labels"][~valid] == -1)
  task.validate_batch(batch)
  return valid


VOC_EXAMPLES = [  # (H, W, objects as VOC xml boxes: 1-based inclusive), file name
    _voc_example(48, 64, [(14, (9, 5, 40, 36), False), (19, (41, 1, 64, 48), True)],
                 "2007_000032.jpg"),
    _voc_example(64, 32, [(0, (1, 1, 16, 64), False)], "000005.jpg"),
    _voc_example(40, 40, [(6, (5, 5, 20, 20), False), (6, (21, 21, 40, 40), False),
                          (11, (1, 21, 20, 40), False)], "000007.jpg"),
    _voc_example(32, 48, [(2, (3, 3, 30, 30), False)], "000009.jpg"),
]


def test_voc_train_and_eval_pipelines(tmp_path):
  c = load_config(VOC, "tiny")
  c.dataset.data_dir = str(tmp_path)
  seen = []
  with _mock("voc/2007", VOC_EXAMPLES, seen):
    task = tasks.get_task(c)
    assert task.num_classes == 21
    train = next(task.train_data(0))
    assert seen[-1] == ("voc", "2007", "train+validation")
    valid = _check_batch(train, task, 32, 4)
    assert sorted(train["labels"][valid].tolist()) == [1, 3, 7, 7, 12, 15, 20]
    evals = list(task.eval_data())
    assert seen[-1] == ("voc", "2007", "test")
  assert len(evals) == 1
  batch = evals[0]
  _check_batch(batch, task, 32, 4)
  assert batch["image_id"].tolist() == [2007000032, 5, 7, 9]
  # letterboxed: the long side becomes 32, the short one rounded (48 x 32 -> 32 x 21);
  # boxes scaled per axis (VOC's x1 = xmin - 1, x2 = xmax)
  np.testing.assert_allclose(batch["scale_xy"], [[0.5, 0.5], [0.5, 0.5], [0.8, 0.8],
                                                 [2 / 3, 21 / 32]], rtol=1e-6)
  np.testing.assert_allclose(batch["boxes"][0, :2], [[4, 2, 20, 18], [20, 0, 32, 24]],
                             atol=1e-3)
  np.testing.assert_allclose(batch["boxes"][1, :1], [[0, 0, 8, 32]], atol=1e-3)
  assert batch["labels"][0, :2].tolist() == [15, 20] and batch["valid"].sum(1).tolist() == [
      2, 1, 3, 1]


def test_coco_train_and_eval_pipelines_keep_crowds(tmp_path):
  examples = [
      _coco_example(48, 64, 139, [(4, 6, 20, 10), (0, 0, 64, 48)], [0, 79], [False, True]),
      _coco_example(64, 32, 285, [(2, 2, 10, 40)], [23], [False]),
      _coco_example(32, 32, 632, [(0, 0, 8, 8), (8, 8, 8, 8), (16, 16, 8, 8)],
                    [56, 56, 61], [False, False, False]),
      _coco_example(24, 48, 724, [(12, 0, 24, 24)], [11], [False]),
  ]
  c = load_config(COCO, "tiny")
  c.dataset.data_dir = str(tmp_path)
  seen = []
  with _mock("coco/2017", examples, seen):
    task = tasks.get_task(c)
    assert task.num_classes == 81 and task.class_names[80] == "toothbrush"
    train = next(task.train_data(0))
    assert seen[-1] == ("coco", "2017", "train")
    valid = _check_batch(train, task, 32, 4)
    assert sorted(train["labels"][valid].tolist()) == [1, 12, 24, 57, 57, 62, 80]
    assert train["is_crowd"][valid].sum() == 1
    crowd = train["is_crowd"] & valid
    assert train["labels"][crowd].tolist() == [80]
    (batch,) = list(task.eval_data())
    assert seen[-1] == ("coco", "2017", "validation")
  _check_batch(batch, task, 32, 4)
  assert batch["image_id"].tolist() == [139, 285, 632, 724]
  assert batch["is_crowd"][0, :2].tolist() == [False, True]
  np.testing.assert_allclose(batch["boxes"][0, :2], [[2, 3, 12, 8], [0, 0, 32, 24]],
                             atol=1e-3)
  np.testing.assert_allclose(batch["boxes"][3, :1], [[8, 0, 24, 16]], atol=1e-3)


# -- a COCO-format dataset: only the config's data_dir set --------------------------------
def test_coco_format_dataset_trains_with_only_a_config_change(tmp_path):
  """A dataset built from COCO JSON trains and evaluates with the trainer's own step and
  evaluation (loop.train_step, loop.evaluate; a whole `train_and_evaluate` compiles flax's
  initializers too and takes over a minute here); the exported ground truth is the JSON's."""
  sizes = ((24, 32), (32, 24), (20, 20), (16, 40))  # (H, W) of images 10..13
  boxes = {10: [(2, 3, 12, 10, 7, 0), (16, 4, 14, 18, 3, 1)], 11: [(1, 1, 20, 28, 3, 0)],
           12: [(4, 4, 8, 8, 7, 0), (10, 2, 9, 16, 3, 0)], 13: [(0, 2, 30, 12, 7, 0)]}
  annotations = [  # (image id, x, y, w, h, category id, iscrowd)
      {"id": n + 1, "image_id": image_id, "category_id": cat, "bbox": [x, y, w, h],
       "iscrowd": crowd}
      for n, (image_id, x, y, w, h, cat, crowd) in enumerate(
          (i, *b) for i, bs in boxes.items() for b in bs)]
  images, ann_file = _write_coco(tmp_path, sizes=sizes, annotations=annotations)
  data_dir = str(tmp_path / "tfds")
  coco_format.build("custom", data_dir=data_dir, images=images,
                    annotations={"train": ann_file, "validation": ann_file})
  c = load_config(COCO_FORMAT, "tiny")
  c.dataset.data_dir = data_dir  # the only change
  assert c.dataset.name == "coco_format/custom"
  config_schema.validate(c)
  task = tasks.get_task(c)
  assert task.class_names == ("background", "person", "cat")  # increasing category id

  mesh = loop.make_mesh(jax.devices()[:2])
  loop.check_batch_sizes(c, mesh)
  tx, schedule = make_optimizer(c.optimizer, c.num_steps)
  replicated = NamedSharding(mesh, PartitionSpec())
  variables = host_init(task.init, jax.random.key(0), task.example_batch(4))
  state = jax.jit(lambda v: create_state(v, tx, seed=0), out_shardings=replicated)(variables)
  batches = task.train_data(0)
  batch = next(batches)
  valid = _check_batch(batch, task, 32, 4)
  assert sorted(batch["labels"][valid].tolist()) == [1, 1, 1, 2, 2, 2]
  assert batch["is_crowd"][valid].sum() == 1
  step = jax.jit(lambda s, b: loop.train_step(task, tx, schedule, s, b),
                 out_shardings=(replicated, replicated))
  new_state = state
  for b in (batch, next(batches)):  # two steps: the warm-up's lr is 0 at step 0
    new_state, metrics = step(new_state, pipeline.to_global(b, mesh))
    for term in ("loss", "rpn_objectness", "rpn_box", "roi_classifier", "roi_box"):
      assert np.isfinite(float(metrics[term])), term
  assert float(metrics["rpn_objectness"]) > 0 and int(new_state.step) == 2
  moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                       state.params, new_state.params)
  assert max(jax.tree.leaves(moved)) > 0

  exports = {}
  eval_fn = jax.jit(lambda v, b: loop.eval_step(task, v, b))
  summary, _ = loop.evaluate(task, eval_fn, new_state, mesh, exports)
  assert {"AP", "AP50", "AR", "AP/person", "AP/cat"} <= set(summary)
  assert all(np.isfinite(summary[k]) for k in ("AP", "AP50", "AR"))
  gt = json.loads(json.dumps(exports["ground_truth.json"]))  # as the trainer writes it
  assert sorted(i["id"] for i in gt["images"]) == [10, 11, 12, 13]
  names = {cat["id"]: cat["name"] for cat in gt["categories"]}
  assert names == {1: "person", 2: "cat"}
  got = sorted((a["image_id"], names[a["category_id"]], a["iscrowd"],
                tuple(np.round(a["bbox"], 2))) for a in gt["annotations"])
  label = {3: "person", 7: "cat"}
  want = sorted((i, label[cat], crowd, tuple(float(v) for v in (x, y, w, h)))
                for i, bs in boxes.items() for x, y, w, h, cat, crowd in bs)
  assert got == want  # source pixels [x, y, w, h], classes and crowds of the JSON
