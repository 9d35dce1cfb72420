"""YOLO (Redmon et al. 2016) and SSD (Liu et al. 2016): losses computed by hand on one
object, target assignment, decoding of known outputs, hard negative mining, bad grid /
default-box settings, compile-once over object counts, and a tiny train + eval of each by
the trainer."""
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, load_config
from jaxseg import losses, ops, tasks
from jaxseg.errors import ConfigError
from jaxseg.models.detection import build_detector, yolo
from jaxseg.train import logging as log_lib
from jaxseg.train import loop

DETECTION = os.path.join(REPO, "experiments", "detection")


def _logit(p):
  return math.log(p / (1 - p))


def _yolo(**fields):
  fields = dict(dict(grid_size=2, boxes_per_cell=2, head="conv", conv_width=4), **fields)
  return build_detector("yolo", 3, backbone="resnet18", backbone_args=dict(width=4),
                        backbone_levels=("stride_32",), yolo=fields)


def _targets(boxes, labels):
  """One image's padded targets (a -1 row after the objects)."""
  boxes = np.asarray(list(boxes) + [[-1.0] * 4], np.float32)[None]
  labels = np.asarray(list(labels) + [-1], np.int32)[None]
  return {"boxes": jnp.asarray(boxes), "labels": jnp.asarray(labels),
          "valid": jnp.asarray(labels >= 1)}


# -- YOLO -----------------------------------------------------------------------------------
def test_yolo_paper_loss_by_hand_one_object_one_cell():
  """64 x 64 image, 2 x 2 grid (32 px cells), B = 2, C = 2. Raw outputs 0 except box 0's
  confidence logit (-> 0.8): every box is centred in its cell, x = y = sqrt w = sqrt h =
  0.5, i.e. 16 x 16 px; in cell 0 both are [8, 8, 24, 24]. The object [8, 8, 40, 24]
  (class 2) has its centre (24, 16) in cell 0; IoU 256 / 512 = 0.5 for both boxes, so box
  0 is responsible (tie: the first)."""
  model = _yolo()
  out = np.zeros((1, 4, 12), np.float32)
  out[0, 0, 4] = _logit(0.8)
  decoded = model.apply({}, jnp.asarray(out), (64, 64), method="decode")
  np.testing.assert_allclose(decoded[0][0, 0], [[8, 8, 24, 24]] * 2, atol=1e-5)
  np.testing.assert_allclose(decoded[0][0, 3, 1], [40, 40, 56, 56], atol=1e-5)
  terms = model.apply({}, *decoded, _targets([[8, 8, 40, 24]], [2]), (64, 64),
                      method="losses")
  # coordinates: targets x = 24 / 32 = 0.75, y = 0.5, sqrt(32 / 64), sqrt(16 / 64)
  coord = (0.75 - 0.5) ** 2 + 0 + (math.sqrt(0.5) - 0.5) ** 2 + 0
  assert float(terms["yolo_coord"]) == pytest.approx(coord, rel=1e-5)
  assert float(terms["yolo_object"]) == pytest.approx((0.8 - 0.5) ** 2, rel=1e-5)
  assert float(terms["yolo_noobject"]) == pytest.approx(7 * 0.25, rel=1e-5)  # 7 other boxes
  # class probabilities (0.5, 0.5) against one-hot (0, 1), in the one cell with an object
  assert float(terms["yolo_class"]) == pytest.approx(0.5, rel=1e-5)
  total = 5 * coord + 0.09 + 0.5 * 1.75 + 0.5  # the paper's lambdas
  got = sum(w * float(terms[t]) for t, w in zip(yolo.LOSS_TERMS, (5, 1, 0.5, 1)))
  assert got == pytest.approx(total, rel=1e-5)
  assert float(terms["yolo_mean_iou"]) == pytest.approx(0.5, rel=1e-5)


def test_yolo_responsible_box_is_the_best_prediction():
  """Box 1 of cell 0 predicts the object exactly ([8, 8, 40, 24]: x = 0.75, y = 0.5,
  sqrt w = sqrt(0.5), sqrt h = 0.5): it is responsible, with confidence target 1 and no
  coordinate error; box 0 (IoU 0.5) joins the no-object term."""
  model = _yolo()
  out = np.zeros((1, 4, 12), np.float32)
  out[0, 0, 5:9] = [_logit(0.75), 0.0, _logit(math.sqrt(0.5)), 0.0]
  out[0, 0, 9] = _logit(0.9)
  decoded = model.apply({}, jnp.asarray(out), (64, 64), method="decode")
  np.testing.assert_allclose(decoded[0][0, 0, 1], [8, 8, 40, 24], atol=1e-4)
  terms = model.apply({}, *decoded, _targets([[8, 8, 40, 24]], [2]), (64, 64),
                      method="losses")
  assert float(terms["yolo_coord"]) == pytest.approx(0.0, abs=1e-9)
  assert float(terms["yolo_object"]) == pytest.approx((0.9 - 1.0) ** 2, rel=1e-4)
  assert float(terms["yolo_noobject"]) == pytest.approx(7 * 0.25, rel=1e-5)


def test_assign_cells_one_object_per_cell_first_row_wins():
  boxes = jnp.asarray([[[0, 0, 10, 10], [2, 2, 12, 12], [40, 10, 60, 30], [-1, -1, -1, -1],
                        [30, 30, 34, 34]]], jnp.float32)
  valid = jnp.asarray([[True, True, True, False, True]])
  index, has = yolo.assign_cells(boxes, valid, (64, 64), 2)
  # centres (5, 5), (7, 7) -> cell 0 (first row wins); (50, 20) -> cell 1; (32, 32) -> 3
  np.testing.assert_array_equal(index[0], [0, 2, -1, 4])
  np.testing.assert_array_equal(has[0], [True, True, False, True])


def test_yolo_decode_known_outputs_to_detections():
  """Class-specific confidence = confidence x class probability, then NMS."""
  model = _yolo(score_threshold=0.05)
  out = np.zeros((1, 4, 12), np.float32)
  out[..., 4] = out[..., 9] = -20.0  # no confidence anywhere ...
  out[0, 3, 0:5] = [0.0, 0.0, _logit(0.5), _logit(0.25), _logit(0.9)]  # ... but cell 3, box 0
  out[0, 3, 10:12] = [math.log(3.0), 0.0]  # class probabilities (0.75, 0.25)
  decoded = model.apply({}, jnp.asarray(out), (64, 64), method="decode")
  det = model.apply({}, decoded[0], decoded[2], decoded[3], (64, 64), method="detect")
  valid = np.asarray(det["valid"][0])
  # centre (48, 48), w = 0.25 * 64 = 16, h = 0.0625 * 64 = 4
  np.testing.assert_allclose(np.asarray(det["boxes"][0])[valid],
                             [[40, 46, 56, 50], [40, 46, 56, 50]], atol=1e-4)
  np.testing.assert_allclose(np.asarray(det["scores"][0])[valid], [0.9 * 0.75, 0.9 * 0.25],
                             rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(det["classes"][0])[valid], [1, 2])


def test_yolo_lecture_variant_base_boxes_and_deltas():
  """The lecture's variant: B = 2 base boxes (24 and 48 px squares) centred in each
  cell; deltas 0 decode to the base boxes; the base box of highest IoU with the object
  is responsible and regresses to it (`ops.boxes.encode`); C + 1 class scores with the
  background (softmax CE over every cell)."""
  model = _yolo(parametrization="lecture", base_boxes=((0.375, 0.375), (0.75, 0.75)))
  out = np.zeros((1, 4, 2 * 5 + 3), np.float32)
  decoded = model.apply({}, jnp.asarray(out), (64, 64), method="decode")
  np.testing.assert_allclose(decoded[0][0, 0], [[4, 4, 28, 28], [-8, -8, 40, 40]], atol=1e-5)
  gt = [4, 4, 30, 28]  # IoU 24 * 24 / (26 * 24) with base box 0, lower with base box 1
  terms = model.apply({}, *decoded, _targets([gt], [1]), (64, 64), method="losses")
  target = np.asarray(ops.boxes.encode(jnp.asarray(gt, jnp.float32),
                                       jnp.asarray([4, 4, 28, 28], jnp.float32)))
  assert float(terms["yolo_coord"]) == pytest.approx(float(np.sum(target ** 2)), rel=1e-5)
  iou = 24 * 24 / (26 * 24)
  assert float(terms["yolo_object"]) == pytest.approx((0.5 - iou) ** 2, rel=1e-5)
  assert float(terms["yolo_noobject"]) == pytest.approx(7 * 0.25, rel=1e-5)
  assert float(terms["yolo_class"]) == pytest.approx(4 * math.log(3), rel=1e-5)


def test_yolo_grid_that_does_not_fit_is_a_config_error():
  c = load_config(os.path.join(DETECTION, "yolo_shapes.py"), "tiny")
  c.model.yolo.grid_size = 3  # the conv head's stride-16 map of 32 px is 2 x 2
  with pytest.raises(ConfigError, match=r"config\.model\.yolo\.grid_size=3 does not fit"):
    tasks.get_task(c)
  c = load_config(os.path.join(DETECTION, "yolo_shapes.py"), "tiny")
  with c.unlocked():
    c.model.yolo.base_boxes = ((0.5, 0.5),)
  with pytest.raises(ConfigError, match="base_boxes has 1"):
    tasks.get_task(c)


# -- SSD ------------------------------------------------------------------------------------
def test_hard_negative_mining_picks_the_top_3k_negatives_by_loss():
  loss = jnp.asarray([[0.1, 5.0, 0.3, 9.0, 0.2, 4.0, 0.7, 8.0],
                      [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]])
  positive = jnp.asarray([[0, 1, 0, 0, 0, 0, 0, 0], [0] * 8], bool)
  hard = losses.hard_negative_mask(loss, positive, ~positive, 3.0)
  # image 0: one positive (index 1, loss 5 not a candidate) -> negatives 9, 8, 4
  np.testing.assert_array_equal(np.nonzero(hard[0])[0], [3, 5, 7])
  assert not hard[1].any()  # no positive, no negative
  two = positive.at[1, 0].set(True).at[1, 1].set(True)
  hard = losses.hard_negative_mask(loss, two, ~two, 3.0)
  np.testing.assert_array_equal(np.nonzero(hard[1])[0], [2, 3, 4, 5, 6, 7])


def test_ssd_multibox_loss_by_hand():
  """One image, 5 default boxes, 1 positive (class 1): classification over it and the 3
  hardest negatives; smooth L1 (beta 1) of its deltas; both / N = 1."""
  logits = jnp.asarray([[[0.0, 2.0], [3.0, 0.0], [0.0, 1.0], [0.0, 0.5], [0.0, -1.0]]])
  classes = jnp.asarray([[1, 0, 0, 0, 0]])
  positive = classes > 0
  deltas = jnp.zeros((1, 5, 4)).at[0, 0].set(jnp.asarray([0.5, -2.0, 0.0, 0.0]))
  terms = losses.ssd_multibox_terms(logits, deltas, classes, jnp.zeros((1, 5, 4)), positive)
  nll = lambda z, k: math.log(sum(math.exp(v) for v in z)) - z[k]
  # negatives' losses: -log p(background) = nll(., 0): 0.049, 1.313, 0.974, 0.127
  want = nll([0, 2], 1) + nll([0, 1], 0) + nll([0, 0.5], 0) + nll([0, -1], 0)
  assert float(terms["ssd_classifier"]) == pytest.approx(want, rel=1e-5)
  assert float(terms["ssd_box"]) == pytest.approx(0.5 * 0.25 + (2.0 - 0.5), rel=1e-5)


def _ssd(**fields):
  fields = dict(dict(extra_layers=((4, 4, 2, 1),), s_min=0.25, s_max=0.5,
                     aspect_ratios=(1.0,), extra_box=False), **fields)
  return build_detector("ssd", 3, backbone="resnet18", backbone_args=dict(width=4),
                        backbone_levels=("stride_16",), ssd=fields)


def test_ssd_matching_at_iou_half_and_best_default_box():
  """32 x 32 image: a 2 x 2 map of 8 px default boxes (scale 0.25) and a 1 x 1 map of
  one 16 px box (scale 0.5, [8, 8, 24, 24]). A gt equal to a default box is positive on
  it; a small gt overlapping nothing at 0.5 still gets its best default box."""
  model = _ssd()
  anchors = model.apply({}, (32, 32), [(2, 2), (1, 1)], method="default_boxes")
  np.testing.assert_allclose(anchors, [[4, 4, 12, 12], [20, 4, 28, 12], [4, 20, 12, 28],
                                       [20, 20, 28, 28], [8, 8, 24, 24]], atol=1e-5)
  t = _targets([[8, 8, 24, 24], [20, 20, 26, 26]], [2, 1])
  classes, box_targets, positive = model.apply({}, anchors, t["boxes"], t["labels"],
                                               t["valid"], method="match")
  np.testing.assert_array_equal(classes[0], [0, 0, 0, 1, 2])
  np.testing.assert_array_equal(positive[0], [False, False, False, True, True])
  np.testing.assert_allclose(box_targets[0, 4], 0.0, atol=1e-6)
  np.testing.assert_allclose(
      box_targets[0, 3],
      ops.boxes.encode(jnp.asarray([20., 20, 26, 26]), anchors[3], (10., 10., 5., 5.)),
      rtol=1e-5)


def test_ssd_decode_known_outputs_and_compile_once():
  """Deltas (1, 0, 0, 0) shift a box by 1/10 of its width; scores are the softmax; the
  loss compiles once for 0, 1 and 2 objects (padded ground truth)."""
  model = _ssd(candidates_per_class=2, detections_per_image=3)
  anchors = model.apply({}, (32, 32), [(2, 2), (1, 1)], method="default_boxes")
  logits = jnp.asarray([[[10.0, -10.0, -10.0]] * 4 + [[0.0, math.log(3.0), 0.0]]])
  deltas = jnp.zeros((1, 5, 4)).at[0, 4, 0].set(1.0)
  det = model.apply({}, logits, deltas, anchors, (32, 32), method="detect")
  valid = np.asarray(det["valid"][0])
  np.testing.assert_allclose(np.asarray(det["boxes"][0])[valid],
                             [[9.6, 8, 25.6, 24], [9.6, 8, 25.6, 24]], atol=1e-4)
  np.testing.assert_allclose(np.asarray(det["scores"][0])[valid], [0.6, 0.2], rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(det["classes"][0])[valid], [1, 2])
  traces = []

  @jax.jit
  def loss(t):
    traces.append(1)
    return model.apply({}, logits, deltas, anchors, t, method="losses")["ssd_classifier"]

  for objects in ([], [[8, 8, 24, 24]], [[8, 8, 24, 24], [20, 20, 26, 26]]):
    t = _targets(objects, [1] * len(objects))
    t = {k: jnp.pad(v, [(0, 0), (0, 3 - v.shape[1])] + [(0, 0)] * (v.ndim - 2),
                    constant_values=-1 if k != "valid" else False) for k, v in t.items()}
    assert np.isfinite(float(loss(t)))
  assert len(traces) == 1


def test_ssd_default_box_setting_that_does_not_fit_is_a_config_error():
  c = load_config(os.path.join(DETECTION, "ssd_shapes.py"), "tiny")
  c.model.ssd.extra_layers = ((8, 8, 2, 1), (8, 8, 1, 0))  # a 3x3 valid conv on a 1x1 map
  with pytest.raises(ConfigError, match=r"config\.model\.ssd\.extra_layers\[1\]"):
    tasks.get_task(c)
  c = load_config(os.path.join(DETECTION, "ssd_shapes.py"), "tiny")
  c.model.ssd.aspect_ratios = ((1.0,), (1.0, 2.0))  # 3 maps
  with pytest.raises(ConfigError, match=r"config\.model\.ssd\.aspect_ratios has 2 maps"):
    tasks.get_task(c)


# -- the trainer ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["yolo", "ssd"])
def test_tiny_train_and_evaluate(name, data_dir, tmp_path):
  config = load_config(os.path.join(DETECTION, f"{name}_shapes.py"), "tiny")
  config.dataset.data_dir = data_dir
  config.num_steps = config.eval_every = config.checkpoint_every = 2
  summary = loop.train_and_evaluate(config, str(tmp_path / "run"),
                                    mesh=loop.make_mesh(jax.devices()[:2]))
  assert summary["final_step"] == config.num_steps
  for key in ("AP", "AP50", "proposals_per_image"):
    assert np.isfinite(summary["eval"][key])
  records = [m for m in log_lib.read_metrics(str(tmp_path / "run"))
             if m["split"] == "train"]
  for term in tasks.get_task(config).loss_terms:
    assert all(np.isfinite(m[term]) for m in records), term


# -- SSD300 on VOC / COCO -------------------------------------------------------------------
def test_ssd300_voc_config_init_from_and_a_mocked_batch(tmp_path):
  """The VOC config is the paper's SSD300 (torchvision's model); its init_from rules take a
  torchvision vgg16 state dict onto conv1_1 .. conv5_3; on mocked VOC data (tiny variant)
  the pipeline gives training batches the SSD loss takes (traced, not run: the shapes
  test trains SSD end to end)."""
  from test_detection_catalog import VOC_EXAMPLES  # pylint: disable=g-import-not-at-top
  from test_detection_data import _mock  # pylint: disable=g-import-not-at-top
  from jaxseg import config_schema  # pylint: disable=g-import-not-at-top
  from jaxseg.train import transfer  # pylint: disable=g-import-not-at-top
  c = load_config(os.path.join(DETECTION, "ssd300_voc.py"), None)
  config_schema.validate(c)
  assert (c.dataset.image_size, c.dataset.resize, c.batch_size) == (300, "stretch", 32)
  assert c.model.backbone == "ssd_vgg16" and c.model.ssd.l2_normalize
  assert c.optimizer.decay_steps == (40_000, 50_000) and c.num_steps == 60_000
  fields = {k: v for k, v in c.model.to_dict().items() if k not in ("name", "dtype")}
  detector = build_detector("ssd", 21, **fields)
  model = transfer.flatten(jax.eval_shape(
      lambda: detector.init(jax.random.key(0), jnp.zeros((1, 300, 300, 3)))))
  assert model["params/head_cls_0/kernel"].shape == (3, 3, 512, 4 * 21)
  assert model["params/head_cls_1/kernel"].shape == (3, 3, 1024, 6 * 21)
  state_dict, index, channels = {}, 0, 3
  for width, n in zip((64, 128, 256, 512, 512), (2, 2, 3, 3, 3)):
    for _ in range(n):
      state_dict[f"features.{index}.weight"] = np.zeros((width, channels, 3, 3), np.float32)
      state_dict[f"features.{index}.bias"] = np.full((width,), index, np.float32)
      channels, index = width, index + 2
    index += 1
  state_dict["classifier.0.weight"] = np.zeros((4096, 1), np.float32)
  mapped = transfer.map_names(state_dict, c.init_from)
  assert len(mapped) == 26
  for name, value in mapped.items():
    assert model[name].shape == value.shape, name
  np.testing.assert_array_equal(mapped["params/backbone/conv5_3/bias"], 28)
  coco = load_config(os.path.join(DETECTION, "ssd300_coco.py"), None)
  assert coco.model.to_dict() == c.model.to_dict() and coco.dataset.name == "coco/2017"

  c = load_config(os.path.join(DETECTION, "ssd300_voc.py"), "tiny")
  c.dataset.data_dir = str(tmp_path)
  with _mock("voc/2007", VOC_EXAMPLES, []):
    task = tasks.get_task(c)
    batch = next(task.train_data(0))
  assert task.num_classes == 21 and batch["valid"].sum() > 0
  variables = jax.eval_shape(task.init, jax.random.key(0), batch)
  loss, (terms, _) = jax.eval_shape(lambda v, b: task.loss_fn(v, b, jax.random.key(1), True),
                                    variables, batch)
  assert loss.shape == () and set(task.loss_terms) == {"ssd_classifier", "ssd_box"} <= set(terms)
