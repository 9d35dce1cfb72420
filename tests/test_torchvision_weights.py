"""torchvision -> jaxseg weight converters (jaxseg.weights.torchvision) against torchvision
itself, on randomly initialised models (nothing downloads): ResNet-50 + FPN features, the
RPN head, the box head and predictor, and whole-model detections (Faster R-CNN; Mask
R-CNN's pasted masks; keypoint R-CNN's keypoints); state dicts of other architectures are
one-line errors naming the first key that does not fit."""
import numpy as np
import pytest

from jaxseg.errors import ConfigError
from jaxseg.weights import torchvision as tvw

tvw.hide_triton()  # before torchvision imports torch._dynamo (see hide_triton)
torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import jax  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def _randomize_norms(model, seed=0, body=None):
  """Random batch-norm scales and biases, and running statistics measured on random
  normalized images (as a trained network's would be: activations stay of order 1), so
  every converted array matters; a fresh model's norms are the identity."""
  g = torch.Generator().manual_seed(seed)
  body = body or model
  with torch.no_grad():
    for m in body.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        n = m.weight.shape[0]
        m.weight.copy_(0.5 + torch.rand(n, generator=g))
        m.bias.copy_(0.1 * torch.randn(n, generator=g))
        m.momentum = None  # running statistics = the mean over the calibration batch
        m.reset_running_stats()
    images = torch.rand(4, 3, 64, 96, generator=g)
    body.train()
    body((images - torch.from_numpy(MEAN)[:, None, None]) / torch.from_numpy(STD)[:, None, None])
  return model.eval()


@pytest.fixture(scope="module")
def tv_model():
  torch.manual_seed(0)
  torch.set_num_threads(2)
  model = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None,
                                                               weights_backbone=None)
  return _randomize_norms(model, body=model.backbone.body)


@pytest.fixture(scope="module")
def converted(tv_model):
  return tvw.convert_fasterrcnn_resnet50_fpn(tv_model.state_dict())


def _detector(arch="fasterrcnn_resnet50_fpn", num_classes=91, num_keypoints=0, **parts):
  """The jaxseg detector of `arch` (tvw.RCNN_ARCHS' config.model fields), with `parts`
  (e.g. rpn=dict(...)) overriding some fields of those parts."""
  from jaxseg.models.detection import build_detector  # pylint: disable=g-import-not-at-top
  fields = {k: v for k, v in tvw.RCNN_ARCHS[arch][1].items() if k != "name"}
  for part, values in parts.items():
    fields[part] = {**fields[part], **values}
  return build_detector("faster_rcnn", num_classes, num_keypoints=num_keypoints, **fields)


def _image(h, w, seed=0):
  return np.random.default_rng(seed).random((h, w, 3)).astype(np.float32)


def test_resnet50_fpn_features_equal_torchvision(tv_model, converted):
  image = _image(64, 96)
  with torch.no_grad():
    x = torch.from_numpy(((image - MEAN) / STD).transpose(2, 0, 1)[None].copy())
    expected = [v.numpy().transpose(0, 2, 3, 1) for v in tv_model.backbone(x).values()]
  model = _detector()
  maps, strides, _, _ = jax.jit(lambda v, im: model.apply(
      v, im, False, method=lambda m, i, t: m.features(i, t)))(converted, image[None])
  assert list(strides) == [4, 8, 16, 32, 64]
  assert [m.shape for m in maps] == [e.shape for e in expected]
  for got, want in zip(maps, expected):
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4 * np.abs(want).max(), rtol=0)


def test_rpn_head_and_box_head_equal_torchvision(tv_model, converted):
  from jaxseg.models.detection import RPNHead  # pylint: disable=g-import-not-at-top
  from jaxseg.models.detection.roi_heads import FastRCNNPredictor, TwoMLPHead  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  feats = [rng.normal(size=(1, 256, h, w)).astype(np.float32) for h, w in ((8, 12), (4, 6))]
  with torch.no_grad():
    logits, deltas = tv_model.rpn.head([torch.from_numpy(f) for f in feats])
  # torchvision's order: cell-major, then anchor; deltas channel a * 4 + coordinate
  want_logits = np.concatenate([l.numpy().transpose(0, 2, 3, 1).reshape(1, -1) for l in logits], 1)
  want_deltas = np.concatenate([d.numpy().transpose(0, 2, 3, 1).reshape(1, -1, 4)
                                for d in deltas], 1)
  got_logits, got_deltas = RPNHead(3).apply(
      {"params": converted["params"]["rpn"]["head"]}, [f.transpose(0, 2, 3, 1) for f in feats])
  np.testing.assert_allclose(got_logits, want_logits, atol=1e-5)
  np.testing.assert_allclose(got_deltas, want_deltas, atol=1e-5)

  pooled = rng.normal(size=(5, 256, 7, 7)).astype(np.float32)
  with torch.no_grad():
    scores, boxes = tv_model.roi_heads.box_predictor(
        tv_model.roi_heads.box_head(torch.from_numpy(pooled)))
  heads = converted["params"]["roi_heads"]
  hidden = TwoMLPHead(1024).apply({"params": heads["box_head"]}, pooled.transpose(0, 2, 3, 1))
  got_scores, got_boxes = FastRCNNPredictor(91).apply({"params": heads["box_predictor"]},
                                                       hidden)
  np.testing.assert_allclose(got_scores, scores.numpy(), atol=1e-5)
  np.testing.assert_allclose(got_boxes, boxes.numpy().reshape(5, 91, 4), atol=1e-5)


def test_model_fields_for_torchvision_conventions():
  """FASTERRCNN_RESNET50_FPN holds its conventions; defaults stay jaxseg's; bad values
  are one-line config errors."""
  from jaxseg.models.detection import RPN, RoIHeads  # pylint: disable=g-import-not-at-top
  for part, values in tvw.FASTERRCNN_RESNET50_FPN_CONVENTIONS.items():
    assert tvw.FASTERRCNN_RESNET50_FPN[part] == {**tvw.FASTERRCNN_RESNET50_FPN[part], **values}
  assert (RPN().anchor_convention, RPN().anchor_offset, RPN().score_threshold) == (
      "jaxseg", None, 0.0)
  assert (RoIHeads(2).aligned, RoIHeads(2).level_mapper) == (True, "detectron2")
  with pytest.raises(ConfigError, match=r"config\.model\.rpn\.anchor_convention='detectron'"):
    _detector(rpn=dict(anchor_convention="detectron"))
  with pytest.raises(ConfigError, match=r"config\.model\.roi_heads\.level_mapper='caffe2'"):
    _detector(roi_heads=dict(level_mapper="caffe2"))


@pytest.mark.parametrize("h, w", [(96, 160), (800, 1088), (128, 192)])
def test_rpn_anchors_equal_torchvision_anchor_generator(tv_model, h, w):
  """Every level, P6 included where stride 64 does not divide the image (its grid is
  ceil(image / 64), its cells image // grid apart)."""
  from torchvision.models.detection.image_list import ImageList  # pylint: disable=g-import-not-at-top
  from jaxseg.models.detection import rpn  # pylint: disable=g-import-not-at-top
  sizes = [(-(-h // s), -(-w // s)) for s in (4, 8, 16, 32, 64)]
  with torch.no_grad():
    want = tv_model.rpn.anchor_generator(
        ImageList(torch.zeros(1, 3, h, w), [(h, w)]),
        [torch.zeros(1, 1, *f) for f in sizes])[0].numpy()
  fields = tvw.FASTERRCNN_RESNET50_FPN["rpn"]
  strides = [h // f[0] for f in sizes]  # as FasterRCNN.features reads them
  got, counts = rpn.level_anchors((h, w), strides, fields["anchor_sizes"],
                                  fields["aspect_ratios"], fields["anchor_offset"],
                                  fields["anchor_convention"], sizes)
  assert counts == [3 * f[0] * f[1] for f in sizes]
  np.testing.assert_array_equal(got, want)


def _reference(arch, tv_model, h, w, **kwargs):
  """torchvision's `arch` at h x w (its transform set to leave that size as it is), with
  tv_model's arrays where they fit (backbone, FPN, RPN; the box branch where the classes
  agree) and its own random branches elsewhere, sharpened: (model, state dict).

  A sharper classifier than the random init (scores ~ 1 / 91), so that there are
  detections above torchvision's 0.05, with scores spread over (0.05, 1); smaller RPN
  deltas (proposals within about a third of an anchor of it): float32 rounding in the
  deltas, times anchors up to 512 px, would otherwise move the pooled RoIs by ~0.01 px,
  which the sharpened classifier turns into score changes near 1e-4."""
  torch.manual_seed(1)  # the branches' random init, whatever ran before
  reference = getattr(torchvision.models.detection, arch)(
      weights=None, weights_backbone=None, min_size=h, max_size=w, **kwargs).eval()
  state = dict(reference.state_dict())
  state.update({k: v for k, v in tv_model.state_dict().items() if v.shape == state[k].shape})
  state["roi_heads.box_predictor.cls_score.weight"] = (
      state["roi_heads.box_predictor.cls_score.weight"] * 4)
  state["rpn.head.bbox_pred.weight"] = state["rpn.head.bbox_pred.weight"] * 0.1
  reference.load_state_dict(state)
  return reference, state


def _detect_both(arch, reference, state, image, num_classes=91, num_keypoints=0, **parts):
  """(torchvision's detections, jaxseg's valid detections), numpy, of the converted
  `state` on `image` [H, W, 3]."""
  with torch.no_grad():
    out = reference([torch.from_numpy(image.transpose(2, 0, 1).copy())])[0]
  variables = tvw.CONVERTERS[arch](state)
  model = _detector(arch, num_classes, num_keypoints, **parts)
  got = jax.jit(lambda v, im: model.apply(v, im, False))(variables, image[None])
  valid = np.asarray(got["valid"][0])
  return ({k: v.numpy() for k, v in out.items()},
          {k: np.asarray(got[k][0])[valid] for k in ("boxes", "scores", "classes", "masks",
                                                     "keypoints", "keypoint_scores")
           if k in got})


def _match_detections(out, got):
  """For each torchvision detection, the index of the jaxseg detection of the same class
  with the same box (within 0.01 px) and score (within 1e-4), matched one to one
  (detections whose scores differ by < 1e-4 may swap ranks)."""
  assert len(got["boxes"]) == len(out["scores"])
  used = []
  for box, score, label in zip(out["boxes"], out["scores"], out["labels"]):
    dist = np.where(got["classes"] == label, np.abs(got["boxes"] - box).max(-1), np.inf)
    j = int(np.argmin(dist))
    assert dist[j] <= 0.01 and j not in used, (box, label, dist[j])
    assert abs(got["scores"][j] - score) <= 1e-4, (score, got["scores"][j], label, box)
    used.append(j)
  return np.array(used, np.int64)


# 96 x 160: the stride-64 P6 (2 x 3 cells) does not divide the image
@pytest.mark.parametrize("h, w", [(128, 192), (96, 160)])
def test_detections_equal_torchvision(tv_model, h, w):
  """Same classes, boxes within 0.01 px, scores within 1e-4 (torchvision's transform set
  to leave the size as it is), with the model fields of FASTERRCNN_RESNET50_FPN."""
  arch = "fasterrcnn_resnet50_fpn"
  out, got = _detect_both(arch, *_reference(arch, tv_model, h, w), _image(h, w, seed=3))
  assert len(_match_detections(out, got)) > 10


def _mask_iou(a, b):
  union = np.sum(a | b)
  return np.sum(a & b) / union if union else 1.0


def test_mask_rcnn_equals_torchvision(tv_model):
  """maskrcnn_resnet50_fpn converted: torchvision's boxes (as above), and each
  detection's mask pasted by ops.roi.paste_masks(convention="torchvision") covers the
  same pixels at >= 0.5 as torchvision's pasted mask (IoU >= 0.999). 10 detections keep
  the four 256-wide mask convs cheap on CPU."""
  from jaxseg.ops.roi import paste_masks  # pylint: disable=g-import-not-at-top
  arch, (h, w) = "maskrcnn_resnet50_fpn", (128, 192)
  reference, state = _reference(arch, tv_model, h, w, box_detections_per_img=10)
  # the random mask logits' weights centred over their inputs (the ReLU features' common
  # positive part would otherwise push most masks of a class all below 0.5, or above)
  key = "roi_heads.mask_predictor.mask_fcn_logits.weight"
  state[key] = state[key] - state[key].mean(1, keepdim=True)
  reference.load_state_dict(state)
  out, got = _detect_both(arch, reference, state, _image(h, w, seed=3),
                          roi_heads=dict(detections_per_image=10))
  rows = _match_detections(out, got)
  assert len(rows) == 10 and got["masks"].shape == (10, 28, 28)
  pasted = paste_masks(got["masks"][rows], got["boxes"][rows], h, w, "torchvision")
  want = out["masks"][:, 0]
  ious = [_mask_iou(p >= 0.5, m >= 0.5) for p, m in zip(pasted, want)]
  assert min(ious) >= 0.999, ious
  counts = [np.sum(m >= 0.5) for m in want]  # 136 .. 8094 pixels, 26 .. 69 % of the 28^2
  assert min(counts) > 50, counts
  np.testing.assert_allclose(pasted, want, atol=1e-3)


def test_keypoint_rcnn_equals_torchvision(tv_model):
  """keypointrcnn_resnet50_fpn converted (2 classes, 17 keypoints): torchvision's boxes
  (as above) and keypoints within 0.01 px, their scores within 1e-3 (relative), with the
  decoding's max_size at the image size (torchvision resizes each heatmap to its box's
  size, uncapped). 6 detections keep the eight 512-wide convs cheap on CPU."""
  arch, (h, w) = "keypointrcnn_resnet50_fpn", (128, 192)
  reference, state = _reference(arch, tv_model, h, w, box_detections_per_img=6)
  out, got = _detect_both(arch, reference, state, _image(h, w, seed=3), num_classes=2,
                          num_keypoints=17, roi_heads=dict(detections_per_image=6),
                          keypoint_head=dict(max_size=max(h, w)))
  rows = _match_detections(out, got)
  assert len(rows) == 6 and got["keypoints"].shape == (6, 17, 2)
  np.testing.assert_allclose(got["keypoints"][rows], out["keypoints"][..., :2], atol=0.01,
                             rtol=0)
  np.testing.assert_allclose(got["keypoint_scores"][rows], out["keypoints_scores"],
                             rtol=1e-3, atol=1e-3)


def test_other_architectures_name_the_first_key_that_does_not_fit(tv_model):
  state = tv_model.state_dict()
  # RetinaNet / FCOS carry an FPN P6 conv; Mask R-CNN a mask head
  bad = dict(state)
  bad["backbone.fpn.extra_blocks.p6.weight"] = torch.zeros(256, 2048, 3, 3)
  with pytest.raises(ConfigError, match=r"'backbone\.fpn\.extra_blocks\.p6\.weight'.*fits no rule"):
    tvw.convert_fasterrcnn_resnet50_fpn(bad)
  # a ResNet-101 body: layer3 has blocks 6..22 the ResNet-50 lacks
  bad = dict(state)
  bad["backbone.body.layer3.6.conv1.weight"] = torch.zeros(256, 1024, 1, 1)
  with pytest.raises(ConfigError, match=r"'backbone\.body\.layer3\.6\.conv1\.weight'.*does not have"):
    tvw.convert_fasterrcnn_resnet50_fpn(bad)
  # a ResNet-18 (basic blocks): the first conv of layer1 is 3x3, not 1x1
  with pytest.raises(ConfigError, match=r"'layer1\.0\.conv1\.weight' has shape \(3, 3, 64, 64\)"):
    tvw.convert_resnet50(torchvision.models.resnet18(weights=None).state_dict())
  missing = {k: v for k, v in state.items() if not k.startswith("rpn.")}
  with pytest.raises(ConfigError, match="nothing for params/rpn/head"):
    tvw.convert_fasterrcnn_resnet50_fpn(missing)
  # a Mask R-CNN state dict is not a Faster R-CNN one; a Faster R-CNN one lacks the masks
  bad = dict(state)
  bad["roi_heads.mask_head.0.0.weight"] = torch.zeros(256, 256, 3, 3)
  with pytest.raises(ConfigError, match=r"'roi_heads\.mask_head\.0\.0\.weight'.*fits no rule"):
    tvw.convert_fasterrcnn_resnet50_fpn(bad)
  with pytest.raises(ConfigError, match="nothing for params/roi_heads/mask_head"):
    tvw.convert_maskrcnn_resnet50_fpn(state)


def test_resnet50_classifier_body_and_backbone_part(tv_model):
  resnet = _randomize_norms(torchvision.models.resnet50(weights=None), seed=2)
  variables = tvw.convert_resnet50(resnet.state_dict())
  np.testing.assert_array_equal(variables["batch_stats"]["backbone"]["stem_conv"]["BatchNorm_0"]["var"],
                                resnet.bn1.running_var.numpy())
  image = _image(64, 64, seed=4)
  from jaxseg.models.backbones import get_backbone  # pylint: disable=g-import-not-at-top
  body = get_backbone("resnet50", padding="symmetric", frozen_bn=True)
  with torch.no_grad():
    x = torch.from_numpy(((image - MEAN) / STD).transpose(2, 0, 1)[None].copy())
    x = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(x))))
    x = resnet.layer4(resnet.layer3(resnet.layer2(resnet.layer1(x))))
  want = x.numpy().transpose(0, 2, 3, 1)
  # jaxseg backbones take normalized images: the detector normalizes, here we do
  got = body.apply({"params": variables["params"]["backbone"],
                    "batch_stats": variables["batch_stats"]["backbone"]},
                   ((image - MEAN) / STD)[None])["stride_32"]
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4 * np.abs(want).max())
  part = tvw.convert_resnet50_fpn_backbone(tv_model.state_dict())
  assert set(part["params"]) == {"backbone", "fpn"}


def test_command_line_writes_loadable_weights(tv_model, tmp_path):
  from jaxseg import weights  # pylint: disable=g-import-not-at-top
  from jaxseg.train import transfer  # pylint: disable=g-import-not-at-top
  pth = str(tmp_path / "frcnn.pth")
  torch.save(tv_model.state_dict(), pth)
  out = str(tmp_path / "frcnn.npz")
  weights.main(["torchvision", "fasterrcnn_resnet50_fpn", "--pth", pth, "--out", out])
  arrays = transfer.read_weights(out)
  np.testing.assert_array_equal(arrays["params/rpn/head/cls_logits/bias"],
                                tv_model.rpn.head.cls_logits.bias.detach().numpy())
  assert arrays["params/roi_heads/box_head/fc6/kernel"].shape == (12544, 1024)
  assert "batch_stats/backbone/stem_conv/BatchNorm_0/mean" in arrays
  (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
  with pytest.raises(SystemExit) as e:
    weights.main(["torchvision", "fasterrcnn_resnet50_fpn", "--pth", str(tmp_path / "bad.pth"),
                  "--out", out])
  assert e.value.code == 2
