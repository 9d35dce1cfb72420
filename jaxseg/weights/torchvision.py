"""torchvision state dicts -> jaxseg variables: every mapping in one place.

One `convert_<arch>(state_dict)` per architecture, each an ordered table of rename rules
(the first rule whose pattern matches the whole torchvision key wins; a rule naming None
drops the key). Layouts go through `jaxseg.train.transfer` (OIHW conv kernels -> HWIO,
Linear [out, in] -> Dense [in, out]); the architecture-specific layouts are Faster
R-CNN's fc6, whose input torch flattens as (C, H, W) and jaxseg as (H, W, C), and the
transpose convs of Mask / keypoint R-CNN (ConvTranspose2d [I, O, kh, kw]). Every
converted array is checked against the shape of the jaxseg model it is meant for: a key
no rule knows, or a shape that does not fit, is a ConfigError naming that torchvision key
(e.g. a state dict of another architecture).

  convert_resnet50(sd)                  torchvision resnet50 (ImageNet) -> params/backbone,
                                        batch_stats/backbone of a ResNet-50 backbone; fc dropped
  convert_resnet50_fpn_backbone(sd)     the `backbone.body` + `backbone.fpn` part of a
                                        Faster R-CNN state dict -> backbone/..., fpn/...
  convert_fasterrcnn_resnet50_fpn(sd)   the whole fasterrcnn_resnet50_fpn (COCO or random)
  convert_maskrcnn_resnet50_fpn(sd)     the whole maskrcnn_resnet50_fpn -> the Mask R-CNN
                                        of `MASKRCNN_RESNET50_FPN` (config.model fields)
  convert_keypointrcnn_resnet50_fpn(sd) the whole keypointrcnn_resnet50_fpn -> the keypoint
                                        R-CNN of `KEYPOINTRCNN_RESNET50_FPN`
  convert_ssd300_vgg16(sd)              the whole ssd300_vgg16 (COCO or random) -> the SSD of
                                        `SSD300_VGG16` (config.model fields)

The jaxseg model that computes what torchvision computes is `FASTERRCNN_RESNET50_FPN`
(config.model fields): ResNet-50 with PyTorch's padding and frozen batch norm, FPN on
C2-C5 plus a max-pooled P6, torchvision's hyperparameters, and, where torchvision's
conventions differ from jaxseg's defaults, the model fields that select them
(`FASTERRCNN_RESNET50_FPN_CONVENTIONS`): rpn.anchor_convention="torchvision" with
rpn.anchor_offset=0 (its AnchorGenerator: ops.anchors.TORCHVISION, grids of
ceil(image / stride) cells), roi_heads.aligned=False (RoIAlign without the half-pixel
offset) and roi_heads.level_mapper="torchvision" (its FPN LevelMapper). Command line:

  python -m jaxseg.weights torchvision fasterrcnn_resnet50_fpn --pth FILE.pth --out FILE.npz

writes `params/...` and `batch_stats/...` arrays; `nest(transfer.read_weights(FILE.npz))`
are the variables of `build_detector("faster_rcnn", 91, **FASTERRCNN_RESNET50_FPN
fields)`, and a detection config loads them with `--config.init_from.weights=FILE.npz`
(docs/transfer.md). With torchvision's COCO checkpoint that is COCO-pretrained
detection in JAX, equal to torchvision's (docs/torchvision_weights.md: the exact code,
the input size and padding, the fields).

torch is an optional extra (`pip install -e '.[torch]'`); `import_torch` imports it.
"""
from __future__ import annotations

import functools
import re
import sys
from typing import Any, Callable, Sequence

import numpy as np

from jaxseg.errors import ConfigError, DataError

Rule = tuple[str, Any]  # (regex over a torchvision key, name template | callable | None)

# BatchNorm leaves: torchvision name -> (collection, flax leaf); None drops it.
_BN_LEAVES = {"weight": ("params", "scale"), "bias": ("params", "bias"),
              "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var"),
              "num_batches_tracked": None}


def _bn(path: str) -> Callable:
  """A rule target for a BatchNorm's leaves (group 'leaf' of the pattern)."""
  def target(m):
    leaf = _BN_LEAVES.get(m.group("leaf"))
    return None if leaf is None else f"{leaf[0]}/{path.format(**_ints(m))}/{leaf[1]}"
  return target


def _param(path: str) -> Callable:
  """A rule target for a conv / linear weight ('kernel') or bias (group 'leaf')."""
  def target(m):
    leaf = {"weight": "kernel", "bias": "bias"}[m.group("leaf")]
    return f"params/{path.format(**_ints(m))}/{leaf}"
  return target


def _ints(m) -> dict:
  """Named groups, with `block` / `conv` as 1-based jaxseg numbers (`conv` 0-based after
  the -1: torchvision's conv1..conv3 are ConvNormAct_0.._2)."""
  g = dict(m.groupdict())
  if "block" in g:
    g["block"] = int(g["block"]) + 1
  if "conv" in g:
    g["conv"] = int(g["conv"]) - 1
  return g


def _resnet_rules(prefix: str, target: str) -> list[Rule]:
  """torchvision ResNet (bottleneck or basic) under `prefix` -> jaxseg ResNet under
  `target` (jaxseg.models.backbones.resnet names)."""
  p, t = re.escape(prefix), target
  block = r"layer(?P<stage>[1-4])\.(?P<block>\d+)"
  return [
      (fr"{p}conv1\.(?P<leaf>weight)", _param(f"{t}/stem_conv/Conv_0")),
      (fr"{p}bn1\.(?P<leaf>\w+)", _bn(f"{t}/stem_conv/BatchNorm_0")),
      (fr"{p}{block}\.conv(?P<conv>[1-3])\.(?P<leaf>weight)",
       _param(t + "/stage{stage}_block{block}/ConvNormAct_{conv}/Conv_0")),
      (fr"{p}{block}\.bn(?P<conv>[1-3])\.(?P<leaf>\w+)",
       _bn(t + "/stage{stage}_block{block}/ConvNormAct_{conv}/BatchNorm_0")),
      (fr"{p}{block}\.downsample\.0\.(?P<leaf>weight)",
       _param(t + "/stage{stage}_block{block}/shortcut/Conv_0")),
      (fr"{p}{block}\.downsample\.1\.(?P<leaf>\w+)",
       _bn(t + "/stage{stage}_block{block}/shortcut/BatchNorm_0")),
  ]


# The rename tables, in order. Keys must match a pattern in full.
RESNET50_RULES: list[Rule] = _resnet_rules("", "backbone") + [
    (r"fc\.(weight|bias)", None),  # the ImageNet classifier: not part of a backbone
]

RESNET50_FPN_BACKBONE_RULES: list[Rule] = _resnet_rules("backbone.body.", "backbone") + [
    (r"backbone\.fpn\.(?P<kind>inner|layer)_blocks\.(?P<i>[0-3])(\.0)?\.(?P<leaf>weight|bias)",
     _param("fpn/{kind}_blocks_{i}")),
]

FASTERRCNN_RESNET50_FPN_RULES: list[Rule] = RESNET50_FPN_BACKBONE_RULES + [
    (r"rpn\.head\.conv(\.0)?(\.0)?\.(?P<leaf>weight|bias)", _param("rpn/head/conv")),
    (r"rpn\.head\.(?P<name>cls_logits|bbox_pred)\.(?P<leaf>weight|bias)",
     _param("rpn/head/{name}")),
    (r"roi_heads\.box_head\.(?P<name>fc6|fc7)\.(?P<leaf>weight|bias)",
     _param("roi_heads/box_head/{name}")),
    (r"roi_heads\.box_predictor\.(?P<name>cls_score|bbox_pred)\.(?P<leaf>weight|bias)",
     _param("roi_heads/box_predictor/{name}")),
]

# Mask R-CNN's and keypoint R-CNN's branches, on top of Faster R-CNN's rules. The mask
# head's convs are `mask_head.<i>.0` (Conv2dNormActivation, torchvision >= 0.13) or
# `mask_head.mask_fcn<i + 1>` (older files, e.g. the COCO v1 checkpoint, which torchvision
# renames on load); the keypoint head is a Sequential of (conv, ReLU) pairs, its convs at
# the even indices. conv5_mask and kps_score_lowres are ConvTranspose2d, weight [I, O, kh,
# kw] (`_transpose_conv_io`).
def _numbered(path: str, step: int = 1) -> Callable:
  """A rule target `path` whose {n} is the 1-based jaxseg number of the 0-based torch
  index `i` (index // step + 1), or of the already 1-based group `n`."""
  def target(m):
    g = m.groupdict()
    n = int(g["n"]) if g.get("n") else int(g["i"]) // step + 1
    leaf = {"weight": "kernel", "bias": "bias"}[m.group("leaf")]
    return f"params/{path.format(n=n)}/{leaf}"
  return target


MASKRCNN_RESNET50_FPN_RULES: list[Rule] = FASTERRCNN_RESNET50_FPN_RULES + [
    (r"roi_heads\.mask_head\.(mask_fcn(?P<n>[1-9]\d*)|(?P<i>\d+)\.0)\.(?P<leaf>weight|bias)",
     _numbered("roi_heads/mask_head/mask_fcn{n}")),
    (r"roi_heads\.mask_predictor\.(?P<name>conv5_mask|mask_fcn_logits)\.(?P<leaf>weight|bias)",
     _param("roi_heads/mask_head/{name}")),
]

KEYPOINTRCNN_RESNET50_FPN_RULES: list[Rule] = FASTERRCNN_RESNET50_FPN_RULES + [
    (r"roi_heads\.keypoint_head\.(?P<i>\d*[02468])\.(?P<leaf>weight|bias)",
     _numbered("roi_heads/keypoint_head/conv_fcn{n}", step=2)),
    (r"roi_heads\.keypoint_predictor\.kps_score_lowres\.(?P<leaf>weight|bias)",
     _param("roi_heads/keypoint_head/kps_score_lowres")),
]

# What torchvision computes differently from jaxseg's defaults, as fields of the detection
# model's parts: anchors of its AnchorGenerator (RPN.anchor_convention="torchvision":
# ops.anchors.TORCHVISION, i.e. aspect ratio = height / width, ratio-major, corners
# rounded to whole pixels, offset 0, and ceil(image / stride) grids for a stride that
# does not divide the image); RoIAlign without the half-pixel offset (RoIHeads.aligned)
# and its FPN LevelMapper (RoIHeads.level_mapper="torchvision": + 1e-6 outside the log).
FASTERRCNN_RESNET50_FPN_CONVENTIONS = dict(
    rpn=dict(anchor_offset=0.0, anchor_convention="torchvision"),
    roi_heads=dict(aligned=False, level_mapper="torchvision"),
)

# config.model of the jaxseg detector equal to torchvision's fasterrcnn_resnet50_fpn in
# eval mode (num_classes comes from the dataset; COCO's 91 include the background and
# unused ids): torchvision's defaults, each as the jaxseg field, the conventions above
# included. RPN: top 1000 per level before / 1000 in all after the NMS (2000 / 2000 when
# training), objectness probability >= 0 (rpn_score_thresh), boxes >= 1e-3 px, NMS 0.7
# within a level; RoI heads: class score > 0.05, boxes >= 1e-2 px, per-class NMS 0.5,
# 100 detections; box coders (1, 1, 1, 1) and (10, 10, 5, 5), log-size deltas clamped at
# log(1000 / 16) (ops.boxes.decode's default).
FASTERRCNN_RESNET50_FPN = dict(
    name="faster_rcnn", backbone="resnet50",
    backbone_args=dict(padding="symmetric", frozen_bn=True),
    backbone_levels=("stride_4", "stride_8", "stride_16", "stride_32"),
    fpn=True, fpn_channels=256,
    rpn=dict(anchor_sizes=((32.0,), (64.0,), (128.0,), (256.0,), (512.0,)),
             aspect_ratios=(0.5, 1.0, 2.0), pre_nms_top_n_train=2000,
             post_nms_top_n_train=2000, pre_nms_top_n_test=1000,
             post_nms_top_n_test=1000, nms_threshold=0.7, min_size=1e-3,
             score_threshold=0.0, fg_iou_threshold=0.7, bg_iou_threshold=0.3,
             batch_size_per_image=256, positive_fraction=0.5,
             box_weights=(1.0, 1.0, 1.0, 1.0),
             **FASTERRCNN_RESNET50_FPN_CONVENTIONS["rpn"]),
    roi_heads=dict(pooler="multilevel", pooler_resolution=7, sampling_ratio=2,
                   canonical_level=4.0, canonical_size=224.0, representation_size=1024,
                   batch_size_per_image=512, positive_fraction=0.25,
                   fg_iou_threshold=0.5, bg_iou_threshold=0.5,
                   box_weights=(10.0, 10.0, 5.0, 5.0), score_threshold=0.05,
                   nms_threshold=0.5, detections_per_image=100, min_size=1e-2,
                   **FASTERRCNN_RESNET50_FPN_CONVENTIONS["roi_heads"]),
)

# config.model of the jaxseg Mask R-CNN / keypoint R-CNN equal to torchvision's
# maskrcnn_resnet50_fpn / keypointrcnn_resnet50_fpn in eval mode: the Faster R-CNN above
# (torchvision's defaults are the same; keypoint R-CNN has 2 classes, person and
# background) plus the branch, pooled as torchvision's MultiScaleRoIAlign(14,
# sampling_ratio=2) with the box pooler's conventions (aligned=False, its LevelMapper):
# MaskRCNNHeads (4 x 256 3 x 3 convs) + MaskRCNNPredictor (2 x 2 stride-2 transpose conv,
# 1 x 1 conv) -> per-class 28 x 28 masks; KeypointRCNNHeads (8 x 512) +
# KeypointRCNNPredictor (4 x 4 stride-2 transpose conv, bilinear x 2) -> 56 x 56 heatmaps,
# decoded at the detected boxes' own size: torchvision does not cap it, so max_size is
# its longest image side (1333; heatmaps_to_keypoints equals torchvision's when max_size
# >= every box side; RoIHeads caps it at the image's longest side, which boxes never
# exceed, so smaller images cost less by themselves). The number of
# keypoints (17 for COCO) comes from the dataset (build_detector's num_keypoints).
MASKRCNN_RESNET50_FPN = dict(
    FASTERRCNN_RESNET50_FPN,
    mask_head=dict(conv_layers=(256, 256, 256, 256), resolution=14),
)
KEYPOINTRCNN_RESNET50_FPN = dict(
    FASTERRCNN_RESNET50_FPN,
    keypoint_head=dict(conv_layers=(512,) * 8, resolution=14, max_size=1333),
)


# torchvision ssd300_vgg16 (Liu et al. 2016): `backbone.features.<i>` (VGG-16 to conv4_3),
# `backbone.extra.0` (pool4, conv5_1..conv5_3, then fc6 / fc7 at .7.1 / .7.3),
# `backbone.extra.<1-4>` (conv8..conv11: 1x1 at .0, 3x3 at .2), the L2 norm's
# `backbone.scale_weight`, and the heads' per-map convs.
_SSD_VGG_FEATURES = {0: "conv1_1", 2: "conv1_2", 5: "conv2_1", 7: "conv2_2", 10: "conv3_1",
                     12: "conv3_2", 14: "conv3_3", 17: "conv4_1", 19: "conv4_2", 21: "conv4_3"}
_SSD_VGG_EXTRA0 = {"1": "conv5_1", "3": "conv5_2", "5": "conv5_3", "7.1": "fc6", "7.3": "fc7"}


def _ssd_named(table: dict, group: str, prefix: str = "backbone/") -> Callable:
  def target(m):
    key = m.group(group)
    key = int(key) if isinstance(next(iter(table)), int) else key
    if key not in table:
      return f"params/unknown_{group}_{m.group(group)}/{m.group('leaf')}"
    leaf = {"weight": "kernel", "bias": "bias"}[m.group("leaf")]
    return f"params/{prefix}{table[key]}/{leaf}"
  return target


SSD300_VGG16_RULES: list[Rule] = [
    (r"backbone\.scale_weight", "params/l2norm_scale"),
    (r"backbone\.features\.(?P<i>\d+)\.(?P<leaf>weight|bias)", _ssd_named(_SSD_VGG_FEATURES, "i")),
    (r"backbone\.extra\.0\.(?P<j>\d+(\.\d+)?)\.(?P<leaf>weight|bias)",
     _ssd_named(_SSD_VGG_EXTRA0, "j")),
    (r"backbone\.extra\.(?P<e>[1-9]\d*)\.(?P<c>[02])\.(?P<leaf>weight|bias)",
     lambda m: (f"params/extra_{int(m.group('e')) - 1}_conv{int(m.group('c')) // 2 + 1}/"
                f"{'kernel' if m.group('leaf') == 'weight' else 'bias'}")),
    (r"head\.classification_head\.module_list\.(?P<k>\d+)\.(?P<leaf>weight|bias)",
     _param("head_cls_{k}")),
    (r"head\.regression_head\.module_list\.(?P<k>\d+)\.(?P<leaf>weight|bias)",
     _param("head_box_{k}")),
]

# config.init_from.rename (layout "torch", target_prefix "backbone") of torchvision's
# ImageNet `vgg16` state dict onto SSD300's VGG-16 (conv1_1 .. conv5_3; the classifier,
# whose fc6 / fc7 the paper subsamples into its dilated convs, is dropped).
SSD_VGG16_IMAGENET_RENAME = (r"^classifier\..*=>",) + tuple(
    rf"^features\.{i}\.{torch}$=>params/{name}/{flax}"
    for i, name in {**_SSD_VGG_FEATURES, 24: "conv5_1", 26: "conv5_2", 28: "conv5_3"}.items()
    for torch, flax in (("weight", "kernel"), ("bias", "bias")))

# config.model of the jaxseg SSD equal to torchvision's ssd300_vgg16 in eval mode: its
# VGG-16 (`ssd.SSDVGG16`), conv4_3 L2-normalised (scale 20 at init), the extra layers
# conv8_2 .. conv11_2, its DefaultBoxGenerator (ratios [[2], [2, 3], [2, 3], [2, 3], [2],
# [2]], scales 0.07 .. 1.05, steps 8 .. 300, clipped), its normalisation (mean of
# ImageNet in [0, 1], std 1 / 255) and postprocessing (score > 0.01, 400 candidates per
# class, NMS 0.45, 200 detections; no minimum size). Images: 300 x 300 (torchvision
# stretches every image to that size: config.dataset.resize="stretch").
SSD300_VGG16 = dict(
    name="ssd", backbone="ssd_vgg16", backbone_args={}, backbone_levels=("conv4_3", "fc7"),
    pixel_mean=(0.48235, 0.45882, 0.40784), pixel_std=(1.0 / 255.0,) * 3,
    ssd=dict(extra_layers=((256, 512, 2, 1), (128, 256, 2, 1), (128, 256, 1, 0),
                           (128, 256, 1, 0)),
             l2_normalize=True, default_box_convention="torchvision",
             aspect_ratios=((2.0,), (2.0, 3.0), (2.0, 3.0), (2.0, 3.0), (2.0,), (2.0,)),
             scales=(0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05),
             steps=(8.0, 16.0, 32.0, 64.0, 100.0, 300.0), clip=True, iou_threshold=0.5,
             neg_pos_ratio=3.0, box_weights=(10.0, 10.0, 5.0, 5.0), smooth_l1_beta=1.0,
             score_threshold=0.01, nms_threshold=0.45, candidates_per_class=400,
             detections_per_image=200, min_size=0.0),
)


# -- torch ----------------------------------------------------------------------------------
def hide_triton() -> None:
  """triton (a CUDA-only dependency of the torch wheel, unused on CPU) crashes the process
  when it is loaded after TensorFlow, which jaxseg's data pipeline imports; unless it is
  already loaded, hide it (`import triton` raises ImportError, which torch handles)."""
  if "triton" not in sys.modules:
    sys.modules["triton"] = None


def import_torch():
  """The torch module (after `hide_triton`), or a ConfigError saying how to install it."""
  hide_triton()
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ConfigError(f"converting torchvision weights needs torch ({e}); install the "
                      f"extra: pip install -e '.[torch]'") from None
  return torch


def load_state_dict(path: str) -> dict:
  """The state dict of a torchvision `.pth` file (a plain state dict, or a dict holding
  one under 'model' / 'state_dict'), as numpy arrays."""
  torch = import_torch()
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f"cannot read torch weights {path}: {type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''}") from None
  for key in ("model", "state_dict"):
    if isinstance(obj, dict) and isinstance(obj.get(key), dict):
      obj = obj[key]
  if not isinstance(obj, dict) or not obj:
    raise DataError(f"{path} holds a {type(obj).__name__}, not a state dict (name -> tensor)")
  return {k: _numpy(v) for k, v in obj.items()}


def _numpy(value) -> np.ndarray:
  if hasattr(value, "detach"):
    value = value.detach().cpu()
    if str(value.dtype) == "torch.bfloat16":
      value = value.float()
    value = value.numpy()
  return np.asarray(value)


# -- conversion -----------------------------------------------------------------------------
def rename(state_dict, rules: Sequence[Rule], arch: str) -> tuple[dict, dict]:
  """({jaxseg name: array}, {jaxseg name: torchvision key}) through the ordered rules;
  a key no rule matches is a ConfigError naming it."""
  compiled = [(re.compile(pattern), target) for pattern, target in rules]
  arrays, origin = {}, {}
  for key, value in state_dict.items():
    for pattern, target in compiled:
      m = pattern.fullmatch(key)
      if m is None:
        continue
      name = target(m) if callable(target) else (m.expand(target) if target else None)
      break
    else:
      raise ConfigError(f"torchvision key {key!r} (shape {tuple(np.shape(value))}) fits no "
                        f"rule of {arch}; expected a {arch} state dict")
    if name is None:
      continue
    if name in arrays:
      raise ConfigError(f"torchvision keys {origin[name]!r} and {key!r} both map to {name}")
    arrays[name], origin[name] = _numpy(value), key
  return arrays, origin


def to_flax_layout(arrays: dict) -> dict:
  """OIHW conv kernels -> HWIO, Linear [out, in] -> [in, out] (`transfer.map_names` with
  layout 'torch'); names unchanged."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from jaxseg.train import transfer  # pylint: disable=g-import-not-at-top
  c = ml_collections.ConfigDict(dict(source_prefix="", target_prefix="", rename=(),
                                     layout="torch"))
  return transfer.map_names(arrays, c)


def check_shapes(arrays: dict, origin: dict, expected: dict, arch: str) -> None:
  """Every converted array has its model path and shape, and every model array gets one;
  errors name the first torchvision key (or model path) that does not fit."""
  for name, value in arrays.items():
    if name not in expected:
      raise ConfigError(f"torchvision key {origin[name]!r} maps to {name}, which the jaxseg "
                        f"{arch} model does not have")
    want = tuple(expected[name].shape)
    if tuple(value.shape) != want:
      raise ConfigError(f"torchvision key {origin[name]!r} has shape "
                        f"{tuple(value.shape)} after conversion but {name} in the jaxseg "
                        f"{arch} model is {want}; expected a {arch} state dict")
  missing = [n for n in expected if n not in arrays]
  if missing:
    raise ConfigError(f"the state dict has nothing for {missing[0]} (and {len(missing) - 1} "
                      f"more model arrays); expected a complete {arch} state dict")


def nest(arrays: dict) -> dict:
  """{'collection/a/b': x} -> {'collection': {'a': {'b': x}}}."""
  out: dict = {}
  for name, value in arrays.items():
    node = out
    *parents, leaf = name.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return out


def _convert(state_dict, rules, arch: str, expected: dict | None,
             fix: Callable[[dict], dict] | None = None) -> dict:
  arrays, origin = rename(state_dict, rules, arch)
  if fix is not None:
    arrays = fix(arrays)
  arrays = {k: v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v
            for k, v in to_flax_layout(arrays).items()}
  if expected is not None:
    check_shapes(arrays, origin, expected, arch)
  return nest(arrays)


def _abstract(model, image_hw=(64, 64)) -> dict:
  """{name: ShapeDtypeStruct} of a module's variables (nothing is computed)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jaxseg.train import transfer  # pylint: disable=g-import-not-at-top
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                             jnp.zeros((1, *image_hw, 3)), train=False))
  return transfer.flatten(shapes)


def _fc6_chw_to_hwc(arrays: dict, resolution: int = 7) -> dict:
  """fc6's input is the pooled [C, 7, 7] flattened in torch, [7, 7, C] in jaxseg: permute
  the weight's input axis (still [out, in] here; the layout step transposes it)."""
  name = "params/roi_heads/box_head/fc6/kernel"
  if name in arrays:
    w = arrays[name]
    out, flat = w.shape
    c = flat // (resolution * resolution)
    if c * resolution * resolution == flat:
      arrays = dict(arrays)
      arrays[name] = (w.reshape(out, c, resolution, resolution).transpose(0, 2, 3, 1)
                      .reshape(out, flat))
  return arrays


# torchvision's ConvTranspose2d weights [I, O, kh, kw]: `to_flax_layout` reads every 4-D
# array as a Conv2d's OIHW (-> HWIO), so these swap I and O first (-> [kh, kw, I, O], the
# kernel of `layers.Upsample("transpose")` / `ops.conv_transpose`).
_TRANSPOSE_CONVS = ("params/roi_heads/mask_head/conv5_mask/kernel",
                    "params/roi_heads/keypoint_head/kps_score_lowres/kernel")


def _transpose_conv_io(arrays: dict) -> dict:
  return {k: v.transpose(1, 0, 2, 3) if k in _TRANSPOSE_CONVS and v.ndim == 4 else v
          for k, v in arrays.items()}


def _rcnn_layouts(arrays: dict) -> dict:
  """The R-CNN family's layout fixes: fc6's input order, transpose-conv kernels."""
  return _transpose_conv_io(_fc6_chw_to_hwc(arrays))


@functools.lru_cache(maxsize=1)
def _resnet50_shapes() -> dict:
  """{name: shape} of a ResNet-50 backbone's variables under 'backbone' (as
  BackboneWithHeads and the detectors hold it)."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from jaxseg.models.backbones import get_backbone  # pylint: disable=g-import-not-at-top

  class Holder(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
      return get_backbone("resnet50", name="backbone")(x, train)

  return _abstract(Holder())


def convert_resnet50(state_dict) -> dict:
  """torchvision `resnet50` (e.g. ImageNet weights) -> {'params': {'backbone': ...},
  'batch_stats': {'backbone': ...}} of jaxseg's ResNet-50 (use it with
  padding='symmetric' to compute what torchvision computes). The fc layer is dropped."""
  return _convert(state_dict, RESNET50_RULES, "resnet50", _resnet50_shapes())


# The R-CNN architectures: torchvision name -> (rules, config.model fields).
RCNN_ARCHS = {
    "fasterrcnn_resnet50_fpn": (FASTERRCNN_RESNET50_FPN_RULES, FASTERRCNN_RESNET50_FPN),
    "maskrcnn_resnet50_fpn": (MASKRCNN_RESNET50_FPN_RULES, MASKRCNN_RESNET50_FPN),
    "keypointrcnn_resnet50_fpn": (KEYPOINTRCNN_RESNET50_FPN_RULES, KEYPOINTRCNN_RESNET50_FPN),
}


def detector_shapes(num_classes: int, arch: str = "fasterrcnn_resnet50_fpn",
                    num_keypoints: int = 0) -> dict:
  """{name: shape} of the variables of the jaxseg detector of `arch` (RCNN_ARCHS:
  `FASTERRCNN_RESNET50_FPN`, `MASKRCNN_RESNET50_FPN` or `KEYPOINTRCNN_RESNET50_FPN`)."""
  return dict(_detector_shapes(int(num_classes), arch, int(num_keypoints)))


@functools.lru_cache(maxsize=4)
def _detector_shapes(num_classes: int, arch: str, num_keypoints: int) -> tuple:
  from jaxseg.models.detection import build_detector  # pylint: disable=g-import-not-at-top
  fields = {k: v for k, v in RCNN_ARCHS[arch][1].items() if k != "name"}
  model = build_detector("faster_rcnn", num_classes, num_keypoints=num_keypoints, **fields)
  return tuple(_abstract(model).items())


def convert_resnet50_fpn_backbone(state_dict) -> dict:
  """The `backbone.body.*` (ResNet-50) and `backbone.fpn.*` arrays of a torchvision
  Faster / Mask R-CNN R50-FPN state dict -> jaxseg `backbone/...` and `fpn/...` variables
  (other keys are ignored)."""
  body = {k: v for k, v in state_dict.items() if k.startswith("backbone.")}
  if not body:
    first = next(iter(state_dict), None)
    raise ConfigError(f"torchvision key {first!r} is not under 'backbone.'; expected a "
                      f"Faster R-CNN / Mask R-CNN R50-FPN state dict")
  expected = {k: v for k, v in detector_shapes(91).items()
              if k.split("/")[1] in ("backbone", "fpn")}
  return _convert(body, RESNET50_FPN_BACKBONE_RULES, "fasterrcnn_resnet50_fpn backbone",
                  expected)


def convert_fasterrcnn_resnet50_fpn(state_dict) -> dict:
  """torchvision `fasterrcnn_resnet50_fpn` (v1) state dict -> {'params': ...,
  'batch_stats': ...} of jaxseg's `FASTERRCNN_RESNET50_FPN` detector; num_classes
  (background included, 91 for COCO) is read from the box predictor.

  Only arrays are renamed and re-laid out; nothing of torchvision's computation is
  patched here: the detector built from `FASTERRCNN_RESNET50_FPN` selects torchvision's
  conventions through its fields (rpn.anchor_convention / anchor_offset,
  roi_heads.aligned / level_mapper; `FASTERRCNN_RESNET50_FPN_CONVENTIONS`) and then
  gives torchvision's detections (boxes within 0.01 px, scores within 1e-4;
  tests/test_torchvision_weights.py):

    variables = convert_fasterrcnn_resnet50_fpn(load_state_dict("...coco-258fb6c6.pth"))
    fields = {k: v for k, v in FASTERRCNN_RESNET50_FPN.items() if k != "name"}
    model = build_detector("faster_rcnn", 91, **fields)
    out = model.apply(variables, images)  # [B, H, W, 3] RGB in [0, 1], H, W % 32 == 0
  """
  return _convert_rcnn(state_dict, "fasterrcnn_resnet50_fpn")


def _convert_rcnn(state_dict, arch: str) -> dict:
  """An R-CNN of RCNN_ARCHS; num_classes read from the box predictor, the number of
  keypoints from kps_score_lowres."""
  key = "roi_heads.box_predictor.cls_score.weight"
  num_classes = int(np.shape(state_dict[key])[0]) if key in state_dict else 91
  key = "roi_heads.keypoint_predictor.kps_score_lowres.weight"
  num_keypoints = (int(np.shape(state_dict[key])[1]) if key in state_dict
                   else 17 if arch == "keypointrcnn_resnet50_fpn" else 0)
  return _convert(state_dict, RCNN_ARCHS[arch][0], arch,
                  detector_shapes(num_classes, arch, num_keypoints), fix=_rcnn_layouts)


def convert_maskrcnn_resnet50_fpn(state_dict) -> dict:
  """torchvision `maskrcnn_resnet50_fpn` (v1; COCO or random; the old `mask_fcn<i>` key
  names too) -> {'params': ..., 'batch_stats': ...} of jaxseg's `MASKRCNN_RESNET50_FPN`
  detector (num_classes read from the box predictor). It gives torchvision's boxes, and
  masks that paste (`ops.roi.paste_masks(..., convention="torchvision")`) to torchvision's
  (tests/test_torchvision_weights.py):

    fields = {k: v for k, v in MASKRCNN_RESNET50_FPN.items() if k != "name"}
    model = build_detector("faster_rcnn", 91, **fields)
    out = model.apply(variables, images)  # + "masks" [B, D, 28, 28], the class's mask
  """
  return _convert_rcnn(state_dict, "maskrcnn_resnet50_fpn")


def convert_keypointrcnn_resnet50_fpn(state_dict) -> dict:
  """torchvision `keypointrcnn_resnet50_fpn` (COCO or random) -> {'params': ...,
  'batch_stats': ...} of jaxseg's `KEYPOINTRCNN_RESNET50_FPN` detector (num_classes from
  the box predictor, 2 for COCO persons; the number of keypoints, 17 for COCO, from
  kps_score_lowres). It gives torchvision's boxes and keypoints
  (tests/test_torchvision_weights.py):

    fields = {k: v for k, v in KEYPOINTRCNN_RESNET50_FPN.items() if k != "name"}
    model = build_detector("faster_rcnn", 2, num_keypoints=17, **fields)
    out = model.apply(variables, images)  # + "keypoints" [B, D, 17, 2], "keypoint_scores"
  """
  return _convert_rcnn(state_dict, "keypointrcnn_resnet50_fpn")


@functools.lru_cache(maxsize=4)
def _ssd300_shapes(num_classes: int) -> tuple:
  from jaxseg.models.detection import build_detector  # pylint: disable=g-import-not-at-top
  fields = {k: v for k, v in SSD300_VGG16.items() if k != "name"}
  return tuple(_abstract(build_detector("ssd", num_classes, **fields), (300, 300)).items())


def convert_ssd300_vgg16(state_dict) -> dict:
  """torchvision `ssd300_vgg16` state dict -> {'params': ...} of jaxseg's `SSD300_VGG16`
  detector; num_classes (background included, 91 for COCO) is read from the first
  classification conv (4 default boxes per cell there). The detector built from
  `SSD300_VGG16` then gives torchvision's detections on 300 x 300 images (boxes within
  0.01 px, scores within 1e-4; tests/test_torchvision_ssd.py):

    variables = convert_ssd300_vgg16(load_state_dict("ssd300_vgg16_coco-b556d3b4.pth"))
    fields = {k: v for k, v in SSD300_VGG16.items() if k != "name"}
    model = build_detector("ssd", 91, **fields)
    out = model.apply(variables, images)  # [B, 300, 300, 3] RGB in [0, 1]
  """
  key = "head.classification_head.module_list.0.weight"
  num_classes = int(np.shape(state_dict[key])[0]) // 4 if key in state_dict else 91
  return _convert(state_dict, SSD300_VGG16_RULES, "ssd300_vgg16",
                  dict(_ssd300_shapes(num_classes)))


CONVERTERS = {
    "ssd300_vgg16": convert_ssd300_vgg16,
    "resnet50": convert_resnet50,
    "resnet50_fpn_backbone": convert_resnet50_fpn_backbone,
    "fasterrcnn_resnet50_fpn": convert_fasterrcnn_resnet50_fpn,
    "maskrcnn_resnet50_fpn": convert_maskrcnn_resnet50_fpn,
    "keypointrcnn_resnet50_fpn": convert_keypointrcnn_resnet50_fpn,
}


def convert_file(arch: str, pth: str) -> dict:
  """Flat {'params/...': array, 'batch_stats/...': array} of a `.pth` file."""
  if arch not in CONVERTERS:
    raise ConfigError(f"no torchvision converter {arch!r}; expected one of {sorted(CONVERTERS)}")
  from jaxseg.train import transfer  # pylint: disable=g-import-not-at-top
  return transfer.flatten(CONVERTERS[arch](load_state_dict(pth)))
