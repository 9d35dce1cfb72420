"""The HyperQuest game engine: rules (`rules`), training (`trainer`), persistence (`store`).

`HyperQuest(config, workdir)` holds every game of a workdir. Its methods are the Python
API (in-process, the rules the HTTP API enforces, for scripts and agents):

  hq = HyperQuest(config, "runs/hyperquest")
  game = hq.new_game("ann", background={...}, seed=3)         # {"id", "dataset", "choices"}
  hq.start(game["id"], {"width": 64, "lr": 0.01, "depth": 4, "dropout": 0.0})
  hq.act(game["id"], "continue", {"lr": "down", "width": "up"})
  hq.act(game["id"], "revert"); hq.act(game["id"], "done")
  hq.state(game["id"]); hq.leaderboard()

`exploit(game, source)` (population-based training's copy of another game's checkpoint)
is for agents only; the HTTP API does not offer it.

A rule violation raises `jaxseg.errors.RuleError` naming the rule, before anything
changes. Each trained epoch is saved as an orbax checkpoint (params, BatchNorm statistics,
optimizer state) under `<workdir>/games/<id>/checkpoints/<n>`; Revert restores the
previous one exactly.
The game's row in SQLite is written after its checkpoint, so a restarted server goes on
from a game's last epoch. Actions on one game run one at a time (a lock per game).
"""
from __future__ import annotations

import collections
import contextlib
import copy
import csv
import io
import json
import os
import random
import secrets
import shutil
import threading
from typing import Callable

import jax.numpy as jnp
import numpy as np

from jaxseg.data.pipeline import epoch_seed
from jaxseg.errors import RuleError, UnknownGameError
from jaxseg.hyperquest import data as quest_data
from jaxseg.hyperquest import rules
from jaxseg.hyperquest.store import Store
from jaxseg.hyperquest.trainer import Trainer

BASELINE_KIND = "baseline"
BACKGROUND_FIELDS = ("education", "years", "experience", "kinds")  # the page's questionnaire
EXPORT_COLUMNS = ("id", "player", "kind", "seed", "dataset", "epochs", "actions",
                  "best_val_acc", "best_train_acc", "baseline_val_acc") + tuple(
                      f"background_{k}" for k in BACKGROUND_FIELDS) + ("background_other",)
MAX_BACKGROUND_CHARS = 4000
_PUBLIC = ("id", "player", "kind", "background", "seed", "dataset", "config", "epoch",
           "epochs_trained", "actions_used", "reverts_in_a_row", "finished", "history",
           "train_acc", "val_acc", "best_train_acc", "best_val_acc")


class HyperQuest:
  """Every game of one workdir (see module doc)."""

  def __init__(self, config, workdir: str):
    self.config = config
    self.workdir = os.path.abspath(workdir)
    self.store = Store(self.workdir)
    self._lock = threading.Lock()
    self._game_locks: dict[str, threading.Lock] = collections.defaultdict(threading.Lock)
    self._runs: dict[str, object] = {}  # game id -> TrainState of its current epoch
    self._trainers: dict[str, Trainer] = {}
    self._device_data: dict[str, tuple] = {}
    self._progress: dict[str, dict] = {}

  # -- datasets ---------------------------------------------------------------------
  def dataset(self, name: str) -> quest_data.QuestData:
    return quest_data.load(name, self.config.dataset)

  def dataset_summary(self, name: str) -> dict:
    """Statistics of one of the game's datasets (UnknownGameError for other names)."""
    return self._game_dataset(name).summary()

  def examples_png(self, name: str) -> bytes:
    return self._game_dataset(name).examples_png(self.config.examples_per_class)

  def _game_dataset(self, name: str) -> quest_data.QuestData:
    if name not in tuple(self.config.datasets):
      raise UnknownGameError(f"no dataset {name!r} in this game; expected one of "
                             f"{list(self.config.datasets)}")
    return self.dataset(name)

  def _trainer(self, name: str) -> Trainer:
    with self._lock:
      if name not in self._trainers:
        d = self.dataset(name)
        self._trainers[name] = Trainer(self.config, d.num_classes)
        self._device_data[name] = tuple(jnp.asarray(a) for a in (
            d.train_images, d.train_labels, d.val_images, d.val_labels))
      return self._trainers[name]

  # -- games ------------------------------------------------------------------------
  def new_game(self, player, background=None, seed=None, kind: str = "human") -> dict:
    """A new game: {"id", "dataset" (its statistics), "choices" (stage 1)}."""
    player = rules.check_player(player)
    if background is not None and (not isinstance(background, dict)
                                   or len(json.dumps(background)) > MAX_BACKGROUND_CHARS):
      raise RuleError(f"rule 'background': the questionnaire is an object of at most "
                      f"{MAX_BACKGROUND_CHARS} characters of JSON")
    if seed is None:
      seed = secrets.randbelow(2**31)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
      raise RuleError(f"rule 'seed': a seed is an integer in [0, 2**31), got {seed!r}")
    if not isinstance(kind, str) or not kind:
      raise RuleError(f"rule 'kind': expected 'human' or an agent's name, got {kind!r}")
    datasets = tuple(self.config.datasets)
    name = datasets[random.Random(seed).randrange(len(datasets))]
    summary = self.dataset(name).summary()
    state = {"id": secrets.token_hex(8), "player": player, "kind": kind,
             "background": background, "seed": seed, "dataset": name, "config": None,
             "epoch": 0, "epochs_trained": 0, "actions_used": 0, "reverts_in_a_row": 0,
             "finished": False, "history": [], "lineage": [], "train_acc": None,
             "val_acc": None, "best_train_acc": None, "best_val_acc": None}
    self.store.insert(state)
    return {"id": state["id"], "dataset": summary,
            "choices": {k: list(v) for k, v in rules.STAGE1_CHOICES.items()}}

  def _load(self, game_id) -> dict:
    state = self.store.load(game_id) if isinstance(game_id, str) else None
    if state is None:
      raise UnknownGameError(f"no game with id {game_id!r}")
    return state

  def state(self, game_id: str) -> dict:
    """The public state: the issue's fields plus the values each move leads to."""
    return self._public(self._load(game_id))

  def _public(self, state: dict) -> dict:
    out = {k: copy.deepcopy(state[k]) for k in _PUBLIC}
    out["next_values"] = rules.next_values(state["config"])
    out["max_epochs"], out["max_actions"] = rules.MAX_EPOCHS, rules.MAX_ACTIONS
    out["max_reverts_in_a_row"] = rules.MAX_REVERTS_IN_A_ROW
    curve = self._baseline_curve(state)
    n = max(state["epochs_trained"], 1)
    out["baseline_val_accs"] = curve[:n]
    out["baseline_val_acc"] = max(curve[:n]) if curve else None
    return out

  def leaderboard(self) -> list[dict]:
    return self.store.leaderboard(exclude_kinds=(BASELINE_KIND,))

  def export_csv(self) -> str:
    """Every finished game with its player's questionnaire answers, epochs, actions and
    scores, one row each (for studies such as Anand et al. 2020, "Black Magic in Deep
    Learning"). Cells starting with = + - @ are prefixed with ' (no spreadsheet formulas)."""
    def cell(value):
      if isinstance(value, (list, tuple)):
        value = ";".join(map(str, value))
      text = "" if value is None else str(value)
      return "'" + text if text[:1] in ("=", "+", "-", "@") else text

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(EXPORT_COLUMNS)
    for g in self.store.finished_games(exclude_kinds=(BASELINE_KIND,)):
      answers = g.get("background") or {}
      other = {k: v for k, v in answers.items() if k not in BACKGROUND_FIELDS}
      curve = self._baseline_curve(g)[:max(g["epochs_trained"], 1)]
      row = {**{f"background_{k}": answers.get(k) for k in BACKGROUND_FIELDS},
             "background_other": json.dumps(other) if other else None,
             "id": g["id"], "player": g["player"], "kind": g["kind"], "seed": g["seed"],
             "dataset": g["dataset"], "epochs": g["epochs_trained"],
             "actions": g["actions_used"], "best_val_acc": g["best_val_acc"],
             "best_train_acc": g["best_train_acc"],
             "baseline_val_acc": max(curve) if curve else None}
      writer.writerow([cell(row[c]) for c in EXPORT_COLUMNS])
    return out.getvalue()

  def progress(self, game_id: str) -> dict:
    """{"training": bool, "fraction": float} of the game's running epoch."""
    return dict(self._progress.get(game_id, {"training": False, "fraction": 0.0}))

  def train_state(self, game_id: str):
    """The TrainState (params, optimizer state) of the game's current epoch."""
    state = self._load(game_id)
    if not state["lineage"]:
      raise RuleError("rule 'stage 1': the game has not started")
    return self._current(state)

  # -- moves ------------------------------------------------------------------------
  def start(self, game_id: str, choices: dict,
            progress: Callable[[float], None] | None = None) -> dict:
    """Stage 1: the initial configuration; trains the first epoch."""
    with self._game_lock(game_id):
      state = self._load(game_id)
      hp = rules.check_start(state, choices)
      with self._training(game_id):
        trainer = self._trainer(state["dataset"])
        train_state = trainer.init_state(hp, state["seed"])
        new = copy.deepcopy(state)
        new["config"] = hp
        self._train(new, train_state, hp, "start", {}, None, progress)
    self._extend_baseline(new)
    return self._public(new)

  def act(self, game_id: str, action: str, changes: dict | None = None,
          progress: Callable[[float], None] | None = None) -> dict:
    """Stage 2: "continue" (with Same/Up/Down `changes`), "revert" or "done"."""
    with self._game_lock(game_id):
      state = self._load(game_id)
      hp = rules.check_action(state, action, changes)
      new = copy.deepcopy(state)
      new["actions_used"] += 1
      if action == "continue":
        with self._training(game_id):
          self._continue(state, new, hp, changes, progress)
      else:
        dropped = None
        if action == "revert":
          dropped = self._revert(new)
        else:
          new["finished"] = True
          new["reverts_in_a_row"] = 0
        new["history"].append(self._event(new, action))
        new["finished"] |= new["actions_used"] >= rules.MAX_ACTIONS
        self.store.update(new)
        if dropped is not None:  # never needed again: Revert only goes further back
          shutil.rmtree(dropped, ignore_errors=True)
    self._extend_baseline(new)
    return self._public(new)

  def exploit(self, game_id: str, source_id: str) -> dict:
    """Population-based training's exploit (agents only; Jaderberg et al. 2017): the game
    takes over the source game's current model, BatchNorm statistics, optimizer state
    and configuration (its checkpoint is copied). Costs one action and trains nothing;
    the accuracies the source reached do not count as this game's best until it trains
    on. Revert goes back to the game's own previous epoch. Both games must have started,
    be of the same kind and dataset, and this one must be unfinished."""
    if game_id == source_id:
      raise RuleError("rule 'exploit': a game cannot exploit itself")
    first, second = sorted((game_id, source_id))
    with self._game_lock(first), self._game_lock(second):
      state, source = self._load(game_id), self._load(source_id)
      rules.check_action(state, "done", None)  # started, unfinished, actions left
      if not source["lineage"]:
        raise RuleError("rule 'exploit': the source game has not started")
      if (source["kind"], source["dataset"]) != (state["kind"], state["dataset"]):
        raise RuleError(f"rule 'exploit': only games of the same kind and dataset; "
                        f"{source_id!r} is {source['kind']!r} on {source['dataset']!r}")
      top = source["lineage"][-1]
      new = copy.deepcopy(state)
      new["actions_used"] += 1
      ckpt = f"{new['epochs_trained']}x{new['actions_used']}"
      shutil.copytree(self._checkpoint_path(source_id, top["ckpt"]),
                      self._checkpoint_path(game_id, ckpt))
      new["lineage"].append({**copy.deepcopy(top), "ckpt": ckpt})
      new["epoch"], new["config"] = top["epoch"], dict(top["config"])
      new["train_acc"], new["val_acc"] = top["train_acc"], top["val_acc"]
      new["reverts_in_a_row"] = 0
      new["history"].append(self._event(new, "exploit", source=source_id))
      new["finished"] |= new["actions_used"] >= rules.MAX_ACTIONS
      self.store.update(new)
      self._runs.pop(game_id, None)
    return self._public(new)

  # -- internals --------------------------------------------------------------------
  def _game_lock(self, game_id: str) -> threading.Lock:
    with self._lock:
      return self._game_locks[game_id]

  @contextlib.contextmanager
  def _training(self, game_id: str):
    """Marks the game as training (for `progress`) while the block runs."""
    self._progress[game_id] = {"training": True, "fraction": 0.0}
    try:
      yield
    finally:
      self._progress.pop(game_id, None)

  def _continue(self, state: dict, new: dict, hp: dict, changes, progress) -> None:
    """Continue: apply the changes (Net2Net Up / documented Down), train one epoch."""
    old = state["config"]
    trainer = self._trainer(state["dataset"])
    rng = np.random.default_rng([state["seed"], state["epochs_trained"]])
    train_state = trainer.change(self._current(state), old, hp, rng)
    after = None
    if (old["width"], old["depth"]) != (hp["width"], hp["depth"]):
      _, _, val_images, val_labels = self._device_data[state["dataset"]]
      after = trainer.accuracy(train_state, hp, val_images, val_labels)
    moved = {k: m for k, m in (changes or {}).items() if m != "same"}
    new["config"] = hp
    new["reverts_in_a_row"] = 0
    self._train(new, train_state, hp, "continue", moved, after, progress)

  @staticmethod
  def _event(state: dict, action: str, **extra) -> dict:
    return {"epoch": state["epoch"], "config": dict(state["config"]),
            "train_acc": state["train_acc"], "val_acc": state["val_acc"], "action": action,
            **extra}

  def _checkpoint_path(self, game_id: str, n: int) -> str:
    return os.path.join(self.workdir, "games", game_id, "checkpoints", str(n))

  def _current(self, state: dict):
    """The game's TrainState in memory, restored from its last checkpoint if needed."""
    top = state["lineage"][-1]
    cached = self._runs.get(state["id"])
    if cached is not None and cached[0] == top["ckpt"]:
      return cached[1]
    trainer = self._trainer(state["dataset"])
    train_state = trainer.restore(self._checkpoint_path(state["id"], top["ckpt"]),
                                  top["config"])
    self._runs[state["id"]] = (top["ckpt"], train_state)
    return train_state

  def _train(self, new: dict, train_state, hp: dict, action: str, changes: dict,
             val_after_change, progress) -> None:
    """Trains one epoch of `new` (a copy of the stored state), then commits: checkpoint,
    then the SQLite row, then the in-memory state."""
    game_id, dataset = new["id"], new["dataset"]
    trainer = self._trainer(dataset)
    images, labels, val_images, val_labels = self._device_data[dataset]
    n = new["epochs_trained"] + 1

    def report(fraction):
      self._progress[game_id] = {"training": True, "fraction": fraction}
      if progress is not None:
        progress(fraction)

    train_state, train_acc, _ = trainer.train_epoch(
        train_state, hp, images, labels, epoch_seed(new["seed"], n), report)
    val_acc = trainer.accuracy(train_state, hp, val_images, val_labels)
    trainer.save(self._checkpoint_path(game_id, n), train_state)
    new["epochs_trained"] = n
    new["epoch"] += 1
    new["train_acc"], new["val_acc"] = train_acc, val_acc
    new["best_train_acc"] = max(new["best_train_acc"] or 0.0, train_acc)
    new["best_val_acc"] = max(new["best_val_acc"] or 0.0, val_acc)
    new["lineage"].append({"ckpt": n, "epoch": new["epoch"], "config": dict(hp),
                           "train_acc": train_acc, "val_acc": val_acc})
    extra = {"changes": changes}
    if val_after_change is not None:
      extra["val_acc_after_change"] = val_after_change
    new["history"].append(self._event(new, action, **extra))
    new["finished"] |= new["actions_used"] >= rules.MAX_ACTIONS
    self.store.update(new)
    self._runs[game_id] = (n, train_state)

  def _revert(self, new: dict) -> str:
    """Back to the previous checkpoint of the lineage; returns the dropped checkpoint's
    path (deleted once the new state is written)."""
    dropped = new["lineage"].pop()
    top = new["lineage"][-1]
    new["epoch"], new["config"] = top["epoch"], dict(top["config"])
    new["train_acc"], new["val_acc"] = top["train_acc"], top["val_acc"]
    new["reverts_in_a_row"] += 1
    self._current(new)  # restore now: a missing checkpoint fails before anything changes
    return self._checkpoint_path(new["id"], dropped["ckpt"])

  # -- the baseline -----------------------------------------------------------------
  def _baseline_id(self, dataset: str) -> str:
    return f"{BASELINE_KIND}-{dataset}"

  def _baseline_curve(self, state: dict) -> list[float]:
    if state["kind"] == BASELINE_KIND or not self.config.baseline.enabled:
      return []
    baseline = self.store.load(self._baseline_id(state["dataset"]))
    if baseline is None:
      return []
    return [e["val_acc"] for e in baseline["history"] if e["action"] in ("start", "continue")]

  def _extend_baseline(self, state: dict) -> None:
    """Trains the dataset's baseline (config.baseline, continued every epoch) up to the
    game's number of trained epochs; done once per dataset and workdir."""
    if state["kind"] == BASELINE_KIND or not self.config.baseline.enabled:
      return
    game_id = self._baseline_id(state["dataset"])
    if self.store.load(game_id) is None:
      with self._lock:
        if self.store.load(game_id) is None:
          self.store.insert({
              "id": game_id, "player": BASELINE_KIND, "kind": BASELINE_KIND,
              "background": None, "seed": 0, "dataset": state["dataset"], "config": None,
              "epoch": 0, "epochs_trained": 0, "actions_used": 0, "reverts_in_a_row": 0,
              "finished": False, "history": [], "lineage": [], "train_acc": None,
              "val_acc": None, "best_train_acc": None, "best_val_acc": None})
    b = self.config.baseline
    while True:
      baseline = self._load(game_id)
      if baseline["epochs_trained"] >= state["epochs_trained"]:
        return
      try:
        if baseline["config"] is None:
          self.start(game_id, {"width": b.width, "lr": b.lr, "depth": b.depth,
                               "dropout": b.dropout})
        else:
          self.act(game_id, "continue")
      except RuleError:  # its action budget is spent: the curve stays as it is
        return
