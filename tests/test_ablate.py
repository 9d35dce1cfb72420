"""The ablation runner: runs, resume without repetition, report files, claim verdicts."""
import csv
import os

import ml_collections
import numpy as np
import pytest

from jaxseg import ablate
from jaxseg.errors import ConfigError
from jaxseg.metrics import segmentation as seg_metrics
from conftest import UNET_CONFIG


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
  results = ablate.run_all(a, workdir)
  assert [r["name"] for r in results] == ["maxpool", "same weights"]
  first, second = results
  assert first["final_step"] == 2 and second["final_step"] == 2
  assert first["mIoU"] == second["mIoU"]  # dropout is off at eval: same weights, same output
  assert first["params"] == second["params"] > 0
  assert first["gflops_per_image"] > 0 and first["train_memory_mb"] > 0
  assert "run 2/2 'same weights'" in capsys.readouterr().err

  mtime = os.path.getmtime(os.path.join(workdir, "maxpool", "result.json"))
  again = ablate.run_all(a, workdir)  # finished runs are not repeated
  assert again == results
  assert os.path.getmtime(os.path.join(workdir, "maxpool", "result.json")) == mtime
  assert "done before, not repeated" in capsys.readouterr().err

  report = tmp_path / "report"
  ablate.write_report(a, results, str(report), "./launch.sh ablate tiny.py")
  text = (report / "results.md").read_text()
  assert "| run | mIoU | params |" in text and "| same weights |" in text
  assert "- same weights, same mIoU: **holds**" in text
  assert "- more parameters: **does NOT reproduce**" in text
  assert "missing metric: **not checked" in text
  assert "Command: `./launch.sh ablate tiny.py`" in text
  with open(report / "results.csv") as f:
    rows = list(csv.reader(f))
  assert rows[0] == ["run", *a.metrics] and len(rows) == 3
  assert float(rows[1][2]) == first["params"]
  assert (report / "plot.png").stat().st_size > 1000


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
                                              ("w=1 is the best", "does NOT reproduce")]
