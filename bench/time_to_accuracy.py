"""Time to accuracy of the main job: candidate config against the pinned baseline.

Not part of the tests. Issue 19, target (2): the main job's config
(experiments/segmentation/unet_shapes.py, the README quickstart) reaches validation
mIoU >= 0.90 in at most half the wall time of the baseline: U-Net width 12, depth 4, 1200
steps of batch 8 at 128 x 128, i.e. the config as it was at commit 32c78d8. The baseline
is that file with every value that defined the run then pinned as --config overrides
(BASELINE below), so it stays fixed when the config file changes.

Runs baseline, then candidate, back to back, each a whole training command in a
subprocess:
  python -m jaxseg.main --mode=train --config=CONFIG --workdir=W --config.dataset.data_dir=D
with a fresh, empty persistent compilation cache (JAXSEG_CACHE_DIR=X) and fresh W, D, X
under --scratch, so each wall time includes building the dataset, compiling, training
and the evaluations (`--via=launch.sh` runs `./launch.sh train` instead, which may also
check the venv). The final validation mIoU is the last `eval` record of the workdir's
metrics.jsonl. Prints one row per run and the ratio baseline wall / candidate wall;
PASS if the candidate's final mIoU >= 0.90 (--target_miou) and the ratio >= 2
(--target_ratio). The two runs' config.json are compared: keys that differ are listed
(a candidate that changes the validation set, dataset.generator.num_validation or
image_size, is not comparable).

  ./launch.sh bench time_to_accuracy                                  # ~25 min on 2 cores
  ./launch.sh bench time_to_accuracy --candidate_overrides="--config.num_steps=600"
  ./launch.sh bench time_to_accuracy --variant=tiny                   # smoke test, ~2 min
  ./launch.sh bench time_to_accuracy --runs=candidate --scratch=/tmp/tta

`--candidate=PATH` (default experiments/segmentation/unet_shapes.py, the README
command as it is) and `--candidate_overrides="--config.KEY=VALUE ..."` try levers.
`--variant=tiny` runs the `:tiny` variant of both (baseline pinned to the tiny values of
32c78d8; its mIoU is not meaningful). `--runs=baseline` / `candidate` runs one of them
(no ratio). Each invocation writes under a new directory of --scratch (default: a new
temporary directory; kept, with summary.json).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN_JOB = "experiments/segmentation/unet_shapes.py"

# The main job as it was at commit 32c78d8 (experiments/segmentation/unet_shapes.py with
# jaxseg/configs.py's segmentation_shapes defaults): every value that shapes the run.
BASELINE = {
    "model.name": "unet", "model.base_width": 12, "model.depth": 4,
    "model.downsample": "maxpool", "model.upsample": "transpose",
    "model.conv_type": "standard", "model.norm": True, "model.dropout_rate": 0.0,
    "model.dtype": "float32",
    "seed": 0, "batch_size": 8, "eval_batch_size": 8, "num_steps": 1200, "log_every": 20,
    "eval_every": 600, "checkpoint_every": 100, "keep_checkpoints": 2,
    "dataset.name": "shapes", "dataset.image_size": 128, "dataset.ignore_index": 255,
    "dataset.cache": True,
    "dataset.shuffle_buffer": 4096, "dataset.augment.flip": True,
    "dataset.augment.min_scale": 1.0, "dataset.augment.max_scale": 1.0,
    "dataset.generator.num_train": 2000, "dataset.generator.num_validation": 500,
    "dataset.generator.min_objects": 1, "dataset.generator.max_objects": 4,
    "loss.ce_weight": 1.0, "loss.dice_weight": 0.5, "uncertainty.mc_samples": 0,
    "optimizer.name": "adamw", "optimizer.lr": 2e-3, "optimizer.schedule": "cosine",
    "optimizer.warmup_steps": 50, "optimizer.final_lr_fraction": 0.01,
    "optimizer.b1": 0.9, "optimizer.b2": 0.999, "optimizer.weight_decay": 1e-4,
    "optimizer.grad_clip_norm": 1.0,
}
# The `:tiny` variant at 32c78d8 (for a smoke test of this script).
TINY_BASELINE = {
    **BASELINE, "model.base_width": 4, "model.depth": 2, "batch_size": 4,
    "eval_batch_size": 4, "num_steps": 6, "log_every": 2, "eval_every": 3,
    "checkpoint_every": 2, "dataset.image_size": 32, "dataset.generator.num_train": 16,
    "dataset.generator.num_validation": 8, "dataset.augment.min_scale": 0.8,
    "dataset.augment.max_scale": 1.25, "optimizer.warmup_steps": 2,
}


def parse_args():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--candidate", default=MAIN_JOB, help="the candidate's config file")
  p.add_argument("--candidate_overrides", default="",
                 help='flags added to the candidate\'s command, e.g. "--config.num_steps=600"')
  p.add_argument("--variant", default="", choices=["", "tiny"],
                 help="tiny: the :tiny variant of both runs (smoke test)")
  p.add_argument("--runs", default="baseline,candidate",
                 help="which runs, in order (baseline, candidate)")
  p.add_argument("--scratch", default=None,
                 help="parent of this invocation's directory (default: a temporary one)")
  p.add_argument("--via", default="python", choices=["python", "launch.sh"],
                 help="python -m jaxseg.main, or ./launch.sh train")
  p.add_argument("--timeout", type=int, default=3600, help="seconds per run")
  p.add_argument("--target_miou", type=float, default=0.90)
  p.add_argument("--target_ratio", type=float, default=2.0)
  return p.parse_args()


def flag_value(value) -> str:
  if isinstance(value, bool):
    return "True" if value else "False"
  return str(value)


def command_of(config: str, overrides: list[str], root: str, via: str) -> list[str]:
  flags = [f"--workdir={os.path.join(root, 'workdir')}",
           f"--config.dataset.data_dir={os.path.join(root, 'tfds')}", *overrides]
  if via == "launch.sh":
    return [os.path.join(REPO, "launch.sh"), "train", config, *flags]
  return [sys.executable, "-m", "jaxseg.main", "--mode=train", f"--config={config}", *flags]


def final_eval(workdir: str) -> dict:
  """The last eval record of the workdir's metrics.jsonl ({} if none)."""
  path = os.path.join(workdir, "metrics.jsonl")
  records = []
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          records.append(json.loads(line))
        except ValueError:
          pass
  evals = sorted((r for r in records if r.get("split") == "eval"), key=lambda r: r["step"])
  return {"final": evals[-1] if evals else {},
          "curve": [(r["step"], r.get("mIoU")) for r in evals]}


def run_one(name: str, config: str, overrides: list[str], root: str, args) -> dict:
  for sub in ("xla", "tfds"):
    os.makedirs(os.path.join(root, sub))
  command = command_of(config, overrides, root, args.via)
  env = {**os.environ, "JAXSEG_CACHE_DIR": os.path.join(root, "xla")}
  print(f"== {name}: {shlex.join(command)}\n   (JAXSEG_CACHE_DIR={env['JAXSEG_CACHE_DIR']})",
        flush=True)
  with open(os.path.join(root, "log.txt"), "w") as log:
    t0 = time.perf_counter()
    try:
      proc = subprocess.run(command, env=env, cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT, timeout=args.timeout, check=False)
      rc = proc.returncode
    except subprocess.TimeoutExpired:
      rc = "timeout"
    wall = time.perf_counter() - t0
  metrics = final_eval(os.path.join(root, "workdir"))
  final = metrics["final"]
  row = {"run": name, "command": shlex.join(command), "rc": rc, "wall_s": wall,
         "mIoU": final.get("mIoU"), "step": final.get("step"), "curve": metrics["curve"],
         "log": os.path.join(root, "log.txt")}
  miou = "n/a" if row["mIoU"] is None else f"{row['mIoU']:.4f}"
  print(f"   {name}: exit {rc}, wall {wall:.1f} s, final mIoU {miou} at step {row['step']}"
        f"; evals {row['curve']}", flush=True)
  if rc != 0:
    print(f"   {name} failed: see {row['log']}", flush=True)
  return row


def config_differences(a: str, b: str) -> list[str]:
  """Keys whose values differ between two workdirs' config.json (but the data_dir)."""
  def flat(tree, prefix=""):
    if not isinstance(tree, dict):
      return {prefix[:-1]: tree}
    out = {}
    for k, v in tree.items():
      out.update(flat(v, f"{prefix}{k}."))
    return out
  try:
    with open(os.path.join(a, "config.json")) as f:
      x = flat(json.load(f))
    with open(os.path.join(b, "config.json")) as f:
      y = flat(json.load(f))
  except (OSError, ValueError):
    return []
  return [f"{k}: {x.get(k, '(absent)')!r} -> {y.get(k, '(absent)')!r}"
          for k in sorted(set(x) | set(y))
          if x.get(k) != y.get(k) and k != "dataset.data_dir"]  # fresh per run by design


def main():
  args = parse_args()
  runs = [r.strip() for r in args.runs.split(",") if r.strip()]
  if not runs or set(runs) - {"baseline", "candidate"}:
    raise SystemExit(f"--runs={args.runs!r}; expected baseline and/or candidate")
  suffix = f":{args.variant}" if args.variant else ""
  pins = TINY_BASELINE if args.variant == "tiny" else BASELINE
  plans = {
      "baseline": (MAIN_JOB + suffix,
                   [f"--config.{k}={flag_value(v)}" for k, v in pins.items()]),
      "candidate": (args.candidate + suffix, shlex.split(args.candidate_overrides)),
  }
  parent = args.scratch or tempfile.mkdtemp(prefix="jaxseg_tta_")
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  top = os.path.join(parent, f"tta-{stamp}")
  os.makedirs(top)
  print(f"scratch: {top}", flush=True)

  rows = {}
  for name in runs:
    config, overrides = plans[name]
    rows[name] = run_one(name, config, overrides, os.path.join(top, name), args)

  print()
  print("| run | config + overrides | wall s | final mIoU | at step |")
  print("|---|---|---|---|---|")
  for name, r in rows.items():
    config, overrides = plans[name]
    shown = config + (" (pinned: " + str(len(overrides)) + " overrides)" if name == "baseline"
                      else (" " + " ".join(overrides) if overrides else ""))
    miou = "n/a" if r["mIoU"] is None else f"{r['mIoU']:.4f}"
    wall = f"{r['wall_s']:.1f}" + ("" if r["rc"] == 0 else f" (exit {r['rc']})")
    print(f"| {name} | {shown} | {wall} | {miou} | {r['step']} |")
  summary = {"runs": rows}
  if len(rows) == 2:
    b, c = rows["baseline"], rows["candidate"]
    ratio = b["wall_s"] / c["wall_s"]
    ok = (b["rc"] == 0 and c["rc"] == 0 and c["mIoU"] is not None
          and c["mIoU"] >= args.target_miou and ratio >= args.target_ratio)
    verdict = "PASS" if ok else "FAIL"
    print(f"\nbaseline wall / candidate wall = {ratio:.2f} (target >= {args.target_ratio:g}); "
          f"candidate mIoU {c['mIoU'] if c['mIoU'] is None else round(c['mIoU'], 4)} "
          f"(target >= {args.target_miou:g}): {verdict}")
    diffs = config_differences(os.path.join(top, "baseline", "workdir"),
                               os.path.join(top, "candidate", "workdir"))
    print("candidate config vs baseline: " + ("; ".join(diffs) if diffs else "identical"))
    summary.update(ratio=ratio, verdict=verdict, config_differences=diffs)
  with open(os.path.join(top, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
  print(f"summary: {os.path.join(top, 'summary.json')}")
  if any(r["rc"] != 0 for r in rows.values()):
    sys.exit(1)


if __name__ == "__main__":
  main()
