"""Where the image-level examples come from: one label, one box and/or one skeleton each.

A source turns a TFDS example into a dict with `image` (uint8 [H, W, 3]) and some of
`label` (int32 scalar), `box` (float32 [4], pixel [x1, y1, x2, y2]) and `joints` (float32
[14, 3], (x, y, v) in pixels, the 14 LSP joints of `jaxseg.data.skeleton`, v COCO's
visibility). Coordinates are continuous: the image spans [0, W] x [0, H], and a box
covering pixel columns c0..c1 has x1 = c0, x2 = c1 + 1. A task asks for what it needs
(`require=("label", "box")`); a source that lacks it is a ConfigError.

Sources (config.dataset.name: TFDS name; what it provides; default train / eval splits):
- `shapes` (jaxseg's own, built offline on first use from config.dataset.image_size and
  config.dataset.generator, which must ask for exactly one object per image:
  min_objects = max_objects = 1): label = `objects/label` (circle, square, triangle),
  box = `objects/bbox` (the visible pixels) in pixels; train / validation.
- `shapes10` (jaxseg's own, HyperQuest's dataset: 10 kinds of shape, built offline from
  config.dataset.image_size and config.dataset.generator.{num_train, num_validation}):
  label; train / validation.
- `cifar10`: label (airplane .. truck); train / test.
- `imagenet2012`: label (the TFDS feature's 1000 WordNet ids); train / validation. Needs
  a manual download (see `prepare`).
- `oxford_iiit_pet`: label = `label` (37 breeds, names from the TFDS feature) or `species`
  (cat, dog), chosen by config.dataset.label ("breed" or "species"); box = `head_bbox`.
  TFDS stores the VOC xml's head box (1-based inclusive pixel indices) divided by the
  image size, so jaxseg takes x1 = xmin * W - 1, y1 = ymin * H - 1, x2 = xmax * W,
  y2 = ymax * H. Only trainval images have head boxes: TFDS gives every test image (and
  any trainval image without an xml) an all-zero head_bbox. So when `box` is loaded,
  examples with an all-zero head_bbox are dropped (counted once per load, reading the
  box feature only) and the default splits become train[:90%] / train[90%:]; with label
  only, they are train / test.
- `stick_figures` (jaxseg's own, built offline from config.dataset.image_size and
  config.dataset.generator.{num_train, num_validation}): joints; train / validation.
- `flic` (TFDS `flic/small`, 5003 frames) and `flic_full` (`flic/full`, 20928): joints;
  train / test. `xcoords` / `ycoords` hold 29 points in FLIC's MATLAB order (1-based:
  lsho 1, lelb 2, lwri 3, rsho 4, relb 5, rwri 6, lhip 7, lkne 8, lank 9, rhip 10,
  rkne 11, rank 12, leye 13, reye 14, lear 15, rear 16, nose 17, msho 18, mhip 19, ...);
  only 11 are annotated (NaN otherwise). Shoulders, elbows, wrists, hips, knees and
  ankles map to the LSP joints of the same name (`FLIC_TO_LSP`; FLIC's knees and ankles
  are NaN, hence missing); neck and head_top have no FLIC counterpart: v = 0. Labelled
  joints get v = 2 (FLIC has no occlusion flag). Left and right are FLIC's as annotated.
  TFDS passes FLIC's coordinates through unchanged; they are MATLAB image coordinates
  (pixel (1, 1) has its centre at (1, 1)), so jaxseg subtracts 0.5 from x and y.

Rules for bad input, the same for every source:
- a joint with a NaN / infinite coordinate, or outside the image ([0, W] x [0, H]), is
  missing: v = 0 and x = y = 0 (it is masked out of losses and metrics);
- a box partly outside the image is clipped to the image; a box that is empty after
  clipping (x2 <= x1 or y2 <= y1) or not finite stops the input pipeline with an error
  naming the dataset (a DataError once `jaxseg.data.pipeline` reads it);
- a label outside 0..C-1 stops the pipeline the same way.

Catalog datasets are read only from a prepared data_dir: nothing is downloaded.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from jaxseg.data import pipeline, shapes, shapes10, skeleton, sources
from jaxseg.errors import ConfigError

FEATURES = ("label", "box", "joints")

CIFAR10_CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                       "horse", "ship", "truck")
PET_SPECIES_NAMES = ("cat", "dog")
PET_LABELS = {"breed": "label", "species": "species"}  # config.dataset.label -> feature

# LSP joint k <- FLIC point FLIC_TO_LSP[k] (0-based index into the 29 xcoords / ycoords);
# -1: no FLIC counterpart (always missing).
FLIC_TO_LSP = (
    11,  # right_ankle    <- rank 12
    10,  # right_knee     <- rkne 11
    9,   # right_hip      <- rhip 10
    6,   # left_hip       <- lhip 7
    7,   # left_knee      <- lkne 8
    8,   # left_ankle     <- lank 9
    5,   # right_wrist    <- rwri 6
    4,   # right_elbow    <- relb 5
    3,   # right_shoulder <- rsho 4
    0,   # left_shoulder  <- lsho 1
    1,   # left_elbow     <- lelb 2
    2,   # left_wrist     <- lwri 3
    -1,  # neck
    -1,  # head_top
)
FLIC_NUM_POINTS = 29


@dataclasses.dataclass(frozen=True)
class ImageSource:
  """A TFDS dataset seen as images with one label, box and/or skeleton each."""
  name: str  # jaxseg's name (config.dataset.name)
  tfds_name: str  # "name" or "name/builder_config"
  provides: tuple[str, ...]  # which of FEATURES it has
  train_split: str
  eval_split: str
  # (raw TFDS example, config.dataset) -> {"image", and the provided features}, boxes and
  # joints in pixels, not yet checked (`load_split` applies the bad-input rules).
  to_example: Callable[[dict, Any], dict]
  # Names of the label classes, or a function of config.dataset giving them (resolved by
  # `get_source`); None without labels.
  class_names: tuple[str, ...] | Callable[[Any], tuple[str, ...]] | None = None
  generated_offline: bool = False  # jaxseg builds it itself; no download ever
  # config.dataset -> TFDS builder config (generated datasets); raises ConfigError.
  builder_config: Callable[[Any], Any] | None = None
  prepare: str = ""  # how to prepare the dataset, for the "not prepared" error
  box_splits: tuple[str, str] | None = None  # default (train, eval) splits with boxes
  # TFDS feature whose all-zero value marks an example without a box: such examples
  # are dropped when `box` is loaded.
  unannotated_box_key: str | None = None

  @property
  def num_classes(self) -> int:
    return len(self.class_names or ())


# -- conversions (tf) -------------------------------------------------------------------
def _image_hw(image):
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  return shape[0], shape[1]


def normalized_bbox_to_pixels(bbox, image):
  """TFDS BBoxFeature (ymin, xmin, ymax, xmax) in [0, 1] -> pixel [x1, y1, x2, y2]."""
  height, width = _image_hw(image)
  bbox = tf.cast(bbox, tf.float32)
  return tf.stack([bbox[1] * width, bbox[0] * height, bbox[3] * width, bbox[2] * height])


def _shapes_example(example, dataset_config):
  del dataset_config
  image, objects = example["image"], example["objects"]
  return {"image": image, "label": objects["label"][0],
          "box": normalized_bbox_to_pixels(objects["bbox"][0], image)}


def _label_example(example, dataset_config):
  del dataset_config
  return {"image": example["image"], "label": example["label"]}


def _pet_label(dataset_config) -> str:
  choice = dataset_config.get("label") or "breed"
  if choice not in PET_LABELS:
    raise ConfigError(f"config.dataset.label={choice!r} for oxford_iiit_pet; expected one "
                      f"of {sorted(PET_LABELS)}")
  return choice


def _pet_example(example, dataset_config):
  image = example["image"]
  box = normalized_bbox_to_pixels(example["head_bbox"], image)
  box = box - tf.constant([1.0, 1.0, 0.0, 0.0])  # VOC's 1-based xmin / ymin
  return {"image": image, "label": example[PET_LABELS[_pet_label(dataset_config)]],
          "box": box}


def _pet_class_names(dataset_config) -> tuple[str, ...]:
  if _pet_label(dataset_config) == "species":
    return PET_SPECIES_NAMES
  return _tfds_class_names("oxford_iiit_pet", "label", dataset_config)


def _tfds_class_names(tfds_name, key, dataset_config) -> tuple[str, ...]:
  """The names of a TFDS ClassLabel feature (from the builder's code; nothing is read
  unless the dataset is prepared in data_dir)."""
  data_dir = dataset_config.get("data_dir")
  data_dir = data_dir if data_dir and os.path.isdir(data_dir) else None
  return tuple(sources.tfds_builder(tfds_name, data_dir).info.features[key].names)


def _joints_example(example, dataset_config):
  del dataset_config
  return {"image": example["image"], "joints": example["joints"]}


def _flic_example(example, dataset_config):
  del dataset_config
  xs, ys = example["xcoords"], example["ycoords"]
  check = tf.debugging.assert_equal(
      tf.stack([tf.size(xs), tf.size(ys)]), FLIC_NUM_POINTS,
      message=f"flic: xcoords / ycoords do not hold {FLIC_NUM_POINTS} points")
  with tf.control_dependencies([check]):
    nan = tf.constant([math.nan], tf.float32)
    # index FLIC_NUM_POINTS (-1 in the table) picks the appended NaN: missing
    index = tf.constant([i if i >= 0 else FLIC_NUM_POINTS for i in FLIC_TO_LSP])
    x = tf.gather(tf.concat([tf.cast(xs, tf.float32) - 0.5, nan], 0), index)
    y = tf.gather(tf.concat([tf.cast(ys, tf.float32) - 0.5, nan], 0), index)
  joints = tf.stack([x, y, tf.fill([skeleton.NUM_JOINTS], 2.0)], axis=-1)
  return {"image": example["image"], "joints": joints}


def _shapes_builder_config(dataset_config):
  g = dataset_config.generator
  if (g.min_objects, g.max_objects) != (1, 1):
    raise ConfigError(f"config.dataset.generator.min_objects={g.min_objects}, "
                      f"max_objects={g.max_objects}: the image-level tasks need exactly one "
                      f"object per image (min_objects = max_objects = 1)")
  return sources.shapes_builder_config(dataset_config)


def _stick_figures_builder_config(dataset_config):
  from jaxseg.data import stick_figures  # pylint: disable=g-import-not-at-top  (registers it)
  g = dataset_config.generator
  try:
    return stick_figures.stick_figures_config(
        image_size=dataset_config.image_size, num_train=g.num_train,
        num_validation=g.num_validation)
  except (TypeError, ValueError) as e:
    raise ConfigError(f"stick_figures parameters (config.dataset.image_size, "
                      f"config.dataset.generator): {e}") from None


def _shapes10_builder_config(dataset_config):
  g = dataset_config.generator
  return shapes10.shapes10_config(image_size=dataset_config.image_size,
                                  num_train=g.num_train, num_validation=g.num_validation)


def _flic(name, tfds_name):
  return ImageSource(name, tfds_name, ("joints",), "train", "test", _flic_example,
                     prepare=f"tfds build {tfds_name} --data_dir=...")


IMAGE_SOURCES = {
    "shapes": ImageSource(
        "shapes", "shapes", ("label", "box"), "train", "validation", _shapes_example,
        class_names=shapes.SHAPE_NAMES, generated_offline=True,
        builder_config=_shapes_builder_config),
    "cifar10": ImageSource(
        "cifar10", "cifar10", ("label",), "train", "test", _label_example,
        class_names=CIFAR10_CLASS_NAMES, prepare="tfds build cifar10 --data_dir=..."),
    "imagenet2012": ImageSource(
        "imagenet2012", "imagenet2012", ("label",), "train", "validation", _label_example,
        class_names=lambda c: _tfds_class_names("imagenet2012", "label", c),
        prepare="put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from image-net.org "
                "(registration needed) in a manual_dir, then `tfds build imagenet2012 "
                "--manual_dir=... --data_dir=...`"),
    "oxford_iiit_pet": ImageSource(
        "oxford_iiit_pet", "oxford_iiit_pet", ("label", "box"), "train", "test",
        _pet_example, class_names=_pet_class_names,
        prepare="tfds build oxford_iiit_pet --data_dir=...",
        box_splits=("train[:90%]", "train[90%:]"), unannotated_box_key="head_bbox"),
    "stick_figures": ImageSource(
        "stick_figures", "stick_figures", ("joints",), "train", "validation",
        _joints_example, generated_offline=True,
        builder_config=_stick_figures_builder_config),
    "shapes10": ImageSource(
        "shapes10", "shapes10", ("label",), "train", "validation", _label_example,
        class_names=shapes10.CLASS_NAMES,
        generated_offline=True, builder_config=_shapes10_builder_config),
    "flic": _flic("flic", "flic/small"),
    "flic_full": _flic("flic_full", "flic/full"),
}


def get_source(name: str, dataset_config=None) -> ImageSource:
  """The source `name`, its class names resolved and its config checked (ConfigError)."""
  if name not in IMAGE_SOURCES:
    raise sources.unknown_dataset(name, IMAGE_SOURCES)
  source = IMAGE_SOURCES[name]
  if dataset_config is None:
    return source
  if source.builder_config is not None:
    source.builder_config(dataset_config)
  if callable(source.class_names):
    source = dataclasses.replace(source, class_names=tuple(source.class_names(dataset_config)))
  return source


def check_provides(source: ImageSource, name: str, require: Sequence[str]) -> tuple[str, ...]:
  """`require` as a tuple, or a ConfigError if the source lacks any of it."""
  require = tuple(require)
  unknown = [f for f in require if f not in FEATURES]
  if unknown:
    raise ConfigError(f"unknown example features {unknown}; expected some of {FEATURES}")
  missing = [f for f in require if f not in source.provides]
  if missing:
    raise ConfigError(f"dataset {name!r} provides {list(source.provides)}; the task needs "
                      f"{missing} too")
  return require


# -- the bad-input rules (tf) -----------------------------------------------------------
def _checked(example, name: str, num_classes: int):
  """The documented bad-input rules: labels in range, boxes clipped and non-empty,
  joints with NaN or out-of-image coordinates missing."""
  out = {"image": example["image"]}
  height, width = _image_hw(example["image"])
  if "label" in example:
    label = tf.cast(example["label"], tf.int32)
    check = tf.debugging.Assert(
        (label >= 0) & (label < num_classes),
        [tf.strings.format(f"{name}: label {{}} outside 0..{num_classes - 1}", label)])
    with tf.control_dependencies([check]):
      out["label"] = tf.identity(label)
  if "box" in example:
    box = tf.cast(example["box"], tf.float32)
    limit = tf.stack([width, height, width, height])
    box = tf.clip_by_value(box, 0.0, limit)
    check = tf.debugging.Assert(
        (box[2] > box[0]) & (box[3] > box[1]),
        [tf.strings.format(
            f"{name}: box {{}} (pixels x1, y1, x2, y2) is empty or not finite after "
            f"clipping to the {{}} x {{}} image", (box, width, height), summarize=4)])
    with tf.control_dependencies([check]):
      out["box"] = tf.identity(box)
  if "joints" in example:
    out["joints"] = valid_joints(example["joints"], width, height)
  return out


def valid_joints(joints, width, height):
  """Joints [K, 3] with v = 0 and x = y = 0 where v <= 0 or a coordinate is not finite or
  outside [0, width] x [0, height]."""
  joints = tf.cast(joints, tf.float32)
  x, y, v = tf.unstack(joints, axis=-1)
  keep = ((v > 0) & tf.math.is_finite(x) & tf.math.is_finite(y)
          & (x >= 0) & (x <= width) & (y >= 0) & (y <= height))
  return tf.where(keep[:, None], joints, 0.0)


def _has_box(key):
  return lambda example: tf.reduce_any(tf.not_equal(example[key], 0))


def load_split(dataset_config, which: str,
               require: Sequence[str] | None = None) -> tuple[tf.data.Dataset, int]:
  """The split `which` ('train' or 'eval') as {image, and `require` (default: everything
  the source provides)} examples, and its size.

  Generated datasets are built on first use (offline); catalog datasets must already be
  prepared in `data_dir`: nothing is downloaded.
  """
  if which not in ("train", "eval"):
    raise ValueError(f"which={which!r}; expected 'train' or 'eval'")
  name = dataset_config.name
  source = get_source(name, dataset_config)
  features = source.provides if require is None else check_provides(source, name, require)
  defaults = (source.box_splits if "box" in features and source.box_splits
              else (source.train_split, source.eval_split))
  split = dataset_config.get(f"{which}_split") or defaults[which == "eval"]
  read = dict(builder_config=source.builder_config and source.builder_config(dataset_config),
              generated_offline=source.generated_offline, prepare=source.prepare)
  ds, num_examples = sources.read_split(source.tfds_name, split, dataset_config.data_dir,
                                        **read, by_process=sources.shard_by_process(dataset_config))
  if "box" in features and source.unannotated_box_key:
    has_box = _has_box(source.unannotated_box_key)
    ds = ds.filter(has_box)
    boxes, _ = sources.read_split(
        source.tfds_name, split, dataset_config.data_dir, **read,
        decoders=tfds.decode.PartialDecoding({source.unannotated_box_key: True}))
    flags = np.fromiter(boxes.map(has_box).as_numpy_iterator(), bool)  # the whole split's
    if isinstance(num_examples, pipeline.SplitShares):  # boxed examples of every share
      ends = np.cumsum(num_examples.shares)
      num_examples = pipeline.SplitShares(
          [int(flags[end - n:end].sum()) for n, end in zip(num_examples.shares, ends)],
          num_examples.index)
    else:
      num_examples = int(flags.sum())

  @tf.autograph.experimental.do_not_convert
  def to_example(raw):
    example = source.to_example(raw, dataset_config)
    example = {k: v for k, v in example.items() if k == "image" or k in features}
    return _checked(example, name, source.num_classes)

  return ds.map(to_example, num_parallel_calls=tf.data.AUTOTUNE), num_examples
