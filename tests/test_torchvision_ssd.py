"""torchvision ssd300_vgg16 -> jaxseg (jaxseg.weights.torchvision.convert_ssd300_vgg16)
against torchvision itself on a randomly initialised model (nothing downloads): its
default boxes, and the same detections on the same 300 x 300 image (boxes within 0.01 px,
scores within 1e-4); a state dict of another architecture is a one-line error."""
import numpy as np
import pytest

from jaxseg.errors import ConfigError
from jaxseg.weights import torchvision as tvw

tvw.hide_triton()  # before torchvision imports torch._dynamo (see hide_triton)
torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import jax  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope="module")
def tv_model():
  torch.manual_seed(0)
  torch.set_num_threads(2)
  model = torchvision.models.detection.ssd300_vgg16(weights=None, weights_backbone=None)
  # A softer classifier than the random init: the random VGG's activations reach ~30,
  # so its logits saturate the softmax (many scores exactly 1.0: ties, in any order);
  # x 0.3 spreads the detections' scores over (0.01, 0.97).
  with torch.no_grad():
    for conv in model.head.classification_head.module_list:
      conv.weight.mul_(0.3)
  return model.eval()


def _fields():
  return {k: v for k, v in tvw.SSD300_VGG16.items() if k != "name"}


def test_default_boxes_equal_torchvision(tv_model):
  from torchvision.models.detection.image_list import ImageList  # pylint: disable=g-import-not-at-top
  from jaxseg import ops  # pylint: disable=g-import-not-at-top
  sizes = [38, 19, 10, 5, 3, 1]
  with torch.no_grad():
    want = tv_model.anchor_generator(ImageList(torch.zeros(1, 3, 300, 300), [(300, 300)]),
                                     [torch.zeros(1, 1, f, f) for f in sizes])[0].numpy()
  ssd = tvw.SSD300_VGG16["ssd"]
  got = ops.anchors.ssd_default_boxes(300, sizes, aspect_ratios=ssd["aspect_ratios"],
                                      scales=ssd["scales"], steps=ssd["steps"],
                                      clip=ssd["clip"], convention="torchvision")
  assert got.shape == want.shape == (8732, 4)
  np.testing.assert_allclose(got, want, atol=1e-4)


def test_detections_equal_torchvision(tv_model):
  from jaxseg.models.detection import build_detector  # pylint: disable=g-import-not-at-top
  image = np.random.default_rng(3).random((300, 300, 3)).astype(np.float32)
  with torch.no_grad():
    out = tv_model([torch.from_numpy(image.transpose(2, 0, 1).copy())])[0]
  variables = tvw.convert_ssd300_vgg16(tv_model.state_dict())
  model = build_detector("ssd", 91, **_fields())
  got = jax.jit(lambda v, im: model.apply(v, im, False))(variables, image[None])
  valid = np.asarray(got["valid"][0])
  boxes, scores = np.asarray(got["boxes"][0])[valid], np.asarray(got["scores"][0])[valid]
  classes = np.asarray(got["classes"][0])[valid]
  assert len(boxes) == len(out["scores"]) > 10
  assert out["scores"].max() > 0.1  # scores spread well above the 0.01 threshold
  used = set()  # matched by class and box (scores within 1e-4 may swap ranks)
  for box, score, label in zip(out["boxes"].numpy(), out["scores"].numpy(),
                               out["labels"].numpy()):
    dist = np.where(classes == label, np.abs(boxes - box).max(-1), np.inf)
    j = int(np.argmin(dist))
    assert dist[j] <= 0.01 and j not in used, (box, label, dist[j])
    assert abs(scores[j] - score) <= 1e-4, (score, scores[j], label, box)
    used.add(j)


def test_other_state_dicts_name_the_first_key_that_does_not_fit(tv_model):
  state = tv_model.state_dict()
  bad = dict(state)  # SSD512's extra conv12
  bad["backbone.extra.5.0.weight"] = torch.zeros(128, 256, 1, 1)
  with pytest.raises(ConfigError, match=r"'backbone\.extra\.5\.0\.weight'.*does not have"):
    tvw.convert_ssd300_vgg16(bad)
  bad = dict(state)  # a VGG-16 with batch norm shifts the feature indices
  bad["backbone.features.1.weight"] = torch.zeros(64)
  with pytest.raises(ConfigError, match=r"'backbone\.features\.1\.weight'"):
    tvw.convert_ssd300_vgg16(bad)
  missing = {k: v for k, v in state.items() if not k.startswith("head.regression")}
  with pytest.raises(ConfigError, match="nothing for params/head_box_0"):
    tvw.convert_ssd300_vgg16(missing)
