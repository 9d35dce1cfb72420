"""Automated HyperQuest players, through the in-process Python API (the same rules as
people). Each game an agent plays is on the leaderboard under the agent's name.

- `random_search` (Bergstra & Bengio, JMLR 2012): `trials` games, each with stage-1
  choices drawn uniformly from a search space and kept for `epochs` epochs (Continue
  with every hyperparameter Same), then Done. Returns the best game's state.

Not built yet (issue 16): successive halving / Hyperband, population-based training,
the Optuna (TPE + pruner) agent and the agents' study.

Command line (next to a running server, the same workdir: its leaderboard shows them):
  python -m jaxseg.hyperquest.agents --config=experiments/hyperquest/game.py[:tiny]
      --agent=random_search --seed=0 [--trials=4] [--epochs=5] [--workdir=runs/hyperquest]
"""
from __future__ import annotations

import random

from jaxseg.hyperquest import rules
from jaxseg.hyperquest.engine import HyperQuest


def random_search(hq: HyperQuest, seed: int, trials: int = 4, epochs: int = 5,
                  space: dict | None = None, name: str = "random_search") -> dict:
  """Plays `trials` games with random stage-1 choices from `space` (default: the game's
  STAGE1_CHOICES), `epochs` epochs each; returns the state of the best game."""
  space = rules.STAGE1_CHOICES if space is None else space
  draw = random.Random(seed)
  best = None
  for trial in range(trials):
    game = hq.new_game(name, seed=(seed * 1009 + trial) % 2**31, kind=name)
    choices = {k: draw.choice(list(space[k])) for k in rules.STAGE1_CHOICES}
    state = hq.start(game["id"], choices)
    for _ in range(epochs - 1):
      state = hq.act(game["id"], "continue")
    state = hq.act(game["id"], "done")
    if best is None or state["best_val_acc"] > best["best_val_acc"]:
      best = state
  return best


AGENTS = {"random_search": random_search}


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from jaxseg import cli  # pylint: disable=g-import-not-at-top
  from jaxseg.errors import JaxsegError  # pylint: disable=g-import-not-at-top
  config = cli.loaded_config(argv)
  f = flags.FLAGS
  try:
    hq = HyperQuest(config, f.workdir)
    best = AGENTS[f.agent](hq, f.seed, trials=f.trials, epochs=f.epochs)
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
  _flags.DEFINE_integer("trials", 4, "Games per agent run.")
  _flags.DEFINE_integer("epochs", 5, "Epochs per game.")
  _flags.DEFINE_string("workdir", "runs/hyperquest", "The game server's workdir.")
  _flags.mark_flags_as_required(["config"])
  _cli.run(main)
