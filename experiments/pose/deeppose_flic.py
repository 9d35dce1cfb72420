"""DeepPose on FLIC (Sapp & Taskar, CVPR 2013; TFDS `flic`, `flic/small` by default,
prepared in a data_dir). FLIC annotates 11 upper-body points; jaxseg maps its shoulders,
elbows, wrists and hips onto the 14 LSP joints and masks the joints FLIC lacks (knees,
ankles, neck, head top) out of the loss and the metrics (jaxseg.data.image_sources).

./launch.sh train experiments/pose/deeppose_flic.py --config.dataset.data_dir=DIR
Images are stretch-resized to 128x128 (FLIC frames are 720x480); 2 stages.
"""
from jaxseg import configs


def get_config(arg=None):
  c = configs.image_task(
      arg, "pose",
      dataset=dict(name="flic", image_size=128,
                   augment=dict(flip=False, min_scale=1.0, max_scale=1.15)),
      model=dict(backbone="resnet18", backbone_args=dict(width=32, stem="small"),
                 pool_size=4, fc_widths=(512,), dropout_rate=0.0, stages=2,
                 refine_backbone_args=dict(width=16, stem="small"), refine_fc_widths=(128,),
                 crop_size=32, crop_scale=1.0, min_crop_fraction=0.1, train_noise=0.1),
      tiny_model=dict(backbone_args=dict(width=4, stem="small", stage_sizes=(1, 1, 1, 1)),
                      pool_size=1, fc_widths=(8,), refine_fc_widths=(8,),
                      refine_backbone_args=dict(width=4, stem="small",
                                                stage_sizes=(1, 1, 1, 1))),
      small_model=dict(backbone_args=dict(width=16, stem="small")),
      small=dict(num_steps=1000, eval_every=1000))
  if arg is None:
    c.num_steps, c.eval_every = 10000, 2000
  return c.lock()
