"""Faster R-CNN parts (jaxseg.models.detection) and the detection losses: hand-computed
loss terms, all-invalid ground truth, output shapes, parameter names."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import losses, ops
from jaxseg.errors import ConfigError
from jaxseg.models.detection import FPN, RPN, RoIHeads, build_detector

TERMS = ("rpn_objectness", "rpn_box", "roi_classifier", "roi_box")


def _detector(fpn=True, pooler="multilevel", num_classes=4):
  levels = ("stride_8", "stride_16") if fpn else ("stride_16",)
  sizes = ((8.0,), (16.0,), (32.0,)) if fpn else ((8.0, 16.0, 32.0),)
  return build_detector(
      "faster_rcnn", num_classes, backbone="resnet18", backbone_args=dict(width=4),
      backbone_levels=levels, fpn=fpn, fpn_channels=8,
      rpn=dict(anchor_sizes=sizes, pre_nms_top_n_train=64, post_nms_top_n_train=32,
               pre_nms_top_n_test=32, post_nms_top_n_test=16, batch_size_per_image=32),
      roi_heads=dict(pooler=pooler, representation_size=16, batch_size_per_image=16,
                     detections_per_image=10))


def _targets(num_valid, size=32, m=4):
  boxes = np.full((len(num_valid), m, 4), -1.0, np.float32)
  labels = np.full((len(num_valid), m), -1, np.int32)
  rng = np.random.default_rng(0)
  for i, n in enumerate(num_valid):
    for j in range(n):
      x, y = rng.uniform(0, size / 2, 2)
      w, h = rng.uniform(4, size / 2, 2)
      boxes[i, j] = [x, y, x + w, y + h]
      labels[i, j] = 1 + j % 3
  valid = np.arange(m)[None] < np.asarray(num_valid)[:, None]
  return {"boxes": jnp.asarray(boxes), "labels": jnp.asarray(labels),
          "valid": jnp.asarray(valid)}


def _loss_and_grads(model, variables, images, targets):
  def f(params):
    terms, _ = model.apply({**variables, "params": params}, images, train=True,
                           targets=targets, rngs={"sampling": jax.random.key(1)},
                           mutable=["batch_stats"])
    return sum(terms[t] for t in TERMS), terms
  return jax.value_and_grad(f, has_aux=True)(variables["params"])


def host_init(init_fn, *args, seed=0):
  """Variables with the structure `init_fn(*args)` gives, drawn on the host with NumPy
  (kernels N(0, 1 / fan_in), biases and means 0, scales and variances 1): compiling
  flax's random initializers costs ~30 s on this CPU, more than the tests themselves."""
  shapes = jax.eval_shape(init_fn, *args)
  rng = np.random.default_rng(seed)

  def leaf(path, s):
    name = getattr(path[-1], "key", "")
    if name in ("scale", "var"):
      return jnp.ones(s.shape, s.dtype)
    if name in ("bias", "mean") or len(s.shape) < 2:
      return jnp.zeros(s.shape, s.dtype)
    fan_in = int(np.prod(s.shape[:-1]))
    return jnp.asarray(rng.normal(0, 1 / np.sqrt(fan_in), s.shape), s.dtype)

  return jax.tree_util.tree_map_with_path(leaf, shapes)


def _compiled(model):
  """Init (on the host), jitted forward and loss + gradients of `model`."""
  return (lambda key, x: host_init(lambda: model.init({"params": key}, x)),
          jax.jit(lambda v, x: model.apply(v, x)),
          jax.jit(functools.partial(_loss_and_grads, model)))


# -- losses ------------------------------------------------------------------------------
def test_smooth_l1_by_hand():
  d = jnp.array([0.0, 0.05, -0.5, 2.0])
  beta = 0.1
  expected = [0.0, 0.5 * 0.05**2 / beta, 0.5 - 0.05, 2.0 - 0.05]
  np.testing.assert_allclose(losses.smooth_l1(d, 0.0, beta), expected, rtol=1e-6)
  np.testing.assert_allclose(losses.smooth_l1(d, 0.0, 0.0), np.abs(d), rtol=1e-6)


def test_masked_box_loss_by_hand():
  pred = jnp.array([[1.0, 0, 0, 0], [0, 0, 0, 3.0], [9.0, 9, 9, 9]])
  target = jnp.zeros((3, 4))
  mask = jnp.array([True, True, False])
  norm = jnp.array([True, True, True])
  # beta 1: |1| -> 0.5, |3| -> 2.5; sum 3 over 3 sampled rows
  assert float(losses.masked_box_loss(pred, target, mask, norm, beta=1.0)) == pytest.approx(1.0)
  assert float(losses.masked_box_loss(pred, target, mask, beta=1.0)) == pytest.approx(1.5)
  none = jnp.zeros(3, bool)
  assert float(losses.masked_box_loss(pred, target, none, none)) == 0.0


def test_sigmoid_bce_by_hand():
  logits = jnp.array([2.0, -1.0, 100.0, 5.0])
  labels = jnp.array([1, 0, 0, 1])
  mask = jnp.array([True, True, True, False])
  expected = (math.log1p(math.exp(-2)) + math.log1p(math.exp(-1)) + 100.0) / 3
  assert float(losses.sigmoid_binary_cross_entropy(logits, labels, mask)) == pytest.approx(
      expected, rel=1e-6)


def test_sampled_softmax_ce_by_hand():
  logits = jnp.array([[0.0, 0.0], [math.log(3.0), 0.0], [5.0, -5.0]])
  labels = jnp.array([1, 0, 99])  # the third is masked: any label
  mask = jnp.array([True, True, False])
  expected = (math.log(2.0) + math.log(4.0 / 3.0)) / 2
  assert float(losses.sampled_softmax_cross_entropy(logits, labels, mask)) == pytest.approx(
      expected, rel=1e-6)
  assert float(losses.sampled_softmax_cross_entropy(logits, labels, jnp.zeros(3, bool))) == 0.0


def test_rpn_losses_by_hand():
  """Anchor 0 equals the gt (positive), anchor 1 is far (negative): both sampled."""
  rpn = RPN(batch_size_per_image=2, positive_fraction=0.5)
  anchors = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
  objectness = jnp.array([[2.0, -1.0]])
  deltas = jnp.array([[[0.1, 0.0, 0.0, 0.0], [7.0, 7.0, 7.0, 7.0]]])
  gt = jnp.array([[[0.0, 0.0, 10.0, 10.0], [-1.0, -1.0, -1.0, -1.0]]])
  valid = jnp.array([[True, False]])
  terms = rpn.losses(objectness, deltas, anchors, gt, valid, jax.random.key(0))
  bce = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))) / 2
  assert float(terms["rpn_objectness"]) == pytest.approx(bce, rel=1e-6)
  beta = 1 / 9  # 0.1 < beta: quadratic; the negative's deltas do not count
  assert float(terms["rpn_box"]) == pytest.approx(0.5 * 0.01 / beta / 2, rel=1e-5)


def test_roi_sampling_by_hand():
  """Proposals: one on the gt (fg), one half-overlapping (IoU 1/3: bg), one padded;
  the gt itself is appended as a proposal."""
  heads = RoIHeads(num_classes=4, batch_size_per_image=8, positive_fraction=0.5)
  proposals = jnp.array([[[0.0, 0, 10, 10], [5, 0, 15, 10], [-1, -1, -1, -1]]])
  valid = jnp.array([[True, True, False]])
  gt = jnp.array([[[0.0, 0, 10, 10], [-1, -1, -1, -1]]])
  labels = jnp.array([[3, -1]])
  gt_valid = jnp.array([[True, False]])
  rois, classes, targets, sampled, _ = heads.sample(proposals, valid, gt, labels, gt_valid,
                                                 jax.random.key(0))
  assert rois.shape == (1, 5, 4) and int(sampled.sum()) == 3
  got = {tuple(np.asarray(r).tolist()): int(c) for r, c, s in
         zip(rois[0], classes[0], sampled[0]) if s}
  assert got == {(0.0, 0.0, 10.0, 10.0): 3, (5.0, 0.0, 15.0, 10.0): 0}
  fg = np.asarray(sampled[0] & (classes[0] > 0))
  np.testing.assert_allclose(np.asarray(targets[0])[fg], 0.0, atol=1e-6)


# -- the detector ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def detector():
  model = _detector()
  init, forward, loss_and_grads = _compiled(model)
  images = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
  return init(jax.random.key(0), images), images, forward, loss_and_grads


def test_all_invalid_gt_gives_zero_box_losses_and_finite_gradients(detector):
  variables, images, _, loss_and_grads = detector
  (loss, terms), grads = loss_and_grads(variables, images, _targets([0, 0]))
  assert float(terms["rpn_box"]) == 0.0 and float(terms["roi_box"]) == 0.0
  assert float(terms["rpn_objectness"]) > 0 and float(terms["roi_classifier"]) > 0
  assert np.isfinite(float(loss))
  assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))


def test_losses_with_objects_are_finite_and_positive(detector):
  variables, images, _, loss_and_grads = detector
  (loss, terms), grads = loss_and_grads(variables, images, _targets([1, 4]))
  assert all(float(terms[t]) > 0 for t in TERMS), terms
  assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
  assert float(jnp.abs(grads["rpn"]["head"]["cls_logits"]["kernel"]).sum()) > 0
  assert float(jnp.abs(grads["roi_heads"]["box_predictor"]["bbox_pred"]["kernel"]).sum()) > 0


def test_predict_shapes_and_valid_mask(detector):
  variables, images, forward, _ = detector
  out = forward(variables, images)
  assert out["boxes"].shape == (2, 10, 4) and out["scores"].shape == (2, 10)
  assert out["classes"].shape == (2, 10) and out["valid"].dtype == jnp.bool_
  assert out["proposals"].shape == (2, 16, 4)
  valid = np.asarray(out["valid"])
  boxes, classes = np.asarray(out["boxes"]), np.asarray(out["classes"])
  assert np.all(boxes[~valid] == -1) and np.all(classes[~valid] == -1)
  assert np.all((classes[valid] >= 1) & (classes[valid] <= 3))
  assert np.all((boxes[valid] >= 0) & (boxes[valid] <= 32))
  scores = np.asarray(out["scores"])
  for i in range(2):  # valid rows first, by descending score
    n = valid[i].sum()
    assert valid[i, :n].all() and np.all(np.diff(scores[i, :n]) <= 1e-7)


def test_param_tree_mirrors_torchvision_names(detector):
  variables = detector[0]
  p = variables["params"]
  assert set(p) == {"backbone", "fpn", "rpn", "roi_heads"}
  assert set(p["fpn"]) == {f"{k}_{i}" for k in ("inner_blocks", "layer_blocks") for i in range(2)}
  assert set(p["rpn"]["head"]) == {"conv", "cls_logits", "bbox_pred"}
  assert p["rpn"]["head"]["cls_logits"]["kernel"].shape == (1, 1, 8, 3)
  assert p["rpn"]["head"]["bbox_pred"]["kernel"].shape == (1, 1, 8, 12)
  assert set(p["roi_heads"]) == {"box_head", "box_predictor"}
  assert set(p["roi_heads"]["box_head"]) == {"fc6", "fc7"}
  assert p["roi_heads"]["box_head"]["fc6"]["kernel"].shape == (7 * 7 * 8, 16)
  assert p["roi_heads"]["box_predictor"]["cls_score"]["kernel"].shape == (16, 4)
  assert p["roi_heads"]["box_predictor"]["bbox_pred"]["kernel"].shape == (16, 16)


@pytest.mark.parametrize("pooler", ["roi_pool", "roi_align"])
def test_single_level_poolers(pooler):
  """Without FPN: one stride-16 map with 3 sizes x 3 ratios = 9 anchors per cell. (The
  losses of roi_align's gather path are those of the multilevel tests above.)"""
  init, forward, loss_and_grads = _compiled(_detector(fpn=False, pooler=pooler))
  images = jax.random.uniform(jax.random.key(1), (1, 32, 32, 3))
  variables = init(jax.random.key(0), images)
  assert variables["params"]["rpn"]["head"]["cls_logits"]["kernel"].shape[-1] == 9
  assert "fpn" not in variables["params"]
  assert forward(variables, images)["boxes"].shape == (1, 10, 4)
  if pooler == "roi_pool":
    (_, terms), grads = loss_and_grads(variables, images, _targets([2]))
    assert all(np.isfinite(float(terms[t])) for t in TERMS)
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))


def test_fpn_shapes_and_extra_level():
  maps = [jnp.zeros((1, 8, 8, 5)), jnp.zeros((1, 4, 4, 7)), jnp.zeros((1, 2, 2, 9))]
  fpn = FPN(channels=6)
  out = fpn.apply(fpn.init(jax.random.key(0), maps), maps)
  assert [o.shape for o in out] == [(1, 8, 8, 6), (1, 4, 4, 6), (1, 2, 2, 6), (1, 1, 1, 6)]


def test_bad_model_options_are_config_errors():
  with pytest.raises(ConfigError, match="config.model.rpn has no field bogus"):
    build_detector("faster_rcnn", 4, backbone="resnet18", rpn=dict(bogus=1))
  with pytest.raises(ConfigError, match="pooler"):
    build_detector("faster_rcnn", 4, backbone="resnet18", roi_heads=dict(pooler="nope"))
  with pytest.raises(ConfigError, match="unknown detector"):
    build_detector("yolo9000", 4)
  model = _detector(fpn=True, pooler="roi_align")
  with pytest.raises(ValueError, match="multilevel"):
    jax.eval_shape(model.init, {"params": jax.random.key(0)}, jnp.zeros((1, 32, 32, 3)))


def test_decode_of_encode_round_trip_with_roi_weights():
  anchors = jnp.array([[0.0, 0, 10, 20], [5, 5, 9, 30]])
  boxes = jnp.array([[1.0, 2, 12, 18], [4, 4, 10, 28]])
  w = (10.0, 10.0, 5.0, 5.0)
  np.testing.assert_allclose(ops.boxes.decode(ops.boxes.encode(boxes, anchors, w), anchors, w),
                             boxes, atol=1e-4)
