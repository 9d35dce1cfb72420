"""jaxseg.metrics.voc: hand-computed cases and a plain devkit-style reference."""
from __future__ import annotations

import numpy as np
import pytest

from jaxseg.errors import ConfigError, DataError
from jaxseg.metrics import voc


def test_voc_ap_by_hand():
  rec = [0.5, 0.5, 1.0]
  prec = [1.0, 0.5, 2 / 3]
  # All points: envelope over mrec [0, .5, .5, 1, 1] is [1, 1, 2/3, 2/3, 0]; recall
  # changes 0 -> .5 (precision 1) and .5 -> 1 (2/3): .5 * 1 + .5 * 2/3 = 5/6.
  assert voc.voc_ap(rec, prec) == pytest.approx(5 / 6, abs=1e-12)
  # 11 points: levels 0 .. .5 (6 of them) reach precision 1, levels .6 .. 1 (5) reach
  # 2/3 at recall 1: (6 + 5 * 2/3) / 11 = 28/33.
  assert voc.voc_ap(rec, prec, use_07_metric=True) == pytest.approx(28 / 33, abs=1e-12)
  # Recall exactly 0.7 reaches the 0.7 level: (8 levels at precision .5) / 11.
  assert voc.voc_ap([0.7], [0.5], use_07_metric=True) == pytest.approx(4 / 11, abs=1e-12)
  assert voc.voc_ap([], [], True) == 0.0 and voc.voc_ap([], []) == 0.0


def _example():
  """Class 0: images 'a' (3 boxes, one difficult) and 'b'; class 1: one box, no detection;
  class 2: no boxes, one detection."""
  gts = {
      "a": {"boxes": [[0, 0, 9, 9], [20, 20, 29, 29], [40, 40, 49, 49], [60, 60, 69, 69]],
            "labels": [0, 0, 0, 1], "difficult": [False, False, True, False]},
      "b": {"boxes": [[0, 0, 9, 9]], "labels": [0]},
  }
  dets = {
      "a": {"boxes": [[0, 0, 9, 9], [0, 0, 9, 9], [40, 40, 49, 49], [100, 100, 110, 110],
                      [60, 60, 69, 69]],
            "scores": [0.9, 0.8, 0.7, 0.6, 0.99], "labels": [0, 0, 0, 0, 2]},
      "b": {"boxes": [[0, 0, 9, 9]], "scores": [0.5], "labels": [0]},
  }
  return gts, dets


def test_evaluate_by_hand():
  gts, dets = _example()
  # Class 0, npos = 3 (the difficult box does not count). In score order: .9 TP (box 0 of
  # 'a'), .8 FP (duplicate of box 0), .7 ignored (difficult), .6 FP (no overlap), .5 TP.
  # tp 1 1 1 1 2, fp 0 1 1 2 2: recall 1/3 1/3 1/3 1/3 2/3, precision 1 .5 .5 1/3 .5.
  # All points: 1/3 * 1 + 1/3 * .5 = .5; 11 points: levels 0 .. .3 -> 1 (4), .4 .. .6 ->
  # .5 (3), .7 .. 1 -> 0: 5.5/11 = .5.
  out = voc.evaluate_voc(gts, dets, num_classes=3)
  np.testing.assert_allclose(out["recall"][0], [1 / 3, 1 / 3, 1 / 3, 1 / 3, 2 / 3])
  np.testing.assert_allclose(out["precision"][0], [1, 0.5, 0.5, 1 / 3, 0.5])
  assert out["ap"][0] == pytest.approx(0.5)
  assert out["ap"][1] == 0.0  # ground truth, no detection
  assert np.isnan(out["ap"][2])  # no ground truth: left out of the mAP
  assert out["map"] == pytest.approx(0.25)
  np.testing.assert_array_equal(out["num_gt"], [3, 1, 0])
  np.testing.assert_array_equal(out["num_det"], [5, 0, 1])
  assert voc.evaluate_voc(gts, dets, 3, use_07_metric=True)["ap"][0] == pytest.approx(0.5)

  # The detection in 'b' first (.95): tp 1 2 2 2 2, fp 0 0 1 1 2, recall 1/3 2/3 2/3 2/3
  # 2/3, precision 1 1 2/3 2/3 .5. All points: 1/3 + 1/3 = 2/3; 11 points: levels
  # 0 .. .6 reach precision 1 (7 of them): 7/11.
  dets["b"]["scores"] = [0.95]
  assert voc.evaluate_voc(gts, dets, 3)["ap"][0] == pytest.approx(2 / 3)
  assert voc.evaluate_voc(gts, dets, 3, use_07_metric=True)["ap"][0] == pytest.approx(7 / 11)


def test_pixel_convention_and_threshold():
  gts = [{"boxes": [[0, 0, 9, 9]], "labels": [0]}]
  # [0, 0, 9, 19] with +1 widths: intersection 10*10 = 100, union 100 + 200 - 100 = 200:
  # IoU exactly .5, a match (>=). Continuous: 81 / (81 + 171 - 81) = .47, no match.
  dets = [{"boxes": [[0, 0, 9, 19]], "scores": [1.0], "labels": [0]}]
  assert voc.evaluate_voc(gts, dets, 1, pixel_convention=True)["ap"][0] == 1.0
  assert voc.evaluate_voc(gts, dets, 1)["ap"][0] == 0.0  # (the default: continuous)
  np.testing.assert_allclose(voc.box_iou([[0, 0, 9, 9]], [[5, 0, 14, 9]], True), [[50 / 150]])
  np.testing.assert_allclose(voc.box_iou([[0, 0, 9, 9]], [[5, 0, 14, 9]], False),
                             [[36 / 126]])


def test_best_overlap_box_even_if_matched():
  # As VOCevaldet.m: the .8 detection's best box is box 0 (IoU 90/110), already taken by
  # the .9 detection, so it is a duplicate (FP) although box 1 (IoU 70/130 > .5) is free.
  gts = [{"boxes": [[0, 0, 9, 9], [3, 0, 12, 9]], "labels": [0, 0]}]
  dets = [{"boxes": [[0, 0, 9, 9], [1, 0, 10, 9]], "scores": [0.9, 0.8], "labels": [0, 0]}]
  out = voc.evaluate_voc(gts, dets, 1)
  np.testing.assert_allclose(out["precision"][0], [1.0, 0.5])
  assert out["ap"][0] == pytest.approx(0.5)  # recall 1/2 at precision 1


def test_valid_masks_and_bad_inputs():
  gts = [{"boxes": [[0, 0, 9, 9], [-1, -1, -1, -1]], "labels": [0, -1],
          "valid": [True, False]}]
  dets = [{"boxes": [[0, 0, 9, 9], [-1, -1, -1, -1]], "scores": [0.5, -1],
           "labels": [0, -1], "valid": [True, False]}]
  assert voc.evaluate_voc(gts, dets, 1)["map"] == 1.0
  with pytest.raises(DataError):
    voc.evaluate_voc(gts, {5: dets[0]}, 1)  # unknown image
  with pytest.raises(DataError):
    voc.evaluate_voc([{"boxes": [[0, 0, 1, 1]], "labels": [3]}], [], 2)
  with pytest.raises(DataError):
    voc.evaluate_voc([{"boxes": [[0, 0, 1]], "labels": [0]}], [], 2)
  with pytest.raises(DataError):
    voc.evaluate_voc(gts, [{"boxes": [[0, 0, 1, 1]], "scores": [0.5, 0.1],
                            "labels": [0]}], 2)
  with pytest.raises(ConfigError):
    voc.evaluate_voc(gts, dets, 1, iou_threshold=0.0)
  assert np.isnan(voc.evaluate_voc([], [], 2)["map"])


def _reference(gts, dets, num_classes, thr, use_07):
  """VOCevaldet.m + VOCap.m written out plainly, one class and one detection at a time."""
  aps = []
  for c in range(num_classes):
    gt = {}
    npos = 0
    for img, rec in enumerate(gts):
      keep = [j for j in range(len(rec["labels"])) if rec["labels"][j] == c]
      gt[img] = {"bb": [rec["boxes"][j] for j in keep],
                 "diff": [bool(rec["difficult"][j]) for j in keep],
                 "det": [False] * len(keep)}
      npos += sum(not d for d in gt[img]["diff"])
    found = [(float(rec["scores"][j]), img, rec["boxes"][j])
             for img, rec in enumerate(dets) for j in range(len(rec["labels"]))
             if rec["labels"][j] == c]
    found = sorted(found, key=lambda f: -f[0])  # stable, as MATLAB's sort
    tp, fp = [], []
    for _, img, bb in found:
      ovmax, jmax = -np.inf, -1
      for j, bbgt in enumerate(gt[img]["bb"]):
        bi = [max(bb[0], bbgt[0]), max(bb[1], bbgt[1]), min(bb[2], bbgt[2]),
              min(bb[3], bbgt[3])]
        iw, ih = bi[2] - bi[0] + 1, bi[3] - bi[1] + 1
        if iw > 0 and ih > 0:
          ua = ((bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1)
                + (bbgt[2] - bbgt[0] + 1) * (bbgt[3] - bbgt[1] + 1) - iw * ih)
          ov = iw * ih / ua
          if ov > ovmax:
            ovmax, jmax = ov, j
      t = f = 0
      if ovmax >= thr:
        if not gt[img]["diff"][jmax]:
          if not gt[img]["det"][jmax]:
            t = 1
            gt[img]["det"][jmax] = True
          else:
            f = 1
      else:
        f = 1
      tp.append(t)
      fp.append(f)
    if npos == 0:
      aps.append(np.nan)
      continue
    ctp, cfp = np.cumsum(tp, dtype=float), np.cumsum(fp, dtype=float)
    rec_ = ctp / npos
    prec_ = ctp / np.maximum(ctp + cfp, np.finfo(float).eps)
    if use_07:
      ap = 0.0
      for k in range(11):
        p = [pp for rr, pp in zip(rec_, prec_) if rr >= k / 10]
        ap += (max(p) if p else 0.0) / 11
    else:
      mrec = [0.0] + list(rec_) + [1.0]
      mpre = [0.0] + list(prec_) + [0.0]
      for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
      ap = sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec))
               if mrec[i] != mrec[i - 1])
    aps.append(ap)
  return np.array(aps)


@pytest.mark.parametrize("seed", range(6))
def test_matches_plain_reference(seed):
  rng = np.random.default_rng(seed)
  num_classes = 4
  gts, dets = [], []
  for _ in range(int(rng.integers(1, 9))):
    g = int(rng.integers(0, 7))
    xy = rng.integers(0, 60, (g, 2))
    boxes = np.concatenate([xy, xy + rng.integers(0, 25, (g, 2))], 1).astype(float)
    gts.append({"boxes": boxes, "labels": rng.integers(0, num_classes - 1, g),
                "difficult": rng.random(g) < 0.2})
    d = int(rng.integers(0, 12))
    src = boxes[rng.integers(0, g, d)] if g else np.zeros((d, 4))
    jitter = rng.normal(0, 3, (d, 4)) * (rng.random((d, 1)) < 0.8)
    corner = rng.uniform(0, 60, (d, 2))
    spurious = np.concatenate([corner, corner + rng.uniform(1, 20, (d, 2))], 1)
    dboxes = np.where(rng.random((d, 1)) < 0.8, src + jitter, spurious)
    dboxes[:, 2:] = np.maximum(dboxes[:, 2:], dboxes[:, :2])
    dets.append({"boxes": dboxes, "scores": np.round(rng.random(d), 1),  # with ties
                 "labels": rng.integers(0, num_classes, d)})
  for use_07 in (False, True):
    for thr in (0.5, 0.7):
      got = voc.evaluate_voc(gts, dets, num_classes, iou_threshold=thr,
                             use_07_metric=use_07)
      ref = _reference(gts, dets, num_classes, thr, use_07)
      np.testing.assert_allclose(got["ap"], ref, rtol=0, atol=1e-12)
      assert got["map"] == pytest.approx(np.nanmean(ref) if np.isfinite(ref).any()
                                         else np.nan, nan_ok=True)
