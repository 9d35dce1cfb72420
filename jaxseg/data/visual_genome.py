"""`visual_genome`: Visual Genome region descriptions as a TFDS dataset (dense captioning).

From a prepared folder VG holding VG's `region_descriptions.json` and its images
(`VG/images/<image_id>.jpg`, or `VG/VG_100K/` and `VG/VG_100K_2/` as VG ships them),
offline (nothing is downloaded):

  python -m jaxseg.data.visual_genome --data_dir D --root VG \
      [--splits densecap_splits.json] [--overwrite]

or from Python `visual_genome.build(D, VG, splits=None, overwrite=False)`. The dataset
lands in D/visual_genome/1.0.0; train on it with config.dataset.name = "visual_genome"
and config.dataset.data_dir = D (`jaxseg.data.detection` reads it back with
`read_builder`; the JSON and images are not needed any more). Building again reuses
what is there; pass --overwrite after changing the files.

Input: `region_descriptions.json` is a list of images {"id": image_id, "regions":
[{"region_id", "image_id", "phrase", "x", "y", "width", "height"}, ...]} (a region's
`image_id` is optional; if present it must be the image's id).

Splits: with --splits, DenseCap's split file {"train": [ids], "val": [ids], "test":
[ids]} gives train / validation / test (images of region_descriptions.json in no split
are left out; split ids without an entry in region_descriptions.json are skipped; both
counted). Without it, by image id: test if id % 10 == 9, validation if id % 10 == 8,
train otherwise. A split that gets no image is left out of the dataset (reading it is
then a ConfigError naming the split); no image in any split is a DataError.

Features per image: `image` uint8 [H, W, 3] (the file as it is; non-RGB files converted
to RGB), `image/id` int64, `objects`: `bbox` float32 [4] ABSOLUTE pixel
[x, y, x + width, y + height] (clipped to the image), `caption` (Text, the phrase with
surrounding whitespace stripped), `region_id` int64.

Rules: malformed JSON, a missing key (named with the image / region), a non-numeric
box, a region whose image_id differs from its image's id, an image id without an image
file (the id and the folders searched are named) or an unreadable image: one
DataError each (the CLI prints `jaxseg: error: ...` and exits 2). Repairs, counted and
logged once at the end of the build, and kept in `builder.info.metadata["warnings"]`:
`empty_caption` (a phrase without words by `jaxseg.data.vocab.tokenize`: region
dropped), `clipped` (box partly outside the image: clipped to it), `outside_or_empty`
(box wholly outside the image or of zero / negative width or height: dropped),
`not_in_splits` / `missing_from_descriptions` (the split file's mismatches above).
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import os
import sys

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from jaxseg.data import vocab
from jaxseg.data.coco_format import newest_version_dir
from jaxseg.errors import ConfigError, DataError

BUILDER_NAME = "visual_genome"
VERSION = "1.0.0"
DESCRIPTIONS = "region_descriptions.json"
IMAGE_FOLDERS = ("images", "VG_100K", "VG_100K_2")
SPLIT_KEYS = {"train": "train", "val": "validation", "test": "test"}
WARNING_KEYS = ("empty_caption", "clipped", "outside_or_empty", "not_in_splits",
                "missing_from_descriptions")
_REGION_KEYS = ("region_id", "phrase", "x", "y", "width", "height")


def prepare_command() -> str:
  """The one-liner that builds the dataset (for "not prepared" errors)."""
  return ("python -m jaxseg.data.visual_genome --data_dir DATA_DIR --root VG_FOLDER "
          "[--splits densecap_splits.json]")


def split_by_id(image_id: int) -> str:
  """The split of an image without a split file (module docstring)."""
  return {9: "test", 8: "validation"}.get(int(image_id) % 10, "train")


def _is_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _read_json(path: str, what: str):
  try:
    with open(path) as f:
      return json.load(f)
  except OSError as e:
    raise DataError(f"cannot read {what} {path!r}: {e.strerror}") from None
  except ValueError as e:
    raise DataError(f"{what} {path!r} is not valid JSON: {e}") from None


def find_image(root: str, image_id: int) -> str:
  """The file of image `image_id` under root (IMAGE_FOLDERS), or a DataError naming the
  id and the folders searched."""
  folders = [os.path.join(root, f) for f in IMAGE_FOLDERS]
  for folder in folders:
    path = os.path.join(folder, f"{image_id}.jpg")
    if os.path.isfile(path):
      return path
  raise DataError(f"visual_genome: no image file for image id {image_id}: looked for "
                  f"{image_id}.jpg in {folders}")


def _image_size(path: str) -> tuple[int, int]:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as im:
      return im.size  # (width, height)
  except OSError as e:
    raise DataError(f"cannot read image file {path!r}: {e}") from None


def _load_splits(path: str) -> dict[str, set[int]]:
  data = _read_json(path, "split file")
  if not isinstance(data, dict) or not all(k in data for k in SPLIT_KEYS):
    raise DataError(f"split file {path!r}: expected a JSON object with keys "
                    f"{list(SPLIT_KEYS)} (lists of image ids), as DenseCap's "
                    f"densecap_splits.json")
  out = {}
  for key, split in SPLIT_KEYS.items():
    ids = data[key]
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool)
                                            for i in ids):
      raise DataError(f"split file {path!r}: {key!r} is not a list of integer image ids")
    out[split] = set(ids)
  return out


def load_regions(root: str, splits: str | None = None):
  """The checked input: ({split: [(image_id, path, [(region_id, caption, [x1, y1, x2,
  y2]), ...]), ...]}, warning counts). Raises DataError for bad input (module docstring)."""
  path = os.path.join(root, DESCRIPTIONS)
  if not os.path.isfile(path):
    raise DataError(f"visual_genome: {path!r} does not exist; expected VG's "
                    f"{DESCRIPTIONS} in the --root folder")
  data = _read_json(path, "region descriptions")
  if not isinstance(data, list):
    raise DataError(f"region descriptions {path!r}: expected a JSON list of images "
                    f"{{\"id\", \"regions\"}}")
  counts = collections.Counter({k: 0 for k in WARNING_KEYS})
  split_of = None
  if splits is not None:
    split_ids = _load_splits(splits)
    split_of = {i: s for s, ids in split_ids.items() for i in ids}
  out = {s: [] for s in SPLIT_KEYS.values()}
  seen = set()
  for n, entry in enumerate(data):
    where = f"region descriptions {path!r}: image entry {n}"
    if not isinstance(entry, dict):
      raise DataError(f"{where} is not an object")
    for key in ("id", "regions"):
      if key not in entry:
        raise DataError(f"{where} lacks required key {key!r}; expected \"id\" and "
                        f"\"regions\"")
    image_id = entry["id"]
    if not isinstance(image_id, int) or isinstance(image_id, bool):
      raise DataError(f"{where} has id {image_id!r}; expected an integer image id")
    if image_id in seen:
      raise DataError(f"{where}: image id {image_id} appears twice")
    seen.add(image_id)
    where = f"region descriptions {path!r}: image {image_id}"
    if not isinstance(entry["regions"], list):
      raise DataError(f"{where}: \"regions\" is not a list")
    regions = []
    for r, region in enumerate(entry["regions"]):
      if not isinstance(region, dict):
        raise DataError(f"{where}: region {r} is not an object")
      missing = [k for k in _REGION_KEYS if k not in region]
      rid = region.get("region_id", f"at index {r}")
      if missing:
        raise DataError(f"{where}: region {rid} lacks required key(s) {missing}; expected "
                        f"{list(_REGION_KEYS)}")
      if "image_id" in region and region["image_id"] != image_id:
        raise DataError(f"{where}: region {rid} has image_id {region['image_id']!r}; "
                        f"expected {image_id} (the image it is listed under)")
      box = [region[k] for k in ("x", "y", "width", "height")]
      if not all(map(_is_number, box)):
        raise DataError(f"{where}: region {rid} has x, y, width, height {box}; expected "
                        f"finite numbers")
      if not isinstance(region["phrase"], str):
        raise DataError(f"{where}: region {rid} has phrase {region['phrase']!r}; expected "
                        f"a string")
      regions.append((int(region["region_id"]), region["phrase"].strip(), box))
    split = split_by_id(image_id) if split_of is None else split_of.get(image_id)
    if split is None:
      counts["not_in_splits"] += 1
      continue
    out[split].append((image_id, regions))
  if split_of is not None:
    counts["missing_from_descriptions"] = len(set(split_of) - seen)
  # images: every kept id needs a file; boxes checked against the image's size
  result = {}
  for split, images in out.items():
    rows = []
    for image_id, regions in sorted(images):
      image_path = find_image(root, image_id)
      width, height = _image_size(image_path)
      kept = []
      for region_id, caption, (x, y, w, h) in regions:
        if not vocab.tokenize(caption):
          counts["empty_caption"] += 1
          continue
        x1, y1, x2, y2 = x, y, x + w, y + h
        c1, d1 = min(max(x1, 0), width), min(max(y1, 0), height)
        c2, d2 = min(max(x2, 0), width), min(max(y2, 0), height)
        if w <= 0 or h <= 0 or c2 <= c1 or d2 <= d1:
          counts["outside_or_empty"] += 1
          continue
        if (c1, d1, c2, d2) != (x1, y1, x2, y2):
          counts["clipped"] += 1
        kept.append((region_id, caption, [c1, d1, c2, d2]))
      rows.append((image_id, image_path, kept))
    result[split] = rows
  return result, dict(counts)


class VisualGenome(tfds.core.GeneratorBasedBuilder):
  """Visual Genome region descriptions (see the module docstring)."""

  VERSION = tfds.core.Version(VERSION)
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def __init__(self, *, root: str | None = None, splits: str | None = None, **kwargs):
    self._root, self._splits = root, splits
    self._loaded = None
    super().__init__(**kwargs)

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> None:
    """None: no checksums file to find (TFDS only uses this for downloads)."""
    return None

  def _load(self):
    if self._loaded is None:
      if self._root is None:
        raise ConfigError("visual_genome: building needs root= (the folder holding "
                          f"{DESCRIPTIONS} and the images)")
      self._loaded = load_regions(self._root, self._splits)
    return self._loaded

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Visual Genome region descriptions (jaxseg.data.visual_genome).",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
            "image/id": np.int64,
            "objects": tfds.features.Sequence({
                "bbox": tfds.features.Tensor(shape=(4,), dtype=np.float32),
                "caption": tfds.features.Text(),
                "region_id": np.int64,
            }),
        }),
        metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    rows, counts = self._load()
    self.info.metadata["warnings"] = dict(counts)
    self.info.metadata["split_rule"] = ("densecap split file" if self._splits
                                        else "image id % 10: 9 test, 8 validation")
    if not any(rows.values()):
      raise DataError(f"visual_genome: no image of {self._root!r} falls in any split"
                      + (f" of {self._splits!r}" if self._splits else ""))
    # (a split without images is left out: TFDS cannot write an empty split)
    return {split: self._generate_examples(images) for split, images in rows.items()
            if images}

  def _generate_examples(self, images):
    for image_id, path, regions in images:
      yield image_id, {
          "image": _image(path), "image/id": image_id,
          "objects": {
              "bbox": np.array([r[2] for r in regions], np.float32).reshape(-1, 4),
              "caption": [r[1] for r in regions],
              "region_id": np.array([r[0] for r in regions], np.int64),
          }}


_WARNING_TEXT = {
    "empty_caption": "region(s) with an empty caption dropped",
    "clipped": "region box(es) partly outside the image clipped",
    "outside_or_empty": "region(s) wholly outside the image or of zero size dropped",
    "not_in_splits": "image(s) in no split of the split file left out",
    "missing_from_descriptions": "split-file image id(s) without region descriptions "
                                 "skipped",
}


def _image(path: str):
  """The file's path if it is RGB (stored as it is), else its RGB array."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as im:
      return path if im.mode == "RGB" else np.asarray(im.convert("RGB"))
  except OSError as e:
    raise DataError(f"cannot read image file {path!r}: {e}") from None


def build(data_dir: str, root: str, splits: str | None = None,
          overwrite: bool = False) -> str:
  """Builds the dataset in `data_dir` from the VG folder `root` (and DenseCap's split
  file `splits`); returns the dataset's folder. Offline; DataError / ConfigError for bad
  input."""
  if not os.path.isdir(root):
    raise DataError(f"visual_genome: root folder {root!r} does not exist")
  if splits is not None and not os.path.isfile(splits):
    raise DataError(f"visual_genome: split file {splits!r} does not exist")
  os.makedirs(data_dir, exist_ok=True)
  builder = VisualGenome(root=root, splits=splits, data_dir=data_dir)
  download_config = tfds.download.DownloadConfig(
      download_mode=(tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite
                     else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
  builder.download_and_prepare(download_config=download_config)
  counts = (builder.info.metadata or {}).get("warnings", {})
  problems = {k: v for k, v in counts.items() if v}
  if problems:
    logging.warning("visual_genome: %s", ", ".join(
        f"{v} {_WARNING_TEXT.get(k, k)}" for k, v in problems.items()))
  return str(builder.data_dir)


def dataset_dir(data_dir: str | None) -> str:
  """D/visual_genome/<version> of the built dataset, or a DataError saying how to build
  it."""
  found = data_dir and newest_version_dir(os.path.join(data_dir, BUILDER_NAME))
  if not found:
    where = repr(data_dir) if data_dir else "(config.dataset.data_dir is not set)"
    raise DataError(f"dataset 'visual_genome' is not prepared in data_dir {where}; build "
                    f"it first: {prepare_command()}")
  return found


def read_builder(data_dir: str | None):
  """The built dataset as a read-only TFDS builder (no JSON or images needed)."""
  return tfds.builder_from_directory(dataset_dir(data_dir))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m jaxseg.data.visual_genome",
      description="Build a TFDS dataset from Visual Genome's region descriptions.")
  parser.add_argument("--data_dir", required=True, help="TFDS data_dir to write to")
  parser.add_argument("--root", required=True,
                      help=f"folder with {DESCRIPTIONS} and images/ (or VG_100K/, VG_100K_2/)")
  parser.add_argument("--splits", default=None,
                      help="DenseCap's densecap_splits.json (default: split by image id)")
  parser.add_argument("--overwrite", action="store_true", help="rebuild if it exists")
  args = parser.parse_args(argv)
  try:
    path = build(args.data_dir, args.root, args.splits, args.overwrite)
  except (ConfigError, DataError) as e:
    print(f"jaxseg: error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  print(f"built visual_genome in {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
