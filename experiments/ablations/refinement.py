"""Ablation h: iterative refinement (Pinheiro & Collobert ICML 2014). Claim (lecture):
applying the CNN again and again to its own output improves the result -- more
iterations, better result.

./launch.sh ablate experiments/ablations/refinement.py
"""
import ml_collections


def get_config():
  a = ml_collections.ConfigDict()
  a.name = "refinement"
  a.seeds = 3  # config.seed = base seed + 0, 1, 2: mean, spread and verdicts over seeds
  a.description = ("Recurrent refinement network (3 shared 3x3 convs of width 24 on the "
                   "image at scales 1, 1/2, 1/4 plus the previous class probabilities), "
                   "trained separately for each number of steps with a loss on every step "
                   "(deep supervision), 64x64 shapes, 1000 steps.")
  a.base = "experiments/segmentation/recurrent_refinement_shapes.py:small"
  a.grid = {"model": {"refinement_steps": [1, 2, 3, 4]}}
  a.metrics = ("mIoU", "pixel_accuracy", "receptive_field", "params", "ms_per_step")
  a.plot = dict(x="model.refinement_steps", y=("mIoU", "receptive_field"), kind="line")
  a.claims = [
      dict(text="2 steps beat 1", check="r['refinement_steps=2']['mIoU'] > "
                                         "r['refinement_steps=1']['mIoU']"),
      dict(text="3 steps beat 2", check="r['refinement_steps=3']['mIoU'] > "
                                         "r['refinement_steps=2']['mIoU']"),
      dict(text="4 steps beat 3", check="r['refinement_steps=4']['mIoU'] > "
                                         "r['refinement_steps=3']['mIoU']"),
      dict(text="parameters do not grow with steps",
           check="r['refinement_steps=1']['params'] == r['refinement_steps=4']['params']"),
  ]
  return a
