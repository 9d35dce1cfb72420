"""Ablation g: depthwise-separable vs standard (and spatially separable) 3x3 convolutions
in every U-Net block. Claim (seminar deck; Howard et al. 2017): separable convolutions
need fewer parameters (and FLOPs).

./launch.sh ablate experiments/ablations/separable_conv.py
"""
import ml_collections


def get_config():
  a = ml_collections.ConfigDict()
  a.name = "separable_conv"
  a.seeds = 3  # config.seed = base seed + 0, 1, 2: mean, spread and verdicts over seeds
  a.description = "U-Net (width 8, depth 3), 64x64 shapes, 1000 steps; conv_type of every block."
  a.base = "experiments/segmentation/unet_shapes.py:small"
  a.overrides = {}
  a.grid = {"model": {"conv_type": ["standard", "depthwise_separable", "spatially_separable"]}}
  a.metrics = ("mIoU", "params", "gflops_per_image", "train_memory_mb", "ms_per_step")
  a.plot = dict(x="run", y=("mIoU", "params", "gflops_per_image"), kind="bar")
  a.claims = [
      dict(text="depthwise-separable convolutions have under half the parameters",
           check="r['conv_type=depthwise_separable']['params'] < "
                 "0.5 * r['conv_type=standard']['params']"),
      dict(text="depthwise-separable convolutions need under half the FLOPs",
           check="r['conv_type=depthwise_separable']['gflops_per_image'] < "
                 "0.5 * r['conv_type=standard']['gflops_per_image']"),
      dict(text="depthwise-separable convolutions lose less than 0.05 mIoU",
           check="r['conv_type=depthwise_separable']['mIoU'] > "
                 "r['conv_type=standard']['mIoU'] - 0.05"),
  ]
  return a
