"""Automated HyperQuest players, through the in-process Python API (the same rules as
people). Each game an agent plays is on the leaderboard under the agent's name; each
agent returns the state of its best game.

- `random_search` (Bergstra & Bengio, JMLR 2012): `trials` games, each with stage-1
  choices drawn uniformly from a search space and kept for `epochs` epochs (Continue
  with every hyperparameter Same), then Done.
- `successive_halving` (Jamieson & Talwalkar, AISTATS 2016): `games` games in parallel
  with random stage-1 choices, each trained `min_epochs`; the best 1/eta (by best
  validation accuracy) go on to eta times the epochs, the others are Done; until one
  is left (or the epoch limit).
- `hyperband` (Li et al., JMLR 2018): successive halving brackets from many games with
  few epochs to few games with `max_epochs`, for a maximum of `max_epochs` per game.
- `optuna_tpe`: Optuna's TPE sampler (Bergstra et al., NeurIPS 2011) picks the stage-1
  choices and the epoch of one learning-rate Down, its median pruner ends trials whose
  validation accuracy falls below the median of earlier trials at the same epoch.

- `pbt`, population-based training (Jaderberg et al. 2017): `population` parallel
  games with random stage-1 choices; every `ready` epochs the worst `fraction` exploit
  (`HyperQuest.exploit`: copy the checkpoint and configuration of a random game of the
  best `fraction`) and explore (learning rate and weight decay each Up or Down, applied
  with the next Continue).

The agents' study: `./launch.sh ablate hyperquest_agents` (jaxseg/hyperquest/agents_study.py).

Command line (next to a running server, the same workdir: its leaderboard shows them):
  python -m jaxseg.hyperquest.agents --config=experiments/hyperquest/game.py[:tiny]
      --agent=random_search|successive_halving|hyperband|optuna_tpe|pbt --seed=0 [--trials=4]
      [--epochs=5] [--workdir=runs/hyperquest]
"""
from __future__ import annotations

import math
import random

from jaxseg.hyperquest import rules
from jaxseg.hyperquest.engine import HyperQuest


def _choices(draw: random.Random, space: dict) -> dict:
  return {k: draw.choice(list(space[k])) for k in rules.STAGE1_CHOICES}


def _train_to(hq: HyperQuest, game_id: str, epochs: int, state: dict) -> dict:
  """Continue (all Same) until the game's current model has `epochs` epochs."""
  while state["epoch"] < min(epochs, rules.MAX_EPOCHS) and not state["finished"]:
    state = hq.act(game_id, "continue")
  return state


def _best(states):
  return max(states, key=lambda s: s["best_val_acc"])


def random_search(hq: HyperQuest, seed: int, trials: int = 4, epochs: int = 5,
                  space: dict | None = None, name: str = "random_search") -> dict:
  """`trials` games with random stage-1 choices from `space` (default: the game's
  STAGE1_CHOICES), `epochs` epochs each."""
  space = rules.STAGE1_CHOICES if space is None else space
  draw = random.Random(seed)
  finished = []
  for trial in range(trials):
    game = hq.new_game(name, seed=(seed * 1009 + trial) % 2**31, kind=name)
    state = _train_to(hq, game["id"], epochs, hq.start(game["id"], _choices(draw, space)))
    finished.append(hq.act(game["id"], "done"))
  return _best(finished)


def successive_halving(hq: HyperQuest, seed: int, games: int = 8, min_epochs: int = 1,
                       eta: int = 2, space: dict | None = None,
                       name: str = "successive_halving",
                       max_epochs: int = rules.MAX_EPOCHS) -> dict:
  """Successive halving over `games` parallel games, at most `max_epochs` each (see
  module doc)."""
  space = rules.STAGE1_CHOICES if space is None else space
  draw = random.Random(seed)
  alive = {}
  for i in range(games):
    game_id = hq.new_game(name, seed=(seed * 1009 + i) % 2**31, kind=name)["id"]
    alive[game_id] = _train_to(hq, game_id, min_epochs,
                               hq.start(game_id, _choices(draw, space)))
  finished, epochs = [], min_epochs
  while True:
    ranked = sorted(alive, key=lambda g: alive[g]["best_val_acc"], reverse=True)
    keep = ranked[:max(1, len(ranked) // eta)]
    if len(ranked) == 1 or epochs >= max_epochs:
      keep = []
    for game_id in ranked[len(keep):]:
      finished.append(hq.act(game_id, "done"))
    if not keep:
      return _best(finished)
    epochs = min(epochs * eta, max_epochs)
    alive = {g: _train_to(hq, g, epochs, alive[g]) for g in keep}


def hyperband_brackets(max_epochs: int, eta: int) -> list[tuple[int, int]]:
  """(games, first epochs) of each of Hyperband's brackets, most games first."""
  s_max = int(math.log(max_epochs) / math.log(eta) + 1e-9)
  return [(math.ceil((s_max + 1) / (s + 1) * eta**s), max(1, round(max_epochs * eta**-s)))
          for s in range(s_max, -1, -1)]


def hyperband(hq: HyperQuest, seed: int, max_epochs: int = 9, eta: int = 3,
              space: dict | None = None, name: str = "hyperband") -> dict:
  """Hyperband's brackets of successive halving, at most `max_epochs` per game."""
  return _best([successive_halving(hq, seed * 101 + i, games, first, eta, space, name,
                                   max_epochs)
                for i, (games, first) in enumerate(hyperband_brackets(max_epochs, eta))])


def optuna_tpe(hq: HyperQuest, seed: int, trials: int = 8, epochs: int = 5,
               space: dict | None = None, name: str = "optuna_tpe") -> dict:
  """Optuna's TPE sampler with a median pruner (see module doc)."""
  import optuna  # pylint: disable=g-import-not-at-top
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  space = rules.STAGE1_CHOICES if space is None else space
  study = optuna.create_study(
      direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
      pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1))
  finished = []

  def objective(trial):
    choices = {k: trial.suggest_categorical(k, list(space[k])) for k in rules.STAGE1_CHOICES}
    lr_down_at = trial.suggest_int("lr_down_at", 2, max(epochs, 2))
    game_id = hq.new_game(name, seed=(seed * 1009 + trial.number) % 2**31, kind=name)["id"]
    state = hq.start(game_id, choices)
    try:
      for epoch in range(2, epochs + 1):
        trial.report(state["val_acc"], epoch - 1)
        if trial.should_prune():
          raise optuna.TrialPruned()
        down = epoch == lr_down_at and state["next_values"]["lr"]["down"] is not None
        state = hq.act(game_id, "continue", {"lr": "down"} if down else None)
    finally:
      finished.append(hq.act(game_id, "done"))
    return state["best_val_acc"]

  study.optimize(objective, n_trials=trials)
  return _best(finished)


def population_based_training(hq: HyperQuest, seed: int, population: int = 4,
                              epochs: int = 8, ready: int = 2, fraction: float = 0.25,
                              space: dict | None = None, name: str = "pbt") -> dict:
  """PBT over `population` parallel games (see module doc)."""
  space = rules.STAGE1_CHOICES if space is None else space
  draw = random.Random(seed)
  states = {}
  for i in range(population):
    game_id = hq.new_game(name, seed=(seed * 1009 + i) % 2**31, kind=name)["id"]
    states[game_id] = hq.start(game_id, _choices(draw, space))
  moves = {g: None for g in states}
  for epoch in range(2, epochs + 1):
    for game_id in states:
      states[game_id] = hq.act(game_id, "continue", moves[game_id])
      moves[game_id] = None
    if (epoch - 1) % ready or epoch == epochs:
      continue
    ranked = sorted(states, key=lambda g: states[g]["val_acc"], reverse=True)
    k = max(1, int(len(ranked) * fraction))
    for game_id in ranked[-k:]:
      states[game_id] = hq.exploit(game_id, draw.choice(ranked[:k]))  # exploit
      nxt = states[game_id]["next_values"]  # explore: lr and weight decay Up or Down
      moves[game_id] = {h: draw.choice([m for m in ("up", "down") if nxt[h][m] is not None])
                        for h in EXPLORED}
  return _best([hq.act(g, "done") for g in states])


EXPLORED = ("lr", "weight_decay")  # the hyperparameters PBT's explore step perturbs


AGENTS = {"random_search": random_search, "successive_halving": successive_halving,
          "hyperband": hyperband, "optuna_tpe": optuna_tpe, "pbt": population_based_training}


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from jaxseg import cli  # pylint: disable=g-import-not-at-top
  from jaxseg.errors import JaxsegError  # pylint: disable=g-import-not-at-top
  config = cli.loaded_config(argv)
  f = flags.FLAGS
  try:
    hq = HyperQuest(config, f.workdir)
    budget = {"random_search": dict(trials=f.trials, epochs=f.epochs),
              "optuna_tpe": dict(trials=f.trials, epochs=f.epochs),
              "successive_halving": dict(games=f.trials),
              "hyperband": dict(max_epochs=f.epochs),
              "pbt": dict(population=f.trials, epochs=f.epochs)}[f.agent]
    best = AGENTS[f.agent](hq, f.seed, **budget)
  except JaxsegError as e:
    cli.fail(str(e))
  print(f"{f.agent} seed {f.seed}: best validation accuracy {best['best_val_acc']:.4f} "
        f"(game {best['id']}, {best['config']})")


if __name__ == "__main__":
  from absl import flags as _flags  # pylint: disable=g-import-not-at-top
  from jaxseg import cli as _cli  # pylint: disable=g-import-not-at-top
  _cli.quiet_startup()
  _cli.define_config_file("config", "HyperQuest game config.")
  _flags.DEFINE_enum("agent", "random_search", list(AGENTS), "Which agent plays.")
  _flags.DEFINE_integer("seed", 0, "The agent's seed.")
  _flags.DEFINE_integer("trials", 4, "Games (trials) of random_search, optuna_tpe and "
                        "successive_halving.")
  _flags.DEFINE_integer("epochs", 5, "Epochs per game (hyperband: the most per game).")
  _flags.DEFINE_string("workdir", "runs/hyperquest", "The game server's workdir.")
  _flags.mark_flags_as_required(["config"])
  _cli.run(main)
