"""HyperQuest: the shapes10 dataset, the rules, Net2Net changes, Revert, persistence
(the `:tiny` game config; a few tiny epochs)."""
import copy
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from jaxseg import ablate, hyperquest
from jaxseg.data import shapes10
from jaxseg.errors import ConfigError, RuleError, UnknownGameError
from jaxseg.hyperquest import agents, agents_study, net, rules, study
from tests.conftest import REPO, load_config

GAME_CONFIG = os.path.join(REPO, "experiments", "hyperquest", "game.py")
START = {"width": 32, "lr": 0.01, "depth": 2, "dropout": 0.0}


def game_config(data_dir, **baseline):
  config = load_config(GAME_CONFIG, "tiny")
  with config.unlocked():
    config.dataset.data_dir = data_dir
    config.baseline.update(width=32, lr=0.01, depth=2, dropout=0.0)  # shares compiles
    config.baseline.update(baseline)
  return config


@pytest.fixture(scope="module")
def quest_data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("quest_tfds"))


@pytest.fixture(scope="module")
def hq(quest_data_dir, tmp_path_factory):
  return hyperquest.HyperQuest(game_config(quest_data_dir),
                               str(tmp_path_factory.mktemp("quest_run")))


@pytest.fixture(scope="module")
def played(hq):
  """A game after start + two continues (3 epochs)."""
  game_id = hq.new_game("ann", seed=1)["id"]
  hq.start(game_id, START)
  hq.act(game_id, "continue")
  hq.act(game_id, "continue", {"lr": "down"})
  return game_id


def _equal_trees(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(
      np.shape(x) == np.shape(y) and np.array_equal(np.asarray(x), np.asarray(y))
      for x, y in zip(la, lb))


# -- the dataset ------------------------------------------------------------------------
def test_shapes10_is_deterministic_and_balanced():
  config = shapes10.shapes10_config(num_train=20, num_validation=10)
  assert config is shapes10.shapes10_config(num_train=20, num_validation=10)
  assert config.name == "s32_n20-10"
  labels = []
  for i in range(300):
    ex = shapes10.render_example(np.random.default_rng([0, i]), config)
    assert ex["image"].shape == (32, 32, 3) and ex["image"].dtype == np.uint8
    labels.append(ex["label"])
  again = shapes10.render_example(np.random.default_rng([0, 7]), config)
  first = shapes10.render_example(np.random.default_rng([0, 7]), config)
  np.testing.assert_array_equal(again["image"], first["image"])
  counts = np.bincount(labels, minlength=10)
  assert len(counts) == 10 and counts.min() >= 15  # every class, roughly uniform


def test_game_dataset_from_the_tfds_builder(hq):
  data = hq.dataset("shapes10")
  assert data.class_names == shapes10.CLASS_NAMES
  assert data.train_images.shape == (240, 32, 32, 3) and len(data.val_labels) == 120
  # the builder's examples are render_example's, in order
  first = shapes10.render_example(np.random.default_rng([0, 0]), shapes10.shapes10_config(
      num_train=240, num_validation=120))
  assert any(np.array_equal(first["image"], im) for im in data.train_images[:240])
  summary = data.summary()
  assert summary["num_train"] == 240 and sum(summary["train_class_counts"]) == 240


@pytest.mark.parametrize("name, first_class", [("cifar10", "airplane"),
                                               ("svhn_cropped", "0")])
def test_catalog_sets_by_name_from_mock_data(tmp_path, name, first_class):
  rng = np.random.default_rng(0)
  examples = [{"image": rng.integers(0, 255, (32, 32, 3), dtype=np.uint8),
               "label": np.int64(i % 10)} for i in range(30)]
  signature = {"image": tf.TensorSpec((32, 32, 3), tf.uint8),
               "label": tf.TensorSpec((), tf.int64)}

  def as_dataset(self, split, **kwargs):
    del self, split, kwargs
    return tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=signature)

  config = game_config(str(tmp_path))
  with config.unlocked():
    config.datasets = (name,)
    config.dataset.num_train, config.dataset.num_validation = 25, 12
  with tfds.testing.mock_data(as_dataset_fn=as_dataset):
    game = hyperquest.HyperQuest(config, str(tmp_path / "run")).new_game("bo", seed=0)
  assert game["dataset"]["name"] == name
  assert game["dataset"]["class_names"][0] == first_class
  assert len(game["dataset"]["class_names"]) == 10
  assert (game["dataset"]["num_train"], game["dataset"]["num_validation"]) == (25, 12)


def test_unknown_dataset_name(tmp_path):
  config = game_config(str(tmp_path))
  with config.unlocked():
    config.datasets = ("no_such_set",)
  with pytest.raises(ConfigError, match="unknown dataset 'no_such_set' in config.datasets"):
    hyperquest.HyperQuest(config, str(tmp_path / "run")).new_game("bo", seed=0)


# -- the rules (pure) -------------------------------------------------------------------
def _state(**overrides):
  state = {"config": {"weight_decay": 0.0, "depth": 4, "dropout": 0.0, "lr": 0.1,
                      "width": 128},
           "actions_used": 3, "epochs_trained": 3, "reverts_in_a_row": 0,
           "finished": False, "lineage": [{}, {}, {}]}
  state.update(overrides)
  return state


@pytest.mark.parametrize("overrides, action, changes, rule", [
    (dict(reverts_in_a_row=5), "revert", None, "reverts"),
    (dict(lineage=[{}]), "revert", None, "reverts"),
    (dict(epochs_trained=30), "continue", None, "epochs"),
    (dict(actions_used=60, finished=True), "done", None, "actions"),
    (dict(actions_used=60), "continue", None, "actions"),
    ({}, "continue", {"lr": "up"}, "range"),
    ({}, "continue", {"width": "up"}, "range"),
    (dict(finished=True), "continue", None, "done"),
    ({}, "continue", {"momentum": "up"}, "changes"),
    ({}, "continue", {"lr": "sideways"}, "changes"),
    ({}, "revert", {"lr": "down"}, "changes"),
    ({}, "jump", None, "action"),
    (dict(config=None), "continue", None, "stage 1"),
])
def test_each_violation_names_its_rule_and_changes_nothing(overrides, action, changes, rule):
  state = _state(**overrides)
  before = copy.deepcopy(state)
  with pytest.raises(RuleError, match=f"rule '{rule}'"):
    rules.check_action(state, action, changes)
  assert state == before


def test_allowed_moves_and_next_values():
  state = _state()
  assert rules.check_action(state, "continue", {"lr": "down", "width": "down",
                                                "weight_decay": "up"}) == {
      "weight_decay": 1e-5, "depth": 4, "dropout": 0.0, "lr": 0.03, "width": 64}
  assert rules.check_action(_state(reverts_in_a_row=4), "revert", {"lr": "same"}) is None
  shown = rules.next_values(state["config"])
  assert shown["lr"] == {"same": 0.1, "up": None, "down": 0.03}
  assert shown["depth"] == {"same": 4, "up": 8, "down": 2}


@pytest.mark.parametrize("choices, match", [
    ({**START, "width": 48}, r"width=48 is not one of \[32, 64, 128\]"),
    ({**START, "lr": 0.03}, "lr=0.03"),
    ({k: v for k, v in START.items() if k != "depth"}, "choose depth"),
    ({**START, "weight_decay": 0.1}, r"unknown hyperparameter\(s\) \['weight_decay'\]"),
    ({**START, "dropout": True}, "dropout=True"),
])
def test_stage1_violations(choices, match):
  with pytest.raises(RuleError, match=match):
    rules.check_start({"config": None}, choices)
  with pytest.raises(RuleError, match="already started"):
    rules.check_start({"config": {}}, START)


# -- Net2Net ----------------------------------------------------------------------------
def _trained_like(width, depth):
  """Random variables with non-trivial BatchNorm parameters and statistics (a trained
  network's, not an init's)."""
  x = jnp.zeros((1, 32, 32, 3))
  variables = jax.jit(net.QuestNet(width, depth, 0.0).init)(jax.random.key(0), x)
  rng = np.random.default_rng(1)
  noisy = jax.tree.map(lambda p: np.asarray(p) + 0.1 * rng.normal(size=p.shape), variables)
  noisy["params"]["head"]["kernel"] *= 0.2  # logits of a few units, as after training
  for stats in noisy["batch_stats"].values():
    stats["var"] = rng.uniform(0.5, 1.5, stats["var"].shape)
  return jax.tree.map(lambda a: a.astype(np.float32), noisy)


@pytest.mark.parametrize("start, end", [((32, 2), (64, 2)), ((32, 2), (32, 4)),
                                        ((64, 4), (128, 8))])
def test_net2net_up_preserves_outputs(start, end):
  variables = _trained_like(*start)
  x = jax.random.uniform(jax.random.key(2), (4, 32, 32, 3))
  before = jax.jit(net.QuestNet(*start, 0.0).apply)(variables, x)
  bigger = net.resize(variables, *end, np.random.default_rng(0))
  after = jax.jit(net.QuestNet(*end, 0.0).apply)(bigger, x)
  shapes = jax.tree.map(np.shape, bigger)
  assert shapes["params"]["conv_0"]["kernel"] == (3, 3, end[0], end[0])
  assert shapes["batch_stats"][f"bn_{end[1] - 1}"]["var"] == (end[0],)
  np.testing.assert_allclose(after, before, atol=1e-5, rtol=0)
  assert float(jnp.abs(before).max()) > 0.1  # the check compares real outputs
  if end[0] > start[0]:  # the copies differ (symmetry broken) in their outgoing weights
    head = np.asarray(bigger["params"]["head"]["kernel"])
    assert not np.allclose(head[start[0]:], head[:end[0] - start[0]])


def test_down_keeps_strongest_units_and_every_second_layer():
  variables = _trained_like(64, 4)
  scale = np.abs(np.asarray(variables["params"]["stem_bn"]["scale"]))
  small = net.resize(variables, 32, 2, np.random.default_rng(0))
  kept = np.sort(np.argsort(-scale)[:32])
  np.testing.assert_array_equal(small["batch_stats"]["stem_bn"]["mean"],
                                np.asarray(variables["batch_stats"]["stem_bn"]["mean"])[kept])
  assert sorted(small["params"]) == ["bn_0", "bn_1", "conv_0", "conv_1", "head", "stem",
                                     "stem_bn"]
  # layer 1 of the shallow net is layer 2 of the deep one, narrowed: its inputs to the
  # strongest units of layer 1, its outputs to its own strongest units
  keep = [np.sort(np.argsort(-np.abs(variables["params"][f"bn_{i}"]["scale"]))[:32])
          for i in (1, 2)]
  np.testing.assert_array_equal(
      small["params"]["conv_1"]["kernel"],
      variables["params"]["conv_2"]["kernel"][:, :, keep[0]][..., keep[1]])
  # deepen then shallow gives the original layers back
  assert _equal_trees(net.shallow(net.deepen(variables)), variables)


# -- the engine -------------------------------------------------------------------------
def test_a_game_records_history_and_best(hq, played):
  state = hq.state(played)
  assert state["epoch"] == 3 and state["epochs_trained"] == 3 and state["actions_used"] == 2
  assert [h["action"] for h in state["history"]] == ["start", "continue", "continue"]
  assert state["config"]["lr"] == 0.003 and state["history"][-1]["changes"] == {"lr": "down"}
  assert state["best_val_acc"] == max(h["val_acc"] for h in state["history"])
  assert state["next_values"]["lr"] == {"same": 0.003, "up": 0.01, "down": 0.001}
  assert len(state["baseline_val_accs"]) == 3 and state["baseline_val_acc"] is not None
  assert 0 <= state["best_val_acc"] <= 1 and not state["finished"]


def test_revert_restores_the_previous_epoch_exactly(hq):
  game_id = hq.new_game("cy", seed=2)["id"]
  hq.start(game_id, START)
  first = jax.device_get(hq.train_state(game_id))
  before = hq.state(game_id)
  hq.act(game_id, "continue", {"weight_decay": "up", "dropout": "up"})
  assert not _equal_trees(first.params, hq.train_state(game_id).params)
  hq._runs.clear()  # pylint: disable=protected-access  (restore from the checkpoint)
  state = hq.act(game_id, "revert")
  restored = hq.train_state(game_id)
  assert _equal_trees(restored.params, first.params)
  assert _equal_trees(restored.model_state, first.model_state)
  assert _equal_trees(restored.opt_state, first.opt_state)
  assert int(restored.step) == int(first.step)
  assert state["config"] == before["config"] and state["epoch"] == 1
  assert state["val_acc"] == before["val_acc"] and state["reverts_in_a_row"] == 1
  with pytest.raises(RuleError, match="rule 'reverts': there is no earlier epoch"):
    hq.act(game_id, "revert")
  assert hq.state(game_id) == state


def test_up_keeps_accuracy_and_down_reports_it(hq, played):
  game_id = hq.new_game("di", seed=3)["id"]
  hq.start(game_id, START)
  before = hq.state(game_id)["val_acc"]
  state = hq.act(game_id, "continue", {"width": "up", "depth": "up"})
  assert state["config"]["width"] == 64 and state["config"]["depth"] == 4
  assert state["history"][-1]["val_acc_after_change"] == pytest.approx(before, abs=1e-9)
  state = hq.act(game_id, "continue", {"depth": "down"})
  assert 0 <= state["history"][-1]["val_acc_after_change"] <= 1
  assert hq.train_state(game_id).params["conv_1"]["kernel"].shape == (3, 3, 64, 64)
  assert hq.train_state(game_id).model_state["batch_stats"]["bn_1"]["var"].shape == (64,)


def test_engine_violation_leaves_state_and_params(hq, played):
  before = hq.state(played)
  params = jax.device_get(hq.train_state(played).params)
  for action, changes in (("continue", {"width": "down"}), ("continue", {"depth": "down"}),
                          ("continue", {"bogus": "up"}), ("revert", {"lr": "up"})):
    with pytest.raises(RuleError):
      hq.act(played, action, changes)
  with pytest.raises(RuleError, match="already started"):
    hq.start(played, START)
  with pytest.raises(UnknownGameError):
    hq.act("nope", "done")
  assert hq.state(played) == before
  assert _equal_trees(hq.train_state(played).params, params)


def test_two_games_do_not_mix(hq):
  a = hq.new_game("eve", seed=4)["id"]
  b = hq.new_game("fay", seed=5)["id"]
  hq.start(a, START)
  hq.start(b, {**START, "lr": 0.001})
  hq.act(a, "continue")
  sa, sb = hq.state(a), hq.state(b)
  assert (sa["player"], sa["epoch"], sa["config"]["lr"]) == ("eve", 2, 0.01)
  assert (sb["player"], sb["epoch"], sb["config"]["lr"]) == ("fay", 1, 0.001)
  assert not _equal_trees(hq.train_state(a).params, hq.train_state(b).params)


def test_restart_keeps_leaderboard_and_resumes_games(hq, quest_data_dir):
  done = hq.new_game("<b>gil</b>", seed=6, background={"years": 2})["id"]
  hq.start(done, START)
  hq.act(done, "done")
  going = hq.new_game("hal", seed=7)["id"]
  hq.start(going, START)
  hq.act(going, "continue")
  params = jax.device_get(hq.train_state(going).params)
  board = hq.leaderboard()
  assert [e["player"] for e in board].count("<b>gil</b>") == 1

  again = hyperquest.HyperQuest(game_config(quest_data_dir), hq.workdir)
  assert again.leaderboard() == board
  assert again.state(going) == hq.state(going)
  assert _equal_trees(again.train_state(going).params, params)
  state = again.act(going, "continue")
  assert state["epoch"] == 3 and state["epochs_trained"] == 3
  with pytest.raises(RuleError, match="rule 'done'"):
    again.act(done, "continue")


def test_random_search_agent_plays_by_the_rules(hq):
  space = {"width": (32,), "lr": (0.01, 0.001), "depth": (2,), "dropout": (0.0, 0.5)}
  best = agents.random_search(hq, seed=0, trials=2, epochs=2, space=space)
  board = [e for e in hq.leaderboard() if e["kind"] == "random_search"]
  assert len(board) == 2 and all((e["epochs"], e["actions"]) == (2, 2) for e in board)
  assert best["finished"] and best["best_val_acc"] == board[0]["best_val_acc"]
  assert {best["config"][k] for k in space} <= {v for vs in space.values() for v in vs}


def test_successive_halving_keeps_the_best_games(hq):
  space = {"width": (32,), "lr": (0.01, 0.001), "depth": (2,), "dropout": (0.0, 0.5)}
  best = agents.successive_halving(hq, seed=1, games=3, min_epochs=1, eta=2, space=space)
  games = [hq.state(e["id"]) for e in hq.leaderboard() if e["kind"] == "successive_halving"]
  assert sorted(g["epochs_trained"] for g in games) == [1, 1, 2]
  survivor = next(g for g in games if g["epochs_trained"] == 2)
  assert all(survivor["history"][0]["val_acc"] >= g["best_val_acc"] for g in games
             if g["epochs_trained"] == 1)
  assert best["best_val_acc"] == max(g["best_val_acc"] for g in games)
  assert agents.hyperband_brackets(9, 3) == [(9, 1), (5, 3), (3, 9)]  # Li et al.'s table
  assert agents.hyperband_brackets(2, 2) == [(2, 1), (2, 2)]


def test_optuna_agent_prunes_and_plays_by_the_rules(hq):
  pytest.importorskip("optuna")
  space = {"width": (32,), "lr": (0.01, 0.001), "depth": (2,), "dropout": (0.0,)}
  best = agents.optuna_tpe(hq, seed=0, trials=3, epochs=2, space=space)
  games = [e for e in hq.leaderboard() if e["kind"] == "optuna_tpe"]
  assert len(games) == 3 and all(1 <= e["epochs"] <= 2 for e in games)
  assert best["finished"] and best["best_val_acc"] == games[0]["best_val_acc"]


def test_experience_study_reads_the_export(tmp_path):
  header = ("id,player,kind,seed,dataset,epochs,actions,best_val_acc,best_train_acc,"
            "baseline_val_acc,background_education,background_years,background_experience,"
            "background_kinds,background_other\n")
  rows = [f"g{i},p{i},human,0,shapes10,3,4,{acc},0.5,0.3,,1,{exp},cnn,\n"
          for i, (exp, acc) in enumerate([(1, 0.2), (2, 0.3), (4, 0.5), (5, 0.6), (5, 0.7)])]
  rows.append("a,random_search,random_search,0,shapes10,3,4,0.9,0.5,0.3,,,,,\n")
  rows.append("b,q,human,0,shapes10,3,4,0.8,0.5,0.3,,,,,\n")  # no experience: left out
  xs, ys = study.experience_vs_accuracy(header + "".join(rows))
  assert xs.tolist() == [1, 2, 4, 5, 5] and ys.tolist() == [0.2, 0.3, 0.5, 0.6, 0.7]
  summary = study.summarize(xs, ys)
  assert summary["games"] == 5  # rho below 1 only through the tie at 5
  assert summary["spearman_rho"] == pytest.approx(0.974679, abs=1e-6)
  assert summary["mean_best_val_acc_by_experience"][5] == pytest.approx(0.65)
  path = study.plot(xs, ys, summary, str(tmp_path / "experience.png"))
  assert open(path, "rb").read(4) == b"\x89PNG"


def test_pbt_exploits_the_better_games_checkpoint(hq):
  space = {"width": (32,), "lr": (0.01, 0.001), "depth": (2,), "dropout": (0.0,)}
  best = agents.population_based_training(hq, seed=0, population=2, epochs=3, ready=1,
                                          fraction=0.5, space=space)
  games = [hq.state(e["id"]) for e in hq.leaderboard() if e["kind"] == "pbt"]
  assert len(games) == 2 and all(g["epochs_trained"] == 3 for g in games)
  exploits = [(g, h) for g in games for h in g["history"] if h["action"] == "exploit"]
  assert len(exploits) == 1  # after epoch 2, the worse of the two copies the better
  game, event = exploits[0]
  source = next(g for g in games if g["id"] == event["source"])
  source_epoch2 = [h for h in source["history"] if h["epoch"] == 2][-1]
  assert (event["config"], event["val_acc"]) == (source_epoch2["config"], source_epoch2["val_acc"])
  after = game["history"][game["history"].index(event) + 1]
  assert after["changes"].keys() == {"lr", "weight_decay"}  # explore
  assert best["best_val_acc"] == max(g["best_val_acc"] for g in games)
  with pytest.raises(RuleError, match="rule 'exploit'"):
    hq.exploit(game["id"], game["id"])


def test_agents_study_runs_resumes_and_reports(hq, tmp_path, monkeypatch):
  space = {"width": (32,), "lr": (0.01,), "depth": (2,), "dropout": (0.0,)}
  budgets = {"random_search": dict(trials=1, epochs=2, space=space),
             "pbt": dict(population=2, epochs=2, ready=1, space=space)}
  workdir = str(tmp_path / "study")
  # an interrupted earlier try of (random_search, seed 1) left a finished game of its kind
  agents.random_search(hq, 1, trials=1, epochs=1, space=space, name="random_search/seed1")
  results = agents_study.run_all(hq, workdir, ["random_search", "pbt"], 2, budgets)
  assert [(r["agent"], r["seed"], r["epochs"], r["games"]) for r in results] == [
      ("random_search", 0, 2, 1), ("random_search", 1, 2, 1), ("pbt", 0, 4, 2),
      ("pbt", 1, 4, 2)]
  assert all(0 <= r["best_val_acc"] <= 1 and r["baseline_val_acc"] is not None
             for r in results)
  monkeypatch.setattr(agents_study, "run_one", lambda *a: pytest.fail("repeated a run"))
  assert agents_study.run_all(hq, workdir, ["random_search", "pbt"], 2, budgets) == results
  csv_path, md_path, plot_path = agents_study.report(results, str(tmp_path / "report"))
  assert len(open(csv_path).read().splitlines()) == 5
  md = open(md_path).read()
  assert "| pbt | 2 |" in md
  assert f"- Code: {ablate._commit_text(ablate.provenance()['commit'])}" in md
  assert "| random_search | seed 0: " in md and "seed 1: " in md
  assert open(plot_path, "rb").read(4) == b"\x89PNG"
