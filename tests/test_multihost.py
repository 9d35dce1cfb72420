"""Multi-process training (issue 18): `--num_processes=N` local jobs over jax.distributed.

The end-to-end test (marked `multihost`: about 3 minutes on this loaded 2-core machine,
most of it TensorFlow/JAX start-up and cold compilations in every process) trains the
tiny U-Net for 12 steps as 2 processes x 2 devices through three faults -- process 1
killed with kill -9, then SIGTERM to process 0 alone -- each followed by the same command,
and compares the result with an uninterrupted 1-process x 4-device run. Cheaper tests
check the per-process input split in-process and the one-line errors.
"""
import json
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

STEPS = 12
# eval_batch_size 12 > the 8 eval examples: one padded batch, and with 2 processes the
# second process's share is 2 real examples + 4 padding rows.
SETTINGS = {"num_steps": STEPS, "checkpoint_every": 4, "eval_every": STEPS, "log_every": 2,
            "eval_batch_size": 12}
OVERRIDES = [f"--config.{k}={v}" for k, v in SETTINGS.items()]
# 2 x 2 and 1 x 4 feed every device the same rows; the cross-process all-reduce (gloo)
# adds the 4 devices' gradient sums in another order than XLA:CPU's in-process
# all-reduce, so float32 results differ in the last bits, and 12 steps of BatchNorm and
# Adam grow that. Measured: 1.2e-7 at most after 6 steps on an AMD EPYC; 5.2e-5 after 12
# steps, uninterrupted, on an Intel Xeon with AVX-512 (2 x 2 runs are bit-identical to
# each other, 1 x 4 launched or in-process too). One training step moves every parameter
# leaf by 2e-4 or more here, so a lost, repeated or reordered batch still fails.
RTOL, ATOL = 1e-4, 1e-4


def _command(workdir, data_dir, processes, devices):
  return [sys.executable, "-m", "jaxseg.main", f"--config={UNET_CONFIG}:tiny",
          f"--workdir={workdir}", f"--config.dataset.data_dir={data_dir}", *OVERRIDES,
          f"--num_processes={processes}", f"--devices_per_process={devices}"]


def _run(command, timeout=300):
  return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                        check=False)


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


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _config(data_dir):
  config = load_config()
  with config.unlocked():
    config.dataset.data_dir = data_dir
    config.update(SETTINGS)
  return config


def _checkpoints(workdir):
  return sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())


@pytest.fixture
def start():
  """start(command, err_path): the launcher, its stderr going to `err_path` (read it with
  _read: its own file offset); killed at the end of the test if still running (its
  processes die with it)."""
  launchers = []

  def start_(command, err_path):
    with open(err_path, "w") as err:
      launchers.append(subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                                        stderr=err))
    return launchers[-1]

  yield start_
  for launcher in launchers:
    if launcher.poll() is None:
      launcher.kill()
      launcher.wait()


def _read(path):
  with open(path) as f:
    return f.read()


def _wait_until(launcher, ready, what, timeout=240):
  deadline = time.time() + timeout
  while not ready():
    assert launcher.poll() is None, f"the launcher exited ({launcher.returncode}) before {what}"
    assert time.time() < deadline, f"no {what} within {timeout} s"
    time.sleep(0.05)


def _process(launcher, index):
  """The pid of the launcher's child with JAX_PROCESS_ID=index."""
  with open(f"/proc/{launcher.pid}/task/{launcher.pid}/children") as f:
    children = [int(c) for c in f.read().split()]
  for pid in children:
    with open(f"/proc/{pid}/environ", "rb") as f:
      if f"JAX_PROCESS_ID={index}".encode() in f.read().split(b"\0"):
        return pid
  raise AssertionError(f"no process {index} among {children}")


@pytest.mark.multihost
def test_two_processes_match_one_through_kill_and_sigterm(data_dir, tmp_path, start):
  from jaxseg.train import loop  # pylint: disable=g-import-not-at-top
  reference, workdir = str(tmp_path / "one_x4"), str(tmp_path / "two_x2")
  assert jax.process_count() == 1 and jax.device_count() == 4
  summary = loop.train_and_evaluate(_config(data_dir), reference)
  assert summary["final_step"] == STEPS
  command = _command(workdir, data_dir, 2, 2)

  # kill -9 process 1 after the first checkpoint: the launcher stops process 0 and exits 1
  # with one line naming the dead process, within seconds.
  launcher = start(command, tmp_path / "killed.err")
  _wait_until(launcher, lambda: os.path.isdir(os.path.join(workdir, "checkpoints", "4")),
              "checkpoint 4")
  victim = _process(launcher, 1)
  os.kill(victim, signal.SIGKILL)
  killed_at = time.time()
  assert launcher.wait(timeout=60) == 1
  stopped_after = time.time() - killed_at
  stderr = _read(tmp_path / "killed.err")
  assert stopped_after < 15, stderr[-3000:]
  assert (f"jaxseg: error: process 1 of 2 (pid {victim}) was killed by signal 9 (SIGKILL); "
          f"stopped the other processes; run the same command to resume from the last "
          f"checkpoint") in stderr
  assert _checkpoints(workdir)[-1] == 4

  # The same command resumes at 4; SIGTERM to process 0 alone after step 6: both
  # processes stop at one step, save it, and the launcher exits 143.
  launcher = start(command, tmp_path / "sigterm.err")
  _wait_until(launcher, lambda: f"step 6/{STEPS}" in _read(tmp_path / "sigterm.err"), "step 6")
  os.kill(_process(launcher, 0), signal.SIGTERM)
  assert launcher.wait(timeout=120) == 143
  stderr = _read(tmp_path / "sigterm.err")
  assert "resumed from step 4" in stderr
  stops = [line.split("saved checkpoint at step ")[1].split()[0]
           for line in stderr.splitlines() if "stopped by SIGTERM: saved" in line]
  assert len(stops) == 2 and len(set(stops)) == 1, stderr[-3000:]  # both, at one step
  stopped = int(stops[0])
  assert 6 <= stopped < STEPS and _checkpoints(workdir)[-1] == stopped

  # The same command again finishes.
  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"resumed from step {stopped}" in result.stderr
  assert f"final step {STEPS}" in result.stdout

  # The same parameters as 1 x 4 (within the reduction-order tolerance) and the same eval
  # (every example once: 8 real of 12 rows); process 0 alone wrote one record per step.
  want, got = _params(reference), _params(workdir)
  assert jax.tree.structure(want) == jax.tree.structure(got)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL), want, got)
  records = _records(workdir)
  [ref_eval] = [r for r in _records(reference) if r["split"] == "eval"]
  [eval_] = [r for r in records if r["split"] == "eval"]
  for key in ("mIoU", "pixel_accuracy", "mean_dice"):
    assert eval_[key] == pytest.approx(ref_eval[key], rel=1e-5)
  assert sorted((r["step"], r["split"]) for r in records) == sorted(
      (r["step"], r["split"]) for r in _records(reference))

  # The checkpoint saved by 2 processes restores onto this 1-process, 4-device mesh (what
  # resuming with another process count does first).
  from jaxseg import tasks  # pylint: disable=g-import-not-at-top
  from jaxseg.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  config = _config(data_dir)
  _, _, _, abstract = loop.build_state(config, tasks.get_task(config), loop.make_mesh())
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), 2, "mIoU", "max",
                               read_only=True, clean_up=False)
  try:
    state = ckpt.restore(abstract)
  finally:
    ckpt.close()
  assert int(state.step) == STEPS
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(b), a), got,
               state.params)


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
