"""HyperQuest: the lecture's hyperparameter-tuning game on top of jaxseg (an application:
nothing in jaxseg's tasks or train imports it).

Python API (in-process, the same rules as the HTTP API): `HyperQuest(config, workdir)`
with `new_game`, `start`, `act`, `state`, `leaderboard` (see `engine`). Rules: `rules`;
network and Net2Net changes: `net`; training and checkpoints: `trainer`; SQLite: `store`;
HTTP server: `server`.
"""
from jaxseg.errors import RuleError, UnknownGameError  # noqa: F401
from jaxseg.hyperquest.engine import HyperQuest  # noqa: F401
from jaxseg.hyperquest.rules import (ACTIONS, HYPERPARAMS, LADDERS, MAX_ACTIONS,  # noqa: F401
                                     MAX_EPOCHS, MAX_REVERTS_IN_A_ROW, STAGE1_CHOICES)
