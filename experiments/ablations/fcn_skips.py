"""Ablation d: FCN-32s vs 16s vs 8s (Long et al. CVPR 2015). Claim (lecture): skip
connections (fusing pool4 and pool3 scores) give better results.

./launch.sh ablate experiments/ablations/fcn_skips.py
"""
import ml_collections


def get_config():
  a = ml_collections.ConfigDict()
  a.name = "fcn_skips"
  a.seeds = 3  # config.seed = base seed + 0, 1, 2: mean, spread and verdicts over seeds
  a.description = ("FCN on a 5-stage VGG-style backbone (widths 8-16-32-64-64), 64x64 "
                   "shapes, 1000 steps. 32s: pool5 scores upsampled 32x; 16s: + pool4 "
                   "scores; 8s: + pool3 scores (2x fusions: bilinear-initialised transpose "
                   "convs; final upsampling: fixed bilinear).")
  a.base = "experiments/segmentation/fcn_shapes.py:small"
  a.runs = [dict(name=v, overrides={"model.variant": v}) for v in ("32s", "16s", "8s")]
  a.metrics = ("mIoU", "pixel_accuracy", "mean_dice", "params", "gflops_per_image")
  a.plot = dict(x="run", y=("mIoU", "pixel_accuracy"))
  a.claims = [
      dict(text="FCN-16s beats FCN-32s", check="r['16s']['mIoU'] > r['32s']['mIoU']"),
      dict(text="FCN-8s beats FCN-16s", check="r['8s']['mIoU'] > r['16s']['mIoU']"),
  ]
  return a
