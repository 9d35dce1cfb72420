"""DeepPose (Toshev & Szegedy, CVPR 2014) on the embedded `stick_figures` data (the
issue's target: PCK@0.2 >= 0.85 within 15 minutes on a 2-core CPU).

./launch.sh train experiments/pose/deeppose_stick_figures.py
Stage 1 regresses the 14 joints from the whole image; `model.stages` - 1 refinement
stages each regress a correction from a crop around every joint's estimate. Variants
`:small` (ablation scale) and `:tiny` (tests). Shared defaults: jaxseg/configs.py.
"""
from jaxseg import configs


def get_config(arg=None):
  c = configs.image_task(
      arg, "pose",
      dataset=dict(name="stick_figures", image_size=64,
                   generator=dict(num_train=8000, num_validation=500)),
      model=dict(backbone="vgg16",
                 backbone_args=dict(stage_widths=(16, 32, 64, 128), stage_convs=(1, 1, 2, 2)),
                 pool_size=4, fc_widths=(256,), dropout_rate=0.0, stages=3,
                 refine_backbone="resnet18",
                 refine_backbone_args=dict(width=8, stem="small", output_stride=8,
                                           stage_sizes=(1, 1, 1, 1)),
                 refine_pool_size=3, refine_fc_widths=(128,),
                 crop_size=24, crop_scale=1.5, min_crop_fraction=0.15, train_noise=0.1),
      tiny_model=dict(backbone_args=dict(stage_widths=(4, 4, 8, 8), stage_convs=(1, 1, 1, 1)),
                      stages=2, pool_size=2, fc_widths=(8,), refine_pool_size=1,
                      refine_fc_widths=(8,), crop_size=16,
                      refine_backbone_args=dict(width=4, stem="small", stage_sizes=(1, 1, 1, 1))),
      small_model=dict(backbone_args=dict(stage_widths=(8, 16, 32, 64))),
      small=dict(num_steps=500, eval_every=500))
  if arg is None:
    c.num_steps, c.eval_every = 1800, 600
  return c.lock()
