"""Transfer learning: init_from a checkpoint or a weights file, prefixes, rename rules,
the torch layout, freezing, the weights CLI, the checks, and resume ignoring init_from.

One synthetic source checkpoint (random arrays in the tiny U-Net's shapes, written by the
trainer's Checkpointer) and one real fine-tuning run (module fixtures), whose model init
returns fixed NumPy arrays (`_fixed_init`: known starting values, and no compile of the
random init, ~50 s here), keep the compiles to one train step. Everything else runs on
NumPy states.
"""
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from conftest import load_config
from jaxseg import tasks, weights
from jaxseg.errors import CheckpointError, ConfigError, DataError
from jaxseg.tasks.segmentation import SegmentationTask
from jaxseg.train import checkpoint as ckpt_lib
from jaxseg.train import loop, transfer
from jaxseg.train.logging import read_metrics
from jaxseg.train.optim import make_optimizer
from jaxseg.train.state import TrainState

PREFIX = "ConvBlock_0"  # the U-Net's first encoder block


def _state(variables) -> TrainState:
  """A NumPy TrainState holding `variables` (initialize touches params and model_state)."""
  variables = dict(variables)
  return TrainState(step=np.int32(0), params=variables.pop("params"), model_state=variables,
                    opt_state=(), rng=np.zeros(2, np.uint32))


def _variables(state) -> dict:
  return transfer.flatten(jax.device_get({"params": state.params, **state.model_state}))


def _random_like(tree, seed, scale=1.0):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (scale * rng.standard_normal(s.shape)).astype(s.dtype), tree)


def _fixed_init(monkeypatch, unet_shapes):
  """The U-Net's init gives fixed NumPy values (positive variances); returns them."""
  values = _random_like(unet_shapes, seed=2, scale=0.3)
  values["batch_stats"] = jax.tree.map(np.abs, values["batch_stats"])
  monkeypatch.setattr(SegmentationTask, "init", lambda self, rng, batch: values)
  return transfer.flatten(values)


def _config(**init_from) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict({"init_from": transfer.default_config()})
  config.init_from.update(init_from)
  return config


@pytest.fixture(scope="module")
def unet_shapes(data_dir):
  del data_dir
  task = tasks.get_task(load_config())
  return jax.eval_shape(lambda: task.init(jax.random.key(0), task.example_batch(1)))


@pytest.fixture(scope="module")
def source(tmp_path_factory, unet_shapes):
  """A run's workdir with one checkpoint (step 7) of random U-Net variables."""
  workdir = str(tmp_path_factory.mktemp("source"))
  variables = dict(_random_like(unet_shapes, seed=1))
  params = variables.pop("params")
  state = TrainState(step=np.int32(7), params=params, model_state=variables,
                     opt_state={"mu": params}, rng=np.zeros(2, np.uint32))
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), 2, "", "max")
  ckpt.save(7, jax.device_put(state))
  ckpt.close()
  return workdir, transfer.flatten({"params": params, **variables})


def _finetune_config(data_dir, source_workdir):
  config = load_config()
  config.dataset.data_dir = data_dir
  config.num_steps, config.eval_every, config.checkpoint_every, config.log_every = 4, 100, 100, 1
  config.optimizer.warmup_steps = 0  # a non-zero learning rate from step 1 on
  config.init_from.update(dict(checkpoint=source_workdir, source_prefix=PREFIX,
                               target_prefix=PREFIX, freeze=True))
  return config


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, data_dir, source, unet_shapes):
  """One real run: ConvBlock_0 from the source, frozen, stopped after step 1; and the
  model's own initial values."""
  workdir = str(tmp_path_factory.mktemp("finetune"))
  config = _finetune_config(data_dir, source[0])
  with pytest.MonkeyPatch.context() as monkeypatch:
    initial = _fixed_init(monkeypatch, unet_shapes)
    summary = loop.train_and_evaluate(config, workdir, stop_after=1,
                                      mesh=loop.make_mesh(jax.devices()[:1]))
  return initial, workdir, summary


def _under(flat, prefix):
  return {n: v for n, v in flat.items() if transfer.is_under(n.partition("/")[2], prefix)}


# --- the trainer: fresh start, freezing, resume ---------------------------------------

def test_frozen_params_keep_the_source_values_while_the_rest_trains(finetuned, source):
  initial, workdir, summary = finetuned
  assert summary["start_step"] == 0 and summary["final_step"] == 1
  trained = _variables(summary["state"])
  frozen = [n for n in _under(source[1], PREFIX) if n.startswith("params/")]
  assert len(frozen) == 6
  for name in frozen:
    np.testing.assert_array_equal(trained[name], source[1][name], err_msg=name)
  # Every other parameter started from the model's own init and was trained.
  others = [n for n in trained if n.startswith("params/") and n not in frozen]
  assert len(others) == 30
  for name in others:
    assert not np.allclose(trained[name], initial[name]), name
    assert not np.allclose(trained[name], source[1][name]), name
  train = [r for r in read_metrics(workdir) if r["split"] == "train"]
  assert train[0]["learning_rate"] > 0 and train[0]["update_norm"] > 0


def test_resume_ignores_init_from(finetuned, data_dir, source, unet_shapes, tmp_path,
                                  monkeypatch):
  _, workdir, _ = finetuned
  _fixed_init(monkeypatch, unet_shapes)
  resumed = str(tmp_path / "resumed")
  shutil.copytree(workdir, resumed)
  config = _finetune_config(data_dir, str(tmp_path / "gone"))  # would fail if it were read
  summary = loop.train_and_evaluate(config, resumed, mesh=loop.make_mesh(jax.devices()[:1]),
                                    stop_after=2)
  assert summary["start_step"] == 1 and summary["final_step"] == 2
  loaded = _variables(summary["state"])
  for name, value in _under(source[1], PREFIX).items():
    if name.startswith("params/"):
      np.testing.assert_array_equal(loaded[name], value, err_msg=name)


def test_a_bad_mapping_stops_the_run_before_training(data_dir, source, unet_shapes, tmp_path,
                                                     monkeypatch):
  _fixed_init(monkeypatch, unet_shapes)
  config = _finetune_config(data_dir, source[0])
  config.init_from.source_prefix = "ConvBlock_1"  # 4 -> 8 channels where 3 -> 4 are needed
  workdir = tmp_path / "w"
  with pytest.raises(ConfigError, match=r"params/ConvBlock_0/ConvNormAct_0/Conv_0/kernel "
                     r"\(3, 3, 4, 8\) in source vs \(3, 3, 3, 4\) in model"):
    loop.train_and_evaluate(config, str(workdir), mesh=loop.make_mesh(jax.devices()[:1]))
  assert not (workdir / "metrics.jsonl").exists()
  assert ckpt_lib.Checkpointer(str(workdir / "checkpoints"), 2, "", "max").latest_step() is None


# --- initialize on NumPy states ------------------------------------------------------

def test_whole_model_from_checkpoint_equals_source(source, unet_shapes):
  state = _state(_random_like(unet_shapes, seed=2))
  for path in (source[0], os.path.join(source[0], "checkpoints")):  # workdir or its dir
    loaded = _variables(transfer.initialize(_config(checkpoint=path), state))
    assert loaded.keys() == source[1].keys()
    for name, value in source[1].items():
      np.testing.assert_array_equal(loaded[name], value, err_msg=name)


def test_prefix_moves_a_subtree_and_leaves_the_rest(source, unet_shapes):
  fresh = _random_like(unet_shapes, seed=2)
  state = _state(fresh)
  config = _config(checkpoint=source[0], source_prefix="ConvBlock_3/ConvNormAct_1",
                   target_prefix="/ConvBlock_1/ConvNormAct_1/")  # both (3, 3, 8, 8)
  loaded = _variables(transfer.initialize(config, state))
  before = transfer.flatten(fresh)
  moved = 0
  for name, value in loaded.items():
    if "ConvBlock_1/ConvNormAct_1/" in name:
      np.testing.assert_array_equal(value, source[1][name.replace("ConvBlock_1", "ConvBlock_3")])
      moved += 1
    else:
      np.testing.assert_array_equal(value, before[name], err_msg=name)
  assert moved == 5  # kernel, scale, bias, mean, var


def test_source_without_batch_stats_keeps_the_models(tmp_path):
  path = str(tmp_path / "w.npz")
  np.savez(path, **{"params/a/kernel": np.ones((2, 3), np.float64)})
  state = _state({"params": {"a": {"kernel": np.zeros((2, 3), np.float32)}},
                  "batch_stats": {"a": {"mean": np.full(3, 5, np.float32)}}})
  loaded = _variables(transfer.initialize(_config(weights=path), state))
  assert loaded["params/a/kernel"].dtype == np.float32  # cast to the model's dtype
  np.testing.assert_array_equal(loaded["params/a/kernel"], np.ones((2, 3)))
  np.testing.assert_array_equal(loaded["batch_stats/a/mean"], np.full(3, 5))


def test_nothing_to_load_returns_the_state():
  state = _state({"params": {"w": np.zeros(2, np.float32)}})
  assert transfer.initialize(_config(), state) is state
  assert transfer.initialize(ml_collections.ConfigDict({"seed": 0}), state) is state
  assert transfer.frozen_mask(_config()) is None


def test_torch_layout_transposes_conv_and_linear(tmp_path):
  conv = np.arange(4 * 2 * 3 * 3, dtype=np.float32).reshape(4, 2, 3, 3)  # OIHW
  linear = np.arange(6, dtype=np.float32).reshape(2, 3)  # [out, in]
  path = str(tmp_path / "torch.safetensors")
  transfer.write_weights(path, {"params/conv/kernel": conv, "params/dense/kernel": linear,
                                "params/dense/bias": np.array([7.0, 8.0], np.float32)})
  state = _state({"params": {"conv": {"kernel": np.zeros((3, 3, 2, 4), np.float32)},
                             "dense": {"kernel": np.zeros((3, 2), np.float32),
                                       "bias": np.zeros(2, np.float32)}}})
  loaded = _variables(transfer.initialize(_config(weights=path, layout="torch"), state))
  kernel = loaded["params/conv/kernel"]
  assert kernel[1, 2, 0, 3] == conv[3, 0, 1, 2]  # [h, w, i, o] == [o, i, h, w]
  np.testing.assert_array_equal(kernel, conv.transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(loaded["params/dense/kernel"], [[0, 3], [1, 4], [2, 5]])
  np.testing.assert_array_equal(loaded["params/dense/bias"], [7, 8])
  with pytest.raises(ConfigError, match=r"params/conv/kernel \(4, 2, 3, 3\) in source vs "
                     r"\(3, 3, 2, 4\) in model.*layout='torch'"):
    transfer.initialize(_config(weights=path), state)  # the flax layout does not fit


# The rules of docs/transfer.md: a torchvision ResNet-18 state dict -> jaxseg's ResNet.
TORCHVISION_RESNET_RULES = (
    r"^fc\..*=>",
    r".*num_batches_tracked$=>",
    r"^conv1\.=>stem_conv/conv.",
    r"^bn1\.=>stem_conv/bn.",
    r"^layer(\d)\.0\.=>stage\1_block1/",
    r"^layer(\d)\.1\.=>stage\1_block2/",
    r"/(conv|bn)1\.=>/ConvNormAct_0/\1.",
    r"/(conv|bn)2\.=>/ConvNormAct_1/\1.",
    r"/downsample\.0\.=>/shortcut/conv.",
    r"/downsample\.1\.=>/shortcut/bn.",
    r"conv\.weight$=>Conv_0/kernel",
    r"bn\.weight$=>BatchNorm_0/scale",
    r"bn\.bias$=>BatchNorm_0/bias",
    r"^(.*)bn\.running_mean$=>batch_stats/\1BatchNorm_0/mean",
    r"^(.*)bn\.running_var$=>batch_stats/\1BatchNorm_0/var",
    r"^(?!batch_stats/)=>params/",
)


def _torchvision_resnet18(width: int, classes: int, rng) -> dict:
  """Names and (OIHW) shapes of torchvision's resnet18 state dict, random values."""
  arrays = {}

  def conv(name, out, inp, k):
    arrays[f"{name}.weight"] = rng.standard_normal((out, inp, k, k)).astype(np.float32)

  def bn(name, c):
    for field in ("weight", "bias", "running_mean", "running_var"):
      arrays[f"{name}.{field}"] = rng.standard_normal(c).astype(np.float32)
    arrays[f"{name}.num_batches_tracked"] = np.array(10, np.int64)

  conv("conv1", width, 3, 7)
  bn("bn1", width)
  inp = width
  for stage in range(1, 5):
    out = width * 2**(stage - 1)
    for block in range(2):
      name = f"layer{stage}.{block}"
      conv(f"{name}.conv1", out, inp if block == 0 else out, 3)
      bn(f"{name}.bn1", out)
      conv(f"{name}.conv2", out, out, 3)
      bn(f"{name}.bn2", out)
      if block == 0 and inp != out:
        conv(f"{name}.downsample.0", out, inp, 1)
        bn(f"{name}.downsample.1", out)
    inp = out
  arrays["fc.weight"] = rng.standard_normal((classes, inp)).astype(np.float32)
  arrays["fc.bias"] = rng.standard_normal(classes).astype(np.float32)
  return arrays


def test_rename_rules_map_a_torchvision_resnet_onto_the_backbone(tmp_path):
  from jaxseg.models.backbones.resnet import ResNet  # pylint: disable=g-import-not-at-top
  model = ResNet(stage_sizes=(2, 2, 2, 2), width=4)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  fresh = _random_like(shapes, seed=3)
  head = {"kernel": np.zeros((32, 5), np.float32)}
  state = _state({"params": {"backbone": fresh["params"], "head": head},
                  "batch_stats": {"backbone": fresh["batch_stats"]}})
  torch = _torchvision_resnet18(width=4, classes=10, rng=np.random.default_rng(4))
  path = str(tmp_path / "resnet18.npz")
  transfer.write_weights(path, torch)
  config = _config(weights=path, layout="torch", target_prefix="backbone",
                   rename=TORCHVISION_RESNET_RULES)
  loaded = _variables(transfer.initialize(config, state))
  np.testing.assert_array_equal(loaded["params/backbone/stem_conv/Conv_0/kernel"],
                                torch["conv1.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(
      loaded["params/backbone/stage2_block2/ConvNormAct_1/BatchNorm_0/scale"],
      torch["layer2.1.bn2.weight"])
  np.testing.assert_array_equal(
      loaded["batch_stats/backbone/stage3_block1/shortcut/BatchNorm_0/var"],
      torch["layer3.0.downsample.1.running_var"])
  np.testing.assert_array_equal(loaded["params/head/kernel"], head["kernel"])  # untouched
  loaded_backbone = {n: v for n, v in loaded.items() if "/backbone/" in n}
  expected = {n: v for n, v in torch.items() if not n.startswith("fc.")
              and not n.endswith("num_batches_tracked")}
  assert len(loaded_backbone) == len(expected) == 100
  def values(arrays):  # each array's values, whatever its layout
    return sorted(np.sort(np.ravel(v)).astype(np.float32).tobytes() for v in arrays.values())
  assert values(loaded_backbone) == values(expected)


def test_rename_to_empty_drops_and_collisions_are_errors(tmp_path):
  path = str(tmp_path / "w.npz")
  np.savez(path, **{"a.w": np.ones(2), "b.w": np.full(2, 2.0), "extra": np.zeros(1)})
  state = _state({"params": {"x": {"w": np.zeros(2, np.float32)}}})
  loaded = _variables(transfer.initialize(
      _config(weights=path, rename=(r"^extra$=>", r"^b\.w$=>params/x/w", r"^a\.w$=>")), state))
  np.testing.assert_array_equal(loaded["params/x/w"], [2, 2])
  with pytest.raises(ConfigError, match=r"'a.w' and 'b.w' both map to 'params/x/w'"):
    transfer.initialize(_config(weights=path, rename=(r"^extra$=>", r"^.\.w$=>params/x/w")),
                        state)
  with pytest.raises(ConfigError, match=r"rule '\^\(a\)=>\\2' on 'a.w': invalid group"):
    transfer.initialize(_config(weights=path, rename=(r"^(a)=>\2",)), state)


# --- the weights CLI ------------------------------------------------------------------

@pytest.mark.parametrize("ext", [".npz", ".safetensors"])
def test_export_round_trip(finetuned, unet_shapes, tmp_path, capsys, ext):
  _, workdir, summary = finetuned
  trained = _variables(summary["state"])
  out = str(tmp_path / f"encoder{ext}")
  weights.main(["export", "--workdir", workdir, "--out", out, "--prefix", PREFIX])
  assert f"wrote 10 arrays to {out}" in capsys.readouterr().out
  assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))
  written = transfer.read_weights(out)
  assert written.keys() == _under(trained, PREFIX).keys()
  for name, value in written.items():
    np.testing.assert_array_equal(value, trained[name], err_msg=name)
  # ... and back into a model through init_from.weights.
  loaded = _variables(transfer.initialize(
      _config(weights=out, source_prefix=PREFIX, target_prefix=PREFIX),
      _state(_random_like(unet_shapes, seed=5))))
  for name, value in written.items():
    np.testing.assert_array_equal(loaded[name], value, err_msg=name)

  weights.main(["list", out])
  lines = capsys.readouterr().out.splitlines()
  kernel = [line.split() for line in lines if "ConvNormAct_0/Conv_0/kernel" in line]
  assert kernel == [["params/ConvBlock_0/ConvNormAct_0/Conv_0/kernel", "(3,", "3,", "3,", "4)",
                     "float32"]]
  assert lines[-1].startswith("# 10 arrays, 284 values")  # 2*(4+4) + 108 + 144 + 4*4 stats


def test_export_whole_run_and_cli_errors(source, tmp_path, capsys):
  out = str(tmp_path / "all.npz")
  weights.main(["export", "--workdir", source[0], "--out", out])
  assert transfer.read_weights(out).keys() == source[1].keys()
  for argv, pattern in [
      (["export", "--workdir", source[0], "--out", out, "--prefix", "Conv"],
       "--prefix='Conv' selects none of the 56 arrays"),
      (["export", "--workdir", source[0], "--out", str(tmp_path / "w.pt")], "'.pt'"),
      (["export", "--workdir", str(tmp_path), "--out", out], "holds no checkpoint"),
      (["list", str(tmp_path / "missing.safetensors")], "does not exist")]:
    with pytest.raises(SystemExit) as exit_info:
      weights.main(argv)
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines()
              if line.startswith("jaxseg: error:")]
    assert len(errors) == 1 and pattern in errors[0]


# --- the checks -----------------------------------------------------------------------

def _small_state():
  return _state({"params": {"enc": {"conv": {"kernel": np.zeros((3, 3, 2, 4), np.float32),
                                             "bias": np.zeros(4, np.float32)}},
                            "dec": {"kernel": np.zeros((4, 2), np.float32)}},
                 "batch_stats": {"enc": {"mean": np.zeros(4, np.float32)}}})


def _file(tmp_path, arrays, name="w.npz"):
  path = str(tmp_path / name)
  transfer.write_weights(path, arrays)
  return path


ENC = {"params/enc/conv/kernel": np.ones((3, 3, 2, 4)), "params/enc/conv/bias": np.ones(4)}


@pytest.mark.parametrize("arrays,init_from,error,pattern", [
    ({**ENC, "params/enc/conv/kernel": np.ones((3, 3, 2, 5))}, {}, ConfigError,
     r"1 arrays .* do not fit .*: params/enc/conv/kernel \(3, 3, 2, 5\) in source vs "
     r"\(3, 3, 2, 4\) in model$"),
    ({**ENC, "params/enc/extra/w": np.ones(1), "params/enc/conv/b": np.ones(1)}, {},
     ConfigError, r"2 arrays .* have no place in the model .*: params/enc/conv/b, "
     r"params/enc/extra/w; model paths look like params/dec/kernel$"),
    ({f"params/enc/x{i}": np.ones(1) for i in range(8)}, {}, ConfigError,
     r"8 arrays .*params/enc/x0, params/enc/x1, params/enc/x2, params/enc/x3, "
     r"params/enc/x4 and 3 more"),
    ({"params/enc/conv/kernel": np.ones((3, 3, 2, 4))},
     {"source_prefix": "enc", "target_prefix": "enc"}, ConfigError,
     r"1 model arrays under target_prefix 'enc' receive nothing .*: params/enc/conv/bias;"),
    ({**ENC, "batch_stats/enc/mean": np.ones(4)}, {}, ConfigError,
     r"1 model arrays receive nothing .*: params/dec/kernel;"),
    ({"params/enc/conv/kernel": np.ones((3, 3, 2, 4))}, {"source_prefix": "dec"}, ConfigError,
     r"source_prefix='dec' selects none of the 1 source arrays"),
    ({}, {}, DataError, r"holds no arrays"),
])
def test_mapping_errors(tmp_path, arrays, init_from, error, pattern):
  config = _config(weights=_file(tmp_path, arrays), **init_from)
  with pytest.raises(error, match=pattern):
    transfer.initialize(config, _small_state())


def test_subtree_with_batch_stats_loads(tmp_path):
  path = _file(tmp_path, {**ENC, "batch_stats/enc/mean": np.full(4, 3.0),
                          "params/dec/kernel": np.ones((4, 2))})
  loaded = _variables(transfer.initialize(
      _config(weights=path, source_prefix="enc", target_prefix="enc"), _small_state()))
  np.testing.assert_array_equal(loaded["batch_stats/enc/mean"], np.full(4, 3.0))
  np.testing.assert_array_equal(loaded["params/enc/conv/bias"], np.ones(4))
  np.testing.assert_array_equal(loaded["params/dec/kernel"], np.zeros((4, 2)))  # not selected


@pytest.mark.parametrize("init_from,error,pattern", [
    ({"checkpoint": "runs/a", "weights": "w.npz"}, ConfigError,
     r"both checkpoint='runs/a' and weights='w.npz'; expected at most one"),
    ({"weights": "missing.npz"}, ConfigError, r"weights='missing.npz' does not exist"),
    ({"weights": "model.pt"}, ConfigError, r"extension '.pt'; expected one of"),
    ({"checkpoint": "nowhere"}, CheckpointError, r"checkpoint='nowhere' is not a directory"),
    ({"weights": "w.npz", "layout": "caffe"}, ConfigError, r"unknown .*layout 'caffe'"),
    ({"weights": "w.npz", "rename": ("a->b",)}, ConfigError, r"rule 'a->b' has no '=>'"),
    ({"weights": "w.npz", "rename": ("(=>b",)}, ConfigError, r"rule '\(=>b': bad regex"),
    ({"freeze": True}, ConfigError, r"freeze=True but nothing is loaded"),
])
def test_config_errors(tmp_path, monkeypatch, init_from, error, pattern):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(error, match=pattern):
    transfer.frozen_mask(_config(**init_from))
    transfer.initialize(_config(**init_from), _small_state())


def test_corrupt_file_and_empty_checkpoint_dir(tmp_path):
  bad = tmp_path / "bad.safetensors"
  bad.write_bytes(b"not a safetensors file")
  with pytest.raises(DataError, match=r"bad.safetensors' is not a readable .safetensors"):
    transfer.initialize(_config(weights=str(bad)), _small_state())
  with pytest.raises(CheckpointError, match=r"holds no checkpoint"):
    transfer.initialize(_config(checkpoint=str(tmp_path)), _small_state())


# --- freezing in the optimizer --------------------------------------------------------

def test_make_optimizer_frozen_gets_zero_updates_and_no_decay():
  c = ml_collections.ConfigDict(dict(
      name="sgd", lr=0.1, schedule="constant", warmup_steps=0, final_lr_fraction=0.0,
      decay_steps=(), decay_factor=0.1, momentum=0.0, nesterov=False, b1=0.9, b2=0.999,
      weight_decay=0.5, grad_clip_norm=0.0))
  params = {"backbone": {"w": np.full(2, 2.0, np.float32)}, "head": {"w": np.full(3, 2.0,
                                                                             np.float32)}}
  grads = {"backbone": {"w": np.ones(2, np.float32)}, "head": {"w": np.ones(3, np.float32)}}
  config = _config(weights="w.npz", target_prefix="backbone", freeze=True)
  mask = transfer.frozen_mask(config)
  assert mask(params) == {"backbone": {"w": True}, "head": {"w": False}}
  for name in ("sgd", "adamw"):
    c.name = name
    tx, _ = make_optimizer(c, 10, frozen=mask)
    plain, _ = make_optimizer(c, 10)
    updates, _ = tx.update(grads, tx.init(params), params)
    reference, _ = plain.update(grads, plain.init(params), params)
    np.testing.assert_array_equal(updates["backbone"]["w"], [0, 0])
    np.testing.assert_allclose(updates["head"]["w"], reference["head"]["w"], rtol=1e-6)
    assert np.all(np.asarray(updates["head"]["w"]) < 0)
  # SGD by hand: -lr * (grad + weight_decay * w) = -0.1 * (1 + 0.5 * 2)
  c.name = "sgd"
  tx, _ = make_optimizer(c, 10, frozen=mask)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(optax.apply_updates(params, updates)["head"]["w"], [1.8] * 3)


def test_a_missing_source_fails_before_the_state_is_built(data_dir, tmp_path, monkeypatch):
  def create_state(*args, **kwargs):
    raise AssertionError("the state was built (and compiled) before the source was read")

  monkeypatch.setattr(loop, "create_state", create_state)
  config = _finetune_config(data_dir, None)
  config.init_from.weights = str(tmp_path / "missing.safetensors")
  with pytest.raises(ConfigError, match=r"weights='.*missing.safetensors' does not exist"):
    loop.train_and_evaluate(config, str(tmp_path / "w"), mesh=loop.make_mesh(jax.devices()[:1]))
