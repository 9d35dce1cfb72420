"""The ablation runner: runs and seeds, resume without repetition, report files, claim
verdicts over seeds, provenance, and committed tables that match the code."""
import csv
import glob
import json
import os

import ml_collections
import numpy as np
import pytest

from jaxseg import ablate
from jaxseg.errors import ConfigError
from jaxseg.metrics import segmentation as seg_metrics
from conftest import REPO, UNET_CONFIG


def _ablation(data_dir):
  a = ml_collections.ConfigDict()
  a.name = "tiny"
  a.base = f"{UNET_CONFIG}:tiny"
  a.overrides = {"dataset": {"data_dir": data_dir}, "num_steps": 2, "eval_every": 2}
  a.runs = [dict(name="maxpool", overrides={"model.downsample": "maxpool"}),
            dict(name="same weights", evaluate_checkpoint_of="maxpool",
                 overrides={"model.dropout_rate": 0.5})]
  a.metrics = ("mIoU", "params", "gflops_per_image", "train_memory_mb", "ms_per_step")
  a.plot = dict(x="run", y=("mIoU", "params"))
  a.claims = [dict(text="same weights, same mIoU",
                   check="r['maxpool']['mIoU'] == r['same weights']['mIoU']"),
              dict(text="more parameters", check="r['maxpool']['params'] > 10**9"),
              dict(text="missing metric", check="r['maxpool']['nope'] > 0")]
  return a


def test_ablation_runs_resumes_and_reports(data_dir, tmp_path, capsys):
  a = _ablation(data_dir)
  workdir = str(tmp_path / "runs")
  results = ablate.run_all(a, workdir, seeds=2)
  assert [(r["name"], r["seed"]) for r in results] == [
      ("maxpool", 0), ("maxpool", 1), ("same weights", 0), ("same weights", 1)]
  first, first_1, second, second_1 = results
  assert first["final_step"] == 2 and second["final_step"] == 2
  assert first["mIoU"] == second["mIoU"]  # dropout is off at eval: same weights, same output
  assert first_1["mIoU"] == second_1["mIoU"]
  assert first["config"]["seed"] == 0 and first_1["config"]["seed"] == 1
  assert first["params"] == first_1["params"] == second["params"] > 0
  assert first["gflops_per_image"] > 0 and first["train_memory_mb"] > 0
  assert first["provenance"]["versions"]["jax"] and first["wall_seconds"] > 0
  assert "run 2/2 'same weights' seed 1 (2/2)" in capsys.readouterr().err
  for name in ("maxpool", "same_weights"):
    assert sorted(os.listdir(os.path.join(workdir, name))) == ["seed_0", "seed_1"]

  path = os.path.join(workdir, "maxpool", "seed_1", "result.json")
  mtime = os.path.getmtime(path)
  again = ablate.run_all(a, workdir, seeds=2)  # finished runs are not repeated
  assert again == results
  assert os.path.getmtime(path) == mtime
  assert "done before, not repeated" in capsys.readouterr().err

  report = tmp_path / "report"
  ablate.write_report(a, results, str(report), "./launch.sh ablate tiny.py --seeds=2", 12.0)
  text = (report / "results.md").read_text()
  assert "| run | seeds | mIoU | params |" in text and "| same weights | 2 |" in text
  assert "## Spread over seeds" in text and "| maxpool | mIoU | 2 |" in text
  assert "- same weights, same mIoU: **holds**" in text
  assert "- more parameters: **does not hold**" in text
  assert "missing metric: **not checked" in text
  assert "Command: `./launch.sh ablate tiny.py --seeds=2`" in text
  assert "- Versions: jax " in text and "- Machine: " in text and "this command took 12 s" in text
  with open(report / "results.csv") as f:
    rows = list(csv.reader(f))
  assert rows[0] == ["run", "seed", *a.metrics, "wall_seconds", "commit", "error"]
  assert len(rows) == 5 and rows[2][:2] == ["maxpool", "1"]
  assert float(rows[1][3]) == first["params"]
  assert (report / "plot.png").stat().st_size > 1000

  # The staleness check: profile's figures equal code_figures' (nothing trained) ...
  assert ablate.is_provenance_csv(str(report / "results.csv"))
  assert ablate.table_mismatches(a, str(report / "results.csv")) == []
  # ... and a table whose params or GFLOP differ from the code fails it.
  for column, change in (("params", lambda v: str(int(float(v)) + 1)),
                         ("gflops_per_image", lambda v: repr(float(v) * 1.001))):
    edited = [row[:] for row in rows]
    i = rows[0].index(column)
    edited[2][i] = change(edited[2][i])
    copy = tmp_path / f"edited_{column}.csv"
    with open(copy, "w", newline="") as f:
      csv.writer(f).writerows(edited)
    wrong = ablate.table_mismatches(a, str(copy))
    assert len(wrong) == 1 and f"'maxpool' seed 1: {column}" in wrong[0], wrong
    assert ablate.table_mismatches(a, str(copy), only=["same weights"]) == []  # a part


def test_grid_names_and_nested_overrides():
  a = ml_collections.ConfigDict()
  a.grid = {"model": {"depth": [2, 3]}, "loss": {"dice_weight": [0.0, 1.0]}}
  runs = ablate.expand_runs(a)
  # (ConfigDict iterates its keys sorted: loss before model)
  assert [r["name"] for r in runs] == ["dice_weight=0.0,depth=2", "dice_weight=0.0,depth=3",
                                       "dice_weight=1.0,depth=2", "dice_weight=1.0,depth=3"]
  assert runs[1]["overrides"] == {"model.depth": 3, "loss.dice_weight": 0.0}


def test_bad_ablations_are_clear_errors():
  a = ml_collections.ConfigDict()
  a.base = f"{UNET_CONFIG}:tiny"
  a.runs = [dict(name="x", overrides={"model.dept": 3})]
  with pytest.raises(ConfigError, match="model.dept=3 does not fit the base config"):
    ablate.run_config(a, ablate.expand_runs(a)[0])
  a.runs = [dict(name="x", evaluate_checkpoint_of="y"), dict(name="y")]
  with pytest.raises(ConfigError, match="must name an earlier run"):
    ablate.expand_runs(a)
  a.runs = [dict(name="x"), dict(name="x")]
  with pytest.raises(ConfigError, match="unique"):
    ablate.expand_runs(a)


def test_checkerboard_score_by_hand():
  y, x = np.mgrid[:8, :8]
  checker = np.where((x + y) % 2 == 0, 1.0, -1.0)
  ramp = 0.3 * x + 0.1 * y
  step = (y >= 4).astype(float)
  noise = np.random.default_rng(0).normal(size=(64, 64))
  for image, expected in [(checker, 1.0), (ramp, 0.0), (step, 0.0)]:
    energy = seg_metrics.checkerboard_energy(image[None, :, :, None])
    assert seg_metrics.checkerboard_score(energy) == pytest.approx(expected, abs=1e-6)
  energy = seg_metrics.checkerboard_energy(noise[None, :, :, None])
  assert seg_metrics.checkerboard_score(energy) == pytest.approx(0.5, abs=0.05)
  # per image: [checkerboard, ramp]
  energy = seg_metrics.checkerboard_energy(np.stack([checker, ramp])[..., None])
  np.testing.assert_allclose(energy["checkerboard"], [4.0, 0.0], atol=1e-6)  # (4a)^2 / 4, a=1
  np.testing.assert_allclose(energy["gradient"][0], 4.0)  # (2a)^2


def test_claim_checks_may_use_comprehensions_over_runs():
  a = ml_collections.ConfigDict()
  a.claims = [dict(text="w=2 is the best", check="r['w=2']['acc'] == max(r[k]['acc'] for k in r)"),
              dict(text="w=1 is the best", check="r['w=1']['acc'] == max(r[k]['acc'] for k in r)")]
  results = [{"name": "w=1", "acc": 0.5}, {"name": "w=2", "acc": 0.9}]
  assert ablate.check_claims(a, results) == [("w=2 is the best", "holds"),
                                              ("w=1 is the best", "does not hold")]


def _seeded(values: dict, metric="acc", **extra):
  """Results {run: [value per seed]} as run_all gives them."""
  return [{"name": name, "seed": s, "overrides": {}, metric: v, **extra}
          for name, vs in values.items() for s, v in enumerate(vs)]


def test_claim_verdicts_over_seeds():
  a = ml_collections.ConfigDict()
  checks = {"b beats a": "r['b']['acc'] > r['a']['acc']",
            "a beats b": "r['a']['acc'] > r['b']['acc']",
            "c beats a": "r['c']['acc'] > r['a']['acc']",  # within 2 SE: inconclusive
            "same as itself": "r['a']['acc'] == r['a2']['acc']",
            "b over a threshold": "r['b']['acc'] - 0.05 >= 0.5",
            "b is the best": "r['b']['acc'] == max(r[k]['acc'] for k in 'abc')",
            "twice a": "r['b']['acc'] > 2 * r['a']['acc']",
            "nan": "r['d']['acc'] > 0"}
  a.claims = [dict(text=t, check=c) for t, c in checks.items()]
  results = _seeded({"a": [0.50, 0.52, 0.51], "a2": [0.50, 0.52, 0.51],
                     "b": [0.60, 0.61, 0.62], "c": [0.55, 0.45, 0.70]})
  results += [{"name": "d", "seed": 0, "overrides": {}, "acc": "nan"}]
  verdicts = dict(ablate.check_claims(a, results))
  assert verdicts == {"b beats a": "holds", "a beats b": "does not hold",
                      "c beats a": "inconclusive", "same as itself": "holds",
                      "b over a threshold": "holds",
                      "b is the best": "inconclusive",  # b vs c is within 2 SE
                      "twice a": "does not hold",
                      "nan": "not checked: ValueError: a compared value is not finite"}
  # A failed seed has no metrics: the others are compared, paired by seed.
  failed = [r for r in results if not (r["name"] == "b" and r["seed"] == 2)]
  failed.append({"name": "b", "seed": 2, "overrides": {}, "error": "loss is nan"})
  assert dict(ablate.check_claims(a, failed))["b beats a"] == "holds"
  # One seed: the plain comparison.
  one = _seeded({"a": [0.5], "c": [0.55]})
  assert dict(ablate.check_claims(a, one))["c beats a"] == "holds"


def test_report_has_spread_provenance_and_error_bars(tmp_path):
  a = ml_collections.ConfigDict()
  a.name, a.base = "toy", f"{UNET_CONFIG}:tiny"
  a.metrics = ("acc", "params")
  a.claims = [dict(text="b beats a", check="r['b']['acc'] > r['a']['acc']")]
  results = _seeded({"a": [0.50, 0.52, 0.51], "b": [0.60, 0.61, 0.62]}, params=1000,
                    wall_seconds=10.0, commit="abc1234+dirty",
                    provenance={"commit": "abc1234+dirty", "machine": "M",
                                "versions": {"jax": "0.10.2", "flax": "0.12.8"}})
  for kind, x in (("bar", "run"), ("line", "run"), ("scatter", "params")):
    a.plot = dict(x=x, y=("acc",), kind=kind)
    ablate.write_report(a, results, str(tmp_path / kind), "cmd")
    assert (tmp_path / kind / "plot.png").stat().st_size > 1000
  text = (tmp_path / "bar" / "results.md").read_text()
  assert "| a | 3 | 0.51 ± 0.01 | 1000 |" in text
  assert "| b | acc | 3 | 0.61 | 0.01 | 0.6 | 0.62 |" in text
  assert "- b beats a: **holds** (`r['b']['acc'] > r['a']['acc']`)" in text
  assert "Rule: Each claim's check" in text
  assert "- Code: commit abc1234 with uncommitted changes" in text
  assert "- Versions: jax 0.10.2, flax 0.12.8" in text and "- Machine: M" in text
  assert "- Wall time: 60 s over all runs" in text
  assert "| a | seed 0: 10, seed 1: 10, seed 2: 10 | 30 |" in text
  with open(tmp_path / "bar" / "results.csv") as f:
    rows = list(csv.reader(f))
  assert rows[0] == ["run", "seed", "acc", "params", "gflops_per_image", "wall_seconds",
                     "commit", "error"]
  assert rows[1] == ["a", "0", "0.5", "1000", "", "10.0", "abc1234+dirty", ""]
  # Older results (no seed, no provenance) still make a report.
  old = [{"name": "a", "overrides": {}, "acc": 0.5, "commit": "unrecorded"}]
  ablate.write_report(a, old, str(tmp_path / "old"), "cmd")
  assert "- Code: commit unrecorded (made by older code)" in (
      tmp_path / "old" / "results.md").read_text()


def test_report_says_which_verdicts_changed_and_keeps_saying_it(tmp_path):
  a = ml_collections.ConfigDict()
  a.name, a.base, a.metrics = "toy", f"{UNET_CONFIG}:tiny", ("acc",)
  a.claims = [dict(text="b beats a", check="r['b']['acc'] > r['a']['acc']"),
              dict(text="c: beats a", check="r['c']['acc'] > r['a']['acc']")]
  out = tmp_path / "study"
  out.mkdir()
  # A report in the older single-seed format (its wording and its "Code:" line).
  (out / "results.md").write_text(
      "# Ablation: toy\n\nCode: commit 4fa1599.\n\n## Claims\n\n"
      "- b beats a: **does NOT reproduce**\n- c: beats a: **holds**\n- gone: **holds**\n")
  prov = {"commit": "b848a09", "machine": "M", "versions": {}}
  results = _seeded({"a": [0.50, 0.52, 0.51], "b": [0.60, 0.61, 0.62],
                     "c": [0.55, 0.45, 0.70]}, provenance=prov)
  ablate.write_report(a, results, str(out), "cmd")
  text = (out / "results.md").read_text()
  changed = ["- b beats a: **does not hold** with commit 4fa1599 -> **holds** with commit "
             "b848a09 (clean tree)",
             "- c: beats a: **holds** with commit 4fa1599 -> **inconclusive** with commit "
             "b848a09 (clean tree)"]
  section = text.split(ablate.VERDICT_CHANGES)[1].split("## Provenance")[0]
  assert [l for l in section.splitlines() if l.startswith("- ")] == changed
  # Merged again (same results): the changes stay, none is added or repeated.
  ablate.write_report(a, results, str(out), "cmd")
  assert (out / "results.md").read_text() == text
  # A later run whose verdicts differ again adds its change below the earlier ones.
  later = _seeded({"a": [0.5, 0.5, 0.5], "b": [0.4, 0.4, 0.4], "c": [0.6, 0.6, 0.6]},
                  provenance=dict(prov, commit="c0ffee1"))
  ablate.write_report(a, later, str(out), "cmd")
  section = (out / "results.md").read_text().split(ablate.VERDICT_CHANGES)[1]
  assert [l for l in section.splitlines() if l.startswith("- ")][:3] == changed + [
      "- b beats a: **holds** with commit b848a09 (clean tree) -> **does not hold** with "
      "commit c0ffee1 (clean tree)"]
  # No earlier report, or the same verdicts: no section.
  ablate.write_report(a, results, str(tmp_path / "fresh"), "cmd")
  assert ablate.VERDICT_CHANGES not in (tmp_path / "fresh" / "results.md").read_text()


def test_seed_dirs_and_the_older_single_seed_layout(tmp_path):
  workdir = str(tmp_path)
  assert ablate.seed_dir(workdir, "a b", 0, 0) == os.path.join(workdir, "a_b", "seed_0")
  os.makedirs(os.path.join(workdir, "a_b", "checkpoints"))  # a run of the older layout
  assert ablate.seed_dir(workdir, "a b", 0, 0) == os.path.join(workdir, "a_b")
  assert ablate.seed_dir(workdir, "a b", 1, 0) == os.path.join(workdir, "a_b", "seed_1")
  a = ml_collections.ConfigDict()
  a.base = f"{UNET_CONFIG}:tiny"
  a.runs = [dict(name="a b")]
  config = ablate.run_config(a, ablate.expand_runs(a)[0])
  old = {"name": "a b", "overrides": {}, "mIoU": 0.5, "config": config.to_dict()}
  with open(os.path.join(workdir, "a_b", "result.json"), "w") as f:
    json.dump(ablate._jsonable(old), f)  # pylint: disable=protected-access
  assert ablate.run_all(a, workdir) == [{**ablate._jsonable(old), "seed": 0}]  # pylint: disable=protected-access
  assert ablate.run_config(a, ablate.expand_runs(a)[0], 2).seed == config.seed + 2
  a.seeds = 0
  with pytest.raises(ConfigError, match="seeds=0: expected a whole number"):
    ablate.run_all(a, workdir)


# Committed studies whose docs/ablations/<name>/results.csv was made by older code (no
# seeds, no provenance): their params / GFLOP are not checked until the study is re-run
# (`./launch.sh ablate <name>`), which writes the new format; then drop it from here.
STALE_UNTIL_RERUN = ()
STUDIES = sorted(glob.glob(os.path.join(REPO, "experiments", "ablations", "*.py")))
# A table of many runs is checked in parts of at most this many runs (separate tests, so
# the test workers share it: speed_accuracy's 27 detectors take minutes).
RUNS_PER_PART = 9


def _table_parts(study):
  """[(study path, the run names of one part of its committed table, test id)]: the runs
  dealt round-robin into parts of at most RUNS_PER_PART (one part, all runs, without a
  table)."""
  name = os.path.basename(study)[:-3]
  table = os.path.join(REPO, "docs", "ablations", name, "results.csv")
  runs = []
  if os.path.exists(table):
    with open(table, newline="") as f:
      runs = list(dict.fromkeys(row.get("run") for row in csv.DictReader(f)))
  n = max(1, -(-len(runs) // RUNS_PER_PART))
  return [(study, runs[k::n], name + (f"-{k + 1}of{n}" if n > 1 else "")) for k in range(n)]


TABLE_PARTS = [p for study in STUDIES for p in _table_parts(study)]


@pytest.mark.parametrize("path,runs", [p[:2] for p in TABLE_PARTS],
                         ids=[p[2] for p in TABLE_PARTS])
def test_committed_tables_match_the_code(path, runs):
  """A committed table's params and GFLOP per image are what the code gives today (a
  large table in parts: this test checks the rows of `runs`)."""
  a = ablate.load_ablation(path)
  table = os.path.join(REPO, "docs", "ablations", a.name, "results.csv")
  if not os.path.exists(table):
    pytest.skip(f"{a.name}: no committed table")
  if not ablate.is_provenance_csv(table):
    assert a.name in STALE_UNTIL_RERUN, (
        f"{table} is in the older format: re-run the study or list it in STALE_UNTIL_RERUN")
    return
  assert a.name not in STALE_UNTIL_RERUN, f"{a.name} was re-run: drop it from STALE_UNTIL_RERUN"
  wrong = ablate.table_mismatches(a, table, only=runs)
  assert not wrong, f"{table} is stale (re-run the study): " + "; ".join(wrong)


def test_commit_is_dirty_for_code_changes_only(tmp_path):
  """A changed tracked file makes the commit '+dirty', except reports and prose (docs/,
  README.md): a study's report written but not committed yet leaves the next study clean."""
  import subprocess  # pylint: disable=g-import-not-at-top

  def git(*args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,
                   check=True, capture_output=True)

  for path in ("pkg/code.py", "docs/ablations/s/results.md", "README.md"):
    (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / path).write_text("v1\n")
  git("init", "-q")
  git("add", ".")
  git("commit", "-qm", "c")
  pkg = str(tmp_path / "pkg")
  clean = ablate._commit(pkg)  # pylint: disable=protected-access
  assert clean and clean != "unknown" and not clean.endswith("+dirty")
  (tmp_path / "docs/ablations/s/results.md").write_text("v2\n")
  (tmp_path / "README.md").write_text("v2\n")
  (tmp_path / "new_untracked.py").write_text("x\n")
  assert ablate._commit(pkg) == clean  # pylint: disable=protected-access
  (tmp_path / "pkg/code.py").write_text("v2\n")
  assert ablate._commit(pkg) == clean + "+dirty"  # pylint: disable=protected-access
