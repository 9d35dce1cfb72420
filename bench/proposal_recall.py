"""Recall of region proposals (selective search, sliding windows) on shapes images.

Not part of the tests. Renders validation images of the `shapes` dataset with numpy
(`render_example`, no TFDS), takes the ground-truth boxes of their objects, and reports,
per method, recall (the fraction of ground-truth boxes with a proposal of IoU >= t among
the first N proposals) at IoU 0.5 and 0.7 for N = 10, 50, 100, 300, 1000, 2000, the
average best overlap (ABO: mean over boxes of the best IoU among all proposals; MABO: the
mean of the per-class ABOs, Uijlings et al. IJCV 2013), proposals per image and seconds
per image (wall and CPU time of this process). Methods:

  fast      selective_search(mode='fast')     8 strategies (R-CNN's setting)
  quality   selective_search(mode='quality')  80 strategies
  sliding   sliding_windows: 7 sizes 1/8..1 of the image side x aspect ratios 1/2, 1, 2,
            stride 0.35 of the window (about 2,000 windows, the same budget); they have
            no ranking, so "the first N" are N windows in a fixed random order

A second run on larger images (--large-image-size, rendered at that size, 448 px ~ the
pixel count of a 500x375 PASCAL VOC image) gives seconds per image at about VOC size, and
--photos times selective search on three natural photographs bundled with scikit-image
(more regions than the shapes images, so closer to VOC timings). Writes the tables, the
exact command and the machine to --output (docs/proposals.md).

  .venv/bin/python bench/proposal_recall.py                        # docs/proposals.md
  .venv/bin/python bench/proposal_recall.py --num-images=10 --methods=fast,sliding \
      --large-num-images=0 --no-photos --output=                   # quick look, print only
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from jaxseg.data import shapes  # noqa: E402
from jaxseg.metrics.boxes import box_iou  # noqa: E402
from jaxseg.ops import proposals  # noqa: E402

TOP_N = (10, 50, 100, 300, 1000, 2000)
THRESHOLDS = (0.5, 0.7)
WINDOW_FRACTIONS = (1 / 8, 3 / 16, 1 / 4, 3 / 8, 1 / 2, 3 / 4, 1)
WINDOW_RATIOS = (0.5, 1.0, 2.0)
WINDOW_STRIDE = 0.35
METHODS = ("fast", "quality", "sliding")


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--image-size", type=int, default=128)
  p.add_argument("--num-images", type=int, default=100)
  p.add_argument("--min-objects", type=int, default=1)
  p.add_argument("--max-objects", type=int, default=4)
  p.add_argument("--large-image-size", type=int, default=448)
  p.add_argument("--large-num-images", type=int, default=10,
                 help="images of the larger run (0: skip it)")
  p.add_argument("--methods", default=",".join(METHODS))
  p.add_argument("--max-proposals", type=int, default=2000)
  p.add_argument("--seed", type=int, default=0, help="ranking / window-order seed")
  p.add_argument("--photos", action=argparse.BooleanOptionalAction, default=True,
                 help="time selective search on scikit-image's sample photographs")
  p.add_argument("--output", default=os.path.join(REPO, "docs", "proposals.md"),
                 help="markdown file to write ('' = print only)")
  args = p.parse_args(argv)
  args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
  for m in args.methods:
    if m not in METHODS:
      p.error(f"unknown method {m!r}; expected some of {METHODS}")
  return args


def propose(method: str, image: np.ndarray, args, index: int) -> np.ndarray:
  if method in ("fast", "quality"):
    return proposals.selective_search(image, method, max_proposals=args.max_proposals,
                                      seed=args.seed)
  h, w = image.shape[:2]
  windows = proposals.sliding_windows(h, w, [f * min(h, w) for f in WINDOW_FRACTIONS],
                                      WINDOW_RATIOS, WINDOW_STRIDE)
  order = np.random.default_rng([args.seed, index]).permutation(len(windows))
  return windows[order]


def evaluate(size: int, num_images: int, args) -> dict:
  """{method: stats} over validation images 0..num_images-1 at `size` px."""
  config = shapes.shapes_config(image_size=size, min_objects=args.min_objects,
                                max_objects=args.max_objects)
  examples = [shapes.render_example(
      np.random.default_rng([shapes.SPLIT_SEEDS["validation"], i]), config)
              for i in range(num_images)]
  results = {}
  for method in args.methods:
    best, labels, counts, wall, cpu = [], [], [], [], []
    for i, ex in enumerate(examples):
      t0, c0 = time.perf_counter(), time.process_time()
      boxes = propose(method, ex["image"], args, i)
      wall.append(time.perf_counter() - t0)
      cpu.append(time.process_time() - c0)
      gt = (ex["objects"]["bbox"] * size)[:, [1, 0, 3, 2]].astype(np.float32)
      overlaps = box_iou(boxes, gt)  # [P, G]
      running = np.maximum.accumulate(overlaps, 0) if len(boxes) else np.zeros((1, len(gt)))
      best.append(np.stack([running[min(n, len(running)) - 1] for n in TOP_N]))  # [T, G]
      labels.append(ex["objects"]["label"])
      counts.append(len(boxes))
      if (i + 1) % 10 == 0:
        print(f"  {size}px {method}: {i + 1}/{num_images} images, "
              f"{np.mean(wall):.2f} s/image", flush=True)
    best = np.concatenate(best, 1)  # [len(TOP_N), total gt]
    labels = np.concatenate(labels)
    abo = best[-1]
    results[method] = dict(
        recall={t: (best >= t).mean(1) for t in THRESHOLDS}, abo=abo.mean(),
        mabo=np.mean([abo[labels == c].mean() for c in np.unique(labels)]),
        proposals=np.mean(counts), wall=np.mean(wall), cpu=np.mean(cpu),
        wall_median=np.median(wall), num_gt=len(labels))
  return results


def photo_timings(args) -> list[tuple]:
  from skimage import data  # pylint: disable=g-import-not-at-top
  rows = []
  for name in ("chelsea", "coffee", "astronaut"):
    image = getattr(data, name)()
    for mode in ("fast", "quality"):
      t0, c0 = time.perf_counter(), time.process_time()
      boxes = proposals.selective_search(image, mode, max_proposals=10**6, seed=args.seed)
      rows.append((name, image.shape, mode, len(boxes), time.perf_counter() - t0,
                   time.process_time() - c0))
      print(f"  photo {name} {image.shape[1]}x{image.shape[0]} {mode}: {len(boxes)} "
            f"boxes, {rows[-1][4]:.2f} s", flush=True)
  return rows


NAMES = {"fast": "selective search, fast", "quality": "selective search, quality",
         "sliding": "sliding windows (random order)"}


def results_tables(results: dict) -> list[str]:
  lines = ["| method | IoU | " + " | ".join(f"N={n}" for n in TOP_N) + " |",
           "|---|---|" + "---:|" * len(TOP_N)]
  for t in THRESHOLDS:
    for method, r in results.items():
      lines.append(f"| {NAMES[method]} | {t} | "
                   + " | ".join(f"{v:.3f}" for v in r["recall"][t]) + " |")
  lines += ["", "| method | proposals/image | ABO | MABO | wall s/image (mean, median) "
            "| CPU s/image |", "|---|---:|---:|---:|---:|---:|"]
  for method, r in results.items():
    lines.append(f"| {NAMES[method]} | {r['proposals']:.0f} | {r['abo']:.3f} | "
                 f"{r['mabo']:.3f} | {r['wall']:.3f}, {r['wall_median']:.3f} | "
                 f"{r['cpu']:.3f} |")
  return lines


def machine() -> str:
  model = platform.processor() or "unknown CPU"
  try:
    with open("/proc/cpuinfo") as f:
      model = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  import skimage  # pylint: disable=g-import-not-at-top
  return (f"{model}, {os.cpu_count()} cores visible (shared with other jobs), "
          f"{platform.system()} {platform.release()}; Python {platform.python_version()}, "
          f"numpy {np.__version__}, scikit-image {skimage.__version__}")


def main(argv=None):
  args = parse_args(argv)
  command = " ".join(["bench/proposal_recall.py"] + [shlex.quote(a) for a in (
      sys.argv[1:] if argv is None else argv)])
  load_start = os.getloadavg()[0]
  print(f"{args.image_size}px x {args.num_images} images", flush=True)
  small = evaluate(args.image_size, args.num_images, args)
  large = None
  if args.large_num_images > 0:
    print(f"{args.large_image_size}px x {args.large_num_images} images", flush=True)
    large = evaluate(args.large_image_size, args.large_num_images, args)
  photos = photo_timings(args) if args.photos else []
  load_end = os.getloadavg()[0]

  objects = f"{args.min_objects}-{args.max_objects} objects"
  lines = [
      "# Region proposals: recall and speed", "",
      "Selective search (Uijlings et al. IJCV 2013) and sliding windows, "
      "`jaxseg/ops/proposals.py`, on `shapes` validation images rendered with numpy. "
      "Recall = fraction of ground-truth boxes (visible extent of each object) with a "
      "proposal of IoU >= the threshold among the first N proposals (in ranked order; "
      "sliding windows have no ranking, so a fixed random order). ABO = mean best IoU "
      "per ground-truth box over all proposals; MABO = mean of the per-class ABOs "
      "(circle, square, triangle). Selective search keeps at most "
      f"{args.max_proposals} proposals; an image that yields fewer than N keeps its "
      "recall at its last proposal. Sliding windows: sides "
      f"{', '.join(f'{f:g}' for f in WINDOW_FRACTIONS)} "
      f"x the image side, aspect ratios {', '.join(f'{r:g}' for r in WINDOW_RATIOS)}, "
      f"stride {WINDOW_STRIDE} x the window, inside the image.", "",
      f"Command: `.venv/bin/python {command}`", "",
      f"Machine: {machine()}. Load average (1 min) {load_start:.1f} at the start, "
      f"{load_end:.1f} at the end: wall times include waiting for a core on a busy "
      "machine; CPU time is this process's alone.", "",
      f"## {args.image_size}x{args.image_size}, validation images 0-{args.num_images - 1} "
      f"({objects}, {next(iter(small.values()))['num_gt']} boxes)", "",
  ] + results_tables(small)
  if large:
    lines += ["", f"## {args.large_image_size}x{args.large_image_size} (about the pixel "
              f"count of a 500x375 VOC image), validation images "
              f"0-{args.large_num_images - 1} ({objects}, "
              f"{next(iter(large.values()))['num_gt']} boxes)", ""] + results_tables(large)
  if photos:
    lines += ["", "## Natural photographs (scikit-image sample images), all proposals", "",
              "| image | W x H | mode | proposals | wall s | CPU s |",
              "|---|---|---|---:|---:|---:|"]
    for name, shape, mode, n, wall, cpu in photos:
      lines.append(f"| {name} | {shape[1]} x {shape[0]} | {mode} | {n} | {wall:.2f} | "
                   f"{cpu:.2f} |")
  lines += ["", "Reading: selective search is host-side NumPy (not jit); its time is "
            "mostly scikit-image's Felzenszwalb segmentation (one per colour space and "
            "k: 4 in fast mode, 20 in quality mode), then the grouping (one per "
            "strategy: 8 and 80). Uijlings et al. report 3.8 s (fast) and 17 s "
            "(quality) per PASCAL image for their MATLAB/C code. The shapes images are "
            "easy for it (flat-ish objects on a fine texture; few regions at 128 px, "
            "since k and min_size are in absolute pixels), so its recall here is an "
            "upper bound of what to expect on natural images; the photographs show "
            "their larger proposal counts and times. Recall and ABO are deterministic "
            "(seeded rendering and ranking); times vary with the machine's load.", ""]
  text = "\n".join(lines)
  print(text)
  if args.output:
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
      f.write(text)
    print(f"wrote {args.output}")


if __name__ == "__main__":
  main()
