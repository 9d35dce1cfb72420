"""The agents' study: each HyperQuest agent over several seeds against the baseline.

  ./launch.sh ablate hyperquest_agents [--seeds=5] [--agents=random_search,...] \
      [--workdir=runs/hyperquest_agents] [--report_dir=docs/ablations/hyperquest_agents]
  (= python -m jaxseg.hyperquest.agents_study --config=experiments/hyperquest/game.py ...)

Every agent plays with about the same budget of trained epochs (`BUDGETS`, ~20 epochs per
run; Hyperband's brackets spend more) in one shared workdir, so the baseline (the game
config's fixed schedule) is trained once. A run is (agent, seed); its games are those of
kind "<agent>/seed<k>"; its result: the best validation accuracy over its games, the
baseline's best validation accuracy over as many epochs as the best game trained, the
epochs it spent in total, its games and wall time. Each finished run is written to
`<workdir>/results/<agent>_seed<k>.json` and not repeated. The report: results.csv (one
row per run), results.md (per agent mean +- std over seeds and the gain over the
baseline) and plot.png, in the workdir and in --report_dir. (`./launch.sh ablate
hyperquest_agents` runs this module, not jaxseg.ablate, which trains trainer configs.)
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from jaxseg import ablate
from jaxseg.hyperquest import agents
from jaxseg.hyperquest.engine import HyperQuest

BUDGETS = {
    "random_search": dict(trials=4, epochs=5),
    "successive_halving": dict(games=8, min_epochs=1, eta=2),
    "hyperband": dict(max_epochs=4, eta=2),
    "pbt": dict(population=4, epochs=5, ready=2),
    "optuna_tpe": dict(trials=4, epochs=5),
}
COLUMNS = ("agent", "seed", "best_val_acc", "baseline_val_acc", "epochs", "games",
           "wall_seconds")


def run_one(hq: HyperQuest, agent: str, seed: int, budget: dict | None = None) -> dict:
  kind = f"{agent}/seed{seed}"
  # games of this kind finished by an earlier, interrupted try of this run are not its own
  earlier = {e["id"] for e in hq.leaderboard() if e["kind"] == kind}
  t0 = time.time()
  best = agents.AGENTS[agent](hq, seed, name=kind, **(budget or BUDGETS[agent]))
  games = [hq.state(e["id"]) for e in hq.leaderboard()
           if e["kind"] == kind and e["id"] not in earlier]
  return {"agent": agent, "seed": seed, "best_val_acc": best["best_val_acc"],
          "baseline_val_acc": best["baseline_val_acc"],
          "epochs": sum(g["epochs_trained"] for g in games), "games": len(games),
          "wall_seconds": round(time.time() - t0, 1), "provenance": ablate.provenance()}


def run_all(hq: HyperQuest, workdir: str, agent_names, seeds: int, budgets=None) -> list:
  results = []
  os.makedirs(os.path.join(workdir, "results"), exist_ok=True)
  for agent in agent_names:
    for seed in range(seeds):
      path = os.path.join(workdir, "results", f"{agent}_seed{seed}.json")
      if not os.path.exists(path):
        result = run_one(hq, agent, seed, (budgets or {}).get(agent))
        with open(path + ".tmp", "w") as f:
          json.dump(result, f)
        os.replace(path + ".tmp", path)
        print(f"{agent} seed {seed}: {result}", flush=True)
      with open(path) as f:
        results.append(json.load(f))
  return results


def report(results: list, directory: str,
           command: str = "python -m jaxseg.hyperquest.agents_study",
           seconds: float | None = None) -> list[str]:
  """Writes results.csv, results.md and plot.png into `directory`; returns their paths.

  results.md ends with the provenance section of jaxseg.ablate's reports: the commit,
  package versions and machine of each run, the command and the wall time per run.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  os.makedirs(directory, exist_ok=True)
  csv_path = os.path.join(directory, "results.csv")
  with open(csv_path, "w") as f:
    f.write(",".join(COLUMNS) + "\n")
    for r in results:
      f.write(",".join(str(r[c]) for c in COLUMNS) + "\n")
  names = list(dict.fromkeys(r["agent"] for r in results))
  rows, means, stds = [], [], []
  for name in names:
    runs = [r for r in results if r["agent"] == name]
    acc = np.array([r["best_val_acc"] for r in runs])
    gain = acc - np.array([r["baseline_val_acc"] or 0.0 for r in runs])
    epochs = np.mean([r["epochs"] for r in runs])
    sd = lambda a: float(a.std(ddof=1)) if len(a) > 1 else 0.0  # noqa: E731
    means.append(acc.mean())
    stds.append(sd(acc))
    rows.append(f"| {name} | {len(runs)} | {acc.mean():.4f} +- {sd(acc):.4f} | "
                f"{gain.mean():+.4f} +- {sd(gain):.4f} | {epochs:.1f} |")
  md_path = os.path.join(directory, "results.md")
  with open(md_path, "w") as f:
    f.write("# HyperQuest agents against the baseline\n\n"
            f"`{command}`; budgets `{json.dumps(BUDGETS)}`\n\n"
            "| agent | seeds | best val. acc. (mean +- std) | gain over baseline | "
            "epochs spent (mean) |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
            + "\n".join(ablate.provenance_lines(
                [dict(r, name=r["agent"]) for r in results], command, seconds)) + "\n")
  fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
  ax.bar(names, means, yerr=stds, color="#90caf9", capsize=4)
  base = [r["baseline_val_acc"] for r in results if r["baseline_val_acc"] is not None]
  if base:
    ax.axhline(float(np.mean(base)), color="#555", linestyle=":", label="baseline (mean)")
    ax.legend(fontsize=8)
  ax.set(ylabel="best validation accuracy", ylim=(0, 1))
  ax.tick_params(axis="x", labelrotation=20)
  fig.tight_layout()
  plot_path = os.path.join(directory, "plot.png")
  fig.savefig(plot_path)
  plt.close(fig)
  return [csv_path, md_path, plot_path]


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from jaxseg import cli  # pylint: disable=g-import-not-at-top
  from jaxseg.errors import JaxsegError  # pylint: disable=g-import-not-at-top
  config = cli.loaded_config(argv)
  f = flags.FLAGS
  names = f.agents.split(",")
  unknown = sorted(set(names) - set(agents.AGENTS))
  if unknown:
    cli.fail(f"--agents: unknown agent(s) {unknown}; expected some of {list(agents.AGENTS)}")
  t0 = time.time()
  try:
    results = run_all(HyperQuest(config, f.workdir), f.workdir, names, f.seeds)
  except JaxsegError as e:
    cli.fail(str(e))
  command = "python -m jaxseg.hyperquest.agents_study " + " ".join(sys.argv[1:])
  for directory in (f.workdir, f.report_dir):
    print("\n".join(report(results, directory, command, time.time() - t0)))


if __name__ == "__main__":
  from absl import flags as _flags  # pylint: disable=g-import-not-at-top
  from jaxseg import cli as _cli  # pylint: disable=g-import-not-at-top
  _cli.quiet_startup()
  _cli.define_config_file("config", "HyperQuest game config.")
  _flags.DEFINE_integer("seeds", 5, "Seeds per agent.")
  _flags.DEFINE_string("agents", ",".join(BUDGETS), "Comma-separated agents.")
  _flags.DEFINE_string("workdir", "runs/hyperquest_agents", "Where games and results go.")
  _flags.DEFINE_string("report_dir", "docs/ablations/hyperquest_agents", "Report folder.")
  _flags.mark_flags_as_required(["config"])
  _cli.run(main)
