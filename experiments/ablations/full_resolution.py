"""Ablation a: full-resolution FCN vs encoder-decoder. Claim (lecture): convolutions at the
original image resolution are very expensive; downsampling then upsampling inside the
network is far cheaper.

./launch.sh ablate experiments/ablations/full_resolution.py
"""
import ml_collections


def get_config():
  a = ml_collections.ConfigDict()
  a.name = "full_resolution"
  a.seeds = 3  # config.seed = base seed + 0, 1, 2: mean, spread and verdicts over seeds
  a.description = ("64x64 shapes, batch 8, 400 steps (all runs). Full-resolution FCN: 3x3 convs "
                   "16-32-64-128-64-32 all at 64x64 (the lecture's example). "
                   "Encoder-decoder: the same channel plan 16-32-64-128 but each stage at "
                   "half the resolution of the previous (max pool), transpose-conv decoder, "
                   "no skips; U-Net: the same with skips.")
  a.base = "experiments/segmentation/fullres_fcn_shapes.py:small"
  a.overrides = {"num_steps": 400, "eval_every": 400}  # the full-resolution net is slow
  a.runs = [
      dict(name="full-resolution FCN", overrides={}),
      dict(name="encoder-decoder", base="experiments/segmentation/encoder_decoder_shapes.py:small",
           overrides={"model.base_width": 16, "model.depth": 3}),
      dict(name="U-Net", base="experiments/segmentation/unet_shapes.py:small",
           overrides={"model.base_width": 16, "model.depth": 3}),
  ]
  a.metrics = ("mIoU", "params", "gflops_per_image", "train_memory_mb", "ms_per_step",
               "receptive_field")
  a.plot = dict(x="run", y=("gflops_per_image", "train_memory_mb", "ms_per_step", "mIoU"))
  a.claims = [
      dict(text="the full-resolution FCN needs over 4x the FLOPs of the encoder-decoder",
           check="r['full-resolution FCN']['gflops_per_image'] > "
                 "4 * r['encoder-decoder']['gflops_per_image']"),
      dict(text="the full-resolution FCN needs over 2x the activation memory",
           check="r['full-resolution FCN']['train_memory_mb'] > "
                 "2 * r['encoder-decoder']['train_memory_mb']"),
      dict(text="the full-resolution FCN's training step is over 2x slower",
           check="r['full-resolution FCN']['ms_per_step'] > 2 * r['encoder-decoder']['ms_per_step']"),
      dict(text="the encoder-decoder is at least as accurate",
           check="r['encoder-decoder']['mIoU'] >= r['full-resolution FCN']['mIoU']"),
  ]
  return a
