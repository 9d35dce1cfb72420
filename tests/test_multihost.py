"""Multi-process training (issue 18): `--num_processes=N` local jobs over jax.distributed.

One end-to-end test reuses three runs of the tiny U-Net (8 steps, checkpoints every 4):
the reference as 1 process x 4 devices; the same config as 2 processes x 2 devices with
process 1 killed (kill -9) after the first checkpoint; and the same command again, which
resumes and finishes (marked `multihost`: about 3 minutes on this loaded 2-core machine,
most of it cold compilations and TensorFlow/JAX start-up in every process). Cheaper tests
check the per-process input split in-process and the launcher's one-line errors.
"""
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, UNET_CONFIG, load_config
from jaxseg.data import pipeline

STEPS = 8
# eval_batch_size 12 > the 8 eval examples: one padded batch, and with 2 processes the
# second process's share is 2 real examples + 4 padding rows.
OVERRIDES = [f"--config.num_steps={STEPS}", "--config.checkpoint_every=4",
             f"--config.eval_every={STEPS}", "--config.log_every=2",
             "--config.eval_batch_size=12"]
# 2 x 2 and 1 x 4 feed every device the same rows; the cross-process all-reduce (gloo)
# adds the 4 devices' gradient sums in another order than XLA:CPU's in-process
# all-reduce, so float32 results differ in the last bits (measured: 1.2e-7 at most).
RTOL, ATOL = 1e-5, 1e-6


def _command(workdir, data_dir, processes, devices):
  return [sys.executable, "-m", "jaxseg.main", f"--config={UNET_CONFIG}:tiny",
          f"--workdir={workdir}", f"--config.dataset.data_dir={data_dir}", *OVERRIDES,
          f"--num_processes={processes}", f"--devices_per_process={devices}"]


def _run(command, timeout=300):
  return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                        check=False)


def _children(pid):
  with open(f"/proc/{pid}/task/{pid}/children") as f:
    return [int(c) for c in f.read().split()]


def _process_id(pid):
  with open(f"/proc/{pid}/environ", "rb") as f:
    env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
  return int(env[b"JAX_PROCESS_ID"])


def _params(workdir, step=STEPS):
  """The saved parameters of `step` as numpy (whatever topology saved them)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, "checkpoints", str(step), "default")
  checkpointer = ocp.StandardCheckpointer()
  meta = checkpointer.metadata(path)
  meta = getattr(getattr(meta, "item_metadata", meta), "tree", meta)
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one), meta)
  return jax.tree.map(np.asarray, checkpointer.restore(path, target)["params"])


def _final_eval(workdir):
  import json  # pylint: disable=g-import-not-at-top
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  [record] = [r for r in records if r["split"] == "eval" and r["step"] == STEPS]
  return record


@pytest.mark.multihost
def test_two_processes_match_one_and_survive_a_kill(data_dir, tmp_path):
  reference, workdir = str(tmp_path / "one_x4"), str(tmp_path / "two_x2")
  result = _run(_command(reference, data_dir, 1, 4))
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"final step {STEPS}" in result.stdout

  # 2 x 2, process 1 killed after the first checkpoint: the launcher stops the other one
  # and exits 1 with one line naming the dead process, in bounded time.
  command = _command(workdir, data_dir, 2, 2)
  with open(tmp_path / "killed.err", "w+") as err:
    launcher = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.time() + 240
    while not os.path.isdir(os.path.join(workdir, "checkpoints", "4")):
      assert launcher.poll() is None and time.time() < deadline, "no checkpoint 4"
      time.sleep(0.05)
    [victim] = [c for c in _children(launcher.pid) if _process_id(c) == 1]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.time()
    code = launcher.wait(timeout=60)
    stopped_after = time.time() - killed_at
    err.seek(0)
    stderr = err.read()
  assert code == 1, stderr[-3000:]
  assert stopped_after < 15
  assert (f"jaxseg: error: process 1 of 2 (pid {victim}) was killed by signal 9 (SIGKILL); "
          f"stopped the other processes; run the same command to resume from the last "
          f"checkpoint") in stderr
  assert not _children_alive(launcher.pid)
  saved = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
  assert saved and max(saved) < STEPS

  # The same command resumes from the last checkpoint and finishes.
  result = _run(command)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"resumed from step {max(saved)}" in result.stderr
  assert f"final step {STEPS}" in result.stdout

  # Same final parameters as 1 x 4 (within the reduction-order tolerance), the same eval
  # over every example once (8 real of 12 rows), and only process 0 wrote metrics.
  want, got = _params(reference), _params(workdir)
  assert jax.tree.structure(want) == jax.tree.structure(got)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL), want, got)
  ref_eval, eval_ = _final_eval(reference), _final_eval(workdir)
  for key in ("mIoU", "pixel_accuracy", "mean_dice"):
    assert eval_[key] == pytest.approx(ref_eval[key], rel=1e-5)

  # A checkpoint saved by 2 processes restores onto this 1-process, 4-device mesh (what
  # resuming with another process count does).
  _assert_restores_on_one_process(workdir, data_dir, want)


def _children_alive(pid):
  try:
    return _children(pid)
  except FileNotFoundError:
    return []


def _assert_restores_on_one_process(workdir, data_dir, want):
  from jaxseg import tasks  # pylint: disable=g-import-not-at-top
  from jaxseg.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  from jaxseg.train import loop  # pylint: disable=g-import-not-at-top
  config = load_config()
  with config.unlocked():
    config.dataset.data_dir = data_dir
    config.num_steps, config.eval_batch_size = STEPS, 12
  mesh = loop.make_mesh()
  assert mesh.size == 4 and jax.process_count() == 1
  _, _, _, abstract = loop.build_state(config, tasks.get_task(config), mesh)
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), 2, "mIoU", "max",
                               read_only=True, clean_up=False)
  try:
    state = ckpt.restore(abstract)
  finally:
    ckpt.close()
  assert int(state.step) == STEPS
  got = jax.tree.map(np.asarray, state.params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL), want, got)


@pytest.mark.parametrize("processes", [2, 4])
def test_process_shares_make_the_single_process_batches(monkeypatch, processes):
  """Each process feeds its contiguous share of every global batch: concatenated in
  process order they are the 1-process batches (examples and augmentation seeds); eval
  covers every example exactly once, padding masked, even for a process with none."""
  ds = tf.data.Dataset.from_tensor_slices({"x": np.arange(20, dtype=np.int64)})
  preprocess = lambda e, seed: {"x": e["x"], "seed": seed[1]}  # pylint: disable=unnecessary-lambda-assignment

  def batches(count, index, make):
    monkeypatch.setattr(jax, "process_count", lambda: count)
    monkeypatch.setattr(jax, "process_index", lambda: index)
    return make()

  def train(count, index, start_step=0):
    it = batches(count, index, lambda: pipeline.train_batches(
        ds, 20, preprocess, 8, seed=3, start_step=start_step, cache=False))
    return [next(it) for _ in range(5)]  # crosses an epoch (2 steps each)

  one = train(1, 0)
  shares = [train(processes, p) for p in range(processes)]
  for step, batch in enumerate(one):
    for key in ("x", "seed"):
      np.testing.assert_array_equal(np.concatenate([s[step][key] for s in shares]), batch[key])
  resumed = [train(processes, p, start_step=3) for p in range(processes)]
  np.testing.assert_array_equal(np.concatenate([r[0]["x"] for r in resumed]), one[3]["x"])

  def evaluate(count, index, n):
    return list(batches(count, index, lambda: pipeline.eval_batches(
        ds.take(n), n, lambda e: e, 12)))

  for n in (20, 5, 1):  # with n = 1 every other process has no example
    shares = [evaluate(processes, p, n) for p in range(processes)]
    assert len({len(s) for s in shares}) == 1
    seen = np.concatenate([b["x"][b["example_mask"]] for s in shares for b in s])
    assert sorted(seen.tolist()) == list(range(n))
    assert all(len(b["x"]) == 12 // processes for s in shares for b in s)


def _error_lines(result):
  return [l for l in result.stderr.splitlines() if l.startswith("jaxseg: error:")]


def test_bad_launch_flags_are_one_line(data_dir, tmp_path):
  result = _run(_command(tmp_path / "bad", data_dir, 2, 3) + ["--num_processes=0"])
  assert result.returncode == 2
  assert _error_lines(result) == ["jaxseg: error: --num_processes=0; expected 1 or more"]
  result = _run(_command(tmp_path / "bad", data_dir, 2, 3))
  assert result.returncode == 2
  assert _error_lines(result) == [
      "jaxseg: error: config.batch_size=4 is not divisible by 2 processes x 3 devices; "
      "expected a positive multiple of 6"]
  assert not os.path.exists(tmp_path / "bad")


def test_unreachable_coordinator_is_one_line_after_the_timeout(tmp_path):
  env = dict(os.environ, JAX_COORDINATOR_ADDRESS="127.0.0.1:1", JAX_NUM_PROCESSES="2",
             JAX_PROCESS_ID="1")
  start = time.time()
  result = subprocess.run(
      [sys.executable, "-m", "jaxseg.main", f"--config={UNET_CONFIG}:tiny",
       f"--workdir={tmp_path / 'run'}", "--distributed", "--init_timeout=2"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 2 and time.time() - start < 60
  [line] = _error_lines(result)
  assert line.startswith("jaxseg: error: --distributed: cannot join a multi-process job (the "
                         "coordinator 127.0.0.1:1 did not answer within 2 s")
  assert not os.path.exists(tmp_path / "run")
