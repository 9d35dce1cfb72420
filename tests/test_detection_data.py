"""Detection data: sources (shapes, VOC, COCO, COCO-format), box/mask-consistent
preprocessing, padding to max_boxes, and detection pictures."""
import itertools
import json
import logging

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from jaxseg import viz
from jaxseg.data import coco_format, detection, pipeline, shapes
from jaxseg.errors import ConfigError, DataError


def _dataset(name, data_dir=None, image_size=32, **overrides):
  config = ml_collections.ConfigDict(dict(
      name=name, data_dir=data_dir, image_size=image_size, train_split="", eval_split="",
      crowd_max_area=0, generator=dict(num_train=4, num_validation=2, min_objects=2,
                                       max_objects=3, class_probs=None)))
  config.update(overrides)
  return config


def _read(dataset_config, which="eval", require=None):
  ds, n = detection.load_split(dataset_config, which, require)
  return list(tfds.as_numpy(ds)), n


def _mask_box(mask):
  """[x1, y1, x2, y2] of the nonzero pixels of a [H, W] mask."""
  rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
  return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)


def _mock(tfds_name, examples, seen=None):
  """Mock TFDS: `as_dataset` yields `examples` with the catalog builder's real features."""
  signature = tfds.builder(tfds_name).info.features.get_tensor_spec()

  def as_dataset(self, split, **kwargs):
    del kwargs
    if seen is not None:
      seen.append((self.name, self.builder_config and self.builder_config.name, split))
    return tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=signature)
  return tfds.testing.mock_data(as_dataset_fn=as_dataset)


# -- shapes ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("detection_tfds"))


def test_shapes_boxes_labels_masks(shapes_dir):
  config = _dataset("shapes", shapes_dir)
  source = detection.get_detection_source("shapes", config)
  assert source.class_names == shapes.CLASS_NAMES and source.num_classes == 4
  examples, n = _read(config, "train")
  assert n == 4 and len(examples) == 4
  for i, ex in enumerate(examples):
    k = len(ex["labels"])
    assert 2 <= k <= 3 and ex["image_id"] == i and ex["image"].dtype == np.uint8
    assert ex["boxes"].dtype == np.float32 and ex["labels"].dtype == np.int32
    assert ex["masks"].shape == (k, 32, 32) and ex["masks"].dtype == np.uint8
    assert set(ex["labels"]) <= {1, 2, 3} and not ex["is_crowd"].any()
    assert not ex["difficult"].any()
    for box, mask in zip(ex["boxes"], ex["masks"]):
      np.testing.assert_array_equal(box, _mask_box(mask))
    assert ex["masks"].sum(0).max() == 1  # instances do not overlap
  # crowd regions derived from the visible area; masks skipped when not required
  crowd = _dataset("shapes", shapes_dir, crowd_max_area=10**6)
  read, _ = _read(crowd, "train", require=())
  assert all(ex["is_crowd"].all() for ex in read) and "masks" not in read[0]


def test_shapes_batches_through_the_pipeline(shapes_dir):
  config = _dataset("shapes", shapes_dir)
  ds, n = detection.load_split(config, "train")
  augment = dict(flip=True, min_scale=0.8, max_scale=1.25)
  preprocess = detection.make_train_preprocess(24, 4, augment, name="shapes")
  batches = list(itertools.islice(pipeline.train_batches(ds, n, preprocess, 2, seed=0), 3))
  for batch in batches:
    assert batch["image"].shape == (2, 24, 24, 3) and batch["boxes"].shape == (2, 4, 4)
    assert batch["masks"].shape == (2, 4, 24, 24) and batch["valid"].dtype == bool
    for boxes, masks, valid in zip(batch["boxes"], batch["masks"], batch["valid"]):
      assert np.all(boxes[~valid] == -1) and np.all(masks[~valid] == 0)
      assert np.all(boxes[valid][:, 2:] > boxes[valid][:, :2])
  ev = list(pipeline.eval_batches(*detection.load_split(config, "eval"),
                                  detection.make_eval_preprocess(16, 4), 2))
  assert len(ev) == 1 and ev[0]["scale_xy"].tolist() == [[0.5, 0.5]] * 2
  assert ev[0]["orig_size"].tolist() == [[32, 32]] * 2


# -- catalog datasets (mocked: never downloaded) ------------------------------------------
def _voc_example(h, w, objects, filename="000005.jpg"):
  """A VOC example from xml boxes (1-based inclusive xmin, ymin, xmax, ymax), normalized
  as TFDS does; `objects`: (label, box, difficult)."""
  bbox = np.array([[b[1] / h, b[0] / w, b[3] / h, b[2] / w] for _, b, _ in objects],
                  np.float32).reshape(-1, 4)
  n = len(objects)
  return {"image": np.zeros((h, w, 3), np.uint8), "image/filename": filename,
          "objects": {"label": np.array([l for l, _, _ in objects], np.int64), "bbox": bbox,
                      "pose": np.zeros(n, np.int64), "is_truncated": np.zeros(n, bool),
                      "is_difficult": np.array([d for _, _, d in objects], bool)},
          "labels": np.zeros(0, np.int64), "labels_no_difficult": np.zeros(0, np.int64)}


def test_voc_boxes_labels_difficult_and_splits(tmp_path):
  examples = [
      _voc_example(20, 40, [(14, (5, 3, 20, 10), False),   # -> [4, 2, 20, 10], person
                            (0, (30, 1, 45, 20), True),    # x2 = 45 > 40: clipped
                            (2, (1, 1, 1, 1), False)],     # one pixel [0, 0, 1, 1]
                   "2008_000008.jpg"),
      _voc_example(10, 10, []),                            # no objects
  ]
  seen = []
  with _mock("voc/2007", examples, seen):
    config = _dataset("voc/2007", str(tmp_path))
    source = detection.get_detection_source("voc/2007", config)
    assert source.num_classes == 21 and source.class_names[15] == "person"
    (a, b), n = _read(config, "train")
    assert seen[-1] == ("voc", "2007", "train+validation") and n == 2
    _read(config, "eval")
    assert seen[-1][2] == "test"
  np.testing.assert_allclose(a["boxes"], [[4, 2, 20, 10], [29, 0, 40, 20], [0, 0, 1, 1]],
                             atol=1e-4)
  assert a["labels"].tolist() == [15, 1, 3] and a["difficult"].tolist() == [False, True, False]
  assert a["image_id"] == 2008000008 and not a["is_crowd"].any() and "masks" not in a
  assert b["boxes"].shape == (0, 4) and b["image_id"] == 5
  padded = detection.make_eval_preprocess(10, 4)(b)
  assert not padded["valid"].numpy().any()
  with _mock("voc/2012", examples, seen):
    _read(_dataset("voc/2012", str(tmp_path)), "eval")
    assert seen[-1] == ("voc", "2012", "validation")


def _coco_example(h, w, image_id, boxes_xywh, labels, crowd):
  bbox = np.array([[y / h, x / w, (y + bh) / h, (x + bw) / w] for x, y, bw, bh in boxes_xywh],
                  np.float32).reshape(-1, 4)
  n = len(labels)
  return {"image": np.zeros((h, w, 3), np.uint8), "image/filename": f"{image_id:012d}.jpg",
          "image/id": np.int64(image_id),
          "objects": {"id": np.arange(n, dtype=np.int64), "area": np.zeros(n, np.int64),
                      "bbox": bbox, "label": np.array(labels, np.int64),
                      "is_crowd": np.array(crowd, bool)}}


def test_coco_boxes_crowd_ids(tmp_path):
  examples = [_coco_example(16, 32, 139, [(2, 3, 10, 5), (0, 0, 32, 16), (40, 0, 4, 4)],
                            [0, 79, 5], [False, True, False])]
  seen = []
  with _mock("coco/2017", examples, seen):
    config = _dataset("coco/2017", str(tmp_path))
    source = detection.get_detection_source("coco/2017", config)
    assert source.num_classes == 81 and source.category_ids[-1] == 90
    assert source.class_names[1] == "person" and "masks" not in source.provides
    (ex,), _ = _read(config, "train")
  assert seen[-1] == ("coco", "2017", "train")
  # the third box lies wholly outside the 32-wide image: empty after clipping, dropped
  np.testing.assert_allclose(ex["boxes"], [[2, 3, 12, 8], [0, 0, 32, 16]], atol=1e-4)
  assert ex["labels"].tolist() == [1, 80] and ex["is_crowd"].tolist() == [False, True]
  assert ex["image_id"] == 139


@pytest.mark.parametrize("objects, message", [
    ([(3, (8, 4, 5, 9), False)], r"voc/2007: object 0 has a degenerate box"),  # x2 < x1
    ([(3, (2, 2, 5, 5), False), (3, (2, 9, 5, 4), False)], r"object 1 has a degenerate"),
    ([(20, (2, 2, 5, 5), False)], r"voc/2007: label 21 outside 1\.\.20"),
])
def test_bad_catalog_example_is_a_data_error(tmp_path, objects, message):
  with _mock("voc/2007", [_voc_example(10, 10, objects)]):
    ds, n = detection.load_split(_dataset("voc/2007", str(tmp_path)), "eval")
    with pytest.raises(DataError, match=message):
      list(pipeline.eval_batches(ds, n, detection.make_eval_preprocess(8, 4), 1,
                                 name="voc/2007"))


def test_catalog_needs_a_prepared_data_dir(tmp_path):
  with pytest.raises(DataError, match=r"'voc/2007' needs config.dataset.data_dir.*tfds build"):
    detection.load_split(_dataset("voc/2007", None), "train")
  with pytest.raises(DataError, match=r"'coco/2017' split 'validation' is not prepared.*"
                                      r"tfds build coco/2017"):
    detection.load_split(_dataset("coco/2017", str(tmp_path)), "eval")
  with pytest.raises(DataError, match=r"'mine' is not prepared.*python -m "
                                      r"jaxseg.data.coco_format --name mine"):
    detection.get_detection_source("coco_format/mine", _dataset("x", str(tmp_path)))
  with pytest.raises(ConfigError, match="unknown detection dataset 'kitti'"):
    detection.get_detection_source("kitti")
  with pytest.raises(ConfigError, match=r"provides \[\]; the task needs \['masks'\]"):
    detection.check_provides(detection.get_detection_source("coco/2017"), ("masks",))


# -- COCO-format builder ---------------------------------------------------------------------
KEYPOINTS = ["nose", "left_eye", "right_eye"]


def _write_coco(tmp_path, sizes=((12, 16), (8, 8)), annotations=None, edit=None,
                name="train.json"):
  """PNG images img{i}.png of `sizes` (H, W) and an instances JSON for them."""
  folder = tmp_path / "images"
  folder.mkdir(exist_ok=True)
  for i, (h, w) in enumerate(sizes):
    Image.fromarray(np.full((h, w, 3), 40 * i, np.uint8)).save(folder / f"img{i}.png")
  data = {
      "images": [{"id": 10 + i, "file_name": f"img{i}.png", "width": w, "height": h}
                 for i, (h, w) in enumerate(sizes)],
      "categories": [{"id": 7, "name": "cat"},
                     {"id": 3, "name": "person", "keypoints": KEYPOINTS,
                      "skeleton": [[1, 2], [1, 3]]}],
      "annotations": annotations if annotations is not None else [
          {"id": 1, "image_id": 10, "category_id": 7, "bbox": [2, 1, 6, 4], "iscrowd": 0},
          {"id": 2, "image_id": 10, "category_id": 3, "bbox": [8, 0, 8, 12], "iscrowd": 1,
           "keypoints": [10, 2, 2, 9, 3, 1, 0, 0, 0]},
          {"id": 3, "image_id": 10, "category_id": 3, "bbox": [1, 1, 0, 5]},  # w = 0
      ],
  }
  if edit:
    edit(data)
  path = tmp_path / name
  path.write_text(json.dumps(data))
  return str(folder), str(path)


def test_coco_format_build_and_read(tmp_path, caplog):
  images, annotations = _write_coco(tmp_path)
  data_dir = str(tmp_path / "tfds")
  with caplog.at_level(logging.WARNING):
    assert coco_format.main(["--name", "toy", "--data_dir", data_dir, "--images", images,
                             "--annotations", f"train={annotations}",
                             "--annotations", f"validation={annotations}"]) == 0
  assert "dropped 1 annotation(s) with a zero-width or zero-height bbox" in caplog.text
  config = _dataset("coco_format/toy", data_dir)
  source = detection.get_detection_source("coco_format/toy", config)
  # labels: contiguous in increasing category id (3 person -> 1, 7 cat -> 2)
  assert source.class_names == ("background", "person", "cat")
  assert source.category_ids == (3, 7) and source.keypoint_names == tuple(KEYPOINTS)
  assert source.flip_permutation == (0, 2, 1) and source.skeleton == ((0, 1), (0, 2))
  assert source.provides == ("keypoints",)
  (a, b), n = _read(config, "train")
  assert n == 2 and a["image_id"] == 10 and b["image_id"] == 11
  np.testing.assert_allclose(a["boxes"], [[2, 1, 8, 5], [8, 0, 16, 12]])
  assert a["labels"].tolist() == [2, 1] and a["is_crowd"].tolist() == [False, True]
  # (pixel indices of the JSON + 0.5: pixel centres in continuous coordinates)
  np.testing.assert_array_equal(a["keypoints"][1], [[10.5, 2.5, 2], [9.5, 3.5, 1], [0, 0, 0]])
  np.testing.assert_array_equal(a["keypoints"][0], np.zeros((3, 3)))
  assert b["boxes"].shape == (0, 4) and b["image"].shape == (8, 8, 3)
  np.testing.assert_array_equal(b["image"], np.full((8, 8, 3), 40, np.uint8))
  _, n_eval = _read(config, "eval")
  assert n_eval == 2
  # the keypoints flip with the source's permutation (left_eye <-> right_eye)
  pre = detection.make_train_preprocess(16, 4, dict(flip=True), source.flip_permutation)
  flips = [pre(a, tf.constant([0, i], tf.int64)) for i in range(6)]
  flipped = [f for f in flips if f["boxes"].numpy()[0, 0] == 16 - 8]
  assert flipped and len(flipped) < len(flips)
  kp = flipped[0]["keypoints"].numpy()[1]
  # pixel 10 (centre 10.5) of a 16-wide image flips to pixel 5 (centre 5.5)
  np.testing.assert_array_equal(kp, [[5.5, 2.5, 2], [0, 0, 0], [6.5, 3.5, 1]])


def _drop(key, section="annotations", index=0):
  return lambda data: data[section][index].pop(key)


def _set(key, value, section="annotations", index=0):
  return lambda data: data[section][index].__setitem__(key, value)


@pytest.mark.parametrize("edit, message", [
    (_set("image_id", 99), r"annotations\[0\] \(id 1\) has image_id 99, which is not in "
                           r"images"),
    (_set("category_id", 5), r"category_id 5; expected one of \[3, 7\]"),
    (_set("bbox", [1, 2, 3]), r"bbox \[1, 2, 3\]; expected 4 finite numbers"),
    (_set("bbox", [1, 2, -3, 4]), r"negative width or height"),
    (_drop("bbox"), r"lacks required key\(s\) \['bbox'\]"),
    (_drop("file_name", "images"), r"images\[0\] \(id 10\) lacks required key\(s\) "
                                   r"\['file_name'\]"),
    (lambda d: d.pop("categories"), r"missing required key 'categories'"),
    (_set("keypoints", [1, 2]), r"has 2 keypoint values; expected 9"),
    (_set("file_name", "nope.png", "images"), r"image file .*nope.png.* does not exist"),
    (_set("width", 20, "images"), r"is 16 x 12 \(width x height\); .* says 20 x 12"),
])
def test_coco_format_validation_errors(tmp_path, edit, message):
  images, annotations = _write_coco(tmp_path, sizes=((12, 16),), edit=edit)
  with pytest.raises(DataError, match=message):
    coco_format.build("bad", data_dir=str(tmp_path / "tfds"), images=images,
                      annotations=annotations)


def test_coco_format_cli_error_is_one_line(tmp_path, capsys):
  images, annotations = _write_coco(tmp_path, edit=_set("category_id", 5))
  assert coco_format.main(["--name", "bad", "--data_dir", str(tmp_path), "--images", images,
                           "--annotations", annotations]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("jaxseg: error: ") and "category_id 5" in err and "\n" not in err


def test_coco_format_masks_from_polygons_and_rle(tmp_path):
  masks_module = pytest.importorskip("jaxseg.metrics.masks")
  rle = masks_module.encode(np.pad(np.ones((2, 3), np.uint8), ((4, 6), (5, 8))))
  rle = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}  # as in COCO JSON
  uncompressed = {"size": [12, 16], "counts": [12 * 3 + 2, 10, 12 * 16 - 48]}  # col 3, rows 2..11
  anns = [
      {"id": 1, "image_id": 10, "category_id": 7, "bbox": [2, 1, 6, 4],
       "segmentation": [[2, 1, 8, 1, 8, 5, 2, 5]]},           # polygon: the box
      {"id": 2, "image_id": 10, "category_id": 7, "bbox": [5, 4, 3, 2], "iscrowd": 1,
       "segmentation": rle},                                  # RLE
      {"id": 3, "image_id": 10, "category_id": 3, "bbox": [0, 8, 4, 4]},  # none: the box
      {"id": 4, "image_id": 10, "category_id": 3, "bbox": [3, 2, 1, 10], "iscrowd": 1,
       "segmentation": uncompressed},
  ]
  images, annotations = _write_coco(tmp_path, sizes=((12, 16),), annotations=anns)
  coco_format.build("masked", data_dir=str(tmp_path / "tfds"), images=images,
                    annotations=annotations)
  (ex,), _ = _read(_dataset("coco_format/masked", str(tmp_path / "tfds")), "train")
  assert ex["masks"].shape == (4, 12, 16)
  assert ex["is_crowd"].tolist() == [False, True, False, True]
  np.testing.assert_array_equal(_mask_box(ex["masks"][3]), [3, 2, 4, 12])
  assert ex["masks"][3].sum() == 10
  np.testing.assert_array_equal(_mask_box(ex["masks"][1]), [5, 4, 8, 6])
  assert ex["masks"][1].sum() == 6
  np.testing.assert_array_equal(_mask_box(ex["masks"][2]), [0, 8, 4, 12])
  assert abs(int(ex["masks"][0].sum()) - 24) <= 10  # the 6 x 4 polygon, up to its edge


# -- preprocessing ---------------------------------------------------------------------------
def _rects(h, w, rects, keypoints=None):
  """An example with rectangular objects (rows r0..r1, cols c0..c1, inclusive): masks,
  boxes = the masks' extents, labels 1, 2, ...; the image holds the mask ids."""
  masks = np.zeros((len(rects), h, w), np.uint8)
  for k, (r0, r1, c0, c1) in enumerate(rects):
    masks[k, r0:r1 + 1, c0:c1 + 1] = 1
  boxes = np.array([[c0, r0, c1 + 1, r1 + 1] for r0, r1, c0, c1 in rects],
                   np.float32).reshape(-1, 4)
  image = np.repeat((masks * (np.arange(len(rects)) + 1)[:, None, None] * 40).max(
      0, initial=0)[..., None], 3, -1).astype(np.uint8)
  n = len(rects)
  ex = {"image": image, "boxes": boxes, "labels": np.arange(1, n + 1, dtype=np.int32),
        "is_crowd": np.zeros(n, bool), "difficult": np.zeros(n, bool), "masks": masks,
        "image_id": np.int64(3)}
  if keypoints is not None:
    ex["keypoints"] = np.asarray(keypoints, np.float32)
  return ex


def _np(ex):
  return {k: np.asarray(v) for k, v in ex.items()}


def _consistent(out):
  """Every valid object's box equals the box of its mask."""
  valid = out["valid"]
  assert valid.any()
  for box, mask in zip(out["boxes"][valid], out["masks"][valid]):
    np.testing.assert_array_equal(box, _mask_box(mask))


def test_flip_keeps_boxes_masks_and_keypoints_together():
  kp = np.array([[[3.5, 2.5, 2], [5.5, 2.5, 1], [0, 0, 0]]] * 2, np.float32)
  ex = _rects(8, 12, [(1, 3, 2, 6), (4, 7, 9, 11)], keypoints=kp)
  ex = dict(ex, image=ex["image"].astype(np.float32))
  out = _np(detection.flip_left_right(ex, (0, 2, 1)))
  np.testing.assert_array_equal(out["boxes"], [[12 - 7, 1, 12 - 2, 4], [0, 4, 3, 8]])
  for box, mask in zip(out["boxes"], out["masks"]):
    np.testing.assert_array_equal(box, _mask_box(mask))
  np.testing.assert_array_equal(out["keypoints"][0], [[8.5, 2.5, 2], [0, 0, 0], [6.5, 2.5, 1]])
  twice = _np(detection.flip_left_right(out, (0, 2, 1)))
  for key in ("image", "boxes", "masks", "keypoints"):
    np.testing.assert_array_equal(twice[key], ex[key])
  with pytest.raises(ConfigError, match="needs a flip_permutation"):
    detection.flip_left_right(ex)


@pytest.mark.parametrize("hw, rects, size, resize, scale_xy", [
    ((16, 8), [(2, 5, 1, 4), (10, 15, 4, 7)], 32, "letterbox", (2, 2)),   # 2x, pad right
    ((16, 8), [(2, 5, 1, 4), (10, 15, 4, 7)], 32, "stretch", (4, 2)),     # 4x / 2x
    ((64, 64), [(2, 9, 4, 15), (40, 63, 0, 31)], 32, "letterbox", (0.5, 0.5)),  # 1/2
])
def test_eval_resize_keeps_boxes_and_masks_consistent(hw, rects, size, resize, scale_xy):
  ex = _rects(*hw, rects)
  out = _np(detection.make_eval_preprocess(size, 4, resize=resize)(ex))
  assert out["image"].shape == (size, size, 3) and out["masks"].shape == (4, size, size)
  np.testing.assert_allclose(out["scale_xy"], scale_xy)
  assert out["orig_size"].tolist() == list(hw) and out["image_id"] == 3
  np.testing.assert_allclose(out["boxes"][:2], ex["boxes"] * np.tile(scale_xy, 2))
  _consistent(out)
  assert out["valid"].tolist() == [True, True, False, False]
  if resize == "letterbox" and hw == (16, 8):
    assert np.all(out["image"][:, 16:] == 0)  # padding right


def test_train_crop_clips_and_drops_boxes_with_their_masks():
  # 40 x 40 at scale 1.25 of 32: no resampling, an 8-pixel crop range per axis
  ex = _rects(40, 40, [(0, 39, 0, 39),     # the whole image: always clipped to the crop
                       (10, 20, 10, 20),   # always inside
                       (0, 5, 0, 5),       # [0, 6]: cut away when an offset is >= 6
                       (34, 39, 34, 39)])  # [34, 40]: cut away when an offset is <= 2
  augment = dict(flip=True, min_scale=1.25, max_scale=1.25)
  preprocess = detection.make_train_preprocess(32, 4, augment)
  flips, offsets = set(), set()
  for i in range(12):
    out = _np(preprocess(ex, tf.constant([5, i], tf.int64)))
    _consistent(out)
    valid = out["valid"]
    # the image moved with the masks: it still holds 40 * label on each object's pixels
    painted = (out["masks"][valid] * out["labels"][valid][:, None, None] * 40).max(0)
    np.testing.assert_allclose(out["image"][..., 0] * 255, painted, atol=1e-3)
    # object 2's box [10, 10, 21, 21] gives the crop offset (ox, oy) and the flip:
    # x1 = 10 - ox (2..10) unflipped, 32 - (21 - ox) = 11 + ox (11..19) flipped
    x1, y1 = out["boxes"][1, :2]
    flip = bool(x1 >= 11)
    ox, oy = (x1 - 11 if flip else 10 - x1), 10 - y1
    assert 0 <= ox <= 8 and 0 <= oy <= 8
    flips.add(flip)
    offsets.add((float(ox), float(oy)))
    expected = [1, 2] + [3] * bool(ox < 6 and oy < 6) + [4] * bool(ox > 2 and oy > 2)
    assert out["labels"][valid].tolist() == expected, (ox, oy)
    assert np.all(out["boxes"][0] == [0, 0, 32, 32])
  assert flips == {False, True} and len(offsets) > 4
  # min_visible_fraction: the whole-image box keeps (32/40)^2 = 0.64 of its area
  strict = detection.make_train_preprocess(32, 4, dict(augment, min_visible_fraction=0.7))
  out = _np(strict(ex, tf.constant([5, 0], tf.int64)))
  assert 1 not in out["labels"][out["valid"]].tolist()


def test_train_is_deterministic_and_consistent_with_jitter_and_flip():
  ex = _rects(16, 16, [(2, 9, 4, 11), (12, 15, 0, 7)])
  preprocess = detection.make_train_preprocess(
      16, 3, dict(flip=True, min_scale=1.0, max_scale=2.0))
  for i in range(8):
    seed = tf.constant([1, i], tf.int64)
    out, again = _np(preprocess(ex, seed)), _np(preprocess(ex, seed))
    for key in out:
      np.testing.assert_array_equal(out[key], again[key])
    valid = out["valid"]
    for box, mask in zip(out["boxes"][valid], out["masks"][valid]):
      # non-integer scales: the thresholded mask's extent is within a pixel of the box
      np.testing.assert_allclose(box, _mask_box(mask), atol=1.0)
  assert out["image"].dtype == np.float32 and out["image"].max() <= 1


def test_padding_and_the_max_boxes_rule(caplog):
  rects = [(0, 1, 0, 1), (0, 5, 0, 5), (10, 11, 10, 11), (4, 12, 4, 12), (14, 17, 14, 17)]
  ex = _rects(20, 20, rects)  # box areas 4, 36, 4, 81, 16
  preprocess = detection.make_eval_preprocess(20, 3, name="many_boxes",
                                              overflow="keep_largest")
  with caplog.at_level(logging.WARNING):
    outs = [_np(preprocess(ex)) for _ in range(3)]
  # the 3 largest (labels 2, 4, 5), in their original order
  assert outs[0]["labels"].tolist() == [2, 4, 5] and outs[0]["valid"].all()
  assert outs[0]["num_objects"] == 5
  warnings = [r for r in caplog.records if "more than max_boxes=3" in r.getMessage()]
  assert len(warnings) == 1 and "many_boxes" in warnings[0].getMessage()
  # the default: no warning; the count travels so the task refuses the example
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    strict = _np(detection.make_eval_preprocess(20, 3, name="strict")(ex))
  assert strict["num_objects"] == 5 and not caplog.records
  with pytest.raises(ConfigError, match="max_boxes_overflow='drop'"):
    detection.make_eval_preprocess(20, 3, overflow="drop")(ex)
  few = _np(detection.make_eval_preprocess(20, 6, name="few")(ex))
  assert few["labels"].tolist() == [1, 2, 3, 4, 5, -1]
  assert few["valid"].tolist() == [True] * 5 + [False]
  np.testing.assert_array_equal(few["boxes"][5], [-1, -1, -1, -1])
  assert few["masks"][5].max() == 0 and not few["is_crowd"][5]
  empty = _np(detection.pad_objects(
      {k: (v[:0] if k in detection.OBJECT_KEYS else v) for k, v in ex.items()}, 2))
  assert empty["valid"].tolist() == [False, False] and empty["labels"].tolist() == [-1, -1]
  assert empty["masks"].shape == (2, 20, 20)
  with pytest.raises(ConfigError, match="max_boxes=0"):
    detection.pad_objects(ex, 0)
  with pytest.raises(ConfigError, match="resize='crop'"):
    detection.make_eval_preprocess(8, 2, resize="crop")


# -- pictures ----------------------------------------------------------------------------------
def test_draw_detections_mask_overlay_colours_exactly_the_mask_pixels():
  image = np.full((40, 48, 3), 100, np.uint8)
  boxes = np.array([[10, 16, 40, 38], [-1, -1, -1, -1]], np.float32)
  masks = np.zeros((2, 40, 48), np.uint8)
  masks[0, 20:30, 15:25] = 1
  masks[1] = 1  # a padded row: never drawn
  labels = np.array([1, -1])
  plain = viz.draw_detections(image, boxes, labels, scores=[0.9, 0.0],
                              class_names=("background", "cat"))
  over = viz.draw_detections(image, boxes, labels, scores=[0.9, 0.0],
                             class_names=("background", "cat"), masks=masks, mask_alpha=0.5)
  changed = np.any(over != plain, axis=-1)
  np.testing.assert_array_equal(changed, masks[0] > 0)
  colour = viz.palette(2)[1].astype(np.float32)
  np.testing.assert_array_equal(over[25, 20], np.rint(0.5 * 100 + 0.5 * colour))
  # the outline and the text were drawn; nothing else changed
  assert np.any(plain != image) and np.all(plain[:, :8] == image[:, :8])
  assert np.all(viz.draw_detections(image, boxes[1:], labels[1:], masks=masks[1:]) == image)
  # the score threshold hides the row
  hidden = viz.draw_detections(image, boxes[:1], [1], scores=[0.2], score_threshold=0.5)
  assert np.all(hidden == image)


def test_draw_detections_keypoints_and_scale():
  image = np.zeros((16, 16, 3), np.uint8)
  keypoints = np.array([[[4.5, 4.5, 2], [12.5, 12.5, 2], [0, 0, 0]]], np.float32)
  out = viz.draw_detections(image, np.full((1, 4), -1, np.float32), [2],
                            keypoints=keypoints, keypoint_edges=[(0, 1)], scale=2)
  assert out.shape == (32, 32, 3)
  colour = viz.palette(3)[2]
  np.testing.assert_array_equal(out[9, 9], colour)     # keypoint 0 at (9, 9) after 2x
  np.testing.assert_array_equal(out[16, 16], colour)   # on the edge between them
  assert np.all(out[2, 28] == 0)
