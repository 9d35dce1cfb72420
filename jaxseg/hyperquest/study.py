"""Does experience predict the final accuracy? (Anand et al. 2020, "Black Magic in Deep
Learning: How Human Skill Impacts Network Training", BMVC.)

Reads `GET /api/export.csv` (or a workdir's SQLite through the engine's export), keeps
the human games with a self-rated experience (1-5), and writes a plot of best validation
accuracy against experience (each game a point, each level's mean a bar) plus the
Spearman rank correlation and its p-value:

  python -m jaxseg.hyperquest.study --csv=hyperquest.csv --out=docs/hyperquest/experience.png
"""
from __future__ import annotations

import argparse
import csv
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402


def experience_vs_accuracy(csv_text: str) -> tuple[np.ndarray, np.ndarray]:
  """(self-rated experience, best validation accuracy) of the human games that have both."""
  xs, ys = [], []
  for row in csv.DictReader(io.StringIO(csv_text)):
    if row["kind"] != "human" or not row["background_experience"] or not row["best_val_acc"]:
      continue
    xs.append(float(row["background_experience"]))
    ys.append(float(row["best_val_acc"]))
  return np.asarray(xs), np.asarray(ys)


def summarize(xs: np.ndarray, ys: np.ndarray) -> dict:
  """Spearman's rho and p-value (nan with fewer than 3 games or no spread), the count and
  the mean accuracy per experience level."""
  rho, p = (stats.spearmanr(xs, ys) if len(xs) >= 3 and np.ptp(xs) > 0 and np.ptp(ys) > 0
            else (float("nan"), float("nan")))
  levels = {int(x): float(ys[xs == x].mean()) for x in np.unique(xs)}
  return {"games": int(len(xs)), "spearman_rho": float(rho), "p_value": float(p),
          "mean_best_val_acc_by_experience": levels}


def plot(xs: np.ndarray, ys: np.ndarray, summary: dict, path: str) -> str:
  fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
  levels = summary["mean_best_val_acc_by_experience"]
  ax.bar(list(levels), list(levels.values()), color="#cfd8dc", label="mean per level")
  jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(xs))
  ax.scatter(xs + jitter, ys, s=14, color="#1565c0", label="a game")
  ax.set(xlabel="self-rated experience (1 none - 5 expert)", ylabel="best validation accuracy",
         xticks=[1, 2, 3, 4, 5], ylim=(0, 1),
         title=f"{summary['games']} games, Spearman rho {summary['spearman_rho']:.2f} "
               f"(p {summary['p_value']:.2g})")
  ax.legend(loc="lower right", fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--csv", required=True, help="GET /api/export.csv saved to a file")
  parser.add_argument("--out", default="docs/hyperquest/experience.png")
  args = parser.parse_args(argv)
  with open(args.csv, encoding="utf-8") as f:
    xs, ys = experience_vs_accuracy(f.read())
  summary = summarize(xs, ys)
  print(summary)
  print(plot(xs, ys, summary, args.out))


if __name__ == "__main__":
  main()
