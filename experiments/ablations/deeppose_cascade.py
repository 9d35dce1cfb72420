"""Ablation: DeepPose's cascade (Toshev & Szegedy, CVPR 2014): PCK@0.2 against the
number of stages. Each refinement stage crops around every joint's current estimate at
a higher resolution and regresses a correction; the paper reports gains from the first
refinement stages that flatten out after about three.

./launch.sh ablate experiments/ablations/deeppose_cascade.py
"""
import ml_collections


def get_config():
  a = ml_collections.ConfigDict()
  a.name = "deeppose_cascade"
  a.seeds = 3  # config.seed = base seed + 0, 1, 2: mean, spread and verdicts over seeds
  a.description = ("DeepPose on 64x64 stick figures: VGG-style stage-1 regressor (widths "
                   "8-16-32-64, 4x4 map flattened), ResNet refiners (width 8) on 24x24 crops "
                   "of 1.5 torso diameters, 500 steps of batch 32; all stages trained "
                   "together, each on its own loss.")
  a.base = "experiments/pose/deeppose_stick_figures.py:small"
  a.runs = [dict(name=f"{s} stage{'s' if s > 1 else ''}", overrides={"model.stages": s})
            for s in (1, 2, 3)]
  a.metrics = ("PCK@0.2", "PCP", "mean_pixel_error", "stage1/PCK@0.2", "params",
               "ms_per_step")
  a.plot = dict(x="run", y=("PCK@0.2", "PCP"), kind="line")
  a.claims = [
      dict(text="one refinement stage raises PCK@0.2 over stage 1 alone",
           check="r['2 stages']['PCK@0.2'] > r['1 stage']['PCK@0.2']"),
      dict(text="a second refinement stage raises it further",
           check="r['3 stages']['PCK@0.2'] > r['2 stages']['PCK@0.2']"),
  ]
  return a
