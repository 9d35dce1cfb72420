"""Ablation f: atrous rates and ASPP vs plain convolutions in DeepLab v3+ at equal cost.
Claim (seminar deck; Chen et al.): atrous (dilated) convolution widens the field of view
at the same cost, and ASPP's parallel rates improve results.

./launch.sh ablate experiments/ablations/atrous_aspp.py
"""
import ml_collections


def get_config():
  a = ml_collections.ConfigDict()
  a.name = "atrous_aspp"
  a.description = ("DeepLab v3+ (ResNet-10-like backbone width 8 at output stride 8, "
                   "dilated last stages), 64x64 shapes, 1000 steps. 'ASPP rates 2-4-6': "
                   "the full ASPP with image pooling; 'ASPP rates 1-1-1': the same branches "
                   "without dilation (still with image pooling); 'plain': rate-1 3x3 "
                   "branches and a local 1x1 instead of image pooling (model.aspp=False). "
                   "All three have the same parameters; the backbone is shared and "
                   "dilated in every run.")
  a.base = "experiments/segmentation/deeplabv3plus_shapes.py:small"
  a.runs = [
      dict(name="ASPP rates 2-4-6", overrides={"model.atrous_rates": (2, 4, 6)}),
      dict(name="ASPP rates 1-1-1", overrides={"model.atrous_rates": (1, 1, 1)}),
      dict(name="plain", overrides={"model.aspp": False}),
  ]
  a.metrics = ("mIoU", "receptive_field", "params", "gflops_per_image", "ms_per_step")
  a.plot = dict(x="run", y=("mIoU", "receptive_field", "gflops_per_image"))
  a.claims = [
      dict(text="atrous rates widen the field of view at the same parameter count",
           check="r['ASPP rates 2-4-6']['params'] == r['plain']['params'] and "
                 "r['ASPP rates 2-4-6']['receptive_field'] > r['plain']['receptive_field']"),
      dict(text="at about the same FLOPs (within 5%)",
           check="abs(r['ASPP rates 2-4-6']['gflops_per_image'] / "
                 "r['plain']['gflops_per_image'] - 1) < 0.05"),
      dict(text="ASPP gives a higher mIoU than plain convolutions",
           check="r['ASPP rates 2-4-6']['mIoU'] > r['plain']['mIoU']"),
      dict(text="the atrous rates themselves help (2-4-6 beats 1-1-1)",
           check="r['ASPP rates 2-4-6']['mIoU'] > r['ASPP rates 1-1-1']['mIoU']"),
  ]
  return a
