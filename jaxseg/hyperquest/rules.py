"""The rules of HyperQuest (the lecture's tuning game), as pure functions of a game's state.

Stage 1: the player picks `STAGE1_CHOICES` (width, lr, depth, dropout; weight decay starts
at 0); the first epoch trains. Stage 2, after every epoch: `continue` (one more epoch,
after setting each hyperparameter Same / Up / Down one step along its `LADDERS` entry),
`revert` (back to the previous epoch's model, optimizer state and configuration; at most
`MAX_REVERTS_IN_A_ROW` in a row) or `done`. At most `MAX_EPOCHS` trained epochs (reverted
ones count) and `MAX_ACTIONS` stage-2 actions; the score is the best validation accuracy
reached. Every check here raises one `RuleError` naming the rule before anything changes.
"""
from __future__ import annotations

from jaxseg.errors import RuleError

# Same / Up / Down move one step along these (ascending) ladders.
LADDERS = {
    "weight_decay": (0.0, 1e-5, 1e-4, 1e-3, 1e-2),
    "depth": (2, 4, 8),
    "dropout": (0.0, 0.25, 0.5, 0.75),
    "lr": (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1),
    "width": (32, 64, 128),
}
HYPERPARAMS = tuple(LADDERS)  # the order the lecture's screen lists them in
STAGE1_CHOICES = {"width": (32, 64, 128), "lr": (0.1, 0.01, 0.001), "depth": (2, 4, 8),
                  "dropout": (0.0, 0.5)}
INITIAL_WEIGHT_DECAY = 0.0
MOVES = ("same", "up", "down")
ACTIONS = ("continue", "revert", "done")
MAX_EPOCHS = 30
MAX_ACTIONS = 60
MAX_REVERTS_IN_A_ROW = 5
MAX_PLAYER_LENGTH = 64


def _match(value, options):
  """`value` as the option it equals (numbers compared as floats), or None."""
  for option in options:
    try:
      if float(value) == float(option) and not isinstance(value, bool):
        return option
    except (TypeError, ValueError):
      return None
  return None


def check_player(player) -> str:
  if not isinstance(player, str) or not player.strip():
    raise RuleError("rule 'player': a game needs a player name (a non-empty string)")
  if len(player) > MAX_PLAYER_LENGTH:
    raise RuleError(f"rule 'player': a player name has at most {MAX_PLAYER_LENGTH} "
                    f"characters, got {len(player)}")
  return player.strip()


def check_start(state: dict, choices) -> dict:
  """The stage-1 configuration (`choices`: width, lr, depth, dropout), validated."""
  if state["config"] is not None:
    raise RuleError("rule 'stage 1': this game has already started; use actions")
  if not isinstance(choices, dict):
    raise RuleError(f"rule 'stage 1': expected an object of {sorted(STAGE1_CHOICES)}")
  unknown = sorted(set(choices) - set(STAGE1_CHOICES))
  if unknown:
    raise RuleError(f"rule 'stage 1': unknown hyperparameter(s) {unknown}; stage 1 picks "
                    f"{list(STAGE1_CHOICES)}")
  config = {}
  for name, options in STAGE1_CHOICES.items():
    if name not in choices:
      raise RuleError(f"rule 'stage 1': choose {name} (one of {list(options)})")
    value = _match(choices[name], options)
    if value is None:
      raise RuleError(f"rule 'stage 1': {name}={choices[name]!r} is not one of "
                      f"{list(options)}")
    config[name] = value
  config["weight_decay"] = INITIAL_WEIGHT_DECAY
  return {k: config[k] for k in HYPERPARAMS}


def next_value(config: dict, name: str, move: str):
  """The value `move` (same / up / down) gives `name`, or None past the ladder's end."""
  ladder = LADDERS[name]
  i = ladder.index(_match(config[name], ladder))
  j = i + {"same": 0, "up": 1, "down": -1}[move]
  return ladder[j] if 0 <= j < len(ladder) else None


def next_values(config: dict | None) -> dict:
  """For each hyperparameter, the value each move leads to (None: past the range)."""
  if config is None:
    return {}
  return {name: {move: next_value(config, name, move) for move in MOVES}
          for name in HYPERPARAMS}


def check_action(state: dict, action, changes) -> dict | None:
  """Validates a stage-2 action; returns the configuration `continue` trains with (None
  for revert and done). `state` holds config, actions_used, epochs_trained,
  reverts_in_a_row, finished and lineage (the checkpoints Revert can go back to)."""
  if state["config"] is None:
    raise RuleError("rule 'stage 1': start the game (choose width, lr, depth, dropout) "
                    "before any action")
  if state["actions_used"] >= MAX_ACTIONS:
    raise RuleError(f"rule 'actions': at most {MAX_ACTIONS} actions per game; this game "
                    f"has used them all")
  if state["finished"]:
    raise RuleError("rule 'done': the game is finished; no more actions")
  if action not in ACTIONS:
    raise RuleError(f"rule 'action': unknown action {action!r}; expected one of "
                    f"{list(ACTIONS)}")
  changes = {} if changes is None else changes
  if not isinstance(changes, dict):
    raise RuleError(f"rule 'changes': expected an object mapping hyperparameters "
                    f"{list(HYPERPARAMS)} to one of {list(MOVES)}")
  unknown = sorted(set(changes) - set(HYPERPARAMS))
  if unknown:
    raise RuleError(f"rule 'changes': unknown hyperparameter(s) {unknown}; expected some "
                    f"of {list(HYPERPARAMS)}")
  for name, move in changes.items():
    if move not in MOVES:
      raise RuleError(f"rule 'changes': {name}={move!r}; expected one of {list(MOVES)}")
  if action != "continue":
    moved = sorted(k for k, m in changes.items() if m != "same")
    if moved:
      raise RuleError(f"rule 'changes': changes apply only with continue, not {action} "
                      f"(got {moved})")
  if action == "revert":
    if state["reverts_in_a_row"] >= MAX_REVERTS_IN_A_ROW:
      raise RuleError(f"rule 'reverts': at most {MAX_REVERTS_IN_A_ROW} reverts in a row")
    if len(state["lineage"]) < 2:
      raise RuleError("rule 'reverts': there is no earlier epoch to revert to")
    return None
  if action == "done":
    return None
  if state["epochs_trained"] >= MAX_EPOCHS:
    raise RuleError(f"rule 'epochs': at most {MAX_EPOCHS} epochs per game (reverted ones "
                    f"count); revert or finish with done")
  config = dict(state["config"])
  for name, move in changes.items():
    value = next_value(config, name, move)
    if value is None:
      ladder = LADDERS[name]
      raise RuleError(f"rule 'range': {name} cannot go {move} from {config[name]}; its "
                      f"range is {ladder[0]} .. {ladder[-1]} ({list(ladder)})")
    config[name] = value
  return config
