"""Ablation: the weight of the box loss in classification + localization's multi-task
loss, loss = CE + w * L2(box). Lecture: the multitask loss is a weighted sum of the two
losses and the weight is a hyperparameter -- too small and the box is not learned, too
large and it takes over from the class scores.

./launch.sh ablate experiments/ablations/localization_loss_weight.py
"""
import ml_collections


def get_config():
  a = ml_collections.ConfigDict()
  a.name = "localization_loss_weight"
  a.seeds = 3  # config.seed = base seed + 0, 1, 2: mean, spread and verdicts over seeds
  a.description = ("VGG-style net (widths 8-16-32-64, batch norm, 4x4 map flattened into "
                   "fc 256) with class and box heads on 64x64 single-object shapes, 500 steps "
                   "of batch 32; loss = CE + w * L2 on the normalized (x, y, w, h) box.")
  a.base = "experiments/localization/localize_shapes.py:small"
  a.runs = [dict(name=f"w={w:g}", overrides={"loss.box_weight": w})
            for w in (0.0, 1.0, 10.0, 100.0, 1000.0)]
  a.metrics = ("accuracy", "mean_iou", "correct_localization", "cross_entropy")
  a.plot = dict(x="run", y=("accuracy", "mean_iou"), kind="line")
  a.claims = [
      dict(text="without the box loss (w = 0) the box is not learned (mean IoU < 0.3)",
           check="r['w=0']['mean_iou'] < 0.3"),
      dict(text="raising the weight from 1 to 100 improves the box (mean IoU)",
           check="r['w=100']['mean_iou'] > r['w=1']['mean_iou']"),
      dict(text="the largest weight (1000) costs class accuracy against the best weight",
           check="r['w=1000']['accuracy'] < max(r[k]['accuracy'] for k in r)"),
  ]
  return a
