"""The command line end to end: a tiny run through `python -m jaxseg.main`, and bad flags."""
import json
import os
import subprocess
import sys

from conftest import REPO, UNET_CONFIG


def _main(*flags, cwd=REPO):
  return subprocess.run([sys.executable, "-m", "jaxseg.main", *flags], cwd=cwd,
                        capture_output=True, text=True, timeout=600, check=False)


def test_tiny_run_end_to_end(data_dir, tmp_path):
  workdir = tmp_path / "run"
  flags_file = tmp_path / "tiny.flags"
  flags_file.write_text(f"--config.dataset.data_dir={data_dir}\n--config.num_steps=4\n")
  result = _main(f"--config={UNET_CONFIG}:tiny", f"--workdir={workdir}",
                 f"--flagfile={flags_file}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "final step 4" in result.stdout
  picture = os.path.join(workdir, "pictures", "eval_000004.png")
  assert f"picture:     {picture}" in result.stdout and os.path.getsize(picture) > 0
  records = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  assert {r["split"] for r in records} == {"train", "eval"}
  assert any("mIoU" in r for r in records if r["split"] == "eval")
  assert os.listdir(workdir / "tensorboard")
  assert sorted(os.listdir(workdir / "checkpoints")) and (workdir / "config.json").exists()
  # Re-running the finished command resumes at the end: no training, same result.
  again = _main(f"--config={UNET_CONFIG}:tiny", f"--workdir={workdir}",
                f"--flagfile={flags_file}")
  assert again.returncode == 0 and "final step 4" in again.stdout


def _one_line_error(result):
  lines = [l for l in result.stderr.splitlines() if l.strip() and "WARNING" not in l
           and not l.startswith(("I0000", "W0000", "E0000", "To enable"))
           and "cpu_feature_guard" not in l]
  return lines


def test_mistyped_config_key_is_one_clear_line(tmp_path):
  result = _main(f"--config={UNET_CONFIG}:tiny", f"--workdir={tmp_path}",
                 "--config.optimizer.lrr=0.1")
  assert result.returncode == 2
  assert _one_line_error(result) == [
      'jaxseg: error: bad flag or config override: \'lrr\' Did you mean "lr" instead of "lrr"?']


def test_unknown_model_is_one_clear_line(data_dir, tmp_path):
  result = _main(f"--config={UNET_CONFIG}:tiny", f"--workdir={tmp_path}",
                 f"--config.dataset.data_dir={data_dir}", "--config.model.name=segnet")
  assert result.returncode == 2
  lines = _one_line_error(result)
  from jaxseg.models import SEGMENTATION_MODELS  # pylint: disable=g-import-not-at-top
  assert lines == ["jaxseg: error: unknown model name 'segnet' in config.model.name; expected "
                   f"one of {sorted(SEGMENTATION_MODELS)}"], result.stderr
