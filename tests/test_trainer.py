"""The generic trainer: sharding invariance, checkpoints, resume, SIGTERM, NaN guard."""
import functools
import itertools
import json
import os
import re
import signal

import jax
import numpy as np
import optax
import pytest

from jax.sharding import NamedSharding, PartitionSpec

from jaxseg import tasks
from jaxseg.data import pipeline
from jaxseg.errors import CheckpointError, ConfigError, DataError, NonFiniteLossError
from jaxseg.train import checkpoint as ckpt_lib
from jaxseg.train import loop
from jaxseg.train.logging import read_metrics
from jaxseg.train.optim import make_optimizer
from jaxseg.train.state import create_state


def _params(summary):
  return jax.tree.map(np.asarray, jax.device_get(summary["state"].params))


def _assert_trees_close(a, b, rtol, atol):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def test_same_step_results_on_1_2_and_4_devices(tiny_config):
  """Two train steps with the batch sharded over 1, 2 and 4 devices agree."""
  task = tasks.get_task(tiny_config)
  tx, schedule = make_optimizer(tiny_config.optimizer, tiny_config.num_steps)
  batches = list(itertools.islice(task.train_data(0), 2))
  initial = create_state(task.init(jax.random.key(0), task.example_batch(4)), tx, seed=0)
  results = {}
  for n in (1, 2, 4):
    mesh = loop.make_mesh(jax.devices()[:n])
    replicated = NamedSharding(mesh, PartitionSpec())
    step_fn = jax.jit(functools.partial(loop.train_step, task, tx, schedule),
                      out_shardings=(replicated, replicated))
    state, losses = jax.device_put(initial, replicated), []
    for batch in batches:
      state, metrics = step_fn(state, pipeline.to_global(batch, mesh))
      losses.append(float(metrics["loss"]))
    assert len(state.params["classifier"]["kernel"].sharding.device_set) == n
    results[n] = (losses, jax.device_get(state.params))
  for n in (2, 4):
    np.testing.assert_allclose(results[n][0], results[1][0], rtol=1e-5)
    _assert_trees_close(results[n][1], results[1][1], rtol=1e-4, atol=1e-6)


def test_resumed_run_equals_uninterrupted(tiny_config, tmp_path):
  mesh = loop.make_mesh(jax.devices()[:2])
  straight = loop.train_and_evaluate(tiny_config, str(tmp_path / "straight"), mesh=mesh)
  workdir = str(tmp_path / "resumed")
  first = loop.train_and_evaluate(tiny_config, workdir, mesh=mesh, stop_after=3)
  assert first["interrupted"] and first["final_step"] == 3
  second = loop.train_and_evaluate(tiny_config, workdir, mesh=mesh)
  assert second["start_step"] == 3 and second["final_step"] == tiny_config.num_steps
  _assert_trees_close(_params(second), _params(straight), rtol=0, atol=0)
  assert second["eval"]["mIoU"] == straight["eval"]["mIoU"]


def test_sigterm_saves_a_checkpoint_and_stops(tiny_config, tmp_path, monkeypatch):
  from jaxseg.tasks import segmentation  # pylint: disable=g-import-not-at-top
  calls = []
  original = segmentation.SegmentationTask.validate_batch

  def validate_and_signal(self, batch):
    calls.append(1)
    if len(calls) == 2:  # SIGTERM arrives while step 2 runs
      os.kill(os.getpid(), signal.SIGTERM)
    return original(self, batch)

  monkeypatch.setattr(segmentation.SegmentationTask, "validate_batch", validate_and_signal)
  tiny_config.checkpoint_every = 100
  summary = loop.train_and_evaluate(tiny_config, str(tmp_path / "w"),
                                    mesh=loop.make_mesh(jax.devices()[:1]))
  assert summary["interrupted"] and summary["final_step"] == 2
  assert ckpt_lib.Checkpointer(summary["checkpoints"], 2, "", "max").latest_step() == 2


def _all_finite(tree):
  return all(np.all(np.isfinite(x)) for x in jax.tree.leaves(jax.device_get(tree))
             if np.issubdtype(np.asarray(x).dtype, np.inexact))


def test_divergence_stops_before_a_non_finite_state_is_saved(tiny_config, tmp_path):
  """lr=1e6 overflows the BatchNorm statistics while loss and gradients may stay finite:
  the guard checks every floating leaf of the new state, so the last checkpoint is finite
  in every leaf, and the message does not suggest grad_clip_norm when it is set."""
  mesh = loop.make_mesh(jax.devices()[:1])
  workdir = str(tmp_path / "w")
  tiny_config.num_steps = 2
  good = loop.train_and_evaluate(tiny_config, workdir, mesh=mesh)
  tiny_config.num_steps = 40
  tiny_config.checkpoint_every = 1
  tiny_config.optimizer.lr = 1e6
  with pytest.raises(NonFiniteLossError, match=r"diverged at step \d+: .*last good checkpoint"
                     ) as info:
    loop.train_and_evaluate(tiny_config, workdir, mesh=mesh)
  assert "grad_clip_norm" not in str(info.value)  # the tiny config clips already
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), 2, "", "max")
  last = ckpt.latest_step()
  assert last >= 2
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), good["state"])
  assert _all_finite(ckpt.restore(abstract, step=last))
  ckpt.close()


def test_non_finite_update_stops_and_keeps_last_good_checkpoint(tiny_config, tmp_path,
                                                                monkeypatch):
  mesh = loop.make_mesh(jax.devices()[:1])
  workdir = str(tmp_path / "w")
  tiny_config.num_steps = 2
  good = loop.train_and_evaluate(tiny_config, workdir, mesh=mesh)
  tiny_config.num_steps = 6
  make = loop.make_optimizer

  def nan_optimizer(*args, **kwargs):  # a NaN learning rate (the config schema rejects it)
    tx, schedule = make(*args, **kwargs)

    def update(grads, opt_state, params=None):
      updates, opt_state = tx.update(grads, opt_state, params)
      return jax.tree.map(lambda u: u * float("nan"), updates), opt_state

    return optax.GradientTransformation(tx.init, update), schedule

  monkeypatch.setattr(loop, "make_optimizer", nan_optimizer)
  with pytest.raises(NonFiniteLossError, match=r"step 3.*checkpoint \(step 2\).*intact"):
    loop.train_and_evaluate(tiny_config, workdir, mesh=mesh)
  monkeypatch.undo()
  tiny_config.num_steps = 2
  again = loop.train_and_evaluate(tiny_config, workdir, mesh=mesh, train=False)
  _assert_trees_close(_params(again), _params(good), rtol=0, atol=0)


def test_checkpointer_round_trip_and_keeps_last_n_plus_best(tmp_path):
  ckpt = ckpt_lib.Checkpointer(str(tmp_path / "c"), keep=2, best_metric="mIoU", best_mode="max")
  w = np.arange(6, dtype=np.float32).reshape(2, 3)
  for step, miou in [(1, 0.5), (2, 0.9), (3, 0.4), (4, 0.6), (5, None)]:
    ckpt.save(step, {"w": w * step}, None if miou is None else {"mIoU": miou})
  ckpt.wait()
  assert sorted(ckpt.manager.all_steps()) == [2, 4, 5]  # last two, plus the best (2)
  restored = ckpt.restore({"w": jax.ShapeDtypeStruct(w.shape, w.dtype)}, step=2)
  np.testing.assert_array_equal(restored["w"], w * 2)
  ckpt.close()


def test_incompatible_checkpoint_is_reported_and_left_intact(tiny_config, tmp_path):
  mesh = loop.make_mesh(jax.devices()[:1])
  workdir = str(tmp_path / "w")
  tiny_config.num_steps = 2
  loop.train_and_evaluate(tiny_config, workdir, mesh=mesh)
  before = sorted(os.walk(workdir))
  tiny_config.model.base_width = 8
  with pytest.raises(CheckpointError, match=r"incompatible config: params/.*shape"):
    loop.train_and_evaluate(tiny_config, workdir, mesh=mesh)
  assert sorted(os.walk(workdir)) == before


def test_batch_size_not_divisible_by_devices(tiny_config, tmp_path):
  tiny_config.batch_size = 6
  with pytest.raises(ConfigError, match=r"batch_size=6 .* 4"):
    loop.train_and_evaluate(tiny_config, str(tmp_path), mesh=loop.make_mesh(jax.devices()[:4]))


@pytest.mark.parametrize("key,value,pattern", [
    ("dataset.name", "imagenet_seg", "unknown dataset name 'imagenet_seg'"),
    ("model.name", "segnet", "unknown model name 'segnet'"),
    ("model.upsample", "magic", "unknown upsample method 'magic'"),
    ("task", "captioning", "unknown task 'captioning'"),
])
def test_unknown_names(tiny_config, tmp_path, key, value, pattern):
  section, _, field = key.rpartition(".")
  (tiny_config[section] if section else tiny_config)[field] = value
  with pytest.raises((ConfigError, ValueError), match=pattern):
    loop.train_and_evaluate(tiny_config, str(tmp_path), mesh=loop.make_mesh(jax.devices()[:1]))


def test_label_values_out_of_range(tiny_config, tmp_path, monkeypatch):
  from jaxseg.data import sources  # pylint: disable=g-import-not-at-top
  source = sources.SEGMENTATION_SOURCES["shapes"]
  broken = source.__class__(**{**source.__dict__, "to_label": lambda m, ignore: 7 + 0 * m[..., 0]})
  monkeypatch.setitem(sources.SEGMENTATION_SOURCES, "shapes", broken)
  with pytest.raises(DataError, match=r"label values \[7\]; expected 0..3 or ignore_index=255"):
    loop.train_and_evaluate(tiny_config, str(tmp_path), mesh=loop.make_mesh(jax.devices()[:1]))


def test_data_dir_that_is_not_a_directory(tiny_config, tmp_path):
  not_a_dir = tmp_path / "file"
  not_a_dir.write_text("x")
  tiny_config.dataset.data_dir = str(not_a_dir)
  with pytest.raises(DataError, match="data_dir"):
    loop.train_and_evaluate(tiny_config, str(tmp_path / "w"),
                            mesh=loop.make_mesh(jax.devices()[:1]))


def test_bfloat16_compute_keeps_float32_params_and_finite_loss(tiny_config, tmp_path):
  tiny_config.model.dtype = "bfloat16"
  tiny_config.num_steps = 2
  summary = loop.train_and_evaluate(tiny_config, str(tmp_path / "w"),
                                    mesh=loop.make_mesh(jax.devices()[:1]))
  leaves = jax.tree.leaves(summary["state"].params)
  assert {leaf.dtype for leaf in leaves} == {np.dtype("float32")}
  losses = [r["loss"] for r in read_metrics(summary["workdir"]) if r["split"] == "train"]
  assert losses and all(np.isfinite(losses))
  assert 0.0 <= summary["eval"]["pixel_accuracy"] <= 1.0


def _run(config, workdir, **kwargs):
  return loop.train_and_evaluate(config, str(workdir), mesh=loop.make_mesh(jax.devices()[:1]),
                                 **kwargs)


def _kept(workdir):
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


def test_resume_keeps_the_best_checkpoint(tiny_config, tmp_path):
  """Retention is the same with or without a restart: the best checkpoint (lowest mIoU
  here, so that it is not among the latest) survives the resume."""
  tiny_config.num_steps, tiny_config.eval_every, tiny_config.checkpoint_every = 9, 3, 1
  tiny_config.keep_checkpoints, tiny_config.best_mode = 2, "min"
  straight = _run(tiny_config, tmp_path / "straight")["workdir"]
  resumed = str(tmp_path / "resumed")
  assert _run(tiny_config, resumed, stop_after=7)["interrupted"]
  _run(tiny_config, resumed)
  assert _kept(resumed) == _kept(straight)
  assert len(_kept(straight)) == 3  # the latest two plus the best


def _records(workdir):
  return [(r["step"], r["split"]) for r in read_metrics(workdir)]


def test_resume_keeps_one_metrics_record_per_step(tiny_config, tmp_path):
  from jaxseg.train import logging as log_lib  # pylint: disable=g-import-not-at-top
  tiny_config.checkpoint_every, tiny_config.log_every = 4, 1
  straight = _run(tiny_config, tmp_path / "straight")["workdir"]
  workdir = str(tmp_path / "w")
  _run(tiny_config, workdir, stop_after=5)  # checkpoint at 5 (SIGTERM-like stop)
  # As after kill -9: the records of step 5 were written, the checkpoint was not (steps
  # 5.. replayed from the checkpoint at 4).
  os.rename(os.path.join(workdir, "checkpoints", "5"), os.path.join(str(tmp_path), "5"))
  _run(tiny_config, workdir)
  assert _records(workdir) == _records(straight)
  superseded = [json.loads(line)["step"] for line in open(os.path.join(
      workdir, "metrics.superseded.jsonl"))]
  assert superseded and min(superseded) == 5
  assert log_lib.supersede_after(workdir, 100) == 0


@pytest.mark.parametrize("damage", ["truncated_array_file", "empty_step_folder",
                                    "deleted_manifest", "deleted_metadata"])
def test_corrupt_latest_checkpoint_falls_back(tiny_config, tmp_path, damage):
  """The unreadable step is moved aside (never deleted), the previous one restored, and
  the run ends bit-identical to an uninterrupted one."""
  tiny_config.checkpoint_every = 2
  straight = _run(tiny_config, tmp_path / "straight")
  workdir = str(tmp_path / "w")
  tiny_config.num_steps = 4
  _run(tiny_config, workdir)
  previous = _kept(workdir)[-2]
  corrupt_checkpoint(os.path.join(workdir, "checkpoints", "4"), damage)
  tiny_config.num_steps = 6
  resumed = _run(tiny_config, workdir)
  assert resumed["start_step"] == previous
  _assert_trees_close(_params(resumed), _params(straight), rtol=0, atol=0)
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "corrupt", "4"))


def corrupt_checkpoint(step_dir, damage):
  import glob  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  item = os.path.join(step_dir, "default")
  if damage == "truncated_array_file":
    for path in glob.glob(os.path.join(item, "d", "*")):
      with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
  elif damage == "empty_step_folder":
    shutil.rmtree(step_dir)
    os.makedirs(step_dir)
  elif damage == "deleted_manifest":
    os.remove(os.path.join(item, "manifest.ocdbt"))
  elif damage == "deleted_metadata":
    os.remove(os.path.join(item, "_METADATA"))
  else:
    raise ValueError(damage)


def test_failed_run_leaves_no_new_workdir_and_errors_write_nothing(tiny_config, tmp_path):
  workdir = tmp_path / "new"
  tiny_config.best_metric = "no_such_metric"
  with pytest.raises(ConfigError, match="best_metric='no_such_metric'.*mIoU"):
    _run(tiny_config, workdir)
  assert not workdir.exists()
  tiny_config.best_metric = "mIoU"
  tiny_config.num_steps = 4
  tiny_config.checkpoint_every = 100
  with pytest.raises(NonFiniteLossError):  # diverges before its first checkpoint

    def nan_batches(start_step):
      for batch in original(start_step):
        yield {**batch, "image": batch["image"] * np.nan}

    task_cls = tasks.get_task(tiny_config).__class__
    original_method = task_cls.train_data
    task = tasks.get_task(tiny_config)
    original = task.train_data
    try:
      task_cls.train_data = lambda self, s: nan_batches(s)
      _run(tiny_config, workdir)
    finally:
      task_cls.train_data = original_method
  assert not workdir.exists()


def test_config_changes_are_named_on_resume(tiny_config, tmp_path, caplog):
  tiny_config.num_steps = 2
  _run(tiny_config, tmp_path / "w")
  tiny_config.num_steps = 3
  tiny_config.optimizer.lr = 5e-3
  with caplog.at_level("WARNING"):
    _run(tiny_config, tmp_path / "w")
  assert re.search(r"config differs.*num_steps: 2 -> 3.*optimizer.lr: 0.002 -> 0.005",
                   caplog.text)


def test_sigterm_during_the_final_save_is_a_finished_run(tiny_config, tmp_path, monkeypatch):
  original = ckpt_lib.Checkpointer.save

  def save_and_signal(self, step, state, metrics=None):
    if step == tiny_config.num_steps:
      os.kill(os.getpid(), signal.SIGTERM)
    return original(self, step, state, metrics)

  monkeypatch.setattr(ckpt_lib.Checkpointer, "save", save_and_signal)
  summary = _run(tiny_config, tmp_path / "w")
  assert not summary["interrupted"] and summary["final_step"] == tiny_config.num_steps


def _mount_tmpfs(path, size="64m"):
  import subprocess  # pylint: disable=g-import-not-at-top
  os.makedirs(path, exist_ok=True)
  result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, check=False)
  if result.returncode:
    pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
  return lambda *opts: subprocess.run(["mount", "-o", ",".join(("remount",) + opts), str(path)],
                                      check=True)


def test_eval_of_a_read_only_workdir_writes_nothing(tiny_config, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  tiny_config.num_steps = 2
  trained = _run(tiny_config, tmp_path / "w")
  mount = tmp_path / "ro"
  remount = _mount_tmpfs(mount)
  try:
    shutil.copytree(trained["workdir"], mount / "w")
    remount("ro")
    before = sorted(os.walk(mount))
    again = _run(tiny_config, mount / "w", train=False)
    assert again["eval"]["mIoU"] == trained["eval"]["mIoU"]
    assert sorted(os.walk(mount)) == before
    with pytest.raises(ConfigError, match="cannot be written"):
      _run(tiny_config, mount / "w2")
  finally:
    subprocess.run(["umount", str(mount)], check=False)


def test_disk_full_while_saving_is_one_error_and_keeps_previous_checkpoints(tiny_config,
                                                                            tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  mount = tmp_path / "small"
  _mount_tmpfs(mount, size="1m")
  try:
    tiny_config.num_steps, tiny_config.checkpoint_every = 60, 1
    tiny_config.keep_checkpoints = 60
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint \d+ .*no space left on "
                       r"device; the previous checkpoints \[1(, \d+)*\] are intact"):
      _run(tiny_config, mount / "w")
    kept = _kept(str(mount / "w"))
    assert kept == list(range(1, len(kept) + 1))
    assert not [n for n in os.listdir(mount / "w" / "checkpoints") if "tmp" in n]
    task = tasks.get_task(tiny_config)
    tx, _ = make_optimizer(tiny_config.optimizer, tiny_config.num_steps)
    abstract = jax.eval_shape(lambda: create_state(
        task.init(jax.random.key(0), task.example_batch(1)), tx, 0))
    ckpt = ckpt_lib.Checkpointer(str(mount / "w" / "checkpoints"), 60, "mIoU", "max")
    state = ckpt.restore(abstract)
    assert int(state.step) == kept[-1] and _all_finite(state)
    ckpt.close()
  finally:
    subprocess.run(["umount", str(mount)], check=False)


def test_eval_moves_a_corrupt_latest_checkpoint_aside(tiny_config, tmp_path):
  tiny_config.num_steps = 4
  tiny_config.checkpoint_every = 2
  workdir = str(tmp_path / "w")
  _run(tiny_config, workdir)
  previous = _kept(workdir)[-2]
  corrupt_checkpoint(os.path.join(workdir, "checkpoints", "4"), "deleted_manifest")
  evaluated = _run(tiny_config, workdir, train=False)
  assert evaluated["final_step"] == previous
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "corrupt", "4"))


def test_evaluating_a_finished_run_again_keeps_one_record_per_step(tiny_config, tmp_path):
  tiny_config.num_steps = 2
  workdir = str(tmp_path / "w")
  _run(tiny_config, workdir)
  _run(tiny_config, workdir, train=False)
  _run(tiny_config, workdir)
  records = _records(workdir)
  assert len(records) == len(set(records)) and records.count((2, "eval")) == 1
  assert os.path.exists(os.path.join(workdir, "metrics.superseded.jsonl"))


def test_a_file_named_checkpoints_is_one_error(tiny_config, tmp_path):
  workdir = tmp_path / "w"
  workdir.mkdir()
  (workdir / "checkpoints").write_text("not a directory")
  with pytest.raises(ConfigError, match="holds a file named checkpoints"):
    _run(tiny_config, workdir)
  assert sorted(os.listdir(workdir)) == ["checkpoints"]


def test_init_compiled_for_speed_gives_the_same_variables():
  """build_state compiles the initializers at INIT_COMPILER_OPTIONS (LLVM -O1, faster to
  compile): every initializer kind jaxseg's models use gives bit-identical variables to
  the default compile (-O0 would not: some differ in the last bit)."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top

  class Initializers(nn.Module):
    """One layer of each initializer kind jaxseg's models use."""

    @nn.compact
    def __call__(self, x, tokens):
      y = nn.Conv(6, (3, 3), kernel_init=nn.initializers.kaiming_normal())(x)
      y = nn.ConvTranspose(5, (2, 2), strides=(2, 2))(y)
      y = nn.Conv(4, (1, 1), kernel_init=nn.initializers.lecun_uniform())(y)
      y = nn.BatchNorm(use_running_average=True)(y)
      z = nn.Dense(7, kernel_init=nn.initializers.normal(0.01))(y.mean((1, 2)))
      z = nn.Dense(7, kernel_init=nn.initializers.variance_scaling(
          2.0, "fan_out", "truncated_normal"))(z)
      e = nn.Embed(11, 7)(tokens)
      carry = nn.OptimizedLSTMCell(7).initialize_carry(jax.random.key(0), e[:, 0].shape)
      _, h = nn.OptimizedLSTMCell(7)(carry, e[:, 0] + z)
      return h

  model = Initializers()
  args = (np.zeros((2, 8, 8, 3), np.float32), np.zeros((2, 3), np.int32))
  rng = jax.random.key(3)
  lowered = jax.jit(lambda r: model.init(r, *args)).lower(rng)
  want = lowered.compile()(rng)
  got = lowered.compile(compiler_options=loop.INIT_COMPILER_OPTIONS)(rng)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    np.testing.assert_array_equal(np.asarray(b), np.asarray(a))
