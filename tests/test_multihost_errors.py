"""User errors in multi-process jobs (issue 18): one `jaxseg: error:` line per job, exit 2.

A config error that every process of `--num_processes=N` meets alike is printed by the
first process only (`multihost.print_user_error`: the launcher's error file), and the
launcher stops the job at once, before the coordination service aborts the others with
pages of jaxlib logs. On a GPU or TPU the launcher's forced CPU devices are one error line
before any process starts.
"""
import os
import subprocess
import sys

from conftest import REPO, UNET_CONFIG
from jaxseg.train import multihost


def _run(args, env=None, timeout=300):
  return subprocess.run(
      [sys.executable, "-m", "jaxseg.main", f"--config={UNET_CONFIG}:tiny", *args], cwd=REPO,
      env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _error_lines(result):
  return [l for l in result.stderr.splitlines() if l.startswith("jaxseg: error:")]


def test_an_error_of_every_process_is_printed_once(data_dir, tmp_path):
  result = _run([f"--workdir={tmp_path / 'run'}", f"--config.dataset.data_dir={data_dir}",
                 "--config.task=nope", "--num_processes=2"])
  assert result.returncode == 2, result.stderr[-3000:]
  assert _error_lines(result) == [
      "jaxseg: error: unknown task 'nope' in config.task; expected one of ['classification', "
      "'dense_captioning', 'detection', 'instance_segmentation', 'localization', 'pose', "
      "'segmentation']"], result.stderr[-3000:]
  assert "Terminating process" not in result.stderr  # no jaxlib abort of the other process


def test_forced_cpu_devices_on_a_gpu_are_one_line(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cuda")  # refused before jax starts a backend
  result = _run([f"--workdir={tmp_path / 'run'}", "--num_processes=2"], env=env)
  assert result.returncode == 2
  [line] = _error_lines(result)
  assert line.startswith("jaxseg: error: --num_processes=2 starts local processes on forced "
                         "CPU devices, but jax here runs on gpu; ")
  assert not os.path.exists(tmp_path / "run")


def test_print_user_error_once_per_line(monkeypatch, tmp_path, capsys):
  monkeypatch.setattr(multihost, "USER_ERROR_WAIT_S", 0)
  monkeypatch.delenv(multihost.CHILD_MARK, raising=False)
  multihost.print_user_error("jaxseg: error: a")  # not a launched process: printed
  monkeypatch.setenv(multihost.CHILD_MARK, "1")
  monkeypatch.setenv(multihost.ERROR_FILE, str(tmp_path / "error"))
  for line in ("jaxseg: error: b", "jaxseg: error: b", "jaxseg: error: c", "jaxseg: error: b"):
    multihost.print_user_error(line)
  assert capsys.readouterr().err.splitlines() == [
      "jaxseg: error: a", "jaxseg: error: b", "jaxseg: error: c"]
  assert (tmp_path / "error").read_text() == "jaxseg: error: b"
  assert os.listdir(tmp_path) == ["error"]
