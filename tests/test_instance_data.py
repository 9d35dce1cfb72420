"""Instance data for Mask / Keypoint R-CNN: the `stick_figures` detection source, OKS
sigmas on sources, and the bad-input rules for masks, polygons and keypoint visibility."""
import json

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from jaxseg.data import coco_format, detection, pipeline, skeleton
from jaxseg.errors import DataError
from jaxseg.metrics.coco import COCO_KEYPOINT_SIGMAS


def _dataset(name, data_dir, image_size=32, num_train=4, num_validation=2):
  return ml_collections.ConfigDict(dict(
      name=name, data_dir=data_dir, image_size=image_size, train_split="", eval_split="",
      generator=dict(num_train=num_train, num_validation=num_validation)))


def _mask_box(mask):
  rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
  return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)


# -- stick_figures as a detection source ---------------------------------------------------
def test_stick_figures_detection_source(tmp_path):
  config = _dataset("stick_figures", str(tmp_path))
  source = detection.get_detection_source("stick_figures", config)
  assert source.class_names == ("background", "person") and source.num_classes == 2
  assert source.provides == ("masks", "keypoints") and source.generated_offline
  assert source.keypoint_names == skeleton.JOINT_NAMES
  assert source.flip_permutation == skeleton.FLIP_PERMUTATION
  assert source.keypoint_sigmas == skeleton.OKS_SIGMAS
  assert source.skeleton == tuple((a, b) for _, a, b in skeleton.SKELETON_EDGES)
  assert source.builder_config(config).name == "s32_n4-2"  # the pose task's config
  ds, n = detection.load_split(config, "train")
  examples = list(tfds.as_numpy(ds))
  assert n == 4 and len(examples) == 4
  for i, ex in enumerate(examples):
    assert ex["image_id"] == i and ex["image"].shape == (32, 32, 3)
    assert ex["labels"].tolist() == [1] and ex["labels"].dtype == np.int32
    assert not ex["is_crowd"].any() and not ex["difficult"].any()
    assert ex["masks"].shape == (1, 32, 32) and ex["masks"].dtype == np.uint8
    np.testing.assert_array_equal(ex["boxes"][0], _mask_box(ex["masks"][0]))
    kp = ex["keypoints"][0]
    assert kp.shape == (14, 3) and set(kp[:, 2].tolist()) <= {1.0, 2.0}
    x1, y1, x2, y2 = ex["boxes"][0]
    assert ((kp[:, 0] >= x1) & (kp[:, 0] <= x2) & (kp[:, 1] >= y1) & (kp[:, 1] <= y2)).all()
  # masks undecoded when not required; the eval split has its own size
  ds, n = detection.load_split(config, "eval", require=("keypoints",))
  (first, _) = list(tfds.as_numpy(ds))
  assert n == 2 and "masks" not in first and first["keypoints"].shape == (1, 14, 3)
  # through the preprocessing and padding, masks and keypoints keep their objects
  ex = {k: tf.constant(v) for k, v in examples[0].items()}
  train = detection.make_train_preprocess(
      64, 3, dict(min_scale=1.0, max_scale=1.0), source.flip_permutation)(
          ex, tf.constant([0, 1], tf.int64))
  evaled = detection.make_eval_preprocess(64, 3)(ex)
  for out in (train, evaled):
    out = {k: np.asarray(v) for k, v in out.items()}
    assert out["masks"].shape == (3, 64, 64) and out["keypoints"].shape == (3, 14, 3)
    assert out["valid"].tolist() == [True, False, False] and out["labels"][0] == 1
    np.testing.assert_array_equal(out["boxes"][0], _mask_box(out["masks"][0]))
    np.testing.assert_allclose(out["keypoints"][0, :, :2], examples[0]["keypoints"][0, :, :2]
                               * 2, rtol=1e-6)
    assert (out["keypoints"][1:] == 0).all() and (out["boxes"][1:] == -1).all()


# -- bad input in the tf pipeline (every source) -------------------------------------------
def _example(masks=None, keypoints=None, boxes=((1, 1, 4, 3),), is_crowd=None):
  boxes = np.asarray(boxes, np.float32)
  n = len(boxes)
  ex = {"image": np.zeros((6, 8, 3), np.uint8), "boxes": boxes,
        "labels": np.ones(n, np.int32), "image_id": np.int64(7),
        "is_crowd": np.zeros(n, bool) if is_crowd is None else np.asarray(is_crowd)}
  if masks is not None:
    ex["masks"] = np.asarray(masks, np.uint8)
  if keypoints is not None:
    ex["keypoints"] = np.asarray(keypoints, np.float32)
  return ex


def _run(example):
  """The example through `load_split`'s checks and the pipeline (errors -> DataError)."""
  ds = tf.data.Dataset.from_tensors(example).map(
      lambda ex: detection._checked(ex, "toy", 2))  # pylint: disable=protected-access
  return list(pipeline.eval_batches(ds, 1, detection.make_eval_preprocess(8, 4), 1,
                                    name="toy"))


def _box_mask(h=6, w=8):
  mask = np.zeros((1, h, w), np.uint8)
  mask[0, 1:3, 1:4] = 1
  return mask


def test_mask_of_another_size_is_an_error():
  assert len(_run(_example(masks=_box_mask()))) == 1  # the right size passes
  with pytest.raises(DataError, match=r"toy: image 7 has masks of shape \[1 6 7\]; expected "
                                      r"\[N, H, W\] = \[1 6 8\]"):
    _run(_example(masks=_box_mask(6, 7)))


def test_empty_mask_with_a_box_is_an_error():
  empty = np.zeros((2, 6, 8), np.uint8)
  empty[0] = _box_mask()[0]
  boxes = ((1, 1, 4, 3), (2, 2, 5, 5))
  with pytest.raises(DataError, match=r"toy: image 7 object 1 has an empty mask \(no pixel "
                                      r"set\) but the box \[2 2 5 5\]"):
    _run(_example(masks=empty, boxes=boxes))
  # crowd regions, and boxes dropped by clipping (wholly outside), may have empty masks
  assert len(_run(_example(masks=empty, boxes=boxes, is_crowd=[False, True]))) == 1
  assert len(_run(_example(masks=empty, boxes=((1, 1, 4, 3), (9, 1, 12, 3))))) == 1


@pytest.mark.parametrize("v", [3.0, -1.0, 0.5, np.nan])
def test_keypoint_visibility_outside_0_1_2_is_an_error(v):
  keypoints = [[[2, 2, 2], [3, 2, 1], [0, 0, 0]]]
  assert len(_run(_example(keypoints=keypoints))) == 1
  keypoints[0][1][2] = v
  with pytest.raises(DataError, match=r"toy: image 7 object 0 has keypoint visibilities "
                                      r"\[2 .* 0\]; expected each 0, 1 or 2"):
    _run(_example(keypoints=keypoints))


# -- bad input in COCO-format JSON ---------------------------------------------------------
def _build(tmp_path, annotations, categories=None, name="bad"):
  folder = tmp_path / "images"
  folder.mkdir(exist_ok=True)
  Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(folder / "img.png")
  data = {"images": [{"id": 10, "file_name": "img.png", "width": 16, "height": 12}],
          "categories": categories or [
              {"id": 3, "name": "person", "keypoints": ["left_eye", "right_eye"]}],
          "annotations": annotations}
  path = tmp_path / f"{name}.json"
  path.write_text(json.dumps(data))
  coco_format.build(name, data_dir=str(tmp_path / "tfds"), images=str(folder),
                    annotations=str(path))
  return ml_collections.ConfigDict(dict(name=f"coco_format/{name}",
                                        data_dir=str(tmp_path / "tfds")))


def _ann(**fields):
  return dict({"id": 5, "image_id": 10, "category_id": 3, "bbox": [2, 1, 6, 4]}, **fields)


@pytest.mark.parametrize("polygon", [[2, 1, 8, 1], [2, 1, 8, 1, 8]])
def test_coco_format_polygon_of_fewer_than_3_points(tmp_path, polygon):
  square = [2, 1, 8, 1, 8, 5, 2, 5]
  with pytest.raises(DataError, match=rf"annotations\[0\] \(id 5\) has segmentation polygon "
                                      rf"1 of {len(polygon)} coordinates; expected at least "
                                      rf"3 \(x, y\) points"):
    _build(tmp_path, [_ann(segmentation=[square, polygon])])


def test_coco_format_rle_of_another_size(tmp_path):
  rle = {"size": [12, 15], "counts": [30, 10, 140]}
  with pytest.raises(DataError, match=r"annotations\[0\] \(id 5\) has an RLE segmentation "
                                      r"of size \[12, 15\]; expected \[12, 16\]"):
    _build(tmp_path, [_ann(segmentation=rle)])


@pytest.mark.parametrize("v", [3, -1, 1.5])
def test_coco_format_keypoint_visibility(tmp_path, v):
  with pytest.raises(DataError, match=rf"annotations\[0\] \(id 5\) has keypoint 1 with "
                                      rf"visibility {v}; expected 0 .*, 1 .* or 2"):
    _build(tmp_path, [_ann(keypoints=[3, 2, 2, 5, 2, v])])


def test_coco_format_empty_mask_with_a_box(tmp_path):
  tiny = [[4.1, 2.1, 4.3, 2.1, 4.3, 2.3]]  # a polygon inside one pixel: no pixel set
  with pytest.raises(DataError, match=r"annotation id 5 has an empty mask \(its "
                                      r"segmentation sets no pixel\) but the bbox"):
    _build(tmp_path, [_ann(segmentation=tiny)])
  # a crowd region may be empty; a box too thin for a pixel centre still gets a pixel
  config = _build(tmp_path, [_ann(segmentation=tiny, iscrowd=1),
                             _ann(id=6, bbox=[4.1, 2.1, 0.2, 3])], name="ok")
  ds, _ = detection.load_split(config, "train")
  (ex,) = list(tfds.as_numpy(ds))
  assert ex["masks"][0].sum() == 0 and ex["masks"][1].sum() == 3
  np.testing.assert_array_equal(_mask_box(ex["masks"][1]), [4, 2, 5, 5])


def test_coco_format_keypoint_sigmas(tmp_path):
  two = [{"id": 3, "name": "person", "keypoints": ["left_eye", "right_eye"],
          "kpt_oks_sigmas": [0.025, 0.025]}]
  config = _build(tmp_path, [_ann()], categories=two, name="two")
  assert detection.get_detection_source(config.name, config).keypoint_sigmas == (.025, .025)
  seventeen = [{"id": 1, "name": "person", "keypoints": [f"k{i}" for i in range(17)]}]
  config = _build(tmp_path, [_ann(category_id=1)], categories=seventeen, name="coco17")
  sigmas = detection.get_detection_source(config.name, config).keypoint_sigmas
  np.testing.assert_allclose(sigmas, COCO_KEYPOINT_SIGMAS)
  config = _build(tmp_path, [_ann()], name="none")
  assert detection.get_detection_source(config.name, config).keypoint_sigmas == ()
  two[0]["kpt_oks_sigmas"] = [0.025]
  with pytest.raises(DataError, match=r"category 3 kpt_oks_sigmas \[0.025\]; expected 2 "
                                      r"positive numbers"):
    _build(tmp_path, [_ann()], categories=two, name="bad_sigmas")
