"""Games and the leaderboard in SQLite (`<workdir>/hyperquest.sqlite`).

One row per game: its identity (player, kind, questionnaire answers, seed, dataset) and
its whole state as JSON (configuration, counters, history, the checkpoints Revert can go
back to). A game's row is written after its checkpoint, so a restart always finds a
state whose checkpoint exists. Every call opens its own connection (thread-safe).
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time

_SCHEMA = """
CREATE TABLE IF NOT EXISTS games (
  id TEXT PRIMARY KEY, player TEXT NOT NULL, kind TEXT NOT NULL, background TEXT,
  seed INTEGER NOT NULL, dataset TEXT NOT NULL, created REAL NOT NULL,
  finished INTEGER NOT NULL DEFAULT 0, best_val_acc REAL, epochs INTEGER NOT NULL DEFAULT 0,
  actions INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL)
"""


class Store:
  def __init__(self, workdir: str):
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, "hyperquest.sqlite")
    with self._connect() as db:
      db.execute(_SCHEMA)

  @contextlib.contextmanager
  def _connect(self):
    db = sqlite3.connect(self.path, timeout=30)
    try:
      with db:  # one transaction
        yield db
    finally:
      db.close()

  def insert(self, state: dict) -> None:
    with self._connect() as db:
      db.execute("INSERT INTO games (id, player, kind, background, seed, dataset, created, "
                 "state) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (state["id"], state["player"], state["kind"],
                  json.dumps(state.get("background")), state["seed"], state["dataset"],
                  time.time(), json.dumps(state)))

  def update(self, state: dict) -> None:
    with self._connect() as db:
      db.execute("UPDATE games SET finished = ?, best_val_acc = ?, epochs = ?, actions = ?, "
                 "state = ? WHERE id = ?",
                 (int(state["finished"]), state["best_val_acc"], state["epochs_trained"],
                  state["actions_used"], json.dumps(state), state["id"]))

  def load(self, game_id: str) -> dict | None:
    with self._connect() as db:
      row = db.execute("SELECT state FROM games WHERE id = ?", (game_id,)).fetchone()
    return None if row is None else json.loads(row[0])

  def leaderboard(self, exclude_kinds=("baseline",)) -> list[dict]:
    """Finished games, best validation accuracy first (ties: fewer epochs, then older)."""
    marks = ",".join("?" * len(exclude_kinds))
    with self._connect() as db:
      rows = db.execute(
          f"SELECT id, player, kind, best_val_acc, epochs, actions FROM games WHERE "
          f"finished = 1 AND kind NOT IN ({marks}) ORDER BY best_val_acc DESC, epochs ASC, "
          f"created ASC", tuple(exclude_kinds)).fetchall()
    return [dict(zip(("id", "player", "kind", "best_val_acc", "epochs", "actions"), r))
            for r in rows]

  def finished_games(self, exclude_kinds=("baseline",)) -> list[dict]:
    """The stored state of every finished game, oldest first."""
    marks = ",".join("?" * len(exclude_kinds))
    with self._connect() as db:
      rows = db.execute(f"SELECT state FROM games WHERE finished = 1 AND kind NOT IN "
                        f"({marks}) ORDER BY created ASC", tuple(exclude_kinds)).fetchall()
    return [json.loads(r[0]) for r in rows]
