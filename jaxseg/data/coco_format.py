"""`coco_format`: turn YOUR folder of images plus COCO instances JSON into a TFDS dataset.

One line (offline; nothing is downloaded), one `--annotations` per split (a bare path
is the `train` split), `--images` one folder for every split or `split=DIR` each:

  python -m jaxseg.data.coco_format --name mydata --data_dir D --images DIR \
      --annotations train=instances_train.json --annotations validation=instances_val.json

or from Python: `coco_format.build("mydata", data_dir=D, images=DIR,
annotations={"train": ..., "validation": ...})`. The dataset lands in
D/coco_format/mydata/1.0.0; train on it with config.dataset.name = "coco_format/mydata"
and config.dataset.data_dir = D (`jaxseg.data.detection` reads it back from those files
alone: the images and JSON are not needed any more). Building again with the same name
reuses what is there; pass --overwrite (overwrite=True) after changing the files.

What is stored per image (features):
- `image` uint8 [H, W, 3] (the file's bytes as they are; non-RGB files converted to RGB),
  `image/id` int64 (the JSON's image id), `image/filename`;
- `objects`, one per kept annotation: `bbox` float32 [4] ABSOLUTE pixel [x1, y1, x2, y2]
  = (x, y, x + w, y + h) of the COCO [x, y, w, h] (not TFDS's normalized BBoxFeature:
  COCO boxes may poke a little outside the image, which that feature refuses; jaxseg
  clips when reading), `label` (ClassLabel, the category names, contiguous 0..C-1 in
  increasing category id; jaxseg's detection label is label + 1, 0 = background),
  `category_id` (the original id), `id` (annotation id), `area` float32 (the JSON's,
  else the mask's pixel count, else w * h), `is_crowd` bool (`iscrowd`, default 0), and
  `keypoints` float32 [K, 3] (x, y, v of the JSON with 0.5 added to x and y: COCO's
  pixel indices become pixel centres in continuous coordinates; v = 0 -> (0, 0, 0); all zero for
  annotations without keypoints) when a category lists `keypoints`;
- `masks` uint8 [N, H, W] (zlib-compressed), when any annotation has a `segmentation`:
  polygons and RLE (compressed or not) decoded with `jaxseg.formats.rle`
  (`to_rle(segmentation, height, width)`, `decode(rle)`); an annotation without one gets
  the pixels whose centres lie in its box (those it overlaps where it is too thin).
Metadata (`builder.info.metadata`): `category_ids`, `category_names` (label order),
`keypoint_names`, `skeleton` (0-based edges), `flip_permutation` (left/right keypoint
swap: a name with "left" <-> the same name with "right"), `keypoint_sigmas` (the
keypoint category's `kpt_oks_sigmas` if it has them, else empty).

Rules: the JSON must hold `images` (id, file_name, width, height), `annotations` (id,
image_id, category_id, bbox) and `categories` (id, name); a missing key, an annotation
whose image_id is not an image or whose category_id is not a category, a bbox that is
not 4 finite numbers or has a negative w or h, keypoints that are not 3K numbers or
have a visibility outside {0, 1, 2}, a segmentation polygon of fewer than 3 points, an
RLE whose size is not its image's, a non-crowd annotation whose segmentation sets no
pixel although its box overlaps the image (empty mask), `kpt_oks_sigmas` that are not
K positive numbers, a duplicate id, an image file that is missing or whose size differs
from the JSON's width / height: each is one DataError naming the file and the entry.
Repair: an annotation with w == 0 or h == 0 (degenerate box) is dropped, with one logged
warning per split counting them. Images without annotations are kept (no objects).
Split JSONs must agree on the categories.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import re
import sys
from typing import Mapping

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from jaxseg.errors import ConfigError, DataError
from jaxseg.formats import rle as mask_codec

BUILDER_NAME = "coco_format"
VERSION = "1.0.0"
_NAME_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9_.-]*")
_SPLIT_RE = re.compile(r"\w+")
_REQUIRED = {
    "images": ("id", "file_name", "width", "height"),
    "annotations": ("id", "image_id", "category_id", "bbox"),
    "categories": ("id", "name"),
}


def prepare_command(name: str) -> str:
  """The one-liner that builds dataset `name` (for "not prepared" errors)."""
  return (f"python -m jaxseg.data.coco_format --name {name} --data_dir DATA_DIR "
          f"--images IMAGE_DIR --annotations train=instances_train.json "
          f"--annotations validation=instances_val.json")


# -- reading and checking one instances JSON ---------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Index:
  """One checked instances JSON."""
  path: str
  categories: tuple[dict, ...]  # sorted by id
  images: tuple[dict, ...]  # sorted by id
  annotations: Mapping[int, tuple[dict, ...]]  # image id -> kept annotations, in order
  num_dropped: int  # degenerate boxes (w or h == 0)
  dropped_ids: tuple[int, ...]


def _entry(section: str, i: int, entry) -> str:
  ident = entry.get("id") if isinstance(entry, dict) else None
  return f"{section}[{i}]" + ("" if ident is None else f" (id {ident})")


def _is_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@functools.lru_cache(maxsize=16)
def _load(path: str, mtime: float) -> _Index:
  del mtime  # (part of the cache key: a changed file is read again)
  try:
    with open(path) as f:
      data = json.load(f)
  except OSError as e:
    raise DataError(f"cannot read annotations {path!r}: {e.strerror}") from None
  except ValueError as e:
    raise DataError(f"annotations {path!r} are not valid JSON: {e}") from None
  if not isinstance(data, dict):
    raise DataError(f"annotations {path!r}: expected a JSON object with images, "
                    f"annotations and categories")
  for section, keys in _REQUIRED.items():
    entries = data.get(section)
    if not isinstance(entries, list):
      raise DataError(f"annotations {path!r}: missing required key {section!r} (a list)")
    ids = set()
    for i, entry in enumerate(entries):
      if not isinstance(entry, dict):
        raise DataError(f"annotations {path!r}: {section}[{i}] is not an object")
      missing = [k for k in keys if k not in entry]
      if missing:
        raise DataError(f"annotations {path!r}: {_entry(section, i, entry)} lacks required "
                        f"key(s) {missing}; expected {list(keys)}")
      if not isinstance(entry["id"], int) or isinstance(entry["id"], bool):
        raise DataError(f"annotations {path!r}: {_entry(section, i, entry)} has id "
                        f"{entry['id']!r}; expected an integer")
      if entry["id"] in ids:
        raise DataError(f"annotations {path!r}: duplicate {section} id {entry['id']}")
      ids.add(entry["id"])
  images = {im["id"]: im for im in data["images"]}
  for i, im in enumerate(data["images"]):
    if not all(isinstance(im[k], int) and im[k] > 0 for k in ("width", "height")):
      raise DataError(f"annotations {path!r}: {_entry('images', i, im)} has width "
                      f"{im['width']!r}, height {im['height']!r}; expected positive integers")
  categories = sorted(data["categories"], key=lambda c: c["id"])
  names = [str(c["name"]) for c in categories]
  if len(set(names)) != len(names):
    raise DataError(f"annotations {path!r}: category names {names} are not unique")
  category_ids = {c["id"] for c in categories}
  num_keypoints = len(_keypoint_names(categories, path))
  per_image: dict[int, list[dict]] = {i: [] for i in images}
  dropped = []
  for i, ann in enumerate(data["annotations"]):
    where = f"annotations {path!r}: {_entry('annotations', i, ann)}"
    if ann["image_id"] not in images:
      raise DataError(f"{where} has image_id {ann['image_id']!r}, which is not in images")
    if ann["category_id"] not in category_ids:
      raise DataError(f"{where} has category_id {ann['category_id']!r}; expected one of "
                      f"{sorted(category_ids)}")
    bbox = ann["bbox"]
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_number, bbox))):
      raise DataError(f"{where} has bbox {bbox!r}; expected 4 finite numbers [x, y, w, h]")
    if bbox[2] < 0 or bbox[3] < 0:
      raise DataError(f"{where} has bbox {bbox!r} with a negative width or height; "
                      f"expected [x, y, w, h] with w, h >= 0")
    keypoints = ann.get("keypoints")
    if keypoints is not None and (
        not isinstance(keypoints, list) or len(keypoints) != 3 * num_keypoints
        or not all(map(_is_number, keypoints))):
      raise DataError(f"{where} has {len(keypoints) if isinstance(keypoints, list) else 0} "
                      f"keypoint values; expected {3 * num_keypoints} numbers (x, y, v for "
                      f"each of the categories' {num_keypoints} keypoints)")
    for k, v in enumerate((keypoints or [])[2::3]):
      if v not in (0, 1, 2):
        raise DataError(f"{where} has keypoint {k} with visibility {v!r}; expected 0 (not "
                        f"labelled), 1 (occluded) or 2 (visible)")
    _check_segmentation(ann.get("segmentation"), images[ann["image_id"]], where)
    if bbox[2] == 0 or bbox[3] == 0:
      dropped.append(ann["id"])
      continue
    per_image[ann["image_id"]].append(ann)
  return _Index(path, tuple(categories), tuple(sorted(images.values(), key=lambda m: m["id"])),
                {k: tuple(v) for k, v in per_image.items()}, len(dropped), tuple(dropped))


def _check_segmentation(segmentation, image: dict, where: str):
  """Polygons of at least 3 (x, y) points; an RLE of its image's size."""
  if isinstance(segmentation, dict):
    size, expected = segmentation.get("size"), [image["height"], image["width"]]
    if "size" in segmentation and size != expected:
      raise DataError(f"{where} has an RLE segmentation of size {size!r}; expected "
                      f"{expected} (its image's height, width)")
  elif isinstance(segmentation, list):
    for j, polygon in enumerate(segmentation):
      if isinstance(polygon, list) and (len(polygon) < 6 or len(polygon) % 2):
        raise DataError(f"{where} has segmentation polygon {j} of {len(polygon)} "
                        f"coordinates; expected at least 3 (x, y) points (an even count "
                        f">= 6)")


def load_annotations(path: str) -> _Index:
  """The checked contents of an instances JSON (cached while the file is unchanged)."""
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.isfile(path):
    raise DataError(f"annotations file {path!r} does not exist")
  return _load(path, os.path.getmtime(path))


def _keypoint_names(categories, path) -> tuple[str, ...]:
  lists = {tuple(map(str, c["keypoints"])) for c in categories if c.get("keypoints")}
  if len(lists) > 1:
    raise DataError(f"annotations {path!r}: categories list different keypoints "
                    f"{sorted(lists)}; expected one keypoint list shared by all")
  return lists.pop() if lists else ()


def _skeleton(categories, num_keypoints: int, path) -> tuple[tuple[int, int], ...]:
  for c in categories:
    if c.get("keypoints") and c.get("skeleton"):
      edges = []
      for edge in c["skeleton"]:
        if (len(edge) != 2 or not all(isinstance(a, int) and 1 <= a <= num_keypoints
                                      for a in edge)):
          raise DataError(f"annotations {path!r}: category {c['id']} skeleton edge "
                          f"{edge!r}; expected two 1-based keypoint indices")
        edges.append((edge[0] - 1, edge[1] - 1))
      return tuple(edges)
  return ()


def _keypoint_sigmas(categories, num_keypoints: int, path) -> tuple[float, ...]:
  """The OKS sigmas a keypoint category carries as `kpt_oks_sigmas` (as jaxseg's exported
  ground truth does); () if none does."""
  for c in categories:
    sigmas = c.get("kpt_oks_sigmas") if c.get("keypoints") else None
    if sigmas is not None:
      if not (isinstance(sigmas, list) and len(sigmas) == num_keypoints
              and all(_is_number(v) and v > 0 for v in sigmas)):
        raise DataError(f"annotations {path!r}: category {c['id']} kpt_oks_sigmas "
                        f"{sigmas!r}; expected {num_keypoints} positive numbers (one per "
                        f"keypoint)")
      return tuple(float(v) for v in sigmas)
  return ()


def flip_permutation(names) -> tuple[int, ...]:
  """Left/right swap of keypoint `names`: index k -> the index of its mirror name
  ("left" <-> "right"), itself where the mirror name is absent."""
  names = list(names)
  index = {n: i for i, n in enumerate(names)}

  def mirror(n):
    return re.sub("left|right", lambda m: "right" if m.group(0) == "left" else "left", n)

  return tuple(index.get(mirror(n), i) for i, n in enumerate(names))


# -- the builder ---------------------------------------------------------------------------
@dataclasses.dataclass(eq=False, kw_only=True)
class CocoFormatConfig(tfds.core.BuilderConfig):
  """A COCO-format dataset: `name`, image folder(s) and instances JSON per split."""

  images: str | dict[str, str] = ""  # one folder, or split -> folder
  annotations: dict[str, str] = dataclasses.field(default_factory=dict)  # split -> JSON

  def image_dir(self, split: str) -> str:
    return self.images[split] if isinstance(self.images, dict) else self.images


def _check_config(config: CocoFormatConfig):
  if not _NAME_RE.fullmatch(config.name or ""):
    raise ConfigError(f"dataset name {config.name!r}; expected letters, digits, '_', '-' "
                      f"or '.' (it names the folder in data_dir)")
  if not config.annotations:
    raise ConfigError("no annotations given; expected at least one split=instances.json")
  for split in config.annotations:
    if not _SPLIT_RE.fullmatch(split):
      raise ConfigError(f"split name {split!r}; expected letters, digits or '_'")
    folder = config.image_dir(split) if (not isinstance(config.images, dict)
                                         or split in config.images) else None
    if not folder:
      raise ConfigError(f"no image folder for split {split!r}")
    if not os.path.isdir(folder):
      raise DataError(f"image folder {folder!r} (split {split!r}) does not exist")


class CocoFormat(tfds.core.GeneratorBasedBuilder):
  """A user's COCO-format instances dataset (see the module docstring)."""

  VERSION = tfds.core.Version(VERSION)
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = []  # one config per user dataset, made by `build`

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> None:
    """None: no checksums file to find (TFDS only uses this for downloads)."""
    return None

  def _indexes(self) -> dict[str, _Index]:
    return {split: load_annotations(path)
            for split, path in self.builder_config.annotations.items()}

  def _summary(self):
    """(categories, keypoint names, skeleton, OKS sigmas, has masks), checked across
    splits."""
    indexes = self._indexes()
    first = next(iter(indexes.values()))
    cats = [(c["id"], str(c["name"])) for c in first.categories]
    for index in indexes.values():
      other = [(c["id"], str(c["name"])) for c in index.categories]
      if other != cats:
        raise DataError(f"annotations {index.path!r} and {first.path!r} list different "
                        f"categories; expected the same (id, name) list in every split")
    names = _keypoint_names(first.categories, first.path)
    skeleton = _skeleton(first.categories, len(names), first.path)
    sigmas = _keypoint_sigmas(first.categories, len(names), first.path)
    has_masks = any(a.get("segmentation") for index in indexes.values()
                    for anns in index.annotations.values() for a in anns)
    return cats, names, skeleton, sigmas, has_masks

  def _info(self) -> tfds.core.DatasetInfo:
    _check_config(self.builder_config)
    cats, keypoint_names, skeleton, sigmas, has_masks = self._summary()
    objects = {
        "bbox": tfds.features.Tensor(shape=(4,), dtype=np.float32),
        "label": tfds.features.ClassLabel(names=[n for _, n in cats]),
        "category_id": np.int64,
        "id": np.int64,
        "area": np.float32,
        "is_crowd": np.bool_,
    }
    if keypoint_names:
      objects["keypoints"] = tfds.features.Tensor(shape=(len(keypoint_names), 3),
                                                  dtype=np.float32)
    features = {
        "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
        "image/id": np.int64,
        "image/filename": tfds.features.Text(),
        "objects": tfds.features.Sequence(objects),
    }
    if has_masks:
      features["masks"] = tfds.features.Tensor(
          shape=(None, None, None), dtype=np.uint8, encoding=tfds.features.Encoding.ZLIB)
    metadata = tfds.core.MetadataDict(
        category_ids=[i for i, _ in cats], category_names=[n for _, n in cats],
        keypoint_names=list(keypoint_names), skeleton=[list(e) for e in skeleton],
        flip_permutation=list(flip_permutation(keypoint_names)),
        keypoint_sigmas=list(sigmas))
    return tfds.core.DatasetInfo(
        builder=self, description="A COCO-format instances dataset (jaxseg.data.coco_format).",
        features=tfds.features.FeaturesDict(features), metadata=metadata)

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    out = {}
    for split, index in self._indexes().items():
      if index.num_dropped:
        logging.warning(
            "coco_format/%s split %s: dropped %d annotation(s) with a zero-width or "
            "zero-height bbox (degenerate box), ids %s%s", self.builder_config.name, split,
            index.num_dropped, list(index.dropped_ids[:10]),
            " ..." if index.num_dropped > 10 else "")
      out[split] = self._generate_examples(split, index)
    return out

  def _generate_examples(self, split: str, index: _Index):
    folder = self.builder_config.image_dir(split)
    cats = {c["id"]: k for k, c in enumerate(index.categories)}
    has_masks = "masks" in self.info.features
    objects_features = self.info.features["objects"]
    num_keypoints = (objects_features["keypoints"].shape[0]
                     if "keypoints" in objects_features else 0)
    for image_info in index.images:
      anns = index.annotations[image_info["id"]]
      image = _read_image(os.path.join(folder, image_info["file_name"]), image_info, index.path)
      height, width = image_info["height"], image_info["width"]
      masks = np.zeros((len(anns), height, width), np.uint8)
      for n, ann in enumerate(anns):
        if has_masks:
          masks[n] = _instance_mask(ann, height, width)
          if not masks[n].any() and not ann.get("iscrowd") and _inside(ann["bbox"], height,
                                                                         width):
            raise DataError(f"annotations {index.path!r}: annotation id {ann['id']} has an "
                            f"empty mask (its segmentation sets no pixel) but the bbox "
                            f"{ann['bbox']}; expected a segmentation covering a pixel "
                            f"(or iscrowd 1)")
      objects = {
          "bbox": np.array([_xyxy(a["bbox"]) for a in anns], np.float32).reshape(-1, 4),
          "label": [cats[a["category_id"]] for a in anns],
          "category_id": np.array([a["category_id"] for a in anns], np.int64),
          "id": np.array([a["id"] for a in anns], np.int64),
          "area": np.array([_area(a, masks[n] if has_masks else None)
                            for n, a in enumerate(anns)], np.float32),
          "is_crowd": np.array([bool(a.get("iscrowd", 0)) for a in anns], np.bool_),
      }
      if num_keypoints:
        objects["keypoints"] = np.stack(
            [_keypoints(a, num_keypoints) for a in anns]
        ) if anns else np.zeros((0, num_keypoints, 3), np.float32)
      example = {"image": image, "image/id": image_info["id"],
                 "image/filename": image_info["file_name"], "objects": objects}
      if has_masks:
        example["masks"] = masks
      yield image_info["id"], example


def _read_image(path: str, image_info: dict, annotations_path: str):
  """The image file (its path, or an RGB array if the file is not RGB), checked."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise DataError(f"image file {path!r} (image id {image_info['id']} of "
                    f"{annotations_path!r}) does not exist")
  try:
    with Image.open(path) as im:
      size, mode = im.size, im.mode
      array = None if mode == "RGB" else np.asarray(im.convert("RGB"))
  except OSError as e:
    raise DataError(f"cannot read image file {path!r}: {e}") from None
  expected = (image_info["width"], image_info["height"])
  if size != expected:
    raise DataError(f"image file {path!r} is {size[0]} x {size[1]} (width x height); "
                    f"{annotations_path!r} says {expected[0]} x {expected[1]} for image id "
                    f"{image_info['id']}")
  return path if array is None else array


def _xyxy(bbox):
  x, y, w, h = (float(v) for v in bbox)
  return (x, y, x + w, y + h)


def _area(ann, mask) -> float:
  if _is_number(ann.get("area")):
    return float(ann["area"])
  if mask is not None and ann.get("segmentation"):
    return float(mask.sum())
  return float(ann["bbox"][2] * ann["bbox"][3])


def _keypoints(ann, num_keypoints: int) -> np.ndarray:
  if not ann.get("keypoints"):
    return np.zeros((num_keypoints, 3), np.float32)
  kp = np.asarray(ann["keypoints"], np.float32).reshape(num_keypoints, 3)
  # COCO keypoints are integer pixel indices; jaxseg's continuous coordinates put pixel c's
  # centre at c + 0.5 (so a flip maps it to W - 1 - c). Subtract 0.5 for COCO results.
  kp = kp + np.array([0.5, 0.5, 0.0], np.float32)
  return np.where(kp[:, 2:] > 0, kp, 0.0).astype(np.float32)


def _inside(bbox, height: int, width: int) -> bool:
  """Whether the [x, y, w, h] box keeps a non-empty part inside the image."""
  x1, y1, x2, y2 = _xyxy(bbox)
  return min(x2, width) > max(x1, 0) and min(y2, height) > max(y1, 0)


def _box_mask(bbox, height: int, width: int) -> np.ndarray:
  """The pixels whose centres lie inside the [x, y, w, h] box; for a box too thin to hold
  a pixel centre on an axis, the pixels it overlaps on that axis (so a box inside the
  image never gets an empty mask)."""
  x1, y1, x2, y2 = _xyxy(bbox)

  def axis(lo, hi, n):
    c = np.arange(n) + 0.5
    centres = (c >= lo) & (c <= hi)
    return centres if centres.any() else (c + 0.5 > lo) & (c - 0.5 < hi)

  rows, cols = axis(y1, y2, height), axis(x1, x2, width)
  return (rows[:, None] & cols[None, :]).astype(np.uint8)


def _instance_mask(ann, height: int, width: int) -> np.ndarray:
  segmentation = ann.get("segmentation")
  if not segmentation:
    return _box_mask(ann["bbox"], height, width)
  try:
    mask = np.asarray(mask_codec.decode(mask_codec.to_rle(segmentation, height, width)))
  except (TypeError, ValueError, KeyError, IndexError) as e:
    raise DataError(f"annotation id {ann['id']}: cannot decode its segmentation ({e}); "
                    f"expected polygons [[x, y, ...], ...] or RLE {{size, counts}}") from None
  if mask.shape != (height, width):
    raise DataError(f"annotation id {ann['id']}: segmentation decodes to a "
                    f"{mask.shape} mask; expected ({height}, {width}) (the image's size)")
  return (mask > 0).astype(np.uint8)


# -- building and reading back -------------------------------------------------------------
def build(name: str, *, data_dir: str, images: str | Mapping[str, str],
          annotations: str | Mapping[str, str], overwrite: bool = False) -> str:
  """Builds dataset `name` in `data_dir` from `images` (a folder, or split -> folder)
  and `annotations` (a JSON path, taken as `train`, or split -> JSON path); returns the
  dataset's folder. Offline; raises DataError / ConfigError for bad input."""
  if isinstance(annotations, str):
    annotations = {"train": annotations}
  images = images if isinstance(images, str) else dict(images)
  config = CocoFormatConfig(name=name, images=images, annotations=dict(annotations),
                            description=f"COCO-format dataset {name!r}")
  _check_config(config)
  os.makedirs(data_dir, exist_ok=True)
  builder = CocoFormat(config=config, data_dir=data_dir)
  download_config = tfds.download.DownloadConfig(
      download_mode=(tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite
                     else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
  builder.download_and_prepare(download_config=download_config)
  return str(builder.data_dir)


def newest_version_dir(base: str) -> str | None:
  """base/<version> of the newest version (numerically, e.g. 1.10.0 after 1.9.0) built
  under the TFDS dataset folder `base` (one holding dataset_info.json); None if there is
  none or `base` is not a folder. Also used by `visual_genome.dataset_dir`."""
  if not os.path.isdir(base):
    return None
  versions = sorted((d for d in os.listdir(base)
                     if os.path.isfile(os.path.join(base, d, "dataset_info.json"))),
                    key=lambda v: tuple(int(p) for p in v.split(".") if p.isdigit()))
  return os.path.join(base, versions[-1]) if versions else None


def dataset_dir(name: str, data_dir: str | None) -> str:
  """D/coco_format/<name>/<version> of a built dataset, or a DataError saying how to
  build it."""
  found = data_dir and newest_version_dir(os.path.join(data_dir, BUILDER_NAME, name))
  if not found:
    where = repr(data_dir) if data_dir else "(config.dataset.data_dir is not set)"
    raise DataError(f"COCO-format dataset {name!r} is not prepared in data_dir {where}; "
                    f"build it first: {prepare_command(name)}")
  return found


def read_builder(name: str, data_dir: str | None):
  """The built dataset `name` as a read-only TFDS builder (no images or JSON needed)."""
  return tfds.builder_from_directory(dataset_dir(name, data_dir))


def _parse_pairs(values, flag: str, default_split: str | None) -> dict[str, str]:
  """["train=a.json", "b.json"] -> {"train": "a.json", default_split: "b.json"}."""
  out = {}
  for value in values:
    split, sep, path = value.partition("=")
    if not sep:
      if default_split is None:
        raise ConfigError(f"{flag} {value!r}: give one folder, or SPLIT=FOLDER for each split")
      split, path = default_split, value
    if split in out:
      raise ConfigError(f"{flag} given twice for split {split!r}")
    out[split] = path
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m jaxseg.data.coco_format",
      description="Build a TFDS dataset from a folder of images and COCO instances JSON.")
  parser.add_argument("--name", required=True, help="dataset name (coco_format/NAME)")
  parser.add_argument("--data_dir", required=True, help="TFDS data_dir to write to")
  parser.add_argument("--images", action="append", required=True,
                      help="image folder (all splits), or SPLIT=FOLDER (repeatable)")
  parser.add_argument("--annotations", action="append", required=True,
                      help="SPLIT=instances.json (repeatable; a bare path is train)")
  parser.add_argument("--overwrite", action="store_true", help="rebuild if it exists")
  args = parser.parse_args(argv)
  try:
    images = (args.images[0] if len(args.images) == 1 and "=" not in args.images[0]
              else _parse_pairs(args.images, "--images", None))
    path = build(args.name, data_dir=args.data_dir, images=images,
                 annotations=_parse_pairs(args.annotations, "--annotations", "train"),
                 overwrite=args.overwrite)
  except (ConfigError, DataError) as e:
    print(f"jaxseg: error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  print(f"built coco_format/{args.name} in {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
