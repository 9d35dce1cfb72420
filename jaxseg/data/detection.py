"""Detection and instance-segmentation data: sources, geometry-consistent augmentation,
padding to static shapes.

Every source yields the same *example* (N objects, K keypoints; continuous pixel
coordinates: the image spans [0, W] x [0, H], a box covering pixel columns c0..c1 has
x1 = c0, x2 = c1 + 1):
  image uint8 [H, W, 3]; boxes float32 [N, 4] absolute [x1, y1, x2, y2]; labels int32
  [N] in 1..C (0 = background, never an object); is_crowd bool [N]; difficult bool [N];
  image_id int64 []; and where the source has them masks uint8 [N, H, W] (0 / 1) and
  keypoints float32 [N, K, 3] ((x, y, v), v = 0 -> (0, 0, 0)), and captions tf.string [N]
  (one sentence per object; dense captioning). Precomputed region
  proposals (`jaxseg.data.region_proposals`) travel as `proposals` float32 [P, 4] with
  `proposal_valid` bool [P]: moved with the image like boxes, clipped but never dropped
  (a proposal left empty becomes invalid), padded rows -1.
`DetectionSource.class_names[label]` names a label; index 0 is "background", so
`num_classes` counts the background too (C + 1, torchvision's convention).

Sources (config.dataset.name: TFDS name; default train / eval splits):
- `shapes` (built offline from config.dataset.image_size and .generator): boxes from
  `objects/bbox`, labels 1 circle, 2 square, 3 triangle, masks from `instance_mask`
  (object k = pixels equal to k + 1), image_id = position in the split. Crowd regions:
  off by default; with config.dataset.crowd_max_area = A, objects with fewer than A
  visible pixels are marked is_crowd (derived here, so the stored dataset is unchanged).
- `voc/2007`, `voc/2012` (TFDS catalog; 20 classes `VOC_CLASS_NAMES`): TFDS stores the
  xml's 1-based inclusive xmin..xmax divided by the size, so x1 = xmin * W - 1,
  y1 = ymin * H - 1, x2 = xmax * W, y2 = ymax * H (as for oxford_iiit_pet);
  difficult = `is_difficult` (ignored by VOC evaluation); is_truncated and pose unused;
  no crowd; image_id = the digits of `image/filename` (2008_000008.jpg -> 2008000008).
  Splits: 2007 train+validation / test (the usual trainval / test protocol), 2012
  train / validation (TFDS's 2012 test split has no boxes).
- `stick_figures` (built offline from config.dataset.image_size and
  .generator.{num_train, num_validation}, the pose task's builder config): one person
  per image (label 1, class names background / person, never crowd or difficult), box
  = the builder's `box` (the figure's tight pixel extent), mask = `mask`, keypoints =
  `joints` (the 14 LSP joints of `jaxseg.data.skeleton`, v kept: 1 occluded, 2 visible),
  skeleton = its SKELETON_EDGES, OKS sigmas `skeleton.OKS_SIGMAS`, image_id = position
  in the split; train / validation. Its flip_permutation
  is LSP's left/right swap, but a flipped figure is NOT from the data's distribution
  (its darker limbs become the left ones; see `jaxseg.data.stick_figures`).
- `coco/2017` (TFDS catalog; 80 classes `COCO_CLASS_NAMES`, original ids
  `COCO_CATEGORY_IDS`): boxes from the normalized `objects/bbox`, is_crowd, image_id =
  `image/id`; train / validation. TFDS's coco/2017 has NO masks (nor keypoints): for
  instance segmentation build COCO's JSON with `jaxseg.data.coco_format` instead.
- `coco_format/<name>`: any dataset built by `jaxseg.data.coco_format` in data_dir:
  boxes (stored absolute), labels, is_crowd, image_id, masks and keypoints if it has
  them (`flip_permutation` from its keypoint names; OKS sigmas from its metadata, else
  COCO's 17 when it has 17 keypoints, else none); splits train / validation.
- `shapes_captions` (built offline from config.dataset.image_size and .generator
  {num_train, num_validation, min_objects, max_objects}, `jaxseg.data.shapes_captions`):
  as `shapes` (boxes, labels 1 circle, 2 square, 3 triangle, masks, crowd rule), plus
  captions = `objects/caption` (one sentence per object); train / validation.
- `visual_genome` (built by `python -m jaxseg.data.visual_genome` in data_dir): every
  region is an object of label 1 (class names background / region), box = the stored
  absolute `objects/bbox`, captions = `objects/caption`, image_id = `image/id`; never
  crowd or difficult; train / validation (and test).
Catalog, coco_format and visual_genome datasets are read only from a prepared
config.dataset.data_dir (required): nothing is downloaded; a missing one is a DataError
saying how to prepare it.

Rules for bad input (`load_split`), the same for every source:
- a box with x2 < x1, y2 < y1 or a non-finite coordinate (degenerate), a label
  outside 1..C, masks that are not [N, H, W] for the N objects of the H x W image, an
  empty mask (no pixel set) of a non-crowd object whose clipped box is not empty, a
  keypoint visibility outside {0, 1, 2}, or captions not one per object stops the
  pipeline with a one-line error naming the dataset and the bad value (and for masks
  and keypoints the image and object, for captions the image) (a DataError once
  `jaxseg.data.pipeline` reads it);
- boxes partly outside the image are clipped to it; boxes left empty by clipping (zero
  width or height, e.g. wholly outside the image) are dropped with their masks and
  keypoints;
- keypoints with v = 0, a non-finite coordinate or outside the image become (0, 0, 0);
- images without objects are fine (after padding, `valid` is all False).

Preprocessing (`make_train_preprocess` / `make_eval_preprocess`, tf graph, every draw a
stateless function of the example's seed) moves image, boxes, masks and keypoints
together; then `pad_objects` pads to static shapes (see there for the max_boxes rule).
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from jaxseg.data import (coco_format, image_preprocess, image_sources, shapes,
                         shapes_captions, skeleton, sources, visual_genome)
from jaxseg.errors import ConfigError, DataError

OPTIONAL_FEATURES = ("masks", "keypoints", "captions")
# Per-object keys, in the order they travel through the preprocessing.
OBJECT_KEYS = ("boxes", "labels", "is_crowd", "difficult", "masks", "keypoints", "captions")
RESIZE_MODES = ("letterbox", "stretch")

VOC_CLASS_NAMES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
# COCO's 80 categories in TFDS label order (instances JSON order = increasing id).
COCO_CLASS_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush",
)
COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51,
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77,
    78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)


@dataclasses.dataclass(frozen=True)
class DetectionSource:
  """A TFDS dataset seen as images with boxes (and maybe masks and keypoints)."""
  name: str  # jaxseg's name (config.dataset.name)
  tfds_name: str  # "name" or "name/builder_config"
  class_names: tuple[str, ...]  # index = label; 0 = "background"
  train_split: str
  eval_split: str
  # (raw TFDS example, config.dataset, features wanted) -> the example (image_id
  # optional: the position in the split where the dataset has no id), not yet checked.
  to_example: Callable[[dict, Any, tuple[str, ...]], dict]
  provides: tuple[str, ...] = ()  # which of OPTIONAL_FEATURES it has
  category_ids: tuple[int, ...] | None = None  # the dataset's own id of label k at k - 1
  keypoint_names: tuple[str, ...] = ()
  skeleton: tuple[tuple[int, int], ...] = ()  # keypoint edges (0-based)
  flip_permutation: tuple[int, ...] | None = None  # keypoint k after a flip <- perm[k]
  generated_offline: bool = False  # jaxseg builds it itself; no download ever
  builder_config: Callable[[Any], Any] | None = None  # config.dataset -> TFDS config
  prepare: str = ""  # how to prepare the dataset, for the "not prepared" error
  mask_feature: str | None = None  # raw feature to skip decoding when masks are unused
  read_builder: Callable[[Any], Any] | None = None  # data_dir -> TFDS builder (coco_format)
  keypoint_sigmas: tuple[float, ...] = ()  # OKS sigma per keypoint (keypoint AP); () unknown

  @property
  def num_classes(self) -> int:
    """Classes including the background (labels are 1..num_classes - 1)."""
    return len(self.class_names)


# -- adapters (tf) -----------------------------------------------------------------------
def _hw(image):
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  return shape[0], shape[1]


def normalized_to_pixels(bbox, image):
  """TFDS BBoxFeature [N, 4] (ymin, xmin, ymax, xmax) in [0, 1] -> pixel [x1, y1, x2, y2]."""
  height, width = _hw(image)
  bbox = tf.reshape(tf.cast(bbox, tf.float32), [-1, 4])
  return tf.gather(bbox, [1, 0, 3, 2], axis=1) * tf.stack([width, height, width, height])


def _false(labels):
  return tf.zeros(tf.shape(labels), tf.bool)


def _shapes_example(raw, dataset_config, features):
  image, objects = raw["image"], raw["objects"]
  labels = tf.cast(objects["label"], tf.int32) + 1
  crowd_max_area = dataset_config.get("crowd_max_area") or 0
  out = {"image": image, "boxes": normalized_to_pixels(objects["bbox"], image),
         "labels": labels, "difficult": _false(labels),
         "is_crowd": tf.cast(objects["area"], tf.int64) < int(crowd_max_area)}
  if "masks" in features:
    ids = tf.range(1, tf.size(labels) + 1, dtype=tf.int32)
    instance = tf.cast(raw["instance_mask"][..., 0], tf.int32)
    out["masks"] = tf.cast(instance[None] == ids[:, None, None], tf.uint8)
  return out


def _shapes_captions_example(raw, dataset_config, features):
  out = _shapes_example(raw, dataset_config, features)
  if "captions" in features:
    out["captions"] = raw["objects"]["caption"]
  return out


def _visual_genome_example(raw, dataset_config, features):
  del dataset_config
  objects = raw["objects"]
  boxes = tf.reshape(objects["bbox"], [-1, 4])
  labels = tf.ones(tf.shape(boxes)[:1], tf.int32)
  out = {"image": raw["image"], "boxes": boxes, "labels": labels,
         "is_crowd": _false(labels), "difficult": _false(labels),
         "image_id": tf.cast(raw["image/id"], tf.int64)}
  if "captions" in features:
    out["captions"] = objects["caption"]
  return out


def _shapes_captions_builder_config(dataset_config):
  """The shapes_captions config of config.dataset.image_size and .generator."""
  g = dataset_config.generator
  try:
    return shapes_captions.shapes_captions_config(
        image_size=dataset_config.image_size, num_train=g.num_train,
        num_validation=g.num_validation, min_objects=g.min_objects,
        max_objects=g.max_objects)
  except (TypeError, ValueError) as e:
    raise ConfigError(f"shapes_captions parameters (config.dataset.image_size, "
                      f"config.dataset.generator): {e}") from None


def _voc_example(raw, dataset_config, features):
  del dataset_config, features
  image, objects = raw["image"], raw["objects"]
  labels = tf.cast(objects["label"], tf.int32) + 1
  boxes = normalized_to_pixels(objects["bbox"], image) - tf.constant([1.0, 1.0, 0.0, 0.0])
  digits = tf.strings.regex_replace(raw["image/filename"], r"[^0-9]", "")
  image_id = tf.cond(tf.strings.length(digits) > 0,
                     lambda: tf.strings.to_number(digits, tf.int64),
                     lambda: tf.constant(-1, tf.int64))
  return {"image": image, "boxes": boxes, "labels": labels, "is_crowd": _false(labels),
          "difficult": tf.cast(objects["is_difficult"], tf.bool), "image_id": image_id}


def _coco_example(raw, dataset_config, features):
  del dataset_config, features
  image, objects = raw["image"], raw["objects"]
  labels = tf.cast(objects["label"], tf.int32) + 1
  return {"image": image, "boxes": normalized_to_pixels(objects["bbox"], image),
          "labels": labels, "is_crowd": tf.cast(objects["is_crowd"], tf.bool),
          "difficult": _false(labels), "image_id": tf.cast(raw["image/id"], tf.int64)}


def _coco_format_example(raw, dataset_config, features):
  del dataset_config
  objects = raw["objects"]
  labels = tf.cast(objects["label"], tf.int32) + 1
  out = {"image": raw["image"], "boxes": tf.reshape(objects["bbox"], [-1, 4]),
         "labels": labels, "is_crowd": tf.cast(objects["is_crowd"], tf.bool),
         "difficult": _false(labels), "image_id": tf.cast(raw["image/id"], tf.int64)}
  if "masks" in features:
    out["masks"] = raw["masks"]
  if "keypoints" in features:
    out["keypoints"] = objects["keypoints"]
  return out


def _stick_figures_example(raw, dataset_config, features):
  del dataset_config
  image = raw["image"]
  labels = tf.ones([1], tf.int32)  # one person per image
  out = {"image": image, "boxes": tf.reshape(raw["box"], [1, 4]), "labels": labels,
         "is_crowd": _false(labels), "difficult": _false(labels)}
  if "masks" in features:
    out["masks"] = tf.cast(raw["mask"], tf.uint8)[None, :, :, 0]
  if "keypoints" in features:
    out["keypoints"] = tf.reshape(raw["joints"], [1, skeleton.NUM_JOINTS, 3])
  return out


def _shapes_builder_config(dataset_config):
  return sources.shapes_builder_config(dataset_config)


def _stick_figures_builder_config(dataset_config):
  """The pose task's stick_figures config (config.dataset.image_size and
  .generator.{num_train, num_validation}), taken from `image_sources`."""
  return image_sources.IMAGE_SOURCES["stick_figures"].builder_config(dataset_config)


def _voc(year: int, train_split: str, eval_split: str) -> DetectionSource:
  return DetectionSource(
      f"voc/{year}", f"voc/{year}", ("background",) + VOC_CLASS_NAMES, train_split,
      eval_split, _voc_example, prepare=f"tfds build voc/{year} --data_dir=DATA_DIR")


DETECTION_SOURCES = {
    "shapes": DetectionSource(
        "shapes", "shapes", shapes.CLASS_NAMES, "train", "validation", _shapes_example,
        provides=("masks",), generated_offline=True, builder_config=_shapes_builder_config,
        mask_feature="instance_mask"),
    "stick_figures": DetectionSource(
        "stick_figures", "stick_figures", ("background", "person"), "train", "validation",
        _stick_figures_example, provides=("masks", "keypoints"),
        keypoint_names=skeleton.JOINT_NAMES,
        skeleton=tuple((a, b) for _, a, b in skeleton.SKELETON_EDGES),
        # (a flipped figure is NOT from the data's distribution: its darker limbs are the
        # left ones; see jaxseg.data.stick_figures)
        flip_permutation=skeleton.FLIP_PERMUTATION, keypoint_sigmas=skeleton.OKS_SIGMAS,
        generated_offline=True, builder_config=_stick_figures_builder_config,
        mask_feature="mask"),
    "shapes_captions": DetectionSource(
        "shapes_captions", "shapes_captions", shapes_captions.CLASS_NAMES, "train",
        "validation", _shapes_captions_example, provides=("masks", "captions"),
        generated_offline=True, builder_config=_shapes_captions_builder_config,
        mask_feature="instance_mask"),
    "visual_genome": DetectionSource(
        "visual_genome", "visual_genome", ("background", "region"), "train", "validation",
        _visual_genome_example, provides=("captions",),
        prepare=visual_genome.prepare_command(), read_builder=visual_genome.read_builder),
    "voc/2007": _voc(2007, "train+validation", "test"),
    "voc/2012": _voc(2012, "train", "validation"),
    "coco/2017": DetectionSource(
        "coco/2017", "coco/2017", ("background",) + COCO_CLASS_NAMES, "train", "validation",
        _coco_example, category_ids=COCO_CATEGORY_IDS,
        prepare="tfds build coco/2017 --data_dir=DATA_DIR (or build instances JSON with "
                "python -m jaxseg.data.coco_format)"),
}
COCO_FORMAT_PREFIX = coco_format.BUILDER_NAME + "/"


def _coco_format_source(name: str, dataset_config) -> DetectionSource:
  dataset = name[len(COCO_FORMAT_PREFIX):]
  data_dir = None if dataset_config is None else dataset_config.get("data_dir")
  builder = coco_format.read_builder(dataset, data_dir)
  info = builder.info
  meta = info.metadata or {}
  objects = info.features["objects"]
  provides = tuple(f for f, present in (("masks", "masks" in info.features),
                                        ("keypoints", "keypoints" in objects)) if present)
  keypoint_names = tuple(meta.get("keypoint_names", ()))
  sigmas = tuple(float(v) for v in meta.get("keypoint_sigmas", ()))
  if len(sigmas) != len(keypoint_names):
    sigmas = ()
  if not sigmas and len(keypoint_names) == 17:
    from jaxseg.metrics.coco import COCO_KEYPOINT_SIGMAS  # pylint: disable=g-import-not-at-top
    sigmas = tuple(float(v) for v in COCO_KEYPOINT_SIGMAS)
  return DetectionSource(
      name, name, ("background",) + tuple(objects["label"].names), "train", "validation",
      _coco_format_example, provides=provides,
      category_ids=tuple(int(i) for i in meta.get("category_ids", ())),
      keypoint_names=keypoint_names,
      skeleton=tuple(tuple(int(a) for a in e) for e in meta.get("skeleton", ())),
      flip_permutation=(tuple(int(i) for i in meta["flip_permutation"])
                        if keypoint_names and "flip_permutation" in meta else None),
      keypoint_sigmas=sigmas,
      prepare=coco_format.prepare_command(dataset), mask_feature="masks",
      read_builder=lambda data_dir: coco_format.read_builder(dataset, data_dir))


def get_detection_source(name: str, dataset_config=None) -> DetectionSource:
  """The source `name` (see the module docstring), its config checked (ConfigError);
  `coco_format/<name>` reads its class names from config.dataset.data_dir."""
  if name.startswith(COCO_FORMAT_PREFIX) and len(name) > len(COCO_FORMAT_PREFIX):
    return _coco_format_source(name, dataset_config)
  if name not in DETECTION_SOURCES:
    raise ConfigError(f"unknown detection dataset {name!r} in config.dataset.name; expected "
                      f"one of {sorted(DETECTION_SOURCES)} or coco_format/<name>")
  source = DETECTION_SOURCES[name]
  if dataset_config is not None and source.builder_config is not None:
    source.builder_config(dataset_config)
  return source


# -- the bad-input rules (tf) --------------------------------------------------------------
def _select(example, keep):
  """The example with only the objects where `keep` [N] is True."""
  out = dict(example)
  for key in OBJECT_KEYS:
    if key in example:
      out[key] = tf.boolean_mask(example[key], keep)
  return out


def _clean_keypoints(keypoints, width, height):
  x, y, v = tf.unstack(tf.cast(keypoints, tf.float32), axis=-1)
  keep = ((v > 0) & tf.math.is_finite(x) & tf.math.is_finite(y)
          & (x >= 0) & (x <= width) & (y >= 0) & (y <= height))
  return tf.where(keep[..., None], tf.stack([x, y, v], axis=-1), 0.0)


def _first(bad, values):
  """(index, value) of the first True of `bad` [N]; (N, zeros) if none (safe for N = 0)."""
  index = tf.argmax(tf.cast(tf.concat([bad, [True]], 0), tf.int32))
  padding = tf.zeros([1] + values.shape[1:].as_list(), values.dtype)
  return index, tf.gather(tf.concat([values, padding], 0), index)


def _checked(example, name: str, num_classes: int):
  """The module docstring's rules: degenerate boxes, bad labels, masks not of the
  image's size, empty masks in non-empty boxes and keypoint visibilities outside
  {0, 1, 2} fail; boxes clipped, those left empty dropped; bad keypoints missing."""
  image = example["image"]
  image_id = tf.cast(example["image_id"], tf.int64)
  height, width = _hw(image)
  boxes = tf.reshape(tf.cast(example["boxes"], tf.float32), [-1, 4])
  labels = tf.reshape(tf.cast(example["labels"], tf.int32), [-1])
  bad = (tf.reduce_any(~tf.math.is_finite(boxes), axis=1)
         | (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))
  first, first_box = _first(bad, boxes)
  box_check = tf.debugging.Assert(
      ~tf.reduce_any(bad),
      [tf.strings.format(
          f"{name}: object {{}} has a degenerate box {{}} (pixels x1, y1, x2, y2; expected "
          f"x1 <= x2, y1 <= y2, finite)", (first, first_box), summarize=4)])
  bad_label = (labels < 1) | (labels >= num_classes)
  label_check = tf.debugging.Assert(
      ~tf.reduce_any(bad_label),
      [tf.strings.format(f"{name}: label {{}} outside 1..{num_classes - 1}",
                         _first(bad_label, labels)[1])])
  out = {"image": image, "image_id": image_id}
  with tf.control_dependencies([box_check, label_check]):
    out["boxes"] = tf.clip_by_value(boxes, 0.0, tf.stack([width, height, width, height]))
    out["labels"] = tf.identity(labels)
  out["is_crowd"] = tf.cast(example.get("is_crowd", _false(labels)), tf.bool)
  out["difficult"] = tf.cast(example.get("difficult", _false(labels)), tf.bool)
  b = out["boxes"]
  non_empty = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
  if "masks" in example:
    masks = tf.cast(example["masks"], tf.uint8)
    expected = tf.concat([tf.shape(labels), tf.shape(image)[:2]], 0)
    shape = tf.shape(masks)
    size_check = tf.debugging.Assert(
        tf.equal(tf.size(shape), 3)
        & tf.reduce_all(tf.equal(tf.concat([shape, [-1, -1, -1]], 0)[:3], expected)),
        [tf.strings.format(f"{name}: image {{}} has masks of shape {{}}; expected [N, H, W] "
                           f"= {{}} (one mask per object, as high and wide as the image)",
                           (image_id, shape, expected))])
    with tf.control_dependencies([size_check]):
      masks = tf.identity(masks)
    empty = ((tf.reduce_max(masks, axis=[1, 2]) == 0) & non_empty & ~out["is_crowd"])
    first, first_box = _first(empty, b)
    empty_check = tf.debugging.Assert(
        ~tf.reduce_any(empty),
        [tf.strings.format(f"{name}: image {{}} object {{}} has an empty mask (no pixel "
                           f"set) but the box {{}}; expected a mask with a pixel set in "
                           f"every non-crowd object", (image_id, first, first_box),
                           summarize=4)])
    with tf.control_dependencies([empty_check]):
      out["masks"] = tf.identity(masks)
  if "captions" in example:
    captions = tf.reshape(tf.convert_to_tensor(example["captions"], tf.string), [-1])
    count_check = tf.debugging.Assert(
        tf.equal(tf.size(captions), tf.size(labels)),
        [tf.strings.format(f"{name}: image {{}} has {{}} captions for {{}} objects; expected "
                           f"one caption per object", (image_id, tf.size(captions),
                                                       tf.size(labels)))])
    with tf.control_dependencies([count_check]):
      out["captions"] = tf.identity(captions)
  if "keypoints" in example:
    keypoints = tf.cast(example["keypoints"], tf.float32)
    v = keypoints[..., 2]
    bad_v = ~((v == 0) | (v == 1) | (v == 2))
    bad_object = tf.reduce_any(bad_v, axis=1)
    first, first_v = _first(bad_object, v)
    v_check = tf.debugging.Assert(
        ~tf.reduce_any(bad_v),
        [tf.strings.format(f"{name}: image {{}} object {{}} has keypoint visibilities {{}}; "
                           f"expected each 0, 1 or 2", (image_id, first, first_v),
                           summarize=64)])
    with tf.control_dependencies([v_check]):
      out["keypoints"] = _clean_keypoints(keypoints, width, height)
  return _select(out, non_empty)


def check_provides(source: DetectionSource, require: Sequence[str]) -> tuple[str, ...]:
  """`require` as a tuple, or a ConfigError if the source lacks any of it."""
  require = tuple(require)
  unknown = [f for f in require if f not in OPTIONAL_FEATURES]
  if unknown:
    raise ConfigError(f"unknown detection features {unknown}; expected some of "
                      f"{OPTIONAL_FEATURES}")
  missing = [f for f in require if f not in source.provides]
  if missing:
    raise ConfigError(f"dataset {source.name!r} provides {list(source.provides)}; the task "
                      f"needs {missing} too")
  return require


def _read_built(source: DetectionSource, split: str, data_dir, decoders, by_process: bool):
  """`sources.read_split` for a source with its own builder (prepared by `prepare`)."""
  builder = source.read_builder(data_dir)
  try:
    read, shares = sources.process_split(builder, split, by_process)
    ds = builder.as_dataset(split=read, shuffle_files=False, decoders=decoders,
                            read_config=tfds.ReadConfig(shuffle_seed=0,
                                                        interleave_cycle_length=1))
  except (KeyError, ValueError) as e:
    raise ConfigError(f"split {split!r} of dataset {source.name!r}: {e}") from None
  if shares is not None:
    return ds, shares
  try:
    num_examples = builder.info.splits[split].num_examples
  except KeyError:
    num_examples = int(ds.reduce(0, lambda n, _: n + 1))
  return ds, num_examples


def load_split(dataset_config, which: str,
               require: Sequence[str] | None = None) -> tuple[tf.data.Dataset, int]:
  """The split `which` ('train' or 'eval') as checked examples (module docstring) with
  `require` of OPTIONAL_FEATURES (default: all the source provides), and its size."""
  if which not in ("train", "eval"):
    raise ValueError(f"which={which!r}; expected 'train' or 'eval'")
  name = dataset_config.name
  source = get_detection_source(name, dataset_config)
  features = source.provides if require is None else check_provides(source, require)
  split = dataset_config.get(f"{which}_split") or (
      source.eval_split if which == "eval" else source.train_split)
  data_dir = dataset_config.get("data_dir")
  if not source.generated_offline and not data_dir:
    raise DataError(f"dataset {name!r} needs config.dataset.data_dir, a folder where it is "
                    f"prepared ({source.prepare}); jaxseg never downloads at run time")
  decoders = None
  if source.mask_feature and "masks" in source.provides and "masks" not in features:
    decoders = {source.mask_feature: tfds.decode.SkipDecoding()}
  by_process = sources.shard_by_process(dataset_config)
  if source.read_builder is not None:
    ds, num_examples = _read_built(source, split, data_dir, decoders, by_process)
  else:
    builder_config = source.builder_config(dataset_config) if source.builder_config else None
    ds, num_examples = sources.read_split(
        source.tfds_name, split, data_dir, builder_config=builder_config,
        generated_offline=source.generated_offline, prepare=source.prepare,
        decoders=decoders, by_process=by_process)
  # image_id = position in the split, also when this process reads only its share.
  offset = getattr(num_examples, "offset", 0)

  @tf.autograph.experimental.do_not_convert
  def to_example(index, raw):
    example = source.to_example(raw, dataset_config, features)
    example = {k: v for k, v in example.items()
               if k not in OPTIONAL_FEATURES or k in features}
    example.setdefault("image_id", index + offset)
    return _checked(example, name, source.num_classes)

  return ds.enumerate().map(to_example, num_parallel_calls=tf.data.AUTOTUNE), num_examples


# -- geometry (tf) -------------------------------------------------------------------------
def _resize(example, new_h, new_w):
  """Image (float) resized bilinearly to new_h x new_w; boxes and keypoints scaled per
  axis (x -> x * new_w / W); masks resized bilinearly and thresholded at 0.5."""
  height, width = _hw(example["image"])
  sx, sy = tf.cast(new_w, tf.float32) / width, tf.cast(new_h, tf.float32) / height
  out = dict(example)
  out["image"] = tf.image.resize(example["image"], tf.stack([new_h, new_w]), "bilinear")
  out["boxes"] = example["boxes"] * tf.stack([sx, sy, sx, sy])
  if "proposals" in example:
    out["proposals"] = example["proposals"] * tf.stack([sx, sy, sx, sy])
  if "masks" in example:
    masks = tf.cast(example["masks"], tf.float32)[..., None]
    masks = tf.image.resize(masks, tf.stack([new_h, new_w]), "bilinear")[..., 0]
    out["masks"] = tf.cast(masks >= 0.5, tf.uint8)
  if "keypoints" in example:
    x, y, v = tf.unstack(example["keypoints"], axis=-1)
    out["keypoints"] = tf.where((v > 0)[..., None], tf.stack([x * sx, y * sy, v], -1), 0.0)
  return out


def _window(example, oy, ox, size: int, min_visible_fraction: float):
  """The size x size window at offset (oy, ox) (zero padding bottom / right where the
  image is smaller): boxes shifted and clipped, objects keeping less than
  `min_visible_fraction` of their box area (or none of it) dropped, keypoints outside
  the window missing."""
  out = dict(example)
  image = example["image"]
  shape = tf.shape(image)
  pad_h, pad_w = tf.maximum(oy + size - shape[0], 0), tf.maximum(ox + size - shape[1], 0)
  image = tf.pad(image, [[0, pad_h], [0, pad_w], [0, 0]])
  out["image"] = tf.slice(image, tf.stack([oy, ox, 0]), [size, size, 3])
  fox, foy = tf.cast(ox, tf.float32), tf.cast(oy, tf.float32)
  shifted = example["boxes"] - tf.stack([fox, foy, fox, foy])
  clipped = tf.clip_by_value(shifted, 0.0, float(size))
  area = (shifted[:, 2] - shifted[:, 0]) * (shifted[:, 3] - shifted[:, 1])
  kept = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
  out["boxes"] = clipped
  if "proposals" in example:  # clipped, never dropped: those left empty become invalid
    proposals = tf.clip_by_value(example["proposals"] - tf.stack([fox, foy, fox, foy]),
                                 0.0, float(size))
    out["proposals"] = proposals
    out["proposal_valid"] = example["proposal_valid"] & (
        (proposals[:, 2] > proposals[:, 0]) & (proposals[:, 3] > proposals[:, 1]))
  if "masks" in example:
    masks = tf.pad(example["masks"], [[0, 0], [0, pad_h], [0, pad_w]])
    out["masks"] = tf.slice(masks, tf.stack([0, oy, ox]), tf.stack([-1, size, size]))
  if "keypoints" in example:
    x, y, v = tf.unstack(example["keypoints"], axis=-1)
    x, y = x - fox, y - foy
    inside = (v > 0) & (x >= 0) & (x <= size) & (y >= 0) & (y <= size)
    out["keypoints"] = tf.where(inside[..., None], tf.stack([x, y, v], -1), 0.0)
  keep = (kept > 0) & (kept >= min_visible_fraction * area)
  return _select(out, keep)


def flip_left_right(example, flip_permutation: Sequence[int] | None = None):
  """The example mirrored horizontally: image and mask columns reversed, box x1' =
  W - x2 and x2' = W - x1, keypoints mirrored and permuted (keypoint k after the flip is
  keypoint flip_permutation[k] before it; required with keypoints)."""
  out = dict(example)
  image = example["image"]
  width = tf.cast(tf.shape(image)[1], tf.float32)
  out["image"] = tf.reverse(image, axis=[1])
  x1, y1, x2, y2 = tf.unstack(example["boxes"], axis=-1)
  out["boxes"] = tf.stack([width - x2, y1, width - x1, y2], axis=-1)
  if "proposals" in example:
    x1, y1, x2, y2 = tf.unstack(example["proposals"], axis=-1)
    out["proposals"] = tf.stack([width - x2, y1, width - x1, y2], axis=-1)
  if "masks" in example:
    out["masks"] = tf.reverse(example["masks"], axis=[2])
  if "keypoints" in example:
    if flip_permutation is None:
      raise ConfigError("flipping keypoints needs a flip_permutation (the left/right "
                        "keypoint swap); the source gives none: set "
                        "config.dataset.augment.flip=False")
    x, y, v = tf.unstack(example["keypoints"], axis=-1)
    x = tf.where(v > 0, width - x, 0.0)
    out["keypoints"] = tf.gather(tf.stack([x, y, v], -1), list(flip_permutation), axis=1)
  return out


def resized_hw(height, width, size: int, scale, resize: str):
  """(new_h, new_w) int32 of an H x W image at `scale` times `size`: letterbox keeps the
  aspect ratio (the long side becomes scale * size), stretch makes it square."""
  if resize == "letterbox":
    r = scale * size / tf.maximum(height, width)
    new_h, new_w = height * r, width * r
  else:
    new_h = new_w = scale * size
  as_int = lambda v: tf.maximum(tf.cast(tf.round(v), tf.int32), 1)
  return as_int(new_h), as_int(new_w)


def _check_resize(resize: str):
  if resize not in RESIZE_MODES:
    raise ConfigError(f"resize={resize!r}; expected one of {RESIZE_MODES}")


# -- padding -------------------------------------------------------------------------------
_WARNED: set = set()
_WARNED_LOCK = threading.Lock()


def _warn_once(name: str, max_boxes: int):
  def warn(n):
    key = (name, max_boxes)
    with _WARNED_LOCK:
      first = key not in _WARNED
      _WARNED.add(key)
    if first:
      logging.warning(
          "%s: an example has %d objects, more than max_boxes=%d: keeping the %d with the "
          "largest box area (in their original order); raise max_boxes to keep all. "
          "(Logged once per dataset.)", name, int(n), max_boxes, max_boxes)
    return np.int32(0)
  return warn


OVERFLOW_RULES = ("error", "keep_largest")


def too_many_objects(name: str, image_id, count: int, max_boxes: int) -> DataError:
  """The error for an image with more objects than the padded capacity."""
  return DataError(f"{name}: image {int(image_id)} has {int(count)} objects, more than "
                   f"config.dataset.max_boxes={max_boxes}; raise config.dataset.max_boxes to "
                   f"at least {int(count)} (or set config.dataset.max_boxes_overflow="
                   f"'keep_largest' to keep the largest {max_boxes})")


def pad_objects(example, max_boxes: int, name: str = "dataset", overflow: str = "error"):
  """Objects padded to `max_boxes` rows with a `valid` [max_boxes] bool mask: boxes and
  labels -1, is_crowd / difficult False, masks 0, keypoints 0, captions b"" in the
  padded rows.

  More than max_boxes objects: the max_boxes with the largest box area are kept (ties: the
  earlier one), in their original order. `num_objects` [] int32 keeps the count before
  padding, so the host can refuse the example: with overflow='error' (the default) the
  detection task raises `too_many_objects` naming the image and config.dataset.max_boxes
  (nothing is dropped silently); with 'keep_largest' a warning is logged once per
  (dataset `name`, max_boxes).
  """
  if max_boxes < 1:
    raise ConfigError(f"max_boxes={max_boxes}; expected a positive integer")
  if overflow not in OVERFLOW_RULES:
    raise ConfigError(f"config.dataset.max_boxes_overflow={overflow!r}; expected one of "
                      f"{OVERFLOW_RULES}")
  boxes = example["boxes"]
  n = tf.shape(boxes)[0]
  area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])

  def truncate():
    largest = lambda: tf.sort(tf.math.top_k(area, k=max_boxes, sorted=True).indices)
    if overflow == "error":
      return largest()
    warned = tf.py_function(_warn_once(name, max_boxes), [n], tf.int32)
    with tf.control_dependencies([warned]):
      return largest()

  index = tf.cond(n > max_boxes, truncate, lambda: tf.range(n))
  m = tf.size(index)
  out = dict(example)
  fills = {"boxes": -1.0, "labels": -1, "is_crowd": False, "difficult": False,
           "masks": 0, "keypoints": 0.0, "captions": ""}
  for key in OBJECT_KEYS:
    if key not in example:
      continue
    value = tf.gather(example[key], index)
    if value.dtype == tf.string:  # (tf.pad has no string kernel)
      padded = tf.concat([value, tf.fill([max_boxes - m], fills[key])], 0)
      padded.set_shape([max_boxes])
      out[key] = padded
      continue
    rank = len(value.shape)
    padded = tf.pad(value, [[0, max_boxes - m]] + [[0, 0]] * (rank - 1),
                    constant_values=tf.cast(fills[key], value.dtype))
    padded.set_shape([max_boxes] + value.shape[1:].as_list())
    out[key] = padded
  out["valid"] = tf.range(max_boxes) < m
  out["num_objects"] = n
  return out


# -- preprocessing -------------------------------------------------------------------------
def _float_image(example):
  return dict(example, image=tf.cast(example["image"], tf.float32) / 255.0,
              boxes=tf.cast(example["boxes"], tf.float32))


def _outputs(example, size: int):
  out = {k: v for k, v in example.items()}
  out["image"] = tf.ensure_shape(example["image"], [size, size, 3])
  if "masks" in out:
    out["masks"] = tf.ensure_shape(tf.cast(out["masks"], tf.uint8), [None, size, size])
  if "proposals" in out:  # padded rows stay -1 whatever the geometry did to them
    out["proposals"] = tf.where(out["proposal_valid"][:, None], out["proposals"], -1.0)
  return out


def make_train_preprocess(size: int, max_boxes: int, augment=None,
                          flip_permutation: Sequence[int] | None = None,
                          resize: str = "letterbox", name: str = "dataset",
                          overflow: str = "error"):
  """`preprocess(example, seed)` for training; `seed`: [2] int64 (as given by
  `jaxseg.data.pipeline.train_batches`).

  1. scale jitter s ~ U[min_scale, max_scale]: resize to s * size (`resize`: letterbox
     keeps the aspect ratio, the long side s * size; stretch: s * size square), boxes,
     masks and keypoints with it;
  2. a size x size window: a random crop where the resized image is larger (offset
     uniform on each axis), zero padding bottom / right where it is smaller; boxes
     clipped, objects with less than min_visible_fraction of their box area inside (or
     none) dropped with their masks and keypoints; keypoints outside missing;
  3. flip (if augment.flip) with probability 1/2, keypoints swapped with
     `flip_permutation` (the source's);
  4. `pad_objects(max_boxes, overflow)`.
  `augment` (dict / ConfigDict): flip (False), min_scale (1.0), max_scale (1.0),
  min_visible_fraction (0.0: drop only objects cut away entirely), all optional.
  Output: image float32 [size, size, 3] in [0, 1], boxes [max_boxes, 4], labels,
  valid, is_crowd, difficult [max_boxes], image_id, and masks uint8 [max_boxes, size,
  size] / keypoints [max_boxes, K, 3] where the example has them.
  """
  _check_resize(resize)
  augment = augment or {}
  get = image_preprocess._get  # pylint: disable=protected-access
  flip, min_scale, max_scale = image_preprocess.flip_and_scale(augment)
  min_visible = float(get(augment, "min_visible_fraction", 0.0))
  if not 0 <= min_visible <= 1:
    raise ConfigError(f"augment min_visible_fraction={min_visible}; expected a value in "
                      f"[0, 1]")
  check_permutation = image_preprocess._check_permutation  # pylint: disable=protected-access
  flip_permutation = check_permutation(flip_permutation)

  @tf.autograph.experimental.do_not_convert
  def preprocess(example, seed):
    if flip and "keypoints" in example and flip_permutation is None:
      raise ConfigError(f"{name}: config.dataset.augment.flip with keypoints needs a "
                        f"flip_permutation (the left/right keypoint swap); or set "
                        f"config.dataset.augment.flip=False")
    scale_seed, crop_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 3))
    out = _float_image(example)
    height, width = _hw(out["image"])
    scale = tf.random.stateless_uniform([], scale_seed, min_scale, max_scale)
    new_h, new_w = resized_hw(height, width, size, scale, resize)
    out = _resize(out, new_h, new_w)
    u = tf.random.stateless_uniform([2], crop_seed)
    rooms = tf.maximum(tf.stack([new_h, new_w]) - size, 0)
    offsets = tf.minimum(tf.cast(tf.floor(u * tf.cast(rooms + 1, tf.float32)), tf.int32),
                         rooms)
    out = _window(out, offsets[0], offsets[1], size, min_visible)
    if flip:
      do_flip = tf.random.stateless_uniform([], flip_seed) < 0.5
      out = tf.cond(do_flip, lambda: flip_left_right(out, flip_permutation), lambda: out)
    return _outputs(pad_objects(out, max_boxes, name, overflow), size)

  return preprocess


def make_eval_preprocess(size: int, max_boxes: int, resize: str = "letterbox",
                         name: str = "dataset", overflow: str = "error"):
  """`preprocess(example)` for evaluation: resized to size (`resize`: letterbox, the
  long side = size and zero padding bottom / right; or stretch to size x size),
  nothing cropped or dropped, then `pad_objects`. Adds `orig_size` int32 [2] (H, W of
  the source image) and `scale_xy` float32 [2]: output x = source x * scale_xy[0],
  y = source y * scale_xy[1] (divide predictions by it for source coordinates)."""
  _check_resize(resize)

  @tf.autograph.experimental.do_not_convert
  def preprocess(example):
    out = _float_image(example)
    height, width = _hw(out["image"])
    new_h, new_w = resized_hw(height, width, size, 1.0, resize)
    out = _resize(out, new_h, new_w)
    out = _window(out, 0, 0, size, 0.0)
    out = pad_objects(out, max_boxes, name, overflow)
    out["orig_size"] = tf.cast(tf.stack([height, width]), tf.int32)
    out["scale_xy"] = tf.stack([tf.cast(new_w, tf.float32) / width,
                                tf.cast(new_h, tf.float32) / height])
    return _outputs(out, size)

  return preprocess
