"""Ablation b: sliding-window vs fully convolutional inference with the SAME weights and
receptive field. Claim (lecture): the sliding window is very inefficient because it does
not reuse the features shared by overlapping patches.

./launch.sh ablate experiments/ablations/sliding_window.py
"""
import ml_collections


def get_config():
  a = ml_collections.ConfigDict()
  a.name = "sliding_window"
  a.seeds = 3  # config.seed = base seed + 0, 1, 2: mean, spread and verdicts over seeds
  a.description = ("A 15x15-patch centre-pixel classifier trained 1000 steps on 64x64 "
                   "shapes (in its fully convolutional form), then evaluated both ways: "
                   "'sliding window' cuts out the 4096 patches of every image and "
                   "classifies each alone; 'fully convolutional' runs the same weights "
                   "once over the image. Same logits, same mIoU; the time differs.")
  a.base = "experiments/segmentation/sliding_window_shapes.py:small"
  a.runs = [
      dict(name="fully convolutional", overrides={"model.inference": "convolutional"}),
      dict(name="sliding window", overrides={"model.inference": "sliding"},
           evaluate_checkpoint_of="fully convolutional"),
  ]
  a.metrics = ("mIoU", "receptive_field", "params", "gflops_per_image", "infer_ms_per_image")
  a.plot = dict(x="run", y=("infer_ms_per_image", "gflops_per_image", "mIoU"))
  a.claims = [
      dict(text="same weights and receptive field give the same mIoU",
           check="abs(r['sliding window']['mIoU'] - r['fully convolutional']['mIoU']) < 1e-4 "
                 "and r['sliding window']['receptive_field'] == "
                 "r['fully convolutional']['receptive_field']"),
      dict(text="sliding-window inference is over 5x slower",
           check="r['sliding window']['infer_ms_per_image'] > "
                 "5 * r['fully convolutional']['infer_ms_per_image']"),
  ]
  return a
