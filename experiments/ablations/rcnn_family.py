"""The lecture's R-CNN family on the same data: sliding window, R-CNN, Fast R-CNN and
Faster R-CNN (Object detection, 2-6), each from its shapes config at the `:small` scale
(64 x 64 images, batch 8), each trained 1500 steps (the crop classifiers' CNN learns
shapes from scratch slowly: R-CNN's paper starts it from ImageNet weights).

./launch.sh ablate experiments/ablations/rcnn_family.py

Test time per image = the network's inference (timed, jitted, eval batch) + the host
time of its precomputed proposals (selective search, 2 worker processes); train time per
training image seen = the steps + R-CNN's post-hoc stages (feature cache, SVMs, ridge) +
the training split's proposals, divided by num_steps x batch_size.
"""
import ml_collections

STUDY_SCALE = ":small"


def get_config():
  a = ml_collections.ConfigDict()
  a.name = "rcnn_family"
  a.description = ("Four detectors of the lecture trained on 64 x 64 shapes (1500 steps of "
                   "batch 8) and evaluated on its 500 validation images: a crop classifier "
                   "over sliding windows; R-CNN (selective search, warped 32 x 32 crops, "
                   "softmax fine-tuning, then post-hoc SVMs with hard-negative mining and "
                   "ridge box regressors); Fast R-CNN (the same proposals RoI-pooled from "
                   "one backbone pass); Faster R-CNN (an RPN instead, with FPN).")
  a.base = f"experiments/detection/faster_rcnn_shapes.py{STUDY_SCALE}"
  a.overrides = {"num_steps": 1500, "eval_every": 1500, "checkpoint_every": 500}
  a.runs = [
      dict(name="sliding window",
           base=f"experiments/detection/sliding_window_shapes.py{STUDY_SCALE}", overrides={}),
      dict(name="R-CNN", base=f"experiments/detection/rcnn_shapes.py{STUDY_SCALE}",
           overrides={}),
      dict(name="Fast R-CNN", base=f"experiments/detection/fast_rcnn_shapes.py{STUDY_SCALE}",
           overrides={}),
      dict(name="Faster R-CNN", overrides={}),
  ]
  a.metrics = ("AP50", "AP", "windows_per_image", "proposals_per_image",
               "train_ms_per_image", "test_ms_per_image", "infer_ms_per_image",
               "proposal_ms_per_image", "proposal_share", "params")
  a.plot = dict(x="test_ms_per_image", y=("AP50", "AP"), kind="scatter")
  a.claims = [
      dict(text="the sliding window classifies far more regions than selective search "
                "proposes (over 5x)",
           check="r['sliding window']['windows_per_image'] > "
                 "5 * r['R-CNN']['proposals_per_image']"),
      dict(text="Fast R-CNN trains faster than R-CNN per image (paper: 9x; here over 2x)",
           check="r['R-CNN']['train_ms_per_image'] > 2 * r['Fast R-CNN']['train_ms_per_image']"),
      dict(text="Fast R-CNN's network is much faster at test than R-CNN's, proposals "
                "excluded (paper: 213x; here over 10x)",
           check="r['R-CNN']['infer_ms_per_image'] > 10 * r['Fast R-CNN']['infer_ms_per_image']"),
      dict(text="proposals dominate Fast R-CNN's test time (over half)",
           check="r['Fast R-CNN']['proposal_share'] > 0.5"),
      dict(text="Faster R-CNN removes that cost: its whole test time, RPN included, is below "
                "Fast R-CNN's proposal time alone",
           check="r['Faster R-CNN']['test_ms_per_image'] < "
                 "r['Fast R-CNN']['proposal_ms_per_image']"),
      dict(text="Faster R-CNN is at least as accurate as Fast R-CNN (AP50)",
           check="r['Faster R-CNN']['AP50'] >= r['Fast R-CNN']['AP50']"),
  ]
  return a
