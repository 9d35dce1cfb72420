"""Ablation e: cross-entropy vs Dice vs both on class-imbalanced shapes (90% circles,
8% squares, 2% triangles). Claim (lecture, seminar deck): Dice is very effective for
training on imbalanced data.

./launch.sh ablate experiments/ablations/loss_imbalance.py
"""
import ml_collections


def get_config():
  a = ml_collections.ConfigDict()
  a.name = "loss_imbalance"
  a.seeds = 3  # config.seed = base seed + 0, 1, 2: mean, spread and verdicts over seeds
  a.description = ("U-Net, 64x64 shapes with object classes drawn 90/8/2% "
                   "(circle/square/triangle), 1000 steps; loss = ce_weight * CE + "
                   "dice_weight * soft Dice.")
  a.base = "experiments/segmentation/unet_shapes.py:small"
  a.overrides = {"dataset": {"generator": {"class_probs": (0.90, 0.08, 0.02),
                                           "num_validation": 1000}}}
  a.runs = [
      dict(name="cross-entropy", overrides={"loss.ce_weight": 1.0, "loss.dice_weight": 0.0}),
      dict(name="dice", overrides={"loss.ce_weight": 0.0, "loss.dice_weight": 1.0}),
      dict(name="cross-entropy + dice",
           overrides={"loss.ce_weight": 1.0, "loss.dice_weight": 1.0}),
  ]
  a.metrics = ("mIoU", "mean_dice", "iou/background", "iou/circle", "iou/square",
               "iou/triangle")
  a.plot = dict(x="run", y=("mIoU", "iou/triangle"), kind="bar")
  a.claims = [
      dict(text="Dice (alone or added to CE) gives a higher mIoU than CE alone",
           check="max(r['dice']['mIoU'], r['cross-entropy + dice']['mIoU']) > "
                 "r['cross-entropy']['mIoU']"),
      dict(text="Dice (alone or added to CE) gives a higher IoU on the rarest class",
           check="max(r['dice']['iou/triangle'], r['cross-entropy + dice']['iou/triangle']) > "
                 "r['cross-entropy']['iou/triangle']"),
  ]
  return a
