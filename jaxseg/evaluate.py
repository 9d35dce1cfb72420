"""COCO evaluation from the command line, equal to pycocotools' COCOeval.

  python -m jaxseg.evaluate --gt=instances_val2017.json --dt=detections.json --iou_type=bbox

prints the 12 summary lines of COCOeval.summarize() (keypoints: 10), in its format
(COCO detection evaluation, Lin et al. 2014; keypoints: OKS of the COCO keypoint
challenge). ``--per_category`` adds AP per category, ``--output=stats.json`` writes the
stats. An empty detection list is valid (AP = AR = 0 where there is ground truth).
Malformed input is reported in one line (exit status 2), as by `jaxseg.main`.
"""
from __future__ import annotations

import json
import sys

from absl import flags

from jaxseg import cli

flags.DEFINE_string("gt", None, "COCO ground truth JSON (images, annotations, categories).")
flags.DEFINE_string("dt", None, "Detections JSON in the COCO results format (a list).")
flags.DEFINE_enum("iou_type", "bbox", ["bbox", "segm", "keypoints"], "What to evaluate.")
flags.DEFINE_list("max_dets", None, "Max detections per image (default 1,10,100; "
                  "keypoints 20).")
flags.DEFINE_bool("use_cats", True, "Match detections to ground truth of their category "
                  "only (false: class-agnostic, as for proposals).")
flags.DEFINE_list("kpt_oks_sigmas", None, "Per-keypoint OKS sigmas (default: the 17 COCO "
                  "ones).")
flags.DEFINE_bool("per_category", False, "Also print AP@[.5:.95] per category.")
flags.DEFINE_string("output", None, "Write the stats (and per-category AP) as JSON here.")
FLAGS = flags.FLAGS


def _load(path: str, what: str):
  from jaxseg.errors import DataError  # pylint: disable=g-import-not-at-top
  try:
    with open(path) as f:
      return json.load(f)
  except OSError as e:
    raise DataError(f"cannot read --{what} {path}: {e.strerror}") from None
  except json.JSONDecodeError as e:
    raise DataError(f"--{what} {path} is not valid JSON: {e}") from None
  except UnicodeDecodeError as e:
    raise DataError(f"--{what} {path} is not a UTF-8 JSON file: {e}") from None


def run_evaluation(gt_path: str, dt_path: str, iou_type: str, **params):
  """Load both files and evaluate (raises JaxsegError for bad input)."""
  from jaxseg.errors import ConfigError  # pylint: disable=g-import-not-at-top
  from jaxseg.metrics import coco  # pylint: disable=g-import-not-at-top
  gt, dt = _load(gt_path, "gt"), _load(dt_path, "dt")
  try:
    p = coco.Params(iou_type=iou_type, **params)
  except (TypeError, ValueError) as e:
    raise ConfigError(str(e)) from None
  return coco.evaluate(gt, dt, iou_type, p)


def main(argv):
  cli.no_positional_arguments(argv)
  from jaxseg.errors import JaxsegError  # pylint: disable=g-import-not-at-top
  if not FLAGS.gt or not FLAGS.dt:
    cli.fail("--gt and --dt are required")
  params = {"use_cats": FLAGS.use_cats}
  try:
    if FLAGS.max_dets:
      params["max_dets"] = [int(m) for m in FLAGS.max_dets]
    if FLAGS.kpt_oks_sigmas:
      params["kpt_oks_sigmas"] = [float(s) for s in FLAGS.kpt_oks_sigmas]
  except ValueError as e:
    cli.fail(f"bad --max_dets or --kpt_oks_sigmas: {e}")
  try:
    result = run_evaluation(FLAGS.gt, FLAGS.dt, FLAGS.iou_type, **params)
  except JaxsegError as e:
    cli.fail(str(e))
  print(result.summary())
  per_cat = result.per_category_ap() if FLAGS.per_category or FLAGS.output else {}
  if FLAGS.per_category:
    width = max([len(str(c)) for c in per_cat] + [8])
    print(f"\n{'category':>{width}}  AP@[.5:.95]")
    for cat, ap in per_cat.items():
      print(f"{str(cat):>{width}}  {ap:0.3f}")
  if FLAGS.output:
    try:
      with open(FLAGS.output, "w") as f:
        json.dump({"stats": result.stats_dict(),
                   "per_category_ap": {str(c): (None if ap != ap else ap)
                                       for c, ap in per_cat.items()}}, f, indent=1)
    except OSError as e:
      cli.fail(f"cannot write --output={FLAGS.output}: {e.strerror or e}")
  sys.stdout.flush()


def run():
  cli.run(main, frameworks=False)  # NumPy only: no TensorFlow / JAX start-up


if __name__ == "__main__":
  run()
