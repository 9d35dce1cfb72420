"""Ablation f: atrous rates and ASPP vs plain convolutions in DeepLab v3+ at equal cost.
Claim (seminar deck; Chen et al.): atrous (dilated) convolution widens the field of view
at the same cost, and ASPP's parallel rates improve results.

./launch.sh ablate experiments/ablations/atrous_aspp.py
"""
import ml_collections


def get_config():
  a = ml_collections.ConfigDict()
  a.name = "atrous_aspp"
  a.seeds = 3  # config.seed = base seed + 0, 1, 2: mean, spread and verdicts over seeds
  a.description = ("DeepLab v3+ (ResNet-10-like backbone of width 8 at output stride 8, "
                   "dilated last stages, identical in every run), 64x64 shapes, 1000 "
                   "steps. 'ASPP': rates 2-4-6 plus image pooling (the paper's); 'atrous "
                   "2-4-6': the same rates, image pooling replaced by a local 1x1 conv; "
                   "'plain': every branch at rate 1 and the local 1x1 (model.aspp=False). "
                   "All runs have the same parameters. receptive_field is measured on a "
                   "640x640 input (image pooling sees all of it; the dilated backbone "
                   "alone sees about 250 pixels).")
  a.receptive_field_scale = 10
  a.base = "experiments/segmentation/deeplabv3plus_shapes.py:small"
  a.runs = [
      dict(name="ASPP", overrides={"model.atrous_rates": (2, 4, 6)}),
      dict(name="atrous 2-4-6",
           overrides={"model.atrous_rates": (2, 4, 6), "model.image_pooling": False}),
      dict(name="plain", overrides={"model.aspp": False}),
  ]
  a.metrics = ("mIoU", "receptive_field", "params", "gflops_per_image", "ms_per_step")
  a.plot = dict(x="run", y=("mIoU", "receptive_field", "gflops_per_image"))
  a.claims = [
      dict(text="atrous rates widen the field of view at the same parameter count",
           check="r['atrous 2-4-6']['params'] == r['plain']['params'] and "
                 "r['atrous 2-4-6']['receptive_field'] > r['plain']['receptive_field']"),
      dict(text="at about the same FLOPs (within 5%)",
           check="abs(r['atrous 2-4-6']['gflops_per_image'] / "
                 "r['plain']['gflops_per_image'] - 1) < 0.05"),
      dict(text="atrous rates give a higher mIoU than rate-1 convolutions",
           check="r['atrous 2-4-6']['mIoU'] > r['plain']['mIoU']"),
      dict(text="full ASPP (rates + image pooling) gives a higher mIoU than plain",
           check="r['ASPP']['mIoU'] > r['plain']['mIoU']"),
  ]
  return a
