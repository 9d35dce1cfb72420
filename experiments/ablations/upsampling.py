"""Ablation c: upsampling method of an encoder-decoder FCN (no skips, so the decoder's
upsampling alone restores resolution). Claim (seminar deck, after Odena et al. 2016):
transpose convolution produces checkerboard artifacts, resize-convolution does not.

./launch.sh ablate experiments/ablations/upsampling.py
"""
import ml_collections

METHODS = ("nearest", "bed_of_nails", "max_unpool", "transpose", "bilinear", "resize_conv",
           "subpixel")


def get_config():
  a = ml_collections.ConfigDict()
  a.name = "upsampling"
  a.seeds = 3  # config.seed = base seed + 0, 1, 2: mean, spread and verdicts over seeds
  a.description = ("Encoder-decoder without skips, 64x64 shapes, 1000 steps, each decoder "
                   "stage upsampled 2x by the method named; 'transpose k3' is the classic "
                   "3x3 stride-2 transpose conv (uneven overlap), 'transpose' the 2x2 "
                   "stride-2 one (no overlap). checkerboard_score: 0 smooth, 0.5 white "
                   "noise, 1 pure checkerboard (jaxseg.metrics.segmentation).")
  a.base = "experiments/segmentation/encoder_decoder_shapes.py:small"
  a.overrides = {}
  a.runs = [dict(name=m, overrides={"model.upsample": m}) for m in METHODS]
  a.runs.insert(4, dict(name="transpose k3",
                        overrides={"model.upsample": "transpose", "model.upsample_kernel": 3}))
  a.metrics = ("mIoU", "pixel_accuracy", "checkerboard_score", "params", "gflops_per_image",
               "ms_per_step")
  a.plot = dict(x="run", y=("mIoU", "checkerboard_score"), kind="bar")
  a.claims = [
      dict(text="transpose convolution (3x3, stride 2) leaves more checkerboard than "
                "resize-convolution",
           check="r['transpose k3']['checkerboard_score'] > r['resize_conv']['checkerboard_score']"),
      dict(text="transpose convolution (2x2, stride 2) leaves more checkerboard than "
                "resize-convolution",
           check="r['transpose']['checkerboard_score'] > r['resize_conv']['checkerboard_score']"),
  ]
  return a
