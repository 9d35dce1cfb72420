"""Where examples come from: TFDS datasets by name, with their label maps.

A source turns a TFDS example into `{'image': uint8 [H, W, 3], 'label': int32 [H, W]}`
with labels 0..C-1 (0 = background where the dataset has one) and `ignore_index`
(config.dataset.ignore_index, default 255) for pixels excluded from loss and metrics.
Every raw mask value is mapped through a lookup table; a value outside the documented
raw range stops the input pipeline with a DataError naming it (never a wrong label).

Label maps (jaxseg name: TFDS name, image / mask feature, raw values -> labels, splits):
- `shapes` (jaxseg's own, generated offline on first use): `image` / `segmentation_mask`;
  0 background, 1 circle, 2 square, 3 triangle, kept as they are; train / validation.
- `oxford_iiit_pet`: `image` / `segmentation_mask` (trimap); 1 pet -> 1, 2 background
  -> 0, 3 border -> ignore_index; train / test.
- `scene_parse150`: `image` / `annotation`. Caution: TFDS builds this dataset from the
  Places Challenge 2017 *instance* annotations (ChallengeData2017/annotations_instance),
  not from the 150-class ADEChallengeData2016 maps: the red channel holds one of 100
  object categories (1..100, names in `ADE_INSTANCE_CLASS_NAMES`, a subset of the 150
  SceneParse150 classes) and 0 for every other pixel (stuff such as wall, floor, sky,
  road, and unlabeled pixels); the green channel is the instance id (unused here). So
  jaxseg maps red 0 -> 0 "background" and k -> k for the 100 categories (101 classes,
  the VOC-style "objects + background" problem); red values above 100 are an error.
  Nothing becomes ignore_index. The standard 150-class benchmark would need the
  ADEChallengeData2016 maps, which no TFDS catalog builder holds. Splits: train and
  test (TFDS's "test" split is ADE20K's 2000-image validation set).
- `cityscapes`: TFDS `cityscapes/semantic_segmentation`, `image_left` /
  `segmentation_label` (gtFine labelIds 0..33). The 19 evaluated classes get the
  official train ids 0..18 (`CITYSCAPES_CLASS_NAMES`: road, sidewalk, building, ...,
  bicycle); every other labelId (unlabeled, ego vehicle, rectification border, out of
  roi, static, dynamic, ground, parking, rail track, guard rail, bridge, tunnel,
  polegroup, caravan, trailer) -> ignore_index. There is no background class: class 0
  is road. Raw values above 33 are an error. Splits: train / validation (TFDS's test
  split has no labels). Needs a manual download (see `SegmentationSource.prepare`).

Catalog datasets are read only from a prepared data_dir: nothing is downloaded.

With several processes, every process reads the whole split by default;
config.dataset.shard_by_process=True makes each read only its even share of the split's
records (`read_split`; trade-off in `jaxseg.data.pipeline`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
from typing import Callable, Sequence

import jax
import tensorflow as tf
import tensorflow_datasets as tfds

from jaxseg.data import pipeline, shapes
from jaxseg.errors import ConfigError, DataError

IGNORE = -1  # label-table entry: the raw value becomes config.dataset.ignore_index
_INVALID = -2  # label-table entry of a raw value the dataset never holds


@dataclasses.dataclass(frozen=True)
class SegmentationSource:
  """A TFDS dataset seen as (image, per-pixel label) pairs."""
  tfds_name: str  # "name" or "name/builder_config"
  class_names: tuple[str, ...]
  train_split: str
  eval_split: str
  to_label: Callable[[tf.Tensor, int], tf.Tensor]  # (raw mask [H, W, K], ignore) -> int32 [H, W]
  generated_offline: bool = False  # jaxseg builds it itself; no download ever
  image_key: str = "image"  # TFDS feature holding the uint8 RGB image
  mask_key: str = "segmentation_mask"  # TFDS feature holding the raw mask
  prepare: str = ""  # how to prepare the dataset, for the "not prepared" error

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


def _value_ranges(values: Sequence[int]) -> str:
  """[0, 1, 2, 5] -> '0..2, 5'."""
  runs = []
  for v in sorted(values):
    if runs and v == runs[-1][1] + 1:
      runs[-1][1] = v
    else:
      runs.append([v, v])
  return ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in runs)


def lookup_label(dataset: str, mask_key: str, table: Sequence[int | None],
                 channel: int = 0) -> Callable[[tf.Tensor, int], tf.Tensor]:
  """A `to_label` function: raw value v of `mask[..., channel]` -> `table[v]`.

  Entries are class ids, `IGNORE` (-> ignore_index) or None (the dataset never holds
  v). A raw value that is None in the table or beyond its end fails the example with
  an error naming the value and the documented raw values.
  """
  codes = tf.constant([_INVALID if t is None else t for t in table], tf.int32)
  expected = _value_ranges([v for v, t in enumerate(table) if t is not None])

  def to_label(mask, ignore_index):
    raw = tf.cast(mask[..., channel], tf.int32)
    index = tf.clip_by_value(raw, 0, len(table) - 1)
    label = tf.gather(codes, index)
    bad = (raw != index) | (label == _INVALID)
    first_bad = tf.reduce_min(tf.where(bad, raw, tf.int32.max))
    check = tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(bad)),
        [tf.strings.format(f"{dataset}: {mask_key} holds raw value {{}}; expected one of "
                           f"{expected}", first_bad)])
    with tf.control_dependencies([check]):
      return tf.where(label == IGNORE, ignore_index, label)

  return to_label


# The 100 object categories of the Places Challenge 2017 instance annotations
# (CSAILVision/placeschallenge, instancesegmentation/instanceInfo100_train.txt), in the
# order of their ids 1..100.
ADE_INSTANCE_CLASS_NAMES = (
    "bed", "windowpane", "cabinet", "person", "door", "table", "curtain", "chair", "car",
    "painting", "sofa", "shelf", "mirror", "armchair", "seat", "fence", "desk", "wardrobe",
    "lamp", "bathtub", "railing", "cushion", "box", "column", "signboard",
    "chest of drawers", "counter", "sink", "fireplace", "refrigerator", "stairs", "case",
    "pool table", "pillow", "screen door", "bookcase", "coffee table", "toilet", "flower",
    "book", "bench", "countertop", "stove", "palm", "kitchen island", "computer",
    "swivel chair", "boat", "arcade machine", "bus", "towel", "light", "truck",
    "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane",
    "apparel", "pole", "bannister", "ottoman", "bottle", "van", "ship", "fountain",
    "washer", "plaything", "stool", "barrel", "basket", "bag", "minibike", "oven", "ball",
    "food", "step", "trade name", "microwave", "pot", "animal", "bicycle", "dishwasher",
    "screen", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan",
    "fan", "plate", "monitor", "bulletin board", "radiator", "glass", "clock", "flag",
)

# Cityscapes' 19 evaluated classes in train-id order, and labelId -> train id
# (cityscapesScripts helpers/labels.py; None-free: every labelId 0..33 occurs).
CITYSCAPES_CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
    "bus", "train", "motorcycle", "bicycle",
)
_I = IGNORE
CITYSCAPES_LABEL_ID_TO_TRAIN_ID = (
    _I, _I, _I, _I, _I, _I, _I,  # 0-6: unlabeled, ego vehicle, rectification border,
                                 # out of roi, static, dynamic, ground
    0, 1,                        # 7 road, 8 sidewalk
    _I, _I,                      # 9 parking, 10 rail track
    2, 3, 4,                     # 11 building, 12 wall, 13 fence
    _I, _I, _I,                  # 14 guard rail, 15 bridge, 16 tunnel
    5, _I,                       # 17 pole, 18 polegroup
    6, 7, 8, 9, 10, 11, 12, 13, 14, 15,  # 19 traffic light .. 28 bus
    _I, _I,                      # 29 caravan, 30 trailer
    16, 17, 18,                  # 31 train, 32 motorcycle, 33 bicycle
)
del _I


SEGMENTATION_SOURCES = {
    "shapes": SegmentationSource(
        "shapes", shapes.CLASS_NAMES, "train", "validation",
        lookup_label("shapes", "segmentation_mask", range(len(shapes.CLASS_NAMES))),
        generated_offline=True),
    "oxford_iiit_pet": SegmentationSource(
        "oxford_iiit_pet", ("background", "pet"), "train", "test",
        lookup_label("oxford_iiit_pet", "segmentation_mask", (None, 1, 0, IGNORE)),
        prepare="tfds build oxford_iiit_pet --data_dir=..."),
    "scene_parse150": SegmentationSource(
        "scene_parse150", ("background",) + ADE_INSTANCE_CLASS_NAMES, "train", "test",
        lookup_label("scene_parse150", "annotation",
                     range(len(ADE_INSTANCE_CLASS_NAMES) + 1)),
        mask_key="annotation", prepare="tfds build scene_parse150 --data_dir=..."),
    "cityscapes": SegmentationSource(
        "cityscapes/semantic_segmentation", CITYSCAPES_CLASS_NAMES, "train", "validation",
        lookup_label("cityscapes", "segmentation_label", CITYSCAPES_LABEL_ID_TO_TRAIN_ID),
        image_key="image_left", mask_key="segmentation_label",
        prepare="put leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from "
                "cityscapes-dataset.com (registration needed) in a manual_dir, then `tfds "
                "build cityscapes/semantic_segmentation --manual_dir=... --data_dir=...`"),
}


def unknown_dataset(name: str, known) -> ConfigError:
  """The error for a dataset name this task does not read (COCO-format datasets are read
  by the detection task only)."""
  hint = ("; COCO-format datasets are read by config.task='detection' only"
          if str(name).startswith("coco_format/") else "")
  return ConfigError(f"unknown dataset name {name!r} in config.dataset.name; expected one "
                     f"of {sorted(known)}{hint}")


def get_source(name: str) -> SegmentationSource:
  if name not in SEGMENTATION_SOURCES:
    raise unknown_dataset(name, SEGMENTATION_SOURCES)
  return SEGMENTATION_SOURCES[name]


def shapes_builder_config(dataset_config) -> shapes.ShapesConfig:
  """The `shapes` config named by config.dataset.image_size and config.dataset.generator."""
  g = dataset_config.generator
  try:
    return shapes.shapes_config(
        image_size=dataset_config.image_size, num_train=g.num_train,
        num_validation=g.num_validation, min_objects=g.min_objects,
        max_objects=g.max_objects, class_probs=g.get("class_probs"))
  except (TypeError, ValueError) as e:
    raise ConfigError(f"shapes parameters (config.dataset.image_size, "
                      f"config.dataset.generator): {e}") from None


def _builder_config(source: SegmentationSource, dataset_config):
  return shapes_builder_config(dataset_config) if source.tfds_name == "shapes" else None


def _builder(source: SegmentationSource, dataset_config, data_dir):
  return tfds_builder(source.tfds_name, data_dir, _builder_config(source, dataset_config))


def tfds_builder(tfds_name: str, data_dir, config=None):
  """`tfds.builder(tfds_name)`, with a builder config object if one is given."""
  return tfds.builder(tfds_name, data_dir=data_dir, **({"config": config} if config else {}))


def _check_data_dir(data_dir, create: bool):
  if data_dir is None:
    return
  if create:
    try:
      os.makedirs(data_dir, exist_ok=True)
    except OSError as e:
      raise DataError(f"cannot create config.dataset.data_dir {data_dir!r}: {e.strerror}") from None
  if not os.path.isdir(data_dir):
    raise DataError(f"config.dataset.data_dir {data_dir!r} is not a directory; expected a "
                    f"folder holding prepared TFDS datasets")
  if not os.access(data_dir, os.R_OK | os.X_OK):
    raise DataError(f"config.dataset.data_dir {data_dir!r} is not readable")


@contextlib.contextmanager
def _preparing(builder):
  """Held while `builder`'s dataset is generated: one process at a time per dataset and
  config on this machine (two jobs starting on a fresh data_dir would both generate it,
  and the second one's final rename would fail). A lock file in the data_dir's root."""
  root = os.fspath(builder.data_dir_root)
  name = os.path.relpath(os.path.dirname(os.fspath(builder.data_dir)), root).replace(os.sep, "-")
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, f".jaxseg-prepare-{name}.lock"), "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def _num_examples(builder, split, ds) -> int:
  try:
    return builder.info.splits[split].num_examples
  except KeyError:  # split sizes not recorded (e.g. mocked data): count once
    cardinality = int(ds.cardinality())
    return cardinality if cardinality >= 0 else int(ds.reduce(0, lambda n, _: n + 1))


def shard_by_process(dataset_config) -> bool:
  """config.dataset.shard_by_process (default False): whether each process reads only its
  share of a split."""
  value = dataset_config.get("shard_by_process", False)
  if not isinstance(value, bool):
    raise ConfigError(f"config.dataset.shard_by_process={value!r}; expected True or False")
  return value


def process_split(builder, split: str, by_process: bool):
  """(what to read, its size or None): `split` itself, or with `by_process` and several
  processes this process's share of it, `tfds.even_splits(split, n=process count)
  [process index]` (sizes differ by at most one; nothing dropped), and a
  `pipeline.SplitShares` holding every share's size (from the dataset's metadata)."""
  count, index = jax.process_count(), jax.process_index()
  if not by_process or count == 1:
    return split, None
  if "+" in split:
    raise ConfigError(f"split {split!r}: config.dataset.shard_by_process reads one split or "
                      f"one slice of it (e.g. 'train[:90%]'), not a sum of splits")
  if not builder.info.splits:
    raise FileNotFoundError(f"no split of {builder.name!r} is recorded")
  parts = tfds.even_splits(split, n=count, drop_remainder=False)
  # An unknown split is a KeyError or ValueError here, as in `as_dataset`.
  sizes = [builder.info.splits[part].num_examples for part in parts]
  return parts[index], pipeline.SplitShares(sizes, index)


def read_split(tfds_name: str, split: str, data_dir, *, builder_config=None,
               generated_offline: bool = False, prepare: str = "",
               decoders=None, by_process: bool = False) -> tuple[tf.data.Dataset, int]:
  """A TFDS split, unshuffled, and its size: the loading shared by every source.

  Checks `data_dir`; builds datasets `generated_offline` on first use (nothing is
  downloaded); a catalog dataset that is not prepared in `data_dir` is a DataError that
  says how to prepare it (`prepare`); an unknown split is a ConfigError.

  `by_process` (config.dataset.shard_by_process) with several processes: this process
  opens only its even share of the split's records (`process_split`), and the size is a
  `pipeline.SplitShares` (the whole split's size, plus every share's) that makes
  `pipeline.train_batches` / `eval_batches` batch the share as it is.
  """
  _check_data_dir(data_dir, create=generated_offline)
  builder = tfds_builder(tfds_name, data_dir, builder_config)
  if generated_offline:
    with _preparing(builder):
      # Made again under the lock: it sees a dataset another process finished meanwhile.
      builder = tfds_builder(tfds_name, data_dir, builder_config)
      builder.download_and_prepare()
  try:
    read, shares = process_split(builder, split, by_process)
    ds = builder.as_dataset(split=read, shuffle_files=False, decoders=decoders,
                            read_config=tfds.ReadConfig(shuffle_seed=0, interleave_cycle_length=1))
  except (AssertionError, FileNotFoundError, tf.errors.NotFoundError) as e:
    where = data_dir or "the default TFDS data_dir"
    raise DataError(f"dataset {tfds_name!r} split {split!r} is not prepared in {where} "
                    f"({str(e).splitlines()[0]}); prepare it first ({prepare}): "
                    f"jaxseg never downloads at run time") from None
  except (KeyError, ValueError) as e:
    raise ConfigError(f"split {split!r} of dataset {tfds_name!r}: {e}") from None
  return ds, shares if shares is not None else _num_examples(builder, split, ds)


def load_split(dataset_config, which: str) -> tuple[tf.data.Dataset, int]:
  """The raw split `which` ('train' or 'eval') as a tf.data.Dataset and its size.

  Generated datasets are built on first use (offline); catalog datasets must already be
  prepared in `data_dir`: nothing is downloaded.
  """
  source = get_source(dataset_config.name)
  split = dataset_config.get(f"{which}_split") or getattr(source, f"{which}_split")
  ds, num_examples = read_split(
      source.tfds_name, split, dataset_config.data_dir,
      builder_config=_builder_config(source, dataset_config),
      generated_offline=source.generated_offline, prepare=source.prepare,
      by_process=shard_by_process(dataset_config))

  ignore_index = dataset_config.ignore_index

  @tf.autograph.experimental.do_not_convert
  def to_pair(example):
    image, mask = example[source.image_key], example[source.mask_key]
    tf.debugging.assert_equal(
        tf.shape(image)[:2], tf.shape(mask)[:2],
        message=f"{source.tfds_name}: image and segmentation mask sizes differ")
    return {"image": image, "label": source.to_label(mask, ignore_index)}

  return ds.map(to_pair, num_parallel_calls=tf.data.AUTOTUNE), num_examples
