"""Benchmark a detector, jaxseg (jit, XLA:CPU) against torchvision (eager), on the same
weights and the same input tensors: Faster R-CNN R50-FPN (--model=faster_rcnn, the default)
or SSD300 VGG-16 (--model=ssd300). Not part of the tests (a smoke test runs it tiny).

  ./launch.sh bench detection                            # Faster R-CNN, 1 x 800 x 1088
  ./launch.sh bench detection --batch=2 --repeats=3 --threads=2
  ./launch.sh bench detection --height=512 --width=512 --no-train
  ./launch.sh bench detection --model=ssd300             # SSD300, 1 x 300 x 300

Both models are built the way their equivalence tests build them (the test module is loaded
by path, as bench/roi_align.py loads its references; its tests are not run), and each is
made to leave the input size as it is:
- faster_rcnn: torchvision's `fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)`
  with min_size / max_size = the image's sides (its GeneralizedRCNNTransform resizes by
  exactly 1), and jaxseg's `build_detector("faster_rcnn", 91,
  **jaxseg.weights.torchvision.FASTERRCNN_RESNET50_FPN)` with the torchvision state dict
  converted by `convert_fasterrcnn_resnet50_fpn`. The weights are those of
  tests/test_torchvision_weights.py: random init (seed 0), batch norms calibrated on random
  images, the classifier sharpened x4 and the RPN deltas scaled x0.1, so that both models
  give a realistic number of detections (score > 0.05) and the same ones. H and W must be
  multiples of 32 (torchvision pads its batch to multiples of 32).
- ssd300: torchvision's `ssd300_vgg16(weights=None, weights_backbone=None)` (seed 0, the
  classifier x0.3: the `tv_model` fixture of tests/test_torchvision_ssd.py), its transform's
  `fixed_size` set to the image's (W, H) (ssd300_vgg16 fixes size=(300, 300) and ignores a
  `size` argument; at 300 x 300, the default, nothing changes), and jaxseg's
  `build_detector("ssd", 91, **SSD300_VGG16 fields)` with the state dict converted by
  `convert_ssd300_vgg16`. H and W at least 268 (below, the last extra layer's 3x3 conv
  has no room); torchvision and jaxseg are proven equal (tests/test_torchvision_ssd.py) at
  300 x 300, the size SSD300 is made for.
The parameter counts are asserted equal and the detection counts of the first image printed.
Both get the same [0, 1] RGB images: jaxseg [B, H, W, 3], torchvision a list of B [3, H, W]
tensors (each side normalises inside its model).

Inference: torchvision in eval mode under torch.inference_mode(); jaxseg's
`jax.jit(model.apply)` compiled once (compile time reported separately), inputs already on
the device. Time per image = time per call / batch.
Train step: forward with B images and --boxes ground-truth boxes each, the model's own
losses summed with weight 1 (as torchvision and DetectionTask's default config.loss):
Faster R-CNN's four (rpn objectness + box, RoI classifier + box); SSD's multibox loss
(softmax cross-entropy over the positives and 3 hard negatives per positive + smooth L1 of
the positives' deltas, each / N positives: torchvision's "classification" +
"bbox_regression", jaxseg's `SSD.losses` terms ssd_classifier + ssd_box, the function
DetectionTask.loss_fn reaches through `model.apply(..., targets=...)`); backward, SGD
(momentum 0.9, --lr) over every parameter. torchvision in train mode with its batch norms
in eval mode (running statistics, as jaxseg's `frozen_bn=True` of FASTERRCNN_RESNET50_FPN
computes; scale and bias are trained on both sides; SSD's VGG has none); jaxseg one
jitted step (value_and_grad + optax.sgd, donated state). SSD's matching and hard negative
mining have no randomness, so its first-step losses should agree between the two sides
(printed); Faster R-CNN's sample proposals at random, so they only roughly do.
Timing: --warmup untimed runs, then --repeats rounds, each timing torchvision once and
jaxseg once (interleaved, so a noisy machine affects both alike); min / median / max over
the rounds, ratio = torchvision median / jaxseg median (>= 1: jaxseg at least as fast).
torch uses --threads threads (torch.set_num_threads); XLA:CPU uses every core.
The load average is printed at the start and the end: on a machine shared with other jobs
torch eager slows down much more than jaxseg (at 128 x 128 under a load of ~10 on 2 cores,
Faster R-CNN: torchvision 4.7x slower at inference and 12x at the train step, jaxseg 2.8x
and 3.7x), so only runs on a quiet machine give a fair ratio. On a loaded machine run
--threads=1 as well: SSD300 at load ~5 on 2 cores, torchvision was 8x faster at inference
and 3x at the train step with 1 thread than with 2 (docs/bench_detection.md).
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import platform
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jaxseg  # noqa: E402,F401  pylint: disable=unused-import  (XLA:CPU flags before jax)
from jaxseg.weights import torchvision as tvw  # noqa: E402

tvw.hide_triton()  # before torchvision imports torch._dynamo (see hide_triton)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

SSD300_MIN_SIDE = 268  # 268 -> conv4_3 34 -> fc7 17 -> extras 9, 5, 3, 1


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", choices=sorted(MODELS), default="faster_rcnn")
  p.add_argument("--height", type=int, default=None, help="800 (faster_rcnn), 300 (ssd300)")
  p.add_argument("--width", type=int, default=None, help="1088 (faster_rcnn), 300 (ssd300)")
  p.add_argument("--batch", type=int, default=1, help="images per call")
  p.add_argument("--repeats", type=int, default=5, help="timed rounds (each side once each)")
  p.add_argument("--warmup", type=int, default=2, help="untimed runs per side (at least 1)")
  p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
  p.add_argument("--train", action=argparse.BooleanOptionalAction, default=True,
                 help="also time a train step")
  p.add_argument("--boxes", type=int, default=4, help="ground-truth boxes per image (train)")
  p.add_argument("--lr", type=float, default=1e-5, help="SGD learning rate (train)")
  args = p.parse_args(argv)
  default_hw = MODELS[args.model]["size"]
  args.height = default_hw[0] if args.height is None else args.height
  args.width = default_hw[1] if args.width is None else args.width
  if args.model == "faster_rcnn" and (args.height % 32 or args.width % 32
                                      or min(args.height, args.width) < 64):
    p.error(f"--height={args.height} --width={args.width}: expected multiples of 32, at "
            f"least 64 (torchvision pads its batch to multiples of 32)")
  if args.model == "ssd300" and min(args.height, args.width) < SSD300_MIN_SIDE:
    p.error(f"--height={args.height} --width={args.width}: SSD300 needs at least "
            f"{SSD300_MIN_SIDE} px per side (its last extra layer's 3x3 conv)")
  if args.batch < 1 or args.repeats < 1 or args.warmup < 0 or args.boxes < 1:
    p.error("--batch, --repeats and --boxes must be positive, --warmup >= 0")
  return args


def load_equivalence_test(filename: str = "test_torchvision_weights.py"):
  """tests/<filename> as a module (its random torchvision model and detector builder;
  the tests are not run)."""
  spec = importlib.util.spec_from_file_location(
      filename[:-3], os.path.join(REPO, "tests", filename))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def cpu_name() -> str:
  try:
    import cpuinfo  # pylint: disable=g-import-not-at-top
    return cpuinfo.get_cpu_info().get("brand_raw") or platform.machine()
  except ImportError:
    return platform.processor() or platform.machine()


def summary(times) -> dict:
  ms = 1e3 * np.asarray(times)
  return dict(min=float(ms.min()), median=float(np.median(ms)), max=float(ms.max()))


def fmt(s: dict, scale: float = 1.0) -> str:
  return (f"{s['median'] / scale:.0f} ({s['min'] / scale:.0f} / {s['max'] / scale:.0f})")


def timed(fn) -> float:
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


def random_targets(rng, batch, boxes, height, width):
  """Ground truth: boxes [B, N, 4] xyxy of sides 32..min(H, W) / 2 inside the image,
  labels [B, N] in 1..90."""
  side = np.exp(rng.uniform(np.log(32), np.log(min(height, width) / 2), (batch, boxes, 2)))
  x1 = rng.uniform(0, width - side[..., 0])
  y1 = rng.uniform(0, height - side[..., 1])
  xyxy = np.stack([x1, y1, x1 + side[..., 0], y1 + side[..., 1]], -1).astype(np.float32)
  return xyxy, rng.integers(1, 91, (batch, boxes)).astype(np.int32)


def build_faster_rcnn(args, test_module, torch, torchvision):
  """(torchvision model, jaxseg model, jaxseg variables) on the same weights."""
  torch.manual_seed(0)
  init = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None,
                                                              weights_backbone=None)
  calibrated = test_module._randomize_norms(  # pylint: disable=protected-access
      init, body=init.backbone.body)
  state = dict(calibrated.state_dict())
  # as test_detections_equal_torchvision: detections above 0.05 on both sides, the same
  state["roi_heads.box_predictor.cls_score.weight"] = (
      state["roi_heads.box_predictor.cls_score.weight"] * 4)
  state["rpn.head.bbox_pred.weight"] = state["rpn.head.bbox_pred.weight"] * 0.1
  h, w = args.height, args.width
  tv_model = torchvision.models.detection.fasterrcnn_resnet50_fpn(
      weights=None, weights_backbone=None, min_size=min(h, w), max_size=max(h, w))
  tv_model.load_state_dict(state)
  variables = jax.device_put(tvw.convert_fasterrcnn_resnet50_fpn(state))
  model = test_module._detector()  # pylint: disable=protected-access
  return tv_model.eval(), model, variables


def build_ssd300(args, test_module, torch, torchvision):
  """(torchvision model, jaxseg model, jaxseg variables) on the same weights: those of
  tests/test_torchvision_ssd.py's `tv_model` fixture (its function, called directly)."""
  del torch, torchvision  # the test module's
  from jaxseg.models.detection import build_detector  # pylint: disable=g-import-not-at-top
  tv_model = test_module.tv_model.__wrapped__()
  # leave the input as it is (GeneralizedRCNNTransform reads fixed_size as (W, H))
  tv_model.transform.fixed_size = (args.width, args.height)
  variables = jax.device_put(tvw.convert_ssd300_vgg16(tv_model.state_dict()))
  model = build_detector("ssd", 91, **test_module._fields())  # pylint: disable=protected-access
  return tv_model.eval(), model, variables


# --model: the title, default (H, W), the equivalence test whose weights are used, the builder
MODELS = {
    "faster_rcnn": dict(title="Faster R-CNN R50-FPN", size=(800, 1088),
                        test="test_torchvision_weights.py", build=build_faster_rcnn),
    "ssd300": dict(title="SSD300 VGG-16", size=(300, 300), test="test_torchvision_ssd.py",
                   build=build_ssd300),
}


def bench_inference(args, torch, tv_model, model, variables, images_np):
  images = jax.device_put(jnp.asarray(images_np))
  tv_images = [torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1))) for im in images_np]
  t0 = time.perf_counter()
  detect = jax.jit(lambda v, x: model.apply(v, x, False)).lower(variables, images).compile()
  compile_s = time.perf_counter() - t0
  tv_model.eval()

  def run_torch():
    with torch.inference_mode():
      return tv_model(tv_images)

  def run_jax():
    return jax.block_until_ready(detect(variables, images))

  out_tv, out_jax = run_torch(), run_jax()
  counts = (len(out_tv[0]["scores"]), int(np.asarray(out_jax["valid"][0]).sum()))
  for _ in range(max(args.warmup - 1, 0)):
    run_torch()
    run_jax()
  t_tv, t_jax = [], []
  for rnd in range(args.repeats):
    t_tv.append(timed(run_torch))
    t_jax.append(timed(run_jax))
    print(f"  inference round {rnd + 1}/{args.repeats}: torchvision {t_tv[-1] * 1e3:.0f} ms, "
          f"jaxseg {t_jax[-1] * 1e3:.0f} ms (batch {args.batch})", flush=True)
  return dict(torch=summary(t_tv), jax=summary(t_jax), compile_s=compile_s,
              detections=counts)


def bench_train(args, torch, tv_model, model, variables, images_np, rng):
  import optax  # pylint: disable=g-import-not-at-top
  boxes, labels = random_targets(rng, args.batch, args.boxes, args.height, args.width)
  # torchvision: train mode, the backbone's batch norms on their running statistics
  tv_model.train()
  for m in tv_model.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      m.eval()
  opt = torch.optim.SGD(tv_model.parameters(), lr=args.lr, momentum=0.9)
  tv_images = [torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1))) for im in images_np]
  tv_targets = [{"boxes": torch.from_numpy(b), "labels": torch.from_numpy(l.astype(np.int64))}
                for b, l in zip(boxes, labels)]

  losses = {}

  def run_torch():
    opt.zero_grad(set_to_none=True)
    loss = sum(tv_model(tv_images, tv_targets).values())
    loss.backward()
    opt.step()
    losses["torch"] = float(loss.detach())  # eager CPU is synchronous; the value to check

  # jaxseg: one jitted step, state donated (as bench/train_step.py)
  tx = optax.sgd(args.lr, momentum=0.9)
  targets = {"boxes": jnp.asarray(boxes), "labels": jnp.asarray(labels),
             "valid": jnp.ones(labels.shape, bool)}
  images = jax.device_put(jnp.asarray(images_np))
  key = jax.random.key(1)  # the same sampling key each step costs the same

  # the model's own loss terms, weights 1 (DetectionTask.loss_fn with the default config.loss)
  loss_terms = tuple(model.loss_terms)
  has_stats = "batch_stats" in variables  # Faster R-CNN's ResNet; SSD's VGG has none

  def train_step(params, batch_stats, opt_state, images, targets, key):
    def loss_fn(params):
      out = model.apply({"params": params, **({"batch_stats": batch_stats} if has_stats
                                               else {})},
                        images, train=True, targets=targets, rngs={"sampling": key},
                        mutable=["batch_stats"] if has_stats else False)
      terms, updates = out if has_stats else (out, {"batch_stats": batch_stats})
      return sum(terms[t] for t in loss_terms), updates["batch_stats"]
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss

  params = jax.tree.map(jnp.array, variables["params"])  # copies: the state is donated
  batch_stats = jax.tree.map(jnp.array, variables.get("batch_stats", {}))
  state = (params, batch_stats, tx.init(params))
  t0 = time.perf_counter()
  step = jax.jit(train_step, donate_argnums=(0, 1, 2)).lower(
      *state, images, targets, key).compile()
  compile_s = time.perf_counter() - t0
  holder = {"state": state}

  def run_jax():
    *new_state, loss = step(*holder["state"], images, targets, key)
    holder["state"], losses["jax"] = tuple(new_state), float(loss)  # float(): waits

  run_torch()
  run_jax()
  first = (losses["torch"], losses["jax"])
  for _ in range(max(args.warmup - 1, 0)):
    run_torch()
    run_jax()
  t_tv, t_jax = [], []
  for rnd in range(args.repeats):
    t_tv.append(timed(run_torch))
    t_jax.append(timed(run_jax))
    print(f"  train round {rnd + 1}/{args.repeats}: torchvision {t_tv[-1] * 1e3:.0f} ms, "
          f"jaxseg {t_jax[-1] * 1e3:.0f} ms (batch {args.batch})", flush=True)
  last = (losses["torch"], losses["jax"])
  assert all(math.isfinite(x) for x in first + last), (first, last)
  tv_model.eval()
  return dict(torch=summary(t_tv), jax=summary(t_jax), compile_s=compile_s,
              first_loss=first, last_loss=last)


def main(argv=None) -> dict:
  args = parse_args(argv)
  spec = MODELS[args.model]
  test_module = load_equivalence_test(spec["test"])
  torch = test_module.torch
  torchvision = test_module.torchvision
  tv_model, model, variables = spec["build"](args, test_module, torch, torchvision)
  torch.set_num_threads(args.threads)  # after the build (the SSD fixture sets 2)
  tv_params = sum(p.numel() for p in tv_model.parameters())
  jax_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))
  assert tv_params == jax_params, (
      f"parameter counts differ: torchvision {tv_params:,}, jaxseg {jax_params:,}")
  rng = np.random.default_rng(0)
  images_np = rng.random((args.batch, args.height, args.width, 3), dtype=np.float32)
  dev = jax.devices()[0]
  print(f"{spec['title']}, {tv_params:,} parameters each; batch {args.batch} x "
        f"{args.height} x {args.width}; torch {torch.__version__} / torchvision "
        f"{torchvision.__version__} eager, {args.threads} threads; jax {jax.__version__} on "
        f"{dev.platform} ({os.cpu_count()} cpus, {cpu_name()}); load average "
        f"{os.getloadavg()[0]:.1f}", flush=True)

  result = dict(model=args.model, params=tv_params, batch=args.batch, height=args.height,
                width=args.width)
  result["inference"] = inf = bench_inference(args, torch, tv_model, model, variables,
                                              images_np)
  inf["ratio"] = inf["torch"]["median"] / inf["jax"]["median"]
  print(f"  jaxseg inference compile {inf['compile_s']:.1f} s; detections in image 0: "
        f"torchvision {inf['detections'][0]}, jaxseg {inf['detections'][1]}", flush=True)
  if args.train:
    result["train"] = tr = bench_train(args, torch, tv_model, model, variables, images_np, rng)
    tr["ratio"] = tr["torch"]["median"] / tr["jax"]["median"]
    tv_first, jax_first = tr["first_loss"]
    tr["first_loss_rel_diff"] = abs(tv_first - jax_first) / max(abs(tv_first), 1e-12)
    if args.model == "ssd300":  # deterministic matching and mining: the same loss
      assert tr["first_loss_rel_diff"] < 1e-3, (
          f"SSD first-step losses differ: torchvision {tv_first}, jaxseg {jax_first}")
    print(f"  jaxseg train step compile {tr['compile_s']:.1f} s; losses of the first and last "
          f"step: torchvision {tr['first_loss'][0]:.4f}, {tr['last_loss'][0]:.4f}; jaxseg "
          f"{tr['first_loss'][1]:.4f}, {tr['last_loss'][1]:.4f} (first: relative difference "
          f"{tr['first_loss_rel_diff']:.1e})", flush=True)

  b = args.batch
  print(f"\nms, median (min / max) of {args.repeats} interleaved rounds; load average "
        f"{os.getloadavg()[0]:.1f} at the end (above {os.cpu_count()}: other processes "
        f"shared the cores, which slows torch's OpenMP threads more than XLA's):\n")
  print("| measurement | torchvision eager | jaxseg jit | torchvision / jaxseg | "
        "jaxseg compile |")
  print("|---|---|---|---|---|")
  print(f"| inference ms / image | {fmt(inf['torch'], b)} | {fmt(inf['jax'], b)} | "
        f"{inf['ratio']:.2f} | {inf['compile_s']:.1f} s |")
  if args.train:
    print(f"| train step ms (batch {b}) | {fmt(tr['torch'])} | {fmt(tr['jax'])} | "
          f"{tr['ratio']:.2f} | {tr['compile_s']:.1f} s |")
  print(f"\ninference ratio torchvision/jaxseg = {inf['ratio']:.3f}")
  if args.train:
    print(f"train step ratio torchvision/jaxseg = {tr['ratio']:.3f}")
  return result


if __name__ == "__main__":
  main()
