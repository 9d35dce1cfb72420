"""Ablations spread over shards (--shard=i/n) and merged (--merge=DIR,...), and the
scatter plot with marker / colour by tag and the Pareto front."""
import csv
import json
import os
import shutil
import subprocess
import sys

import ml_collections
import pytest

from jaxseg import ablate
from jaxseg.errors import ConfigError
from conftest import REPO
from test_ablate import _ablation


def _tiny(data_dir):
  """The tiny study of test_ablate (a run and one evaluating its checkpoint), 2 seeds,
  with metrics that do not depend on timing."""
  a = _ablation(data_dir)
  a.metrics = ("mIoU", "params", "gflops_per_image")
  a.seeds = 2
  return a


def _rows(path):
  """results.csv without its provenance columns (wall time; the commit, which moves when
  someone commits while the test runs)."""
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  keep = [i for i, c in enumerate(rows[0]) if c not in ("wall_seconds", "commit")]
  assert len(keep) == len(rows[0]) - 2
  return [[row[i] for i in keep] for row in rows]


def _table_and_claims(path):
  """The run table and claim verdicts of results.md (not its dates, commands, wall times)."""
  lines = open(path).read().split("## Provenance")[0].splitlines()
  return [l for l in lines if l.startswith("| ") or ": **" in l]


def test_shards_merged_equal_the_unsharded_study(data_dir, tmp_path):
  a = _tiny(data_dir)
  whole = ablate.run_command(a, str(tmp_path / "whole"), "cmd")
  ablate.write_report(a, whole, str(tmp_path / "whole_report"), "cmd")

  # --retime: every run's checkpoint timed again in this process; nothing else changes.
  retimed = ablate.retime(a, whole, [str(tmp_path / "whole")], rounds=2)
  assert [(r["name"], r["seed"]) for r in retimed] == [(r["name"], r["seed"]) for r in whole]
  for old, new in zip(whole, retimed):
    assert 0 < new["infer_ms_per_image"] < float("inf")
    assert {k: v for k, v in new.items() if k != "infer_ms_per_image"} == {
        k: v for k, v in old.items() if k != "infer_ms_per_image"}
  gone = str(tmp_path / "no_checkpoints")
  shutil.copytree(str(tmp_path / "whole"), gone)
  shutil.rmtree(os.path.join(gone, "maxpool", "seed_0", "checkpoints"))
  with pytest.raises(ConfigError, match="no checkpoint to time"):
    ablate.retime(a, whole, [gone], rounds=1)

  shard_dirs = [str(tmp_path / f"shard_{i}") for i in range(2)]
  for i, d in enumerate(shard_dirs):
    ablate.run_command(a, d, f"cmd --shard={i}/2", shard=(i, 2))
  # Seed k of both runs goes to shard k: the evaluation sits with the checkpoint it reads.
  for i, d in enumerate(shard_dirs):
    with open(os.path.join(d, f"shard_{i}_of_2.json")) as f:
      manifest = json.load(f)
    assert manifest["pairs"] == [["maxpool", i], ["same weights", i]] == manifest["finished"]
    assert manifest["status"] == "done" and manifest["failed"] == []
    assert manifest["provenance"]["versions"]["jax"] and manifest["wall_seconds"] > 0
    assert sorted(os.listdir(os.path.join(d, "maxpool"))) == [f"seed_{i}"]

  results, merge = ablate.merge_results(a, shard_dirs)
  assert merge["missing"] == [] and merge["lines"] == []
  assert [(r["name"], r["seed"]) for r in results] == [(r["name"], r["seed"]) for r in whole]
  ablate.write_report(a, results, str(tmp_path / "merged"), "cmd", merge=merge)
  assert _rows(tmp_path / "merged" / "results.csv") == _rows(
      tmp_path / "whole_report" / "results.csv")
  merged = _table_and_claims(tmp_path / "merged" / "results.md")
  assert merged == _table_and_claims(tmp_path / "whole_report" / "results.md")
  assert "- same weights, same mIoU: **holds** (`r['maxpool']['mIoU'] == r['same weights']['mIoU']`)" in merged
  assert "| same weights | 2 |" in "\n".join(merged)

  # Shard 1 stopped with an error while training maxpool seed 1: its pairs are missing
  # and named with their shard; the claims that compare them are undecided.
  crashed = str(tmp_path / "crashed")
  m = ablate.ShardManifest(a, crashed, (1, 2), ablate.plan(a, 2, (1, 2)), 2, "cmd")
  m.on_pair("maxpool", 1, None)
  m.close("error: boom")
  results, merge = ablate.merge_results(a, [shard_dirs[0], crashed])
  assert [(r["name"], r["seed"]) for r in results] == [("maxpool", 0), ("same weights", 0)]
  assert merge["missing"] == [("maxpool", 1), ("same weights", 1)]
  assert merge["lines"] == ["- missing: maxpool seed 1 (shard 1/2, failed: boom)",
                            "- missing: same weights seed 1 (shard 1/2, not finished)"]
  ablate.write_report(a, results, str(tmp_path / "partial"), "cmd", merge=merge)
  text = (tmp_path / "partial" / "results.md").read_text()
  assert "2 (run, seed) pairs have no result:" in text
  assert "- missing: maxpool seed 1 (shard 1/2, failed: boom)" in text
  assert "- same weights, same mIoU: **inconclusive**" in text
  # Without any manifest of the lost shard the pairs are still named.
  _, merge = ablate.merge_results(a, [shard_dirs[0]])
  assert merge["lines"][0] == "- missing: maxpool seed 1 (no shard manifest names it)"

  # The same pair with different results in two dirs: the first listed is used, and said.
  edited = str(tmp_path / "edited")
  shutil.copytree(shard_dirs[0], edited)
  path = os.path.join(edited, "maxpool", "seed_0", "result.json")
  with open(path) as f:
    result = json.load(f)
  result["mIoU"] = 0.123
  with open(path, "w") as f:
    json.dump(result, f)
  results, merge = ablate.merge_results(a, [edited, *shard_dirs])
  assert results[0]["mIoU"] == 0.123 and len(results) == 4
  assert merge["lines"] == [
      f"- maxpool seed 0 is in {edited}, {shard_dirs[0]} with different results (metrics "
      f"differing: mIoU); used {edited} (the first listed, one without an error first)"]


def test_shard_assignment_keeps_evaluations_with_their_checkpoint():
  a = ml_collections.ConfigDict()
  a.runs = [dict(name="a"), dict(name="b", evaluate_checkpoint_of="a"), dict(name="c"),
            dict(name="d", evaluate_checkpoint_of="b"), dict(name="e")]
  runs = ablate.expand_runs(a)
  owner = ablate.shard_of(runs, 2, 3)
  assert owner == {("a", 0): 0, ("a", 1): 1, ("b", 0): 0, ("b", 1): 1, ("d", 0): 0,
                   ("d", 1): 1, ("c", 0): 2, ("c", 1): 0, ("e", 0): 1, ("e", 1): 2}
  for n in (1, 2, 4, 7):  # every pair has one shard; evaluations sit with their source
    owner = ablate.shard_of(runs, 3, n)
    assert len(owner) == 15 and set(owner.values()) <= set(range(n))
    for k in range(3):
      assert owner["a", k] == owner["b", k] == owner["d", k]


def test_bad_shard_values_are_one_clear_error():
  assert ablate.parse_shard("3/4") == (3, 4)
  for bad in ("4/4", "0/0", "-1/2", "1", "a/b", ""):
    with pytest.raises(ConfigError, match=r"expected i/n with 0 <= i < n"):
      ablate.parse_shard(bad)
  study = os.path.join(REPO, "experiments", "ablations", "upsampling.py")
  proc = subprocess.run([sys.executable, "-m", "jaxseg.ablate", f"--ablation={study}",
                         "--shard=2/2"], cwd=REPO, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == (
      "jaxseg: error: --shard='2/2': expected i/n with 0 <= i < n (this shard's index and "
      "the number of shards), e.g. --shard=0/4")


def test_pareto_front_by_hand():
  points = [(1, 0.5), (2, 0.4), (2, 0.7), (3, 0.7), (0.5, 0.1), (4, 0.9),
            (float("nan"), 1.0), (4, 0.9)]
  # (2, 0.4) is slower and worse than (1, 0.5); (3, 0.7) ties (2, 0.7) in AP but is slower;
  # equal points dominate neither; a nan point is left out.
  assert ablate.pareto_front(points) == [4, 0, 2, 5, 7]
  assert ablate.pareto_front([(1, 1)]) == [0]
  assert ablate.pareto_front([]) == []


def test_scatter_by_tags_with_the_pareto_front(tmp_path):
  a = ml_collections.ConfigDict()
  a.name, a.base = "toy", "unused.py"
  a.metrics = ("AP", "test_ms")
  a.runs = [dict(name=f"{m} {b}", tags={"meta": m, "backbone": b})
            for m in ("ssd", "yolo", "frcnn") for b in ("vgg", "resnet")]
  speed = {"ssd": 2.0, "yolo": 1.0, "frcnn": 8.0}  # ms with vgg; resnet 1.5x
  ap = {"ssd vgg": 0.5, "ssd resnet": 0.55, "yolo vgg": 0.4, "yolo resnet": 0.38,
        "frcnn vgg": 0.7, "frcnn resnet": 0.75}  # yolo resnet: slower and worse than yolo vgg
  results = [{"name": f"{m} {b}", "seed": s, "overrides": {}, "AP": ap[f"{m} {b}"] + 0.01 * s,
              "test_ms": speed[m] * (1.5 if b == "resnet" else 1)}
             for m in speed for b in ("vgg", "resnet") for s in (0, 1)]
  a.plot = dict(x="test_ms", y=("AP",), kind="scatter", marker_by="meta",
                colour_by="backbone", pareto=True)
  ablate.write_report(a, results, str(tmp_path), "cmd")
  assert (tmp_path / "plot.png").stat().st_size > 1000

  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots()
  names = [r["name"] for r in results[::2]]
  tags = {r["name"]: r["tags"] for r in ablate.expand_runs(a)}
  xs = [r["test_ms"] for r in results[::2]]
  ys = [r["AP"] for r in results[::2]]
  handles = ablate._scatter(ax, a.plot, tags, names, xs, ys, None, None)  # pylint: disable=protected-access
  legend = [h.get_label() for h in handles]
  assert legend == ["meta: ssd", "meta: yolo", "meta: frcnn", "backbone: vgg",
                    "backbone: resnet", "Pareto front"]
  shapes = {line.get_marker() for line in ax.lines if line.get_marker() != "None"}
  assert {"o", "s", "^"} <= shapes
  labels = [t.get_text() for t in ax.texts]  # the front's points are labelled
  assert labels == ["yolo vgg", "ssd vgg", "ssd resnet", "frcnn vgg", "frcnn resnet"]
  plt.close(fig)
