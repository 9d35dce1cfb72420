"""jaxseg.metrics.coco against pycocotools' COCOeval (the reference, used by tests only):
every stat, the precision / recall / scores arrays (to 1e-6) and the summary text, on
random sets and on each rule of COCO's detection and keypoint evaluation; the CLI; one
clear error per kind of malformed input."""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from jaxseg.errors import ConfigError, DataError
from jaxseg.metrics import coco

pycocotools = pytest.importorskip("pycocotools")
from pycocotools import mask as mask_utils  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

_REF_PARAMS = {"max_dets": "maxDets", "use_cats": "useCats", "iou_thrs": "iouThrs",
               "rec_thrs": "recThrs", "kpt_oks_sigmas": "kpt_oks_sigmas",
               "area_rng": "areaRng", "area_rng_lbl": "areaRngLbl"}


def reference(gt, dt, iou_type, **params):
  """COCOeval evaluate + accumulate + summarize (quiet); returns it and the summary text."""
  with contextlib.redirect_stdout(io.StringIO()):
    ground = COCO()
    ground.dataset = copy.deepcopy(gt)
    ground.createIndex()
    e = COCOeval(ground, ground.loadRes(copy.deepcopy(dt)), iou_type)
    for key, value in params.items():
      setattr(e.params, _REF_PARAMS[key], np.asarray(value) if key in (
          "iou_thrs", "rec_thrs", "kpt_oks_sigmas") else value)
    e.evaluate()
    e.accumulate()
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
      e.summarize()
  return e, text.getvalue()


def assert_same(gt, dt, iou_type="bbox", **params):
  """jaxseg's result equals COCOeval's: arrays and stats to 1e-6, summary text exactly."""
  result = coco.evaluate(gt, dt, iou_type, **params)
  ref, text = reference(gt, dt, iou_type, **params)
  for name in ("precision", "recall", "scores"):
    ours, theirs = getattr(result, name), ref.eval[name]
    assert ours.shape == theirs.shape, name
    np.testing.assert_allclose(ours, theirs, atol=1e-6, rtol=0, err_msg=name)
  np.testing.assert_allclose(result.stats, ref.stats, atol=1e-6, rtol=0)
  assert result.summary() + "\n" == text
  return result


# ------------------------------------------------------------------------ data sets


def random_boxes(seed, num_images=30, num_cats=8, gts=6.0, dets=20, crowd=0.1,
                 ties=False, empty_images=0):
  """Boxes of log-uniform size (all area ranges), ``area`` != box area, crowds,
  detections = jittered ground truths (10% wrong class) + background boxes."""
  rng = np.random.default_rng(seed)
  cats = [{"id": 3 * c + 1, "name": f"c{c}"} for c in range(num_cats)]
  images, anns, out = [], [], []
  for i in range(num_images + empty_images):
    w_img, h_img = int(rng.integers(200, 800)), int(rng.integers(200, 800))
    iid = 7 * i + 2
    images.append({"id": iid, "width": w_img, "height": h_img})
    if i >= num_images:
      continue
    objects = []
    for _ in range(int(rng.poisson(gts))):
      s = float(np.exp(rng.uniform(np.log(3), np.log(400))))
      box = [rng.uniform(0, w_img - 1), rng.uniform(0, h_img - 1),
             s * rng.uniform(0.5, 1.5), s * rng.uniform(0.5, 1.5)]
      c = cats[int(rng.integers(num_cats))]["id"]
      anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": c, "bbox": box,
                   "area": box[2] * box[3] * rng.uniform(0.6, 1.0),
                   "iscrowd": int(rng.random() < crowd)})
      objects.append((box, c))
    for _ in range(int(rng.poisson(dets))):
      if objects and rng.random() < 0.7:
        box, c = objects[int(rng.integers(len(objects)))]
        jit = rng.normal(0, 0.1, 4) * [box[2], box[3], box[2], box[3]]
        box = [box[0] + jit[0], box[1] + jit[1], max(box[2] + jit[2], 1),
               max(box[3] + jit[3], 1)]
        if rng.random() < 0.1:
          c = cats[int(rng.integers(num_cats))]["id"]
      else:
        s = float(np.exp(rng.uniform(np.log(3), np.log(400))))
        box = [rng.uniform(0, w_img), rng.uniform(0, h_img), s, s * rng.uniform(.5, 2)]
        c = cats[int(rng.integers(num_cats))]["id"]
      score = float(rng.random())
      out.append({"image_id": iid, "category_id": c, "bbox": [float(v) for v in box],
                  "score": round(score, 1) if ties else score})
  return {"images": images, "annotations": anns, "categories": cats}, out


def random_people(seed, num_images=30, k=17, people=4.0, dets=10, box_in_dt=False):
  """Keypoint ground truth (some with num_keypoints = 0, some crowds) and detections."""
  rng = np.random.default_rng(seed)
  images, anns, out = [], [], []
  for i in range(num_images):
    images.append({"id": i + 1, "width": 640, "height": 480})
    truth = []
    for _ in range(int(rng.poisson(people))):
      s = float(np.exp(rng.uniform(np.log(10), np.log(300))))
      x, y = rng.uniform(0, 600), rng.uniform(0, 400)
      kx, ky = x + rng.uniform(0, s, k), y + rng.uniform(0, s, k)
      v = rng.choice([0, 1, 2], k, p=[.3, .2, .5])
      if rng.random() < 0.15:
        v[:] = 0
      kp = np.round(np.stack([kx * (v > 0), ky * (v > 0), v], 1)).astype(int)
      anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1,
                   "bbox": [x, y, s, s], "area": s * s * rng.uniform(.3, .9),
                   "iscrowd": int(rng.random() < .05), "keypoints": kp.ravel().tolist(),
                   "num_keypoints": int((v > 0).sum())})
      truth.append((kx, ky, s))
    for _ in range(int(rng.poisson(dets))):
      if truth and rng.random() < .8:
        kx, ky, s = truth[int(rng.integers(len(truth)))]
        dx, dy = kx + rng.normal(0, s * .05, k), ky + rng.normal(0, s * .05, k)
      else:
        x, y, s = rng.uniform(0, 600), rng.uniform(0, 400), rng.uniform(10, 200)
        dx, dy = x + rng.uniform(0, s, k), y + rng.uniform(0, s, k)
      d = {"image_id": i + 1, "category_id": 1, "score": float(rng.random()),
           "keypoints": np.stack([dx, dy, np.ones(k)], 1).ravel().tolist()}
      if box_in_dt:
        d["bbox"] = [float(dx.min()), float(dy.min()), float(np.ptp(dx)) * 1.3,
                     float(np.ptp(dy)) * 1.3]
      out.append(d)
  return {"images": images, "annotations": anns,
          "categories": [{"id": 1, "name": "person"}]}, out


def _polygon(rng, x, y, w, h, jitter=0.2):
  ang = np.linspace(0, 2 * np.pi, 8, endpoint=False)
  r = 1 + rng.uniform(-jitter, jitter, 8)
  return np.stack([x + w / 2 * (1 + r * np.cos(ang)), y + h / 2 * (1 + r * np.sin(ang))],
                  1).ravel().tolist()


def _rle_string(polys, h, w):
  rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
  rle["counts"] = rle["counts"].decode("ascii")
  return rle


def _uncompressed(polys, h, w):
  flat = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, h, w)))
  flat = flat.ravel(order="F")
  change = np.flatnonzero(np.diff(flat)) + 1
  runs = np.diff(np.r_[0, change, len(flat)]).tolist()
  return {"size": [h, w], "counts": ([0] + runs) if flat[0] else runs}


def random_masks(seed, num_images=15, num_cats=4, box_in_dt=True):
  """Ground truth as polygons (some of two parts), compressed RLE, and uncompressed-RLE
  crowds; detections as compressed RLE (optionally with their box)."""
  rng = np.random.default_rng(seed)
  cats = [{"id": c + 1, "name": f"c{c}"} for c in range(num_cats)]
  images, anns, out = [], [], []
  for i in range(num_images):
    w_img, h_img = int(rng.integers(60, 200)), int(rng.integers(60, 200))
    images.append({"id": i + 1, "width": w_img, "height": h_img})
    objects = []
    for _ in range(int(rng.poisson(4))):
      s = float(rng.uniform(3, 80))
      x, y, w, h = rng.uniform(0, w_img - 2), rng.uniform(0, h_img - 2), s, s * rng.uniform(
          .6, 1.4)
      c = int(rng.integers(1, num_cats + 1))
      polys = [_polygon(rng, x, y, w, h)]
      if rng.random() < .3:
        polys.append(_polygon(rng, x + w / 3, y + h / 3, w / 2, h / 2))
      crowd = int(rng.random() < .15)
      kind = "crowd" if crowd else ("rle" if rng.random() < .3 else "poly")
      seg = {"crowd": _uncompressed, "rle": _rle_string}.get(kind, lambda p, *_: p)(
          polys, h_img, w_img)
      area = float(mask_utils.area(mask_utils.merge(mask_utils.frPyObjects(polys, h_img,
                                                                            w_img))))
      anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": c,
                   "segmentation": seg, "area": area, "bbox": [x, y, w, h],
                   "iscrowd": crowd})
      objects.append((x, y, w, h, c))
    for _ in range(int(rng.poisson(8))):
      if objects and rng.random() < .7:
        x, y, w, h, c = objects[int(rng.integers(len(objects)))]
        x, y = x + rng.normal(0, w * .1), y + rng.normal(0, h * .1)
      else:
        s = float(rng.uniform(3, 80))
        x, y, w, h = rng.uniform(0, w_img - 2), rng.uniform(0, h_img - 2), s, s
        c = int(rng.integers(1, num_cats + 1))
      rle = _rle_string([_polygon(rng, x, y, w, h, .15)], h_img, w_img)
      d = {"image_id": i + 1, "category_id": c, "segmentation": rle,
           "score": round(float(rng.random()), 2)}
      if box_in_dt:
        d["bbox"] = mask_utils.toBbox(rle).tolist()
      out.append(d)
  return {"images": images, "annotations": anns, "categories": cats}, out


def box(image_id, category_id, x, y, w, h, score=None, **extra):
  out = {"image_id": image_id, "category_id": category_id, "bbox": [x, y, w, h], **extra}
  if score is not None:
    out["score"] = score
  return out


def ground_truth(annotations, num_images=4, num_cats=3, size=(480, 640)):
  for i, a in enumerate(annotations):
    a.setdefault("id", i + 1)
    a.setdefault("iscrowd", 0)
    a.setdefault("area", a["bbox"][2] * a["bbox"][3])
  return {"images": [{"id": i + 1, "height": size[0], "width": size[1]}
                     for i in range(num_images)],
          "annotations": annotations,
          "categories": [{"id": c + 1, "name": f"c{c}"} for c in range(num_cats)]}


# ------------------------------------------------------------------- random sets


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("ties", [False, True])
def test_random_boxes_equal_cocoeval(seed, ties):
  gt, dt = random_boxes(seed, ties=ties)
  result = assert_same(gt, dt)
  assert result.precision.shape == (10, 101, 8, 4, 3)
  assert 0 < result.stats[0] < 1


def test_many_images_and_classes_with_empty_images():
  gt, dt = random_boxes(7, num_images=120, num_cats=40, gts=5, dets=30, empty_images=10)
  # images without detections (but with ground truth)
  dt = [d for d in dt if d["image_id"] % 5 != 1]
  assert_same(gt, dt)


def test_class_agnostic_custom_max_dets_and_thresholds():
  gt, dt = random_boxes(4, ties=True)
  assert_same(gt, dt, use_cats=False)
  assert_same(gt, dt, max_dets=[1, 5, 20])  # stats[0] (maxDets=100) is then -1
  assert_same(gt, dt, max_dets=[2, 10, 100])
  assert_same(gt, dt, iou_thrs=[0.3, 0.5, 0.7], rec_thrs=np.linspace(0, 1, 11))


def test_more_detections_than_max_dets_and_duplicates():
  gt, dt = random_boxes(5, num_images=8, num_cats=2, gts=8, dets=260)
  dt = dt + [dict(d) for d in dt[::3]]  # exact duplicates (same box and score)
  assert_same(gt, dt)
  assert_same(gt, dt, max_dets=[1, 10, 50])


# ----------------------------------------------------------------- individual rules


def test_crowds_absorb_detections_and_are_never_true_positives():
  gt = ground_truth([
      box(1, 1, 100, 100, 200, 150, iscrowd=1), box(1, 1, 120, 110, 40, 40),
      box(2, 1, 0, 0, 300, 300, iscrowd=1), box(2, 2, 10, 10, 50, 50, iscrowd=1)])
  dt = [box(1, 1, 121, 111, 40, 40, 0.9), box(1, 1, 120, 110, 40, 40, 0.8),
        box(1, 1, 150, 150, 30, 30, 0.7), box(1, 1, 110, 105, 180, 140, 0.6),
        box(1, 1, 400, 300, 30, 30, 0.5)]
  dt += [box(2, 1, 20 * i, 20 * i, 40, 40, 0.1 * i) for i in range(1, 9)]
  dt += [box(2, 2, 12, 12, 40, 40, 0.3)]  # a category whose only gt is a crowd
  result = assert_same(gt, dt)
  assert result.recall[0, 1, 0, 2] == -1  # no regular gt of category 2


def test_area_ranges_use_the_gt_area_field_and_unmatched_detections_outside_are_ignored():
  # boxes at and around 32^2 and 96^2 (ranges are inclusive); `area` unlike the box
  gt = ground_truth([
      box(1, 1, 10, 10, 32, 32), box(1, 1, 100, 100, 96, 96),
      box(1, 1, 300, 10, 31, 33, area=32 ** 2 + 1), box(1, 1, 300, 300, 200, 150,
                                                       area=500.0),
      box(2, 1, 0, 0, 2, 2), box(2, 1, 5, 5, 639, 479), box(2, 2, 50, 50, 3, 200),
      box(3, 2, 10, 10, 20, 20), box(3, 2, 200, 200, 90, 110)])
  dt = [box(1, 1, 10, 10, 32, 32, .9), box(1, 1, 101, 99, 96, 96, .8),
        box(1, 1, 300, 10, 31, 33, .7), box(1, 1, 302, 301, 198, 150, .6),
        box(1, 1, 500, 400, 32, 32, .5), box(1, 1, 500, 10, 96, 96, .4),
        box(1, 1, 0, 300, 5, 5, .3), box(2, 1, 0, 0, 2, 2, .9), box(2, 1, 4, 6, 635, 470, .8),
        box(2, 1, 100, 100, 1, 1, .7), box(2, 2, 50, 52, 3, 196, .6),
        box(3, 2, 11, 11, 20, 20, .5), box(3, 2, 200, 200, 90, 110, .5),
        box(3, 2, 0, 0, 640, 480, .95), box(4, 1, 10, 10, 10, 10, .5)]
  assert_same(gt, dt)


def test_ignore_key_has_no_effect_and_gt_id_zero_is_never_a_true_positive():
  gt, dt = random_boxes(11, num_images=10, num_cats=3)
  for a in gt["annotations"][::4]:
    a["ignore"] = 1  # COCOeval overwrites it with iscrowd
  for a in gt["annotations"]:
    a["id"] -= 1  # ids from 0: a match to id 0 reads as "no match" in COCOeval
  result = assert_same(gt, dt)
  assert np.array_equal(result.stats, coco.evaluate(gt, dt).stats)


def test_categories_and_images_without_ground_truth_or_detections():
  gt = ground_truth([box(1, 1, 10, 10, 50, 50), box(2, 1, 30, 30, 60, 40),
                     box(2, 2, 0, 0, 100, 100)], num_images=6, num_cats=4)
  dt = [box(1, 1, 12, 11, 48, 50, .9), box(3, 1, 0, 0, 20, 20, .8),  # image 3: no gt
        box(5, 3, 0, 0, 50, 50, .7), box(1, 3, 10, 10, 50, 50, .6)]  # category 3: no gt
  # image 2 has no detections, images 4 and 6 nothing; category 4 nothing; category 2
  # has gt but no detections
  result = assert_same(gt, dt)
  assert np.all(result.precision[:, :, 2] == -1) and np.all(result.precision[:, :, 3] == -1)
  assert np.all(result.precision[:, :, 1, 0] == 0) and np.all(result.recall[:, 1, 0] == 0)


def test_score_ties_across_and_within_images():
  gt = ground_truth([box(i, 1, 10, 10, 50, 50) for i in (1, 2, 3)] +
                    [box(i, 1, 200, 200, 40, 40) for i in (1, 2)])
  dt = []
  for i in (3, 1, 2):  # list order unlike image order
    dt += [box(i, 1, 300, 300, 40, 40, .5), box(i, 1, 11, 10, 50, 50, .5),
           box(i, 1, 201, 200, 40, 40, .5), box(i, 1, 10, 12, 50, 48, .5)]
  assert_same(gt, dt)
  assert_same(gt, dt, max_dets=[1, 2, 3])


def test_empty_detection_list_scores_zero_where_there_is_ground_truth():
  gt, _ = random_boxes(2, num_images=6, num_cats=3)
  result = coco.evaluate(gt, [])
  # As COCOeval with one detection on a category without ground truth: 0 where gt is.
  gt["categories"].append({"id": 1000, "name": "nothing"})
  ref, _ = reference(gt, [box(2, 1000, 0, 0, 10, 10, 0.5)], "bbox")
  np.testing.assert_array_equal(result.precision, ref.eval["precision"][:, :, :-1])
  np.testing.assert_array_equal(result.recall, ref.eval["recall"][:, :-1])
  np.testing.assert_array_equal(result.stats, ref.stats)
  assert set(result.stats.tolist()) <= {0.0, -1.0} and result.stats[0] == 0


def test_image_and_category_subsets():
  gt, dt = random_boxes(3)
  img_ids = [im["id"] for im in gt["images"]][::3]
  cat_ids = [c["id"] for c in gt["categories"]][1::2]
  ours = coco.evaluate(gt, dt, img_ids=img_ids, cat_ids=cat_ids)
  ref, text = reference(gt, dt, "bbox")
  with contextlib.redirect_stdout(io.StringIO()):
    ref.params.imgIds, ref.params.catIds = img_ids, cat_ids
    ref.evaluate()
    ref.accumulate()
    ref.summarize()
  np.testing.assert_allclose(ours.precision, ref.eval["precision"], atol=1e-6, rtol=0)
  np.testing.assert_allclose(ours.stats, ref.stats, atol=1e-6, rtol=0)
  assert ours.cat_ids == cat_ids


def test_string_image_ids_and_inputs_left_unchanged():
  gt, dt = random_boxes(8, num_images=12)
  names = {im["id"]: f"img{im['id']:05d}" for im in gt["images"]}
  for item in gt["images"]:
    item["id"] = names[item["id"]]
  for item in gt["annotations"] + dt:
    item["image_id"] = names[item["image_id"]]
  before = copy.deepcopy((gt, dt))
  result = assert_same(gt, dt)
  assert (gt, dt) == before  # (COCO.loadRes adds fields to the detections it is given)
  assert result.img_ids == sorted(names.values())


def test_results_helpers():
  gt, dt = random_boxes(1)
  result = coco.evaluate(gt, dt)
  stats = result.stats_dict()
  assert list(stats) == list(coco.DETECTION_STAT_NAMES) and stats["AP"] == result.stats[0]
  per_cat = result.per_category_ap()
  assert list(per_cat) == [c["id"] for c in gt["categories"]]
  assert np.isclose(np.nanmean(list(per_cat.values())), result.stats[0])
  assert len(result.summary_lines()) == 12


def test_no_pycocotools_import_in_jaxseg():
  for name in ("metrics/coco.py", "metrics/masks.py", "metrics/boxes.py", "formats/rle.py",
               "evaluate.py"):
    path = os.path.join(REPO, "jaxseg", name)
    if os.path.exists(path):
      source = open(path).read()
      assert "import pycocotools" not in source and "from pycocotools" not in source


# ------------------------------------------------------------------------ keypoints


@pytest.mark.parametrize("seed", [0, 1])
def test_random_keypoints_equal_cocoeval(seed):
  gt, dt = random_people(seed)
  assert any(a["num_keypoints"] == 0 for a in gt["annotations"])
  result = assert_same(gt, dt, "keypoints")
  assert len(result.stats) == 10 and len(result.summary_lines()) == 10


def test_keypoints_detection_area_from_box_custom_sigmas_and_max_dets():
  gt, dt = random_people(2, box_in_dt=True)
  assert_same(gt, dt, "keypoints")  # a box in the first detection gives every area
  gt, dt = random_people(3, k=14)  # e.g. the 14 LSP joints
  sigmas = np.r_[coco.COCO_KEYPOINT_SIGMAS[5:17], 0.079, 0.079]
  assert_same(gt, dt, "keypoints", kpt_oks_sigmas=sigmas)
  gt, dt = random_people(4, dets=30)
  assert_same(gt, dt, "keypoints", max_dets=[10])  # maxDets=20 entries are then -1


def test_oks_is_bit_identical_to_cocoeval():
  gt, dt = random_people(5, people=6, dets=14)
  ref, _ = reference(gt, dt, "keypoints")
  # pylint: disable=protected-access
  params = coco.Params("keypoints")
  g = coco._Gt(gt, params)
  d = coco._Dt(dt, g, params)
  pair_dt, _, oks = coco._pair_ious(g, d, params)
  checked = 0
  for (img, _), theirs in ref.ious.items():
    if len(theirs):
      sel = np.flatnonzero(d.img[pair_dt] == g.img_ids.tolist().index(img))
      ours = oks[sel].reshape(len(theirs), -1)
      assert np.array_equal(ours, np.asarray(theirs))
      checked += 1
  assert checked > 10


# ----------------------------------------------------------------------------- segm


@pytest.mark.parametrize("box_in_dt", [True, False])
def test_random_masks_equal_cocoeval(box_in_dt):
  gt, dt = random_masks(0, box_in_dt=box_in_dt)
  kinds = {type(a["segmentation"]).__name__ + str(a["iscrowd"]) for a in gt["annotations"]}
  assert kinds == {"list0", "dict0", "dict1"}  # polygons, RLE, crowd (uncompressed) RLE
  assert_same(gt, dt, "segm")
  assert_same(gt, dt, "bbox")  # without "bbox", the box of the mask


def test_segm_detection_area_is_the_box_area_when_the_first_detection_has_a_box():
  # A thin diagonal mask: box area >= 96^2 (large), mask area < 32^2 (small).
  gt = ground_truth([{"image_id": 1, "category_id": 1, "bbox": [10, 10, 150, 150],
                      "segmentation": [[10, 10, 160, 10, 160, 160, 10, 160]],
                      "area": 150.0 * 150}], num_images=1, num_cats=1, size=(200, 200))
  diagonal = _rle_string([[0, 0, 3, 0, 199, 196, 199, 199, 196, 199]], 200, 200)
  square = _rle_string([[11, 11, 160, 11, 160, 160, 11, 160]], 200, 200)
  dt = [{"image_id": 1, "category_id": 1, "segmentation": square, "score": .5},
        {"image_id": 1, "category_id": 1, "segmentation": diagonal, "score": .9}]
  without = assert_same(gt, dt, "segm")
  with_box = [dict(d, bbox=mask_utils.toBbox(d["segmentation"]).tolist()) for d in dt]
  boxed = assert_same(gt, with_box, "segm")
  assert boxed.stats[5] < without.stats[5]  # the diagonal is a large FP only with a box
  box_only = [{k: v for k, v in d.items() if k != "segmentation"} for d in with_box]
  assert_same(gt, box_only, "segm")  # the box becomes a polygon


# ---------------------------------------------------------------------------- the CLI


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "jaxseg.evaluate", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False)


def test_cli_prints_cocoeval_summary(tmp_path):
  gt, dt = random_boxes(6)
  kp_gt, kp_dt = random_people(6)
  for name, value in (("gt", gt), ("dt", dt), ("kp_gt", kp_gt), ("kp_dt", kp_dt)):
    (tmp_path / f"{name}.json").write_text(json.dumps(value))
  result = _cli(f"--gt={tmp_path / 'gt.json'}", f"--dt={tmp_path / 'dt.json'}",
                f"--output={tmp_path / 'stats.json'}")
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout == reference(gt, dt, "bbox")[1]
  stats = json.loads((tmp_path / "stats.json").read_text())["stats"]
  assert np.isclose(stats["AP"], reference(gt, dt, "bbox")[0].stats[0], atol=1e-12)
  result = _cli(f"--gt={tmp_path / 'kp_gt.json'}", f"--dt={tmp_path / 'kp_dt.json'}",
                "--iou_type=keypoints")
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout == reference(kp_gt, kp_dt, "keypoints")[1]
  assert len(result.stdout.splitlines()) == 10


def test_cli_malformed_input_is_one_line_and_status_2(tmp_path):
  gt, dt = random_boxes(6, num_images=3)
  (tmp_path / "gt.json").write_text(json.dumps(gt))
  (tmp_path / "dt.json").write_text(json.dumps(dt[:2] + [box(12345, 1, 0, 0, 1, 1, .5)]))
  result = _cli(f"--gt={tmp_path / 'gt.json'}", f"--dt={tmp_path / 'dt.json'}")
  assert result.returncode == 2
  lines = [l for l in result.stderr.splitlines() if l.startswith("jaxseg: error:")]
  assert len(lines) == 1 and "image_id 12345" in lines[0] and "not in the ground truth" in \
      lines[0], result.stderr
  assert result.stdout == ""
  (tmp_path / "dt.json").write_text(json.dumps(dt))
  result = _cli(f"--gt={tmp_path / 'gt.json'}", f"--dt={tmp_path / 'dt.json'}",
                f"--output={tmp_path / 'no_such_dir' / 'stats.json'}")
  assert result.returncode == 2
  lines = [l for l in result.stderr.splitlines() if l.startswith("jaxseg: error:")]
  assert len(lines) == 1 and "cannot write --output" in lines[0], result.stderr


# ------------------------------------------------------------------------ bad input


def _gt():
  return ground_truth([box(1, 1, 10, 10, 50, 50), box(2, 2, 30, 30, 60, 40)])


@pytest.mark.parametrize("dt, iou_type, message", [
    ([box(9, 1, 0, 0, 5, 5, .5)], "bbox", r"detection 0 has image_id 9, which is not in"),
    ([box(1, 1, 0, 0, 5, 5, .5), box(1, 7, 0, 0, 5, 5, .5)], "bbox",
     r"detection 1 has category_id 7, which is not in the ground truth"),
    ([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5], "score": .5}], "bbox",
     r"detection 0 has bbox \[0, 0, 5\]; expected 4 numbers"),
    ([{"image_id": 1, "category_id": 1, "bbox": [0, 0, "a", 1], "score": .5}], "bbox",
     r"expected 4 numbers"),
    ([box(1, 1, 0, 0, -5, 5, .5)], "bbox", r"width, height >= 0"),
    ([box(1, 1, 0, 0, 5, 5)], "bbox", r"detection 0 has no 'score'"),
    ([box(1, 1, 0, 0, 5, 5, "high")], "bbox", r"score 'high'; expected a finite number"),
    ([box(1, 1, 0, 0, 5, 5, float("nan"))], "bbox", r"score nan; expected a finite"),
    ([box(1, 1, 0, 0, 5, 5, .5), {"image_id": 1, "category_id": 1, "score": .4}], "bbox",
     r"detection 1 has no 'bbox' \(the first detection has one, so all must\)"),
    ([{"image_id": 1, "category_id": 1, "score": .4}], "segm",
     r"detection 0 has no 'segmentation'"),
    ([{"image_id": 1, "category_id": 1, "score": .4, "keypoints": [1, 2, 2]}], "keypoints",
     r"detection 0 has 3 keypoint values; expected 51"),
    ([box(1, 1, 0, 0, 5, 5, .5), [1, 2]], "bbox", r"detection 1 is list, expected a dict"),
    ({"image_id": 1}, "bbox", r"detections must be a list"),
])
def test_malformed_detections_raise_one_clear_data_error(dt, iou_type, message):
  gt = _gt()
  for a in gt["annotations"]:
    x, y, w, h = a["bbox"]
    a["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    a["keypoints"], a["num_keypoints"] = [0] * 51, 0
  with pytest.raises(DataError, match=message) as info:
    coco.evaluate(gt, dt, iou_type)
  assert "\n" not in str(info.value)


def test_malformed_ground_truth_and_params():
  dt = [box(1, 1, 0, 0, 5, 5, .5)]
  gt = _gt()
  del gt["images"]
  with pytest.raises(DataError, match="ground truth has no 'images' list"):
    coco.evaluate(gt, dt)
  gt = _gt()
  gt["annotations"][1]["id"] = gt["annotations"][0]["id"]
  with pytest.raises(DataError, match="annotation id 1 occurs more than once"):
    coco.evaluate(gt, dt)
  gt = _gt()
  gt["annotations"][1]["image_id"] = 77
  with pytest.raises(DataError, match="annotation 1 has image_id 77, which is not in"):
    coco.evaluate(gt, dt)
  gt = _gt()
  del gt["annotations"][0]["bbox"]
  with pytest.raises(DataError, match="annotation 0 has no 'bbox'"):
    coco.evaluate(gt, dt)
  with pytest.raises(ConfigError, match="unknown iou_type 'mask'"):
    coco.evaluate(_gt(), dt, "mask")
  with pytest.raises(ConfigError, match="needs 3 max_dets"):
    coco.evaluate(_gt(), dt, max_dets=[1, 10])
  with pytest.raises(ConfigError, match="use_cats=False is not supported for keypoints"):
    coco.evaluate(_gt(), dt, "keypoints", use_cats=False)
  with pytest.raises(ConfigError, match="params are for iou_type 'keypoints', not 'bbox'"):
    coco.evaluate(_gt(), dt, "bbox", coco.Params("keypoints"))
  with pytest.raises(ConfigError, match="rec_thrs must be ascending"):
    coco.evaluate(_gt(), dt, rec_thrs=[0.5, 0.1])
