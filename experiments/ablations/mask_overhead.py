"""Mask R-CNN against Faster R-CNN (He et al., ICCV 2017, sections 3 and 5): the same
R18-FPN detector on the same 64 x 64 shapes, with and without the mask branch, trained
1200 steps of batch 8 each. The lecture's claim: the mask branch costs little (the
paper: ~20% over Faster R-CNN at test time, 195 ms vs ~165 ms on a GPU), and training
it alongside the boxes helps box AP a little (the paper's Table 3: +0.9 box AP).

./launch.sh ablate mask_overhead

Test time per image = the jitted network up to the 28 x 28 masks of the detections (the
host's paste-back into the image is not timed); train time per image = the step time
over the batch.
"""
import ml_collections

STUDY_SCALE = ":small"


def get_config():
  a = ml_collections.ConfigDict()
  a.name = "mask_overhead"
  a.description = ("Faster R-CNN R18-FPN and the same detector with Mask R-CNN's mask head "
                   "(RoIAlign 14 x 14, 4 convs, 28 x 28 per-class masks), each trained 1200 "
                   "steps of batch 8 on 64 x 64 shapes and evaluated on its 500 validation "
                   "images: box AP, mask AP, train and test time per image.")
  a.seeds = 2  # config.seed = base seed + 0, 1 (two, for this CPU's time)
  a.base = f"experiments/instance/mask_rcnn_shapes.py{STUDY_SCALE}"
  a.overrides = {"num_steps": 1200, "eval_every": 1200, "checkpoint_every": 400}
  a.runs = [
      dict(name="Faster R-CNN",
           base=f"experiments/detection/faster_rcnn_shapes.py{STUDY_SCALE}", overrides={}),
      dict(name="Mask R-CNN", overrides={}),
  ]
  a.metrics = ("AP", "AP50", "mask_AP", "mask_AP50", "train_ms_per_image",
               "test_ms_per_image", "params", "gflops_per_image")
  a.plot = dict(x="test_ms_per_image", y=("AP", "mask_AP"), kind="scatter")
  a.claims = [
      dict(text="the mask branch adds a small test-time overhead (paper: ~20%; here under 50%)",
           check="r['Mask R-CNN']['test_ms_per_image'] < "
                 "1.5 * r['Faster R-CNN']['test_ms_per_image']"),
      dict(text="training with the mask branch costs under 1.5x per image",
           check="r['Mask R-CNN']['train_ms_per_image'] < "
                 "1.5 * r['Faster R-CNN']['train_ms_per_image']"),
      dict(text="multi-task training helps box AP a little (paper: +0.9 AP): Mask R-CNN's "
                "box AP is at least Faster R-CNN's",
           check="r['Mask R-CNN']['AP'] >= r['Faster R-CNN']['AP']"),
  ]
  return a
