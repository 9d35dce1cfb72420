"""Inference on your own images with a run's checkpoint:

  ./launch.sh predict CONFIG --input=FILE_OR_GLOB [--workdir=DIR] [--output_dir=DIR]

The workdir's latest readable checkpoint (default workdir `runs/<config name>`, as for
`train`) runs on each image matched by --input (a file, a directory's images, or a glob
such as 'photos/*.jpg'; quote it). Images of any size and mode (grey, RGBA, palette are
converted to RGB) are resized exactly as the config's evaluation does
(`dataset.image_size`; segmentation and image-level tasks stretch to size x size, or
with `dataset.eval_crop` resize the short side and centre-crop; detection letterboxes
or stretches per `dataset.resize`). Everything is mapped back to the source image's
pixels. Per image, in --output_dir (default `<workdir>/predictions`):

  <name>.json          the predictions (below), the checkpoint step, the model input size
  <name>_overlay.png   the image with the predictions drawn on it
  <name>_classes.png   segmentation only: the class id of every pixel (8-bit grey PNG)

JSON per task: segmentation `classes`: per predicted class its id, name, pixel count
and mask (COCO RLE at the source size); classification `label`, `class`, `score`, `top`
(the top classes with probabilities); localization the same plus `box` [x1, y1, x2, y2];
pose `joints`: name, x, y per joint; detection `detections`: box [x1, y1, x2, y2],
label, class, score, best first (all valid detections; --score_threshold only limits
what the overlay draws); dense captioning `detections`: box, score, caption. With
`--query="red circle"` (dense captioning) each detection also gets `query_logprob`, the
log-likelihood of the query under the language model given the region, the overlays
draw each image's --top_k regions for it, and `query_ranking.json` ranks the regions of
all the inputs (the paper's retrieval by text), both among the detections scoring at
least --score_threshold. Coordinates are continuous source-image
pixels (the image spans [0, W] x [0, H]).

A task may refine its output by defining `predictions_to_json(predictions, geometry)`
(one image's numpy predictions and its `Geometry` -> a JSON-able dict) and
`draw_prediction(image, record)` (the source image and that dict -> uint8 RGB); without
them the converters of this module are used.

User errors (no file matches --input, an unreadable image, a workdir without a
checkpoint, a checkpoint of another config) print one line and exit with status 2.
"""
from __future__ import annotations

from jaxseg import signals  # first: SIGTERM during start-up ends the command cleanly

if __name__ == "__main__":
  signals.exit_on_sigterm()

import dataclasses
import glob
import json
import os

import numpy as np
from absl import flags

from jaxseg import cli

FLAGS = flags.FLAGS


def _define_flags():
  """The command's flags, defined when it runs (the module is also a library: importing
  it next to jaxseg.main or jaxseg.ablate must not define --workdir twice)."""
  cli.quiet_startup()
  cli.define_config_file("config", "Experiment config file (get_config).")
  flags.DEFINE_string("input", None, "An image file, a directory of images, or a glob "
                      "(quote it: 'photos/*.jpg').")
  flags.DEFINE_string("workdir", None, "The run's workdir (default: runs/<config name>).")
  flags.DEFINE_string("output_dir", None, "Where the JSON and PNG files go (default: "
                      "<workdir>/predictions).")
  flags.DEFINE_float("score_threshold", 0.3, "Detection: the overlay draws detections "
                     "scoring at least this (the JSON keeps every valid detection).")
  flags.DEFINE_string("query", None, "Dense captioning: rank the regions of the input "
                      "images by the likelihood of this text under the language model "
                      "(retrieval by text) and draw the best --top_k per image.")
  flags.DEFINE_integer("top_k", 3, "With --query: regions drawn per image.")
  flags.mark_flags_as_required(["config", "input"])

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                    ".ppm", ".pgm")
MIN_PICTURE_SIDE = 256  # overlays of smaller images are enlarged to about this size


@dataclasses.dataclass(frozen=True)
class Geometry:
  """How a source image became the model input: model x = source x * scale_xy[0] -
  offset_xy[0] (likewise y); source_hw = (H, W) of the source image."""
  source_hw: tuple[int, int]
  scale_xy: tuple[float, float]
  offset_xy: tuple[float, float] = (0.0, 0.0)

  def to_source(self, xy) -> np.ndarray:
    """[..., 2k] model-input x, y, x, y, ... -> source pixels (not clipped)."""
    xy = np.asarray(xy, np.float64)
    reps = xy.shape[-1] // 2
    scale = np.tile(np.asarray(self.scale_xy, np.float64), reps)
    offset = np.tile(np.asarray(self.offset_xy, np.float64), reps)
    return (xy + offset) / scale

  def clip(self, xy) -> np.ndarray:
    """[..., 2k] source x, y, ... clipped to the image."""
    h, w = self.source_hw
    return np.clip(xy, 0, np.tile([float(w), float(h)], np.shape(xy)[-1] // 2))


# -- inputs -------------------------------------------------------------------------------
def find_inputs(pattern: str) -> list[str]:
  """The image files `--input` names: the file itself, a directory's images (by
  extension, sorted), or the files a glob matches (sorted). No match: ConfigError."""
  from jaxseg.errors import ConfigError  # pylint: disable=g-import-not-at-top
  if not pattern:
    raise ConfigError("--input is empty; expected an image file, a directory or a glob")
  path = os.path.expanduser(pattern)
  if os.path.isdir(path):
    files = sorted(os.path.join(path, f) for f in os.listdir(path)
                   if f.lower().endswith(IMAGE_EXTENSIONS)
                   and os.path.isfile(os.path.join(path, f)))
    if not files:
      raise ConfigError(f"--input={pattern}: the directory holds no image files "
                        f"({', '.join(IMAGE_EXTENSIONS[:4])}, ...)")
    return files
  if os.path.isfile(path):
    return [path]
  files = sorted(f for f in glob.glob(path, recursive=True) if os.path.isfile(f))
  if not files:
    raise ConfigError(f"--input={pattern} matches no file; expected an image file, a "
                      f"directory or a glob such as 'photos/*.jpg'")
  return files


def read_image(path: str) -> np.ndarray:
  """uint8 RGB [H, W, 3] of an image file; DataError naming the file if unreadable."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from jaxseg.errors import DataError  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as image:
      image = image.convert("RGB")
      array = np.asarray(image, np.uint8)
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise DataError(f"cannot read image {path}: {e}") from None
  if array.ndim != 3 or min(array.shape[:2]) < 1:
    raise DataError(f"image {path} has shape {array.shape}; expected height x width x 3")
  return array


def output_stems(files: list[str]) -> list[str]:
  """Output names: each file's name without extension, '_2', '_3', ... added where two
  inputs share one (e.g. a/x.png and b/x.png)."""
  seen: dict[str, int] = {}
  stems = []
  for f in files:
    stem = os.path.splitext(os.path.basename(f))[0] or "image"
    seen[stem] = seen.get(stem, 0) + 1
    stems.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
  return stems


# -- the model input ----------------------------------------------------------------------
def prepare(config, image: np.ndarray) -> tuple[np.ndarray, Geometry]:
  """The model input float32 [S, S, 3] of a uint8 RGB image, made by the config's own
  evaluation preprocessing (`jaxseg.data`), and its `Geometry`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  h, w = image.shape[:2]
  c = config.dataset
  size = int(c.image_size)
  if config.task == "segmentation":
    from jaxseg.data import segmentation as seg_data  # pylint: disable=g-import-not-at-top
    out = seg_data.make_eval_preprocess(size)(
        {"image": tf.constant(image), "label": tf.zeros((h, w), tf.int32)})
    return np.asarray(out["image"], np.float32), Geometry((h, w), (size / w, size / h))
  if config.task in DETECTION_TASKS:
    from jaxseg.data import detection as det_data  # pylint: disable=g-import-not-at-top
    preprocess = det_data.make_eval_preprocess(size, int(c.max_boxes),
                                               resize=c.get("resize", "letterbox"), name=c.name)
    out = preprocess({"image": tf.constant(image), "boxes": tf.zeros((0, 4), tf.float32),
                      "labels": tf.zeros((0,), tf.int32),
                      "is_crowd": tf.zeros((0,), tf.bool)})
    sx, sy = (float(v) for v in np.asarray(out["scale_xy"]))
    return np.asarray(out["image"], np.float32), Geometry((h, w), (sx, sy))
  from jaxseg.data import image_preprocess  # pylint: disable=g-import-not-at-top
  eval_crop = c.get("eval_crop")
  out = image_preprocess.make_eval_preprocess(size, eval_crop)({"image": tf.constant(image)})
  return np.asarray(out["image"], np.float32), _crop_geometry(h, w, size, eval_crop)


def _crop_geometry(h: int, w: int, size: int, eval_crop) -> Geometry:
  """The geometry of `image_preprocess.make_eval_preprocess`: stretch to size x size, or
  short side to size / eval_crop (rounded, at least size) and the centre size x size crop
  (the preprocessing's own formula, in float32 as TensorFlow computes it)."""
  if eval_crop is None:
    return Geometry((h, w), (size / w, size / h))
  f32 = np.float32
  scale = f32(size) / f32(eval_crop) / f32(min(h, w))
  new_h = max(int(np.round(f32(h) * scale)), size)
  new_w = max(int(np.round(f32(w) * scale)), size)
  oy, ox = (new_h - size) // 2, (new_w - size) // 2
  return Geometry((h, w), (new_w / w, new_h / h), (float(ox), float(oy)))


# -- predictions -> JSON, overlays ---------------------------------------------------------
def _class_name(task, label: int) -> str:
  names = getattr(task, "class_names", ())
  return str(names[label]) if 0 <= label < len(names) else str(label)


def _segmentation_json(task, p, g: Geometry) -> dict:
  from jaxseg.formats import rle  # pylint: disable=g-import-not-at-top
  labels = np.asarray(p["labels"])
  s_h, s_w = labels.shape
  h, w = g.source_hw
  # nearest model pixel of each source pixel centre
  rows = np.minimum(((np.arange(h) + 0.5) * s_h / h).astype(np.int64), s_h - 1)
  cols = np.minimum(((np.arange(w) + 0.5) * s_w / w).astype(np.int64), s_w - 1)
  class_map = labels[rows[:, None], cols[None, :]]
  classes = []
  for k in np.unique(class_map).tolist():
    classes.append({"label": int(k), "class": _class_name(task, int(k)),
                    "pixels": int(np.sum(class_map == k)),
                    "mask": rle.to_json(rle.encode((class_map == k).astype(np.uint8)))})
  return {"classes": classes, "_class_map": class_map}


def _classification_json(task, p, g: Geometry) -> dict:
  del g
  probs = _softmax(np.asarray(p["logits"], np.float64))
  top = [int(k) for k in np.asarray(p["top_labels"]).reshape(-1)]
  label = int(p["label"])
  return {"label": label, "class": _class_name(task, label), "score": float(p["score"]),
          "top": [{"label": k, "class": _class_name(task, k), "score": float(probs[k])}
                  for k in top]}


def _localization_json(task, p, g: Geometry) -> dict:
  box = g.clip(g.to_source(np.asarray(p["box"], np.float64)))
  return {**_classification_json(task, p, g), "box": [float(v) for v in box]}


def _pose_json(task, p, g: Geometry) -> dict:
  del task
  from jaxseg.data import skeleton  # pylint: disable=g-import-not-at-top
  joints = g.to_source(np.asarray(p["joints"], np.float64))
  names = list(skeleton.JOINT_NAMES) + [str(k) for k in range(len(joints))]
  return {"joints": [{"name": names[k], "x": float(x), "y": float(y)}
                     for k, (x, y) in enumerate(joints)]}


def _detection_json(task, p, g: Geometry) -> dict:
  """Detections best first; Mask R-CNN adds each one's "mask" (COCO RLE at the source
  size: the 28 x 28 mask pasted over the source-pixel box, >= 0.5) and keypoint R-CNN
  its "keypoints" (name, x, y, score)."""
  from jaxseg import ops  # pylint: disable=g-import-not-at-top
  from jaxseg.formats import rle  # pylint: disable=g-import-not-at-top
  valid = np.asarray(p["valid"], bool)
  source_boxes = g.to_source(np.asarray(p["boxes"], np.float64))
  boxes = g.clip(source_boxes)
  scores = np.asarray(p["scores"], np.float64)
  classes = np.asarray(p["classes"], np.int64)
  order = [i for i in np.argsort(-scores, kind="stable").tolist() if valid[i]]
  detections = [{"box": [float(v) for v in boxes[i]], "label": int(classes[i]),
                 "class": _class_name(task, int(classes[i])), "score": float(scores[i])}
                for i in order]
  if "masks" in p and order:
    pasted = ops.roi.paste_masks(np.asarray(p["masks"])[order], source_boxes[order],
                                 *g.source_hw)
    for d, mask in zip(detections, pasted):
      d["mask"] = rle.to_json(rle.encode(mask >= 0.5))
  if "keypoints" in p:
    xy = g.to_source(np.asarray(p["keypoints"], np.float64))
    kp_scores = np.asarray(p["keypoint_scores"], np.float64)
    names = list(task.keypoint_names) or [str(k) for k in range(xy.shape[1])]
    for d, i in zip(detections, order):
      d["keypoints"] = [{"name": names[k], "x": float(x), "y": float(y),
                         "score": float(kp_scores[i, k])} for k, (x, y) in enumerate(xy[i])]
  return {"detections": detections}


def _softmax(x):
  e = np.exp(x - x.max())
  return e / e.sum()


def _picture_scale(image) -> int:
  return max(1, MIN_PICTURE_SIDE // max(image.shape[:2]))


def _segmentation_overlay(task, image, record, alpha: float = 0.5):
  from jaxseg import viz  # pylint: disable=g-import-not-at-top
  colours = viz.colourize(record["_class_map"], task.num_classes)
  blended = ((1 - alpha) * image + alpha * colours).round().astype(np.uint8)
  picture = viz.upscale(blended, _picture_scale(image))
  return np.concatenate([picture, viz.legend(task.class_names, picture.shape[1])], axis=0)


def _classification_overlay(task, image, record):
  del task
  from jaxseg import viz  # pylint: disable=g-import-not-at-top
  picture = viz.upscale(image, _picture_scale(image))
  return viz.caption(picture, f"{record['class']} {record['score']:.2f}")


def _localization_overlay(task, image, record):
  from jaxseg import viz  # pylint: disable=g-import-not-at-top
  scale = _picture_scale(image)
  colour = tuple(int(v) for v in viz.palette(task.num_classes + 1)[record["label"] + 1])
  picture = viz.draw_boxes(viz.upscale(image, scale),
                           np.asarray([record["box"]], np.float32) * scale, colours=[colour])
  return viz.caption(picture, f"{record['class']} {record['score']:.2f}")


def _pose_overlay(task, image, record):
  del task
  from jaxseg import viz  # pylint: disable=g-import-not-at-top
  scale = _picture_scale(image)
  joints = np.asarray([[j["x"] * scale, j["y"] * scale, 2.0] for j in record["joints"]],
                      np.float32)
  return viz.draw_skeleton(viz.upscale(image, scale), joints)


def _detection_overlay(task, image, record, score_threshold: float = 0.3):
  from jaxseg import viz  # pylint: disable=g-import-not-at-top
  from jaxseg.formats import rle  # pylint: disable=g-import-not-at-top
  dets = record["detections"]
  boxes = np.asarray([d["box"] for d in dets], np.float32).reshape(-1, 4)
  extra = {}
  if dets and "mask" in dets[0]:
    extra.update(masks=np.stack([rle.decode(d["mask"]) for d in dets]), instance_colours=True)
  if dets and "keypoints" in dets[0]:
    extra["keypoints"] = np.asarray([[[k["x"], k["y"], 2.0] for k in d["keypoints"]]
                                     for d in dets], np.float32)
    extra["keypoint_edges"] = task.skeleton
  return viz.draw_detections(image, boxes, [d["label"] for d in dets],
                             [d["score"] for d in dets], class_names=task.class_names,
                             score_threshold=score_threshold, scale=_picture_scale(image),
                             **extra)


CONVERTERS = {  # config.task -> (predictions -> JSON dict, JSON dict -> overlay)
    "segmentation": (_segmentation_json, _segmentation_overlay),
    "classification": (_classification_json, _classification_overlay),
    "localization": (_localization_json, _localization_overlay),
    "pose": (_pose_json, _pose_overlay),
    "detection": (_detection_json, _detection_overlay),
    "instance_segmentation": (_detection_json, _detection_overlay),
}
DETECTION_TASKS = ("detection", "instance_segmentation")
OWN_CONVERTERS = ("dense_captioning",)  # tasks with predictions_to_json / draw_prediction
QUERY_RANKING = "query_ranking.json"


def predictions_to_json(task, predictions, geometry: Geometry) -> dict:
  """One image's predictions (numpy, no batch axis) as a JSON-able dict in source
  pixels: the task's own `predictions_to_json` if it has one, else this module's."""
  own = getattr(task, "predictions_to_json", None)
  if own is not None:
    return own(predictions, geometry)
  return CONVERTERS[task.config.task][0](task, predictions, geometry)


def draw(task, image: np.ndarray, record: dict, score_threshold: float = 0.3) -> np.ndarray:
  """The overlay picture of one image's `predictions_to_json` record."""
  own = getattr(task, "draw_prediction", None)
  if own is not None:
    return own(image, record)
  fn = CONVERTERS[task.config.task][1]
  if task.config.task in DETECTION_TASKS:
    return fn(task, image, record, score_threshold)
  return fn(task, image, record)


# -- the checkpoint -----------------------------------------------------------------------
def restore(config, workdir: str, task=None):
  """(task, TrainState) of the workdir's latest readable checkpoint, on one device.

  The abstract state is built as the trainer builds it (the task's variables, the
  config's optimizer, `create_state`), so the checkpoint's structure must fit the config.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jaxseg import tasks  # pylint: disable=g-import-not-at-top
  from jaxseg.errors import CheckpointError  # pylint: disable=g-import-not-at-top
  from jaxseg.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  from jaxseg.train import loop  # pylint: disable=g-import-not-at-top
  workdir = os.path.abspath(workdir)
  loop.check_workdir(workdir, train=False)
  task = task or tasks.get_task(config, workdir)
  _, _, _, abstract = loop.build_state(config, task, loop.make_mesh(jax.local_devices()[:1]))
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), config.keep_checkpoints,
                               config.best_metric, config.best_mode, read_only=True)
  try:
    state = ckpt.restore(abstract)
  finally:
    ckpt.close()
  if state is None:
    raise CheckpointError(f"no readable checkpoint in {workdir}/checkpoints; train first: "
                          f"./launch.sh train CONFIG --workdir={workdir}")
  loop.warn_config_changes(config, workdir)
  return task, state


# -- the command --------------------------------------------------------------------------
def predict_files(config, files: list[str], workdir: str, output_dir: str,
                  score_threshold: float = 0.3, query: str | None = None,
                  top_k: int = 3) -> list[dict]:
  """Runs the checkpoint on every file and writes its JSON and PNGs (module docstring);
  returns the JSON records (with `json` and `overlay` paths added). `query` (dense
  captioning): each detection also gets `query_logprob`, log p(query | region), the
  overlays draw each image's `top_k` regions by it, and `query_ranking.json` ranks the
  regions of all the images; both only among detections scoring >= score_threshold."""
  import jax  # pylint: disable=g-import-not-at-top
  from jaxseg import viz  # pylint: disable=g-import-not-at-top
  from jaxseg.errors import ConfigError  # pylint: disable=g-import-not-at-top
  if config.task not in CONVERTERS and config.task not in OWN_CONVERTERS:
    raise ConfigError(f"predict does not know task {config.task!r}; expected one of "
                      f"{sorted(CONVERTERS) + list(OWN_CONVERTERS)}")
  if query is not None and config.task != "dense_captioning":
    raise ConfigError(f"--query ranks regions by a caption model's likelihood; config.task "
                      f"is {config.task!r}, expected 'dense_captioning'")
  if top_k < 1:
    raise ConfigError(f"--top_k={top_k}; expected a positive number of regions")
  task, state = restore(config, workdir)
  variables = state.variables
  step = int(jax.device_get(state.step))
  predict_fn = jax.jit(task.predict_batch)
  if query is not None:
    predict_fn = jax.jit(task.query_predictor(query))
  # What the model reads besides the image (e.g. Fast R-CNN's proposals, made on the host).
  inputs_of = getattr(task, "inference_inputs", lambda model_input: {})
  os.makedirs(output_dir, exist_ok=True)
  records = []
  for path, stem in zip(files, output_stems(files)):
    image = read_image(path)
    model_input, geometry = prepare(config, image)
    batch = {k: np.asarray(v)[None] for k, v in
             {"image": model_input, **inputs_of(model_input)}.items()}
    predictions = jax.tree.map(lambda a: np.asarray(a)[0],
                               jax.device_get(predict_fn(variables, batch)))
    record = predictions_to_json(task, predictions, geometry)
    if query is not None:
      record.update(query=query, top_k=top_k, min_score=score_threshold)
    picture = draw(task, image, record, score_threshold)
    out = {"input": os.path.abspath(path), "task": config.task, "checkpoint_step": step,
           "image_size": [int(v) for v in image.shape[:2]],
           "model_input_size": [int(v) for v in model_input.shape[:2]]}
    class_map = record.pop("_class_map", None)
    if class_map is not None:
      out["class_map"] = viz.save_png(class_map.astype(np.uint8),
                                      os.path.join(output_dir, f"{stem}_classes.png"))
    out.update(record)
    out["overlay"] = viz.save_png(picture, os.path.join(output_dir, f"{stem}_overlay.png"))
    out["json"] = os.path.join(output_dir, f"{stem}.json")
    with open(out["json"], "w") as f:
      json.dump(out, f, indent=2)
    records.append(out)
  if query is not None:
    ranking = sorted(({"input": r["input"], **d} for r in records for d in r["detections"]
                      if d["score"] >= score_threshold), key=lambda d: -d["query_logprob"])
    with open(os.path.join(output_dir, QUERY_RANKING), "w") as f:
      json.dump({"query": query, "checkpoint_step": step, "regions": ranking}, f, indent=2)
  return records


def main(argv):
  config = cli.loaded_config(argv)
  from jaxseg.errors import JaxsegError  # pylint: disable=g-import-not-at-top
  workdir = FLAGS.workdir or cli.default_workdir(FLAGS["config"].config_filename)
  output_dir = FLAGS.output_dir or os.path.join(workdir, "predictions")
  try:
    files = find_inputs(FLAGS.input)
    cli.enable_compilation_cache()
    records = predict_files(config, files, workdir, output_dir, FLAGS.score_threshold,
                            FLAGS.query, FLAGS.top_k)
  except JaxsegError as e:
    cli.fail(str(e))
  for r in records:
    print(f"{r['input']} -> {r['json']}, {r['overlay']}")
  print(f"{len(records)} images; predictions in {output_dir}")
  if FLAGS.query is not None:
    print(f"regions ranked by the query: {os.path.join(output_dir, QUERY_RANKING)}")


def run():
  _define_flags()
  cli.run(main)


if __name__ == "__main__":
  run()
