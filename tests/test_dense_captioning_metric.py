"""DenseCap's dense-captioning metric (jaxseg.metrics.dense_captioning) against hand-computed
cases of the reference's rules (eval/eval_utils.lua, densecap/box_utils.lua), and METEOR
(jaxseg.metrics.meteor) against the jar run by itself and pycocoevalcap's wrapper."""
import math
import os
import shutil
import stat
import subprocess
import types

import numpy as np
import pytest

from jaxseg.errors import ConfigError, DataError
from jaxseg.metrics import dense_captioning as dc
from jaxseg.metrics import meteor as meteor_lib


class FakeMeteor:
  """A hand-made scorer: a fixed METEOR per candidate (default 0.5); records its calls."""

  def __init__(self, table=None, default=0.5):
    self.table, self.default, self.calls, self.closed = dict(table or {}), default, [], False

  def score(self, pairs):
    self.calls.append(list(pairs))
    return np.array([self.table.get(c, self.default) for c, _ in pairs], np.float64)

  def close(self):
    self.closed = True


# A chain A-B-C-D (neighbours at IoU >= 0.7, others not) and a lone E, +1 pixel IoUs:
# A 10x10, B 10x13, C 10x17, D 10x22: A-B 100/130, B-C 130/170, C-D 170/220 are >= 0.7;
# A-C 100/170, B-D 130/220 are not.
E = [50, 50, 59, 59]
A, B, C, D = [0, 0, 9, 9], [0, 0, 9, 12], [0, 0, 9, 16], [0, 0, 9, 21]


def test_merge_boxes_is_greedy_not_connected_components():
  # counts (self included): E 1, A 2, B 3, C 3, D 2 -> B (first of the largest) takes A, B,
  # C; then E and D are alone (D's neighbour C is gone), E first (lower index).
  groups = dc.merge_boxes(np.array([E, A, B, C, D], np.float32))
  assert [g.tolist() for g in groups] == [[1, 2, 3], [0], [4]]
  boxes, refs = dc.merged_ground_truth([E, A, B, C, D], ["e", "a", "b", "c", "d"])
  assert refs == [["a", "b", "c"], ["e"], ["d"]]
  np.testing.assert_array_equal(
      boxes, np.array([[0, 0, 9, np.float32(37) / np.float32(3)], E, D], np.float32))
  assert boxes.dtype == np.float32


def test_merge_uses_plus_one_iou_and_counts_equality():
  # +1 IoU of [0,0,9,9] and [3,0,9,9] is 70/100 = 0.7 exactly (continuous: 54/81 = 0.67).
  boxes, refs = dc.merged_ground_truth([[0, 0, 9, 9], [3, 0, 9, 9]], ["x", "y"])
  assert refs == [["x", "y"]]
  np.testing.assert_array_equal(boxes, [[1.5, 0, 9, 9]])
  assert [g.tolist() for g in dc.merge_boxes([[0, 0, 9, 9], [3, 0, 9, 9]], 0.71)] == [[0], [1]]
  assert dc.merge_boxes(np.zeros((0, 4))) == []
  with pytest.raises(DataError):
    dc.merge_boxes([[0, 0, 9, 9]], 0)


def test_lua_recall_thresholds():
  # for t=0,1,0.01 accumulates: 100 values, the 51st just above 0.5.
  t = dc.RECALL_THRESHOLDS
  assert t.size == 100 and t[0] == 0 and t[50] > 0.5 and t[49] < 0.5 and t[-1] < 1


def _evaluate(images, table=None, **kw):
  ev = dc.DenseCaptioningEvaluator(meteor=FakeMeteor(table), **kw)
  for image in images:
    ev.add(*image)
  return ev, ev.evaluate()


G1, G2 = [0, 0, 9, 9], [100, 100, 109, 109]


def test_miss_takes_last_ground_truth_and_hand_ap():
  # d_hit (0.9) matches G1; d_miss (0.8) overlaps nothing: Lua's used[-1] takes the LAST
  # merged box, G2; d_late (0.7) matches G2 exactly but G2 is taken -> not ok.
  # tp = [1, 0, 0], 2 ground truths: recall 0.5 reaches the 50 Lua thresholds <= 0.5
  # (t[50] = 0.5000000000000002), precision 1 -> AP = 50 / 100.
  image = ([0.7, 0.9, 0.8], [G2, G1, [300, 300, 310, 310]], ["late", "hit", "miss"],
           [G1, G2], ["g1", "g2"])
  ev, out = _evaluate([image])
  recs = ev.records()
  assert [(r["candidate"], r["ok"], r["overlap"], r["references"]) for r in recs] == [
      ("hit", True, 1.0, ["g1"]), ("miss", True, 0.0, []), ("late", False, 1.0, ["g2"])]
  for t in dc.IOU_THRESHOLDS:
    assert out[f"det_ap/iou{t:g}"] == pytest.approx(0.5, abs=1e-12)
    for m in dc.METEOR_THRESHOLDS:
      assert out[f"ap/iou{t:g}_meteor{m:g}"] == pytest.approx(0.5, abs=1e-12)
  assert out["map"] == pytest.approx(0.5) and out["detection_map"] == pytest.approx(0.5)
  assert out["num_detections"] == 3 and out["num_gt_merged"] == 2
  # Without the miss, d_late is a true positive: tp = [1, 1] -> AP 1.
  _, out = _evaluate([([0.7, 0.9], [G2, G1], ["late", "hit"], [G1, G2], ["g1", "g2"])])
  assert out["map"] == pytest.approx(1.0)


def test_taken_box_and_score_order_within_image():
  # Given in increasing score order: the 0.9 detection (IoU 0.6) takes G1 first, the exact
  # 0.2 one finds it taken. tp = [1, 0] at IoU <= 0.6, [0, 0] at 0.7; 1 ground truth.
  image = ([0.2, 0.9], [G1, [0, 0, 5, 9]], ["exact", "loose"], [G1], ["g"])
  ev, out = _evaluate([image])
  assert [(r["candidate"], r["ok"]) for r in ev.records()] == [("loose", True), ("exact", False)]
  assert ev.records()[0]["overlap"] == pytest.approx(0.6)
  assert out["det_ap/iou0.6"] == pytest.approx(1.0) and out["det_ap/iou0.7"] == 0.0
  assert out["detection_map"] == pytest.approx(0.8)  # 4 of 5 IoU thresholds


def test_score_order_across_images():
  # Image 1: a correct detection scored 0.5; image 2: a wrong one scored 0.9. Sorted over
  # all images: tp = [0, 1], recall [0, 0.5], precision [0, 0.5] -> AP 50 * 0.5 / 100.
  im1 = ([0.5], [G1], ["a"], [G1], ["a"])
  im2 = ([0.9], [G2], ["b"], [G1], ["b"])
  _, out = _evaluate([im1, im2])
  assert out["detection_map"] == pytest.approx(0.25)
  _, out = _evaluate([im2, im1])  # order of the images does not matter
  assert out["detection_map"] == pytest.approx(0.25)


def test_thresholds_at_the_boundaries():
  # IoU exactly 0.5 (+1 areas 50 / 100) counts at 0.5, not at 0.6; METEOR exactly 0.1
  # counts at 0.05, not at 0.1 (strict). One detection, one ground truth: AP is 1 or 0.
  image = ([1.0], [[0, 0, 9, 4]], ["cap"], [G1], ["g"])
  ev, out = _evaluate([image], table={"cap": 0.1})
  assert ev.records()[0]["overlap"] == 0.5
  assert out["ap/iou0.5_meteor0.05"] == 1.0 and out["ap/iou0.5_meteor0.1"] == 0.0
  assert out["ap/iou0.6_meteor0"] == 0.0 and out["det_ap/iou0.5"] == 1.0
  assert out["det_ap/iou0.6"] == 0.0
  # METEOR 0 is not > 0, but detection AP (threshold -1) ignores it.
  _, out = _evaluate([image], table={"cap": 0.0})
  assert out["ap/iou0.3_meteor0"] == 0.0 and out["det_ap/iou0.3"] == 1.0
  assert out["map"] == 0.0 and out["detection_map"] == pytest.approx(0.6)


def test_partial_precision_ap_hand_computed():
  # 3 detections on 3 ground truths; b's caption scores METEOR 0, so at METEOR threshold 0
  # tp = [1, 0, 1]: recall [1/3, 1/3, 2/3], precision [1, 1/2, 2/3]. Lua thresholds
  # t <= 1/3: 34 of them (0 .. 0.33), t <= 2/3: 67 (0 .. 0.66):
  # AP = (34 * 1 + 33 * 2/3) / 100 = 0.56.
  image = ([0.9, 0.8, 0.7], [G1, [200, 200, 209, 209], G2], ["a", "b", "c"],
           [G1, G2, [200, 200, 209, 209]], ["a", "c", "b"])
  _, out = _evaluate([image], table={"a": 0.3, "b": 0.0, "c": 0.3})
  assert out["ap/iou0.5_meteor0"] == pytest.approx(0.56, abs=1e-12)
  # detection AP: tp = [1, 1, 1], recall 1/3, 2/3, 1 at precision 1 -> AP 1.
  assert out["det_ap/iou0.5"] == pytest.approx(1.0)


def test_no_ground_truth_no_detections_and_language_metrics():
  # An image without ground truth: its detection is a false positive (Lua would crash).
  ev, out = _evaluate([([0.9], [G1], ["a"], np.zeros((0, 4)), [])])
  assert not ev.records()[0]["ok"] and out["map"] == 0.0 and out["num_gt_merged"] == 0
  assert math.isnan(out["meteor_mean"]) and math.isnan(out["bleu4"])
  assert math.isnan(out["cider"])
  # No detections at all: AP 0, no METEOR call.
  ev = dc.DenseCaptioningEvaluator(meteor=FakeMeteor())
  ev.add(np.zeros(0), np.zeros((0, 4)), [], [G1], ["g"])
  out = ev.evaluate()
  assert out["map"] == 0.0 and out["detection_map"] == 0.0 and ev.meteor.calls == []
  # Language metrics over ok records with IoU >= 0.5.
  images = [([0.9], [G1], ["a man riding a brown horse"], [G1, G1], ["a man riding a brown horse", "x"]),
            ([0.8], [G2], ["a red car on the road"], [G2], ["a blue car on the road"])]
  _, out = _evaluate(images, table={"a man riding a brown horse": 1.0})
  assert out["meteor_mean"] == pytest.approx(0.75)
  assert 0 < out["bleu4"] < 1 and np.isfinite(out["cider"]) and out["cider"] > 0


def test_bad_input_raises_data_error():
  ev = dc.DenseCaptioningEvaluator(meteor=FakeMeteor())
  with pytest.raises(DataError):
    ev.add([0.5, 0.4], [G1], ["a"], [G1], ["g"])
  with pytest.raises(DataError):
    ev.add([0.5], [[5, 0, 3, 9]], ["a"], [G1], ["g"])  # x2 - x1 + 1 < 0
  with pytest.raises(DataError):
    ev.add([math.nan], [G1], ["a"], [G1], ["g"])
  with pytest.raises(DataError):
    ev.add([0.5], [G1], ["a"], [G1], ["g", "h"])


def test_default_meteor_is_created_and_closed(monkeypatch):
  made = []

  def factory():
    made.append(FakeMeteor())
    return made[-1]

  monkeypatch.setattr(meteor_lib, "Meteor", factory)
  ev = dc.DenseCaptioningEvaluator()
  ev.add([0.9], [G1], ["a"], [G1], ["a"])
  assert ev.evaluate()["map"] == pytest.approx(1.0)
  assert len(made) == 1 and made[0].closed and len(made[0].calls) == 1


def test_continuous_to_inclusive():
  np.testing.assert_array_equal(dc.continuous_to_inclusive([[0, 0, 10, 10]]), [[0, 0, 9, 9]])


# -- METEOR ---------------------------------------------------------------------------------
def test_meteor_config_errors(tmp_path, monkeypatch):
  monkeypatch.setenv("PATH", str(tmp_path))  # no java here
  with pytest.raises(ConfigError, match="apt-get install -y default-jre-headless"):
    meteor_lib.Meteor()
  monkeypatch.undo()
  if shutil.which("java"):
    with pytest.raises(ConfigError, match="pip install pycocoevalcap"):
      meteor_lib.Meteor(jar=str(tmp_path / "meteor-1.5.jar"))


def test_meteor_dead_subprocess_raises_one_clear_error(tmp_path):
  if not os.path.isfile(meteor_lib.default_jar()):
    pytest.skip("pycocoevalcap's meteor-1.5.jar is not installed")
  fake = tmp_path / "java"
  fake.write_text("#!/bin/sh\necho 'Error: could not reserve the heap' >&2\nexit 3\n")
  fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
  m = meteor_lib.Meteor(java=str(fake))
  for _ in range(2):  # and again: the same error, no hang
    with pytest.raises(meteor_lib.MeteorError, match="exit status 3.*could not reserve"):
      m.score([("a", ["a"])])
  m.close()
  m.close()


PAIRS = [
    ("a man riding a horse", ["a man riding a horse"]),          # identical
    ("a red car", ["green tree on the hill"]),                   # unrelated
    ("a horse", ["a man riding a horse"]),                       # monotone: more of the ref
    ("a man on a horse", ["a man riding a horse"]),
    ("a person riding a horse", ["a man riding a horse"]),
    ("the dog on the grass", ["a dog on the grass", "a brown dog", "green grass"]),
    ("", ["a man"]),                                             # empty candidate
    ("a man", []),                                               # no reference
    ("a man\nriding ||| a horse", ["a man riding\na horse"]),    # sanitised
]


SINGLE = PAIRS[:5]  # one reference each: the jar's file mode takes them


@pytest.fixture(scope="module")
def jars(tmp_path_factory):
  """Three JVMs started at once (each spends seconds loading the paraphrase table): ours,
  the jar's own file mode on SINGLE, and pycocoevalcap's wrapper."""
  if shutil.which("java") is None:
    pytest.skip("java is not on PATH (apt-get install -y default-jre-headless)")
  jar = meteor_lib.default_jar()
  if not os.path.isfile(jar):
    pytest.skip("pycocoevalcap's meteor-1.5.jar is not installed")
  from pycocoevalcap.meteor.meteor import Meteor as CocoMeteor
  d = tmp_path_factory.mktemp("meteor")
  (d / "hyp.txt").write_text("".join(c + "\n" for c, _ in SINGLE))
  (d / "ref.txt").write_text("".join(r[0] + "\n" for _, r in SINGLE))
  file_run = subprocess.Popen(["java", "-jar", "-Xmx2G", jar, str(d / "hyp.txt"),
                               str(d / "ref.txt"), "-l", "en", "-norm"],
                              cwd=os.path.dirname(jar), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
  coco = CocoMeteor()
  ours = meteor_lib.Meteor()
  yield types.SimpleNamespace(ours=ours, file_run=file_run, coco=coco)
  ours.close()
  for process in (file_run, coco.meteor_p):  # pycocoevalcap's __del__ may wait on its jar
    process.kill()
    process.wait()


@pytest.fixture
def jar_meteor(jars):
  return jars.ours


def test_meteor_jar_sanity(jar_meteor):
  s = jar_meteor.score(PAIRS)
  assert s.shape == (len(PAIRS),) and s.dtype == np.float64
  assert s[0] == 1.0 and s[1] == 0.0 and s[6] == 0.0 and s[7] == 0.0 and s[8] == 1.0
  assert 0 < s[2] < s[3] < s[4] < 1
  assert 0 < s[5] < 1
  # The same pairs again, one by one: segment scores do not depend on the EVAL line.
  np.testing.assert_array_equal(np.concatenate([jar_meteor.score([p]) for p in PAIRS[:3]]),
                                s[:3])
  assert jar_meteor.score([]).shape == (0,)


def test_meteor_equals_the_jar_run_on_files(jars):
  """The jar's own file mode (hypotheses and references in files, one reference each)."""
  stdout, stderr = jars.file_run.communicate(timeout=120)
  assert jars.file_run.returncode == 0, stderr
  expected = [float(line.split("\t")[1]) for line in stdout.splitlines()
              if line.startswith("Segment ")]
  assert len(expected) == len(SINGLE)
  np.testing.assert_array_equal(jars.ours.score(SINGLE), expected)


def test_meteor_equals_pycocoevalcap(jars):
  pairs = [p for p in PAIRS if p[1] and "\n" not in p[0] + "".join(p[1])]
  _, scores = jars.coco.compute_score({i: r for i, (_, r) in enumerate(pairs)},
                                      {i: [c] for i, (c, _) in enumerate(pairs)})
  np.testing.assert_array_equal(jars.ours.score(pairs), scores)


def test_evaluator_with_the_jar(jar_meteor):
  ev = dc.DenseCaptioningEvaluator(meteor=jar_meteor)
  ev.add([0.9, 0.8], [G1, G2], ["a man riding a horse", "a red car"],
         [G1, G2], ["a man riding a horse", "green tree on the hill"])
  out = ev.evaluate()
  # det AP 1 everywhere; METEOR [1, 0]: tp = [1, 0] of 2 -> AP 0.5 in every METEOR cell.
  assert out["detection_map"] == pytest.approx(1.0)
  assert out["map"] == pytest.approx(0.5)
  assert out["meteor_mean"] == pytest.approx(0.5)


def _lua_transliteration(images, meteor_of):
  """eval_utils.lua / box_utils.lua line by line (0-based), with plain loops: the oracle."""
  def iou(bb, bbgt):
    bi = [max(bb[0], bbgt[0]), max(bb[1], bbgt[1]), min(bb[2], bbgt[2]), min(bb[3], bbgt[3])]
    iw, ih = bi[2] - bi[0] + 1, bi[3] - bi[1] + 1
    if iw > 0 and ih > 0:
      ua = (bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1) + (bbgt[2] - bbgt[0] + 1) * (
          bbgt[3] - bbgt[1] + 1) - iw * ih
      return iw * ih / ua
    return 0.0

  records, logprobs, npos = [], [], 0
  for scores, boxes, text, tboxes, ttext in images:
    boxes = [[float(v) for v in np.float32(b)] for b in boxes]
    tboxes = [[float(v) for v in np.float32(b)] for b in tboxes]
    n = len(tboxes)
    dmat = [[1.0 if i == j else iou(tboxes[i], tboxes[j]) for j in range(n)] for i in range(n)]
    groups = []
    while n:
      sums = [sum(dmat[i][j] >= 0.7 for i in range(n)) for j in range(n)]
      top = max(range(n), key=lambda j: (sums[j], -j))
      if sums[top] == 0:
        break
      members = [j for j in range(n) if dmat[top][j] >= 0.7]
      groups.append(members)
      for m in members:
        for k in range(n):
          dmat[m][k] = dmat[k][m] = 0.0
    merged = [list(dc._mean_box(np.float32([tboxes[m] for m in g]))) for g in groups]
    mtext = [[ttext[m] for m in g] for g in groups]
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    used = [0] * len(merged)
    for ii in order:
      ovmax, jmax = 0, -1
      for j, g in enumerate(merged):
        ov = iou(boxes[ii], [float(v) for v in g])
        if ov > ovmax:
          ovmax, jmax = ov, j
      ok = 1
      if used[jmax] == 0:  # Python's [-1] is torch's: the last one
        used[jmax] = 1
      else:
        ok = 0
      refs = mtext[jmax] if jmax >= 0 else []
      records.append((ok, ovmax, meteor_of(text[ii]), scores[ii]))
    npos += len(merged)
  order = sorted(range(len(records)), key=lambda i: -records[i][3])
  out = {}
  for t_iou in dc.IOU_THRESHOLDS:
    for t_m in (-1,) + dc.METEOR_THRESHOLDS:
      tp = np.array([records[i][0] == 1 and records[i][1] >= t_iou and records[i][2] > t_m
                     for i in order], np.float64)
      rec = np.cumsum(tp) / npos
      prec = np.cumsum(tp) / np.arange(1, len(tp) + 1)
      ap, t = 0.0, 0.0
      while t <= 1:
        ap += np.max(prec * (rec >= t))
        t += 0.01
      key = f"det_ap/iou{t_iou:g}" if t_m == -1 else f"ap/iou{t_iou:g}_meteor{t_m:g}"
      out[key] = ap / 100
  return out


def _random_images(seed=0, n=8):
  """Jittered copies of a few base boxes (ground truths merge, detections hit, share and
  miss), tied scores, captions from a small vocabulary."""
  rng = np.random.default_rng(seed)
  words = ["a", "man", "dog", "red", "car", "tree", "on", "the"]
  images = []
  for _ in range(n):
    xy = rng.integers(0, 40, (3, 2))
    base = np.concatenate([xy, xy + rng.integers(8, 30, (3, 2))], 1)
    def jitter(k, amount):
      return (base[rng.integers(0, 3, k)] + rng.integers(-amount, amount + 1, (k, 4))
              ).astype(np.float64)
    nd, ng = int(rng.integers(0, 9)), int(rng.integers(1, 7))
    det = jitter(nd, 6)
    det[rng.random(nd) < 0.2] += 200  # misses
    images.append((rng.integers(0, 5, nd) / 4.0, det, list(rng.choice(words, nd)),
                   jitter(ng, 2), list(rng.choice(words, ng))))
  return images, dict(zip(words, [0, 0.05, 0.1, 0.12, 0.2, 0.3, 0.25, 0.9]))


def test_matches_a_line_by_line_transliteration_of_the_lua():
  images, table = _random_images()
  ev, out = _evaluate(images, table=table, language_metrics=False)
  recs = ev.records()
  # The data exercise every rule: merges, misses that take a box, taken boxes.
  assert ev.num_gt_merged < sum(len(image[3]) for image in images)
  assert any(r["ok"] and r["overlap"] == 0 for r in recs)
  assert any(not r["ok"] and r["overlap"] > 0 for r in recs)
  expected = _lua_transliteration(images, table.get)
  for key, value in expected.items():
    assert out[key] == pytest.approx(value, abs=1e-12), key
  assert 0 < out["map"] < out["detection_map"] < 1
