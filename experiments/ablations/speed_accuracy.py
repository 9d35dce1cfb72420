"""Speed / accuracy trade-offs of modern detectors (Huang et al., CVPR 2017; CS231n
lecture, "Object detection" 8): meta-architecture (Faster R-CNN, SSD, YOLO) x backbone
(VGG-16-style, ResNet-18, MobileNet v2) x input size (64, 128 px) on the shapes data, at
the study scale (600 steps of batch 8 each: experiments/detection/detector_grid.py), and
for Faster R-CNN the number of proposals at test time (10, 50, 100, 300: the trained
128 px checkpoints re-evaluated, nothing retrained).

./launch.sh ablate experiments/ablations/speed_accuracy.py          # or as shards:
./launch.sh ablate speed_accuracy --shard=0/2   # and --shard=1/2 beside it, then
./launch.sh ablate speed_accuracy --merge=runs/ablations/speed_accuracy --retime=7

18 trainings and 9 re-evaluations: 6060 s of run time on the 2-core CPU, about 80 min as
two shards side by side (docs/ablations/speed_accuracy/, one seed). Test times measured
while other runs train are unfair; `--retime=7` times every checkpoint again,
round-robin in one process, as the committed table does. The
table has AP, AP50, test and train ms per image, parameters and GFLOPs (XLA's cost
analysis of one image's inference) per point; the plot is Huang et al.'s figure: AP50 and
AP against test time, one marker per meta-architecture, one colour per backbone (each
run's `tags`), and the Pareto front (no other point both faster and more accurate) as a
step line with its points labelled.
"""
import ml_collections

META = ("faster_rcnn", "ssd", "yolo")
BACKBONES = ("vgg16", "resnet18", "mobilenet_v2")
SIZES = (64, 128)
PROPOSALS = (10, 50, 300)  # besides the configs' 100
GRID = "experiments/detection/detector_grid.py"


def _name(meta, backbone, size, proposals=None):
  extra = f" {proposals} proposals" if proposals else ""
  return f"{meta} {backbone} {size}{extra}"


def _tags(meta, backbone, size, proposals=100):
  """What the plot draws by (marker: meta-architecture, colour: backbone)."""
  return {"meta": meta, "backbone": backbone, "size": size, "proposals": proposals}


def get_config():
  a = ml_collections.ConfigDict()
  a.name = "speed_accuracy"
  a.description = ("Huang et al.'s speed/accuracy study on 64 / 128 px shapes: Faster "
                   "R-CNN (FPN), SSD and YOLO over three backbones, 600 steps of batch 8 "
                   "each; Faster R-CNN's 128 px checkpoints re-evaluated with 10 to 300 "
                   "proposals at test time.")
  a.base = f"{GRID}:yolo,resnet18,64"
  runs = []
  for size in SIZES:
    for meta in META:
      for backbone in BACKBONES:
        runs.append(dict(name=_name(meta, backbone, size),
                         base=f"{GRID}:{meta},{backbone},{size}", overrides={},
                         tags=_tags(meta, backbone, size)))
  for backbone in BACKBONES:
    for p in PROPOSALS:
      runs.append(dict(name=_name("faster_rcnn", backbone, 128, p),
                       base=f"{GRID}:faster_rcnn,{backbone},128",
                       overrides={"model.rpn.post_nms_top_n_test": p,
                                  "model.rpn.pre_nms_top_n_test": max(p, 300)},
                       evaluate_checkpoint_of=_name("faster_rcnn", backbone, 128),
                       tags=_tags("faster_rcnn", backbone, 128, p)))
  a.runs = runs
  a.metrics = ("AP", "AP50", "test_ms_per_image", "train_ms_per_image", "params",
               "gflops_per_image", "proposals_per_image")
  a.plot = dict(x="test_ms_per_image", y=("AP50", "AP"), kind="scatter", marker_by="meta",
                colour_by="backbone", pareto=True)
  single = [f"{m} {b} {s}" for m in ("ssd", "yolo") for b in BACKBONES for s in SIZES]
  a.claims = [
      dict(text="single-shot detectors are faster at test than Faster R-CNN on the same "
                "backbone and size (every pair)",
           check=" and ".join(
               f"r['{m} {b} {s}']['test_ms_per_image'] < "
               f"r['faster_rcnn {b} {s}']['test_ms_per_image']"
               for m in ("ssd", "yolo") for b in BACKBONES for s in SIZES)),
      dict(text="Faster R-CNN is the most accurate meta-architecture (best AP over its "
                "points above the best single-shot AP)",
           check=f"max(r[f'faster_rcnn {{b}} {{s}}']['AP'] for b in {BACKBONES!r} "
                 f"for s in {SIZES!r}) > max(r[n]['AP'] for n in {single!r})"),
      dict(text="fewer proposals speed Faster R-CNN with little loss of AP (50 vs 100: "
                "faster, AP within 0.03, every backbone)",
           check=" and ".join(
               f"r['faster_rcnn {b} 128 50 proposals']['test_ms_per_image'] < "
               f"r['faster_rcnn {b} 128']['test_ms_per_image'] and "
               f"r['faster_rcnn {b} 128 50 proposals']['AP'] > "
               f"r['faster_rcnn {b} 128']['AP'] - 0.03" for b in BACKBONES)),
      dict(text="the larger input is more accurate (AP, every detector and backbone)",
           check=" and ".join(f"r['{m} {b} 128']['AP'] > r['{m} {b} 64']['AP']"
                              for m in META for b in BACKBONES)),
  ]
  return a
