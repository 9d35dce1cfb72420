"""jaxseg.metrics.coco.evaluate against pycocotools' COCOeval on a synthetic COCO-sized set.

`python bench/coco_eval.py` (5000 images x 100 detections, ~7 ground truths per image,
80 categories; `--num_images=500` for a quick run; `--iou_type=segm|keypoints` for the
other evaluations on a smaller set). Both start from in-memory dicts (no JSON parsing):
COCOeval's time includes building its COCO indexes and loadRes, and is also given for
evaluate + accumulate + summarize alone. Prints a markdown table and asserts the stats
agree to 1e-6.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxseg.metrics import coco  # noqa: E402  pylint: disable=wrong-import-position


def synthetic(num_images: int, dets_per_image: int = 100, gts_per_image: float = 7.0,
              num_categories: int = 80, iou_type: str = "bbox", seed: int = 0):
  """Random but realistic boxes: log-uniform sizes (all three area ranges), 1% crowds,
  detections = jittered ground truths (some with a wrong class) + background boxes with
  lower scores, scores rounded to 3 decimals (so there are ties)."""
  rng = np.random.default_rng(seed)
  cats = [{"id": c + 1, "name": f"class{c}"} for c in range(num_categories)]
  images, anns, dets = [], [], []
  kp = iou_type == "keypoints"
  k = len(coco.COCO_KEYPOINT_SIGMAS)
  for i in range(num_images):
    iid = i + 1
    w_img, h_img = int(rng.integers(320, 641)), int(rng.integers(320, 641))
    images.append({"id": iid, "width": w_img, "height": h_img})
    n_gt = int(rng.poisson(gts_per_image))
    sizes = np.exp(rng.uniform(np.log(6), np.log(400), n_gt))
    wh = sizes[:, None] * rng.uniform(0.6, 1.4, (n_gt, 2))
    xy = rng.uniform(0, 1, (n_gt, 2)) * np.maximum([w_img, h_img] - wh, 1)
    gcat = rng.integers(1, num_categories + 1, n_gt) if not kp else np.ones(n_gt, int)
    gt_points = []
    for j in range(n_gt):
      box = [float(xy[j, 0]), float(xy[j, 1]), float(wh[j, 0]), float(wh[j, 1])]
      a = {"id": len(anns) + 1, "image_id": iid, "category_id": int(gcat[j]), "bbox": box,
           "area": float(wh[j, 0] * wh[j, 1] * rng.uniform(0.5, 0.9)),
           "iscrowd": int(rng.random() < 0.01)}
      if iou_type == "segm":
        x, y, w, h = box
        a["segmentation"] = [[x, y + h / 2, x + w / 2, y, x + w, y + h / 2, x + w / 2, y + h]]
      if kp:
        v = rng.choice([0, 2], k, p=[0.3, 0.7])
        pts = xy[j] + rng.uniform(0, 1, (k, 2)) * wh[j]
        gt_points.append(pts)
        a["keypoints"] = np.c_[pts * (v > 0)[:, None], v].reshape(-1).tolist()
        a["num_keypoints"] = int((v > 0).sum())
      anns.append(a)
    n_true = min(n_gt * 3, dets_per_image)
    for d in range(dets_per_image):
      if d < n_true and n_gt:
        j = int(rng.integers(n_gt))
        jit = rng.normal(0, 0.08, 4) * np.r_[wh[j], wh[j]]
        box = np.r_[xy[j] + jit[:2], np.maximum(wh[j] + jit[2:], 1)]
        cat = int(gcat[j]) if rng.random() < 0.85 else int(rng.integers(1, num_categories + 1))
        score = rng.uniform(0.3, 1.0)
      else:
        s = np.exp(rng.uniform(np.log(6), np.log(400)))
        box = np.r_[rng.uniform(0, w_img), rng.uniform(0, h_img), s * rng.uniform(.6, 1.4, 2)]
        cat = int(rng.integers(1, num_categories + 1)) if not kp else 1
        score = rng.uniform(0.0, 0.6)
        j = None
      det = {"image_id": iid, "category_id": cat, "score": round(float(score), 3)}
      if iou_type == "bbox":
        det["bbox"] = [float(v) for v in box]
      elif iou_type == "segm":
        x, y, w, h = box.tolist()
        det["segmentation"] = [[x, y + h / 2, x + w / 2, y, x + w, y + h / 2, x + w / 2,
                                y + h]]
      else:
        base = (gt_points[j] if j is not None else
                box[:2] + rng.uniform(0, 1, (k, 2)) * box[2:])
        pts = base + rng.normal(0, 0.05 * box[2], (k, 2))
        det["keypoints"] = np.c_[pts, np.ones(k)].reshape(-1).tolist()
      dets.append(det)
  return {"images": images, "annotations": anns, "categories": cats}, dets


def run_pycocotools(gt: dict, dt: list, iou_type: str):
  """COCOeval from in-memory dicts; returns (stats, total s, evaluate+accumulate+summarize
  s)."""
  from pycocotools.coco import COCO  # pylint: disable=g-import-not-at-top
  from pycocotools.cocoeval import COCOeval  # pylint: disable=g-import-not-at-top
  gt, dt = copy.deepcopy(gt), copy.deepcopy(dt)  # COCO mutates what it is given
  with contextlib.redirect_stdout(io.StringIO()):
    t0 = time.perf_counter()
    ref = COCO()
    ref.dataset = gt
    ref.createIndex()
    res = ref.loadRes(dt)
    e = COCOeval(ref, res, iou_type)
    t1 = time.perf_counter()
    e.evaluate()
    e.accumulate()
    e.summarize()
    t2 = time.perf_counter()
  return e.stats, t2 - t0, t2 - t1


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_images", type=int, default=5000)
  parser.add_argument("--dets_per_image", type=int, default=100)
  parser.add_argument("--iou_type", default="bbox", choices=coco.IOU_TYPES)
  parser.add_argument("--repeats", type=int, default=1, help="jaxseg runs (best is shown)")
  args = parser.parse_args(argv)
  gt, dt = synthetic(args.num_images, args.dets_per_image, iou_type=args.iou_type)
  if args.iou_type == "segm":  # COCO results carry RLE masks
    from pycocotools import mask as mask_utils  # pylint: disable=g-import-not-at-top
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    for d in dt:
      h, w = sizes[d["image_id"]]
      rle = mask_utils.merge(mask_utils.frPyObjects(d["segmentation"], h, w))
      rle["counts"] = rle["counts"].decode("ascii")
      d["segmentation"] = rle
  times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    result = coco.evaluate(gt, dt, args.iou_type)
    times.append(time.perf_counter() - t0)
  ours = min(times)
  ref_stats, ref_total, ref_eval = run_pycocotools(gt, dt, args.iou_type)
  np.testing.assert_allclose(result.stats, ref_stats, atol=1e-6, rtol=0)
  print(f"COCO {args.iou_type} evaluation, {args.num_images} images x "
        f"{args.dets_per_image} detections, {len(gt['annotations'])} ground truths, "
        f"{len(gt['categories'])} categories ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs); stats agree to 1e-6 (AP = {result.stats[0]:.4f})\n")
  print("| evaluator | seconds | COCOeval / jaxseg |")
  print("|---|---|---|")
  print(f"| pycocotools COCOeval (index + loadRes + evaluate + accumulate + summarize) | "
        f"{ref_total:.2f} | {ref_total / ours:.1f}x |")
  print(f"| pycocotools COCOeval (evaluate + accumulate + summarize) | {ref_eval:.2f} | "
        f"{ref_eval / ours:.1f}x |")
  print(f"| jaxseg.metrics.coco.evaluate | {ours:.2f} | 1.0x |")


if __name__ == "__main__":
  main()
