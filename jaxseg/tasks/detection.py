"""Object detection (CS231n lecture 11): a variable number of boxes, each with a class.

Batches carry padded ground truth with static shapes (`jaxseg.data.detection`): image
[B, S, S, 3], boxes [B, M, 4] pixel xyxy (-1 rows), labels [B, M] (1..C, -1 rows), valid,
is_crowd [B, M] (M = config.dataset.max_boxes), so the number of objects per image never
changes a shape and the train step compiles once.

Model: `config.model` builds a detector of `jaxseg.models.detection`: Faster R-CNN (FPN
as an option), Fast R-CNN, R-CNN, the sliding-window detector, YOLO or SSD; with
config.model.mask_head / .keypoint_head, Mask R-CNN / keypoint R-CNN (He et al. 2017;
config.task "instance_segmentation" names such a run, the same task): batches then
carry `masks` [B, M, S, S] uint8 / `keypoints` [B, M, K, 3] too, the loss adds
roi_mask / roi_keypoint, predictions add each detection's 28 x 28 mask probabilities /
keypoints, the eval adds mask AP ("mask_AP", COCO `segm`) / keypoint AP ("keypoint_AP",
OKS with the source's sigmas), the exported JSON carries RLE masks (at each image's
source size: pasted with `ops.roi.paste_masks`) and keypoints (the categories carry
their keypoint names, skeleton and `kpt_oks_sigmas`), and pictures draw masks and
skeletons. Loss: the detector's
named terms (`model.loss_terms`), each weighted by `config.loss.<term>_weight` and
summed; every term is logged:
  rpn_objectness (binary CE over the sampled anchors), rpn_box (smooth L1),
  roi_classifier (softmax CE over the sampled RoIs, C + 1 classes), roi_box (smooth L1).
Crowd ground truth is left out of the training targets.

Detectors that read precomputed proposals (Fast R-CNN, R-CNN: `model.needs_proposals`)
get them in the batch as `proposals` [B, P, 4] / `proposal_valid` [B, P]:
`config.proposals` (`jaxseg.data.region_proposals`: selective search by default,
P = max_proposals) computed once per split, cached, and moved with every augmentation.
Their wall time per image is reported as `proposal_seconds_per_image` (the test-time
cost a detector with an RPN does not pay). R-CNN's post-hoc stages (SVMs, box
regressors) run after the last training step (`post_training`, `jaxseg.train.rcnn_stages`).

Evaluation is a host-side bridge (DESIGN.md): `eval_stats` returns every image's
detections and ground truth, `accumulate` keeps them (numpy), and `summarize` converts
once to COCO (boxes [x, y, w, h] in the source image's pixels: divided by the eval
preprocessing's `scale_xy`; ground-truth area = box area) and runs jaxseg's COCO
evaluator (`jaxseg.metrics.coco`, equal to pycocotools' COCOeval): AP, AP50, AP75, APs,
APm, APl, AR (= AR@100), and AP per class ("AP/<class name>"). `coco_json(total)` gives
the (ground truth, results) pair for writing files.

Pictures: `visualize` -> {"": rows of ground truth | detections (score >= 0.3, class and
score), "pr": precision-recall curves at IoU 0.5 per class}. The PR picture is first drawn
from the pictured batch; the trainer calls `summarize` before it saves the pictures, and
`summarize` redraws that same array in place from the whole evaluation set (so the saved
PR plot is the full set's; called alone, `visualize` gives the batch's).
"""
from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import ops, viz
from jaxseg.data import detection as det_data
from jaxseg.data import pipeline
from jaxseg.data import region_proposals
from jaxseg.errors import ConfigError, DataError
from jaxseg.formats import rle
from jaxseg.metrics import coco as coco_eval
from jaxseg.models.detection import build_detector
from jaxseg.tasks import base

GT_KEYS = ("boxes", "labels", "valid", "is_crowd")
PICTURE_SCORE_THRESHOLD = 0.3
PR_SIZE = (6.4, 4.0, 80)  # inches wide, high, dpi of the PR plot (512 x 320 px)


class DetectionTask(base.Task):
  """The task contract (jaxseg.tasks) for object detection; see the module docstring."""

  def __init__(self, config):
    super().__init__(config)
    c = config.dataset
    self.source = det_data.get_detection_source(c.name, c)
    self.class_names = tuple(self.source.class_names)  # [0] = "background"
    self.num_classes = self.source.num_classes  # including the background
    self.max_boxes = int(c.max_boxes)
    if self.max_boxes < 1:
      raise ConfigError(f"config.dataset.max_boxes={c.max_boxes}; expected a positive int")
    name = config.model.get("name", self.default_model)
    self.keypoint_names = tuple(self.source.keypoint_names)
    self.model = self.build_model(name, base.model_fields(config.model, drop=("dtype", "name")),
                                  base.compute_dtype(config.model))
    self.loss_terms = self.model.loss_terms
    # Mask R-CNN / keypoint R-CNN: "masks" and / or "keypoints" per object, as ground
    # truth in the batches and as predictions.
    self.instance_outputs = tuple(getattr(self.model, "instance_outputs", ()))
    self.gt_keys = GT_KEYS + self.instance_outputs
    self.skeleton = self._skeleton(c.get("skeleton"))
    self.keypoint_sigmas = self._keypoint_sigmas()
    missing = [f"{t}_weight" for t in self.loss_terms if f"{t}_weight" not in config.loss]
    if missing:
      raise ConfigError(f"config.loss lacks {missing}; the detection loss is the sum of "
                        f"config.loss.<term>_weight * term over {self.loss_terms}")
    self.proposals = None  # settings of the precomputed proposals, when the model needs them
    if self.model.needs_proposals:
      self.proposals = region_proposals.settings_of(config.get("proposals") or {})
    self.proposal_seconds = {}  # "train" / "eval" -> (proposal wall seconds, images)
    self.check_model(name)  # levels, anchors, image size: one line
    self._pr_canvas = None

  default_model = "faster_rcnn"  # config.model.name when it has none

  def build_model(self, name: str, fields: dict, dtype):
    """The flax module of config.model (`name`, its other `fields`): a detector of
    `jaxseg.models.detection` (a subclass task builds its own model here)."""
    return build_detector(name, self.num_classes, dtype,
                          num_keypoints=len(self.keypoint_names), **fields)

  def required_features(self) -> tuple[str, ...]:
    """The source's optional per-object features this task reads (`load_split`)."""
    return self.instance_outputs

  def _skeleton(self, names):
    """Keypoint edges (0-based pairs) for pictures and the COCO export: the source's, or
    config.dataset.skeleton ((name, name) pairs, checked against the source's joints)."""
    if names is None:
      return tuple(tuple(e) for e in self.source.skeleton)
    known = {n: i for i, n in enumerate(self.keypoint_names)}
    edges = []
    for edge in names:
      if len(edge) != 2 or any(n not in known for n in edge):
        raise ConfigError(f"config.dataset.skeleton edge {tuple(edge)} names a keypoint "
                          f"that dataset {self.source.name!r} lacks; its keypoints are "
                          f"{list(self.keypoint_names) or 'none'}")
      edges.append((known[edge[0]], known[edge[1]]))
    return tuple(edges)

  def _keypoint_sigmas(self):
    """OKS sigmas of keypoint AP (one per keypoint): the source's, COCO's for 17."""
    if "keypoints" not in self.instance_outputs:
      return None
    sigmas = tuple(getattr(self.source, "keypoint_sigmas", ()) or ())
    k = len(self.keypoint_names)
    if not sigmas and k == len(coco_eval.COCO_KEYPOINT_SIGMAS):
      sigmas = tuple(float(x) for x in coco_eval.COCO_KEYPOINT_SIGMAS)
    if len(sigmas) != k:
      raise ConfigError(f"dataset {self.source.name!r} has {k} keypoints but "
                        f"{len(sigmas)} OKS sigmas; keypoint AP needs one per keypoint")
    return sigmas

  # -- data ---------------------------------------------------------------------------
  def _augment(self):
    augment = self.config.dataset.get("augment")
    return augment.to_dict() if hasattr(augment, "to_dict") else augment

  def _load(self, which: str):
    """The split `which` ("train" / "eval"), with its proposals when the model needs them."""
    c = self.config.dataset
    ds, n = det_data.load_split(c, which, require=self.required_features())
    if self.proposals is None:
      return ds, n
    if isinstance(n, pipeline.SplitShares):
      raise ConfigError("config.dataset.shard_by_process=True with precomputed region "
                        "proposals: they are computed and cached for the whole split; "
                        "set shard_by_process=False")
    source = det_data.get_detection_source(c.name, c)
    split = c.get(f"{which}_split") or (source.eval_split if which == "eval"
                                         else source.train_split)
    boxes, counts, seconds = region_proposals.load_or_compute(c, split, ds, n, self.proposals)
    self.proposal_seconds[which] = (seconds, n)
    return region_proposals.attach(ds, boxes, counts), n

  def proposal_time(self, which: str):
    """(host seconds the split's precomputed proposals took, its images); (0, 0) for a
    detector without them. Computes and caches them if that has not been done."""
    if self.proposals is None:
      return 0.0, 0
    if which not in self.proposal_seconds:
      self._load(which)
    return self.proposal_seconds[which]

  def _batch_keys(self, keys):
    extra = ("proposals", "proposal_valid") if self.proposals is not None else ()
    return tuple(keys) + self.gt_keys + extra

  def train_data(self, start_step: int = 0):
    c = self.config.dataset
    ds, n = self._load("train")
    preprocess = det_data.make_train_preprocess(
        c.image_size, self.max_boxes, self._augment(),
        flip_permutation=self.source.flip_permutation, resize=c.get("resize", "letterbox"),
        name=c.name, overflow=c.get("max_boxes_overflow", "error"))
    batches = pipeline.train_batches(ds, n, preprocess, self.config.batch_size,
                                     self.config.seed, start_step, c.shuffle_buffer, c.cache,
                                     name=c.name)
    keep = self._batch_keys(("image",))
    return ({k: b[k] for k in keep} for b in map(self._check_capacity, batches))

  def _check_capacity(self, batch):
    """An image with more objects than max_boxes (padding kept the largest) is an error
    unless config.dataset.max_boxes_overflow='keep_largest'."""
    c = self.config.dataset
    if c.get("max_boxes_overflow", "error") == "error":
      over = np.nonzero(np.asarray(batch["num_objects"]) > self.max_boxes)[0]
      if len(over):
        i = over[0]
        raise det_data.too_many_objects(c.name, batch["image_id"][i], batch["num_objects"][i],
                                        self.max_boxes)
    return batch

  def eval_data(self):
    return self.ordered_batches("eval")

  def ordered_batches(self, which: str):
    """Every example of the split `which` ("train" / "eval") once, in order, without
    augmentation, in eval batches (padded, `example_mask`): eval, and R-CNN's feature
    cache over the training set."""
    c = self.config.dataset
    ds, n = self._load(which)
    preprocess = det_data.make_eval_preprocess(c.image_size, self.max_boxes,
                                               resize=c.get("resize", "letterbox"), name=c.name,
                                               overflow=c.get("max_boxes_overflow", "error"))
    keep = self._batch_keys(("image", "image_id", "scale_xy", "orig_size", "example_mask"))
    for b in pipeline.eval_batches(ds, n, preprocess, self.config.eval_batch_size,
                                   name=c.name):
      b = {k: self._check_capacity(b)[k] for k in keep}
      b["image_id"] = b["image_id"].astype(np.int32)  # jax without x64
      yield b

  def example_batch(self, batch_size: int):
    """Arrays with the shapes and dtypes of a training batch (no objects)."""
    size, m = self.config.dataset.image_size, self.max_boxes
    batch = {"image": np.zeros((batch_size, size, size, 3), np.float32),
             "boxes": np.full((batch_size, m, 4), -1.0, np.float32),
             "labels": np.full((batch_size, m), -1, np.int32),
             "valid": np.zeros((batch_size, m), bool),
             "is_crowd": np.zeros((batch_size, m), bool)}
    if self.proposals is not None:
      p = self.proposals["max_proposals"]
      batch.update(proposals=np.full((batch_size, p, 4), -1.0, np.float32),
                   proposal_valid=np.zeros((batch_size, p), bool))
    carried = self._batch_keys(())  # per-object ground truth the batches carry
    if "masks" in carried:
      batch["masks"] = np.zeros((batch_size, m, size, size), np.uint8)
    if "keypoints" in carried:
      batch["keypoints"] = np.zeros((batch_size, m, len(self.keypoint_names), 3), np.float32)
    return batch

  def validate_batch(self, batch):
    """DataError naming the image and the problem: a valid box that is empty (zero width
    or height) or not finite, or a class id outside 1..C."""
    name = self.config.dataset.name
    valid = np.asarray(batch["valid"], bool)
    boxes = np.asarray(batch["boxes"], np.float64)
    labels = np.asarray(batch["labels"])
    ids = batch.get("image_id")

    def where(i):
      return f"image {int(ids[i])}" if ids is not None else f"batch image {i}"

    bad = valid & ~(np.isfinite(boxes).all(-1) & (boxes[..., 2] > boxes[..., 0])
                    & (boxes[..., 3] > boxes[..., 1]))
    if bad.any():
      i, j = np.argwhere(bad)[0]
      raise DataError(f"dataset {name!r}, {where(i)}: object {j} has an empty or non-finite "
                      f"box {boxes[i, j].tolist()} after preprocessing; expected x1 < x2 and "
                      f"y1 < y2 (pixels)")
    bad = valid & ((labels < 1) | (labels >= self.num_classes))
    if bad.any():
      i, j = np.argwhere(bad)[0]
      raise DataError(f"dataset {name!r}, {where(i)}: object {j} has class id "
                      f"{int(labels[i, j])}; expected 1..{self.num_classes - 1}")

  # -- model --------------------------------------------------------------------------
  def _proposal_args(self, batch) -> dict:
    if self.proposals is None:
      return {}
    return {"proposals": batch["proposals"], "proposal_valid": batch["proposal_valid"]}

  def init(self, rng, batch):
    params_rng, dropout_rng = jax.random.split(rng)
    return self.model.init({"params": params_rng, "dropout": dropout_rng}, batch["image"],
                           train=False, **self._proposal_args(batch))

  def loss_fn(self, variables, batch, rng, train: bool):
    """sum_t config.loss.<t>_weight * t over the model's loss terms; aux: every term and
    diagnostics. `train` sets batch norm's mode; the losses are those of training."""
    targets = self.targets(batch)
    mutable = ["batch_stats"] if train and "batch_stats" in variables else False
    out = self.model.apply(variables, batch["image"], train=train, targets=targets,
                           rngs={"sampling": rng, "dropout": jax.random.fold_in(rng, 1)},
                           mutable=mutable,
                           **self._proposal_args(batch))
    terms, new_state = out if mutable else (out, {})
    c = self.config.loss
    loss = sum(c[f"{t}_weight"] * terms[t] for t in self.loss_terms)
    return loss, (dict(terms), new_state)

  def targets(self, batch) -> dict:
    """The model's training targets of a batch (crowd objects left out)."""
    return {"boxes": batch["boxes"], "labels": batch["labels"],
            "valid": batch["valid"] & ~batch["is_crowd"],
            **{k: batch[k] for k in self.instance_outputs}}

  def predict(self, variables, images, proposals=None, proposal_valid=None):
    """Detections in image pixels: boxes [B, D, 4], scores, classes (1..C), valid [B, D];
    and num_proposals [B] (the proposals or windows scored). Fast R-CNN and R-CNN need
    `proposals` [B, P, 4] / `proposal_valid` [B, P]."""
    extra = {} if proposals is None else {"proposals": proposals,
                                          "proposal_valid": proposal_valid}
    out = self.model.apply(variables, images, train=False, **extra)
    keys = ("boxes", "scores", "classes", "valid", "masks", "keypoints", "keypoint_scores")
    return {**{k: out[k] for k in keys if k in out},
            "num_proposals": jnp.sum(out["proposal_valid"], -1)}

  def predict_batch(self, variables, batch):
    return self.predict(variables, batch["image"], **self._proposal_args(batch))

  def inference_inputs(self, image) -> dict:
    """What `./launch.sh predict` adds to one model input (uint8 or [0, 1] float
    [S, S, 3]): its proposals, computed on the host, for detectors that read them."""
    if self.proposals is None:
      return {}
    image = np.asarray(image)
    if image.dtype != np.uint8:
      image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    boxes, count = region_proposals.propose_padded(image, self.proposals)
    return {"proposals": boxes, "proposal_valid": np.arange(len(boxes)) < count}

  def post_training(self, state, workdir: str):
    """R-CNN's post-hoc stages after the last training step (SVMs, box regressors); the
    trainer saves and evaluates the state this returns. (state, metrics to log)."""
    if not getattr(self.model, "has_post_hoc", False):
      return state, {}
    from jaxseg.train import rcnn_stages  # pylint: disable=g-import-not-at-top
    return rcnn_stages.fit(self, state, workdir)

  # -- evaluation ---------------------------------------------------------------------
  def eval_stats(self, variables, batch, predictions=None):
    """Per-image detections and ground truth (not sums): `accumulate` keeps them. A batch
    without image_id / scale_xy (a training-shaped one) gets 0 / 1."""
    if predictions is None:
      predictions = self.predict_batch(variables, batch)
    stats = {f"det_{k}": v for k, v in predictions.items() if k != "num_proposals"}
    stats.update({f"gt_{k}": batch[k] for k in self.gt_keys})
    n, size = batch["image"].shape[0], batch["image"].shape[1]
    stats.update(image_id=batch.get("image_id", jnp.zeros((n,), jnp.int32)),
                 scale_xy=batch.get("scale_xy", jnp.ones((n, 2), jnp.float32)),
                 orig_size=batch.get("orig_size", jnp.full((n, 2), size, jnp.int32)),
                 example_mask=batch["example_mask"],
                 num_proposals=predictions["num_proposals"])
    return stats

  def accumulate(self, total, stats):
    """Host side: the real examples' arrays appended to `total` (a list of dicts); masks
    become RLEs in source-image pixels right away (`_mask_rles`), so the eval set's
    full-size masks are never held at once."""
    real = np.asarray(stats["example_mask"]) > 0
    kept = {k: np.asarray(v)[real] for k, v in stats.items() if k != "example_mask"}
    if "masks" in self.instance_outputs:
      kept["det_masks"], kept["gt_masks"] = self._mask_rles(kept)
    return (total or []) + [kept]

  def _mask_rles(self, kept):
    """(detections' RLEs [n, D], ground truth's RLEs [n, M]; object arrays, None where a
    row is not valid), at each image's source size (`orig_size`): the 28 x 28 masks
    pasted over the detected boxes there (`ops.roi.paste_masks`, >= 0.5); the ground
    truth cut from the eval image's resized region and resized back (nearest)."""
    n = len(kept["image_id"])
    det = np.full(kept["det_valid"].shape, None, object)
    gt = np.full(kept["gt_valid"].shape, None, object)
    for i in range(n):
      height, width = (int(v) for v in kept["orig_size"][i])
      sx, sy = (float(v) for v in kept["scale_xy"][i])
      rows = np.flatnonzero(kept["det_valid"][i])
      if len(rows):
        boxes = kept["det_boxes"][i, rows] / np.array([sx, sy, sx, sy], np.float32)
        pasted = ops.roi.paste_masks(kept["det_masks"][i, rows], boxes, height, width)
        for r, mask in zip(rows, pasted):
          det[i, r] = rle.encode(mask >= 0.5)
      rows = np.flatnonzero(kept["gt_valid"][i])
      if len(rows):
        new_h, new_w = max(int(round(height * sy)), 1), max(int(round(width * sx)), 1)
        ys = np.minimum(((np.arange(height) + 0.5) * new_h / height).astype(int), new_h - 1)
        xs = np.minimum(((np.arange(width) + 0.5) * new_w / width).astype(int), new_w - 1)
        for r in rows:
          gt[i, r] = rle.encode(kept["gt_masks"][i, r][np.ix_(ys, xs)] > 0)
    return det, gt

  def exports(self, total) -> dict:
    """The files the trainer writes at each evaluation (results/<step>/): the eval set's
    ground truth as COCO instances JSON and the detections as COCO results JSON, so
    pycocotools' `loadRes` + `COCOeval` re-score a run unchanged."""
    gt, results = self.coco_json(total)
    return {"ground_truth.json": gt, "detections.json": results}

  def coco_json(self, total):
    """(COCO ground-truth dict, COCO results list) of the accumulated eval set, boxes
    [x, y, w, h] in source-image pixels."""
    cat = lambda k: np.concatenate([t[k] for t in total]) if total else np.zeros((0,))
    ids = cat("image_id").astype(np.int64) if total else np.zeros((0,), np.int64)
    if len(set(ids.tolist())) != len(ids):  # not unique: number the images instead
      ids = np.arange(1, len(ids) + 1)
    images = [{"id": int(i)} for i in ids]
    if total and "orig_size" in total[0]:  # masks are read at these sizes (annToRLE)
      for image, (height, width) in zip(images, cat("orig_size").tolist()):
        image.update(height=int(height), width=int(width))
    categories = [{"id": k, "name": n} for k, n in enumerate(self.class_names) if k > 0]
    if self.keypoint_sigmas is not None:
      for category in categories:
        category.update(keypoints=list(self.keypoint_names),
                   skeleton=[[a + 1, b + 1] for a, b in self.skeleton],
                   kpt_oks_sigmas=list(self.keypoint_sigmas))
    annotations, results = [], []
    if not total:
      return {"images": images, "annotations": [], "categories": categories}, results
    scale = cat("scale_xy")
    factor = np.concatenate([scale, scale], -1)[:, None, :]
    gt_boxes = cat("gt_boxes") / factor
    gt_valid = cat("gt_valid") > 0.5
    gt_labels = cat("gt_labels").astype(np.int64)
    gt_crowd = cat("gt_is_crowd") > 0.5
    gt_masks = cat("gt_masks") if "gt_masks" in total[0] else None
    gt_keypoints = (self._source_keypoints(cat("gt_keypoints"), scale)
                    if "gt_keypoints" in total[0] else None)
    for i, j in zip(*np.nonzero(gt_valid)):
      x1, y1, x2, y2 = gt_boxes[i, j].tolist()
      ann = {"id": len(annotations) + 1, "image_id": int(ids[i]),
             "category_id": int(gt_labels[i, j]), "bbox": [x1, y1, x2 - x1, y2 - y1],
             "area": (x2 - x1) * (y2 - y1), "iscrowd": int(gt_crowd[i, j])}
      if gt_masks is not None:
        ann.update(segmentation=rle.to_json(gt_masks[i, j]),
                   area=float(rle.area(gt_masks[i, j])))
      if gt_keypoints is not None:
        ann.update(keypoints=gt_keypoints[i, j].reshape(-1).tolist(),
                   num_keypoints=int(np.sum(gt_keypoints[i, j, :, 2] > 0)))
      annotations.append(ann)
    boxes = cat("det_boxes") / factor
    valid = cat("det_valid") > 0.5
    classes = cat("det_classes").astype(np.int64)
    scores = cat("det_scores")
    det_masks = cat("det_masks") if "det_masks" in total[0] else None
    det_keypoints = None
    if "det_keypoints" in total[0]:
      xy = cat("det_keypoints")
      det_keypoints = self._source_keypoints(
          np.concatenate([xy, np.ones(xy.shape[:-1] + (1,), xy.dtype)], -1), scale)
    for i, j in zip(*np.nonzero(valid)):
      x1, y1, x2, y2 = boxes[i, j].tolist()
      result = {"image_id": int(ids[i]), "category_id": int(classes[i, j]),
                "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(scores[i, j])}
      if det_masks is not None:
        result["segmentation"] = rle.to_json(det_masks[i, j])
      if det_keypoints is not None:
        result["keypoints"] = det_keypoints[i, j].reshape(-1).tolist()
      results.append(result)
    gt = {"images": images, "annotations": annotations, "categories": categories}
    return gt, results

  @staticmethod
  def _source_keypoints(keypoints, scale):
    """[n, M, K, 3] (x, y, v) of the eval images -> source-image pixels (v kept; x, y of
    unlabelled keypoints stay 0, COCO's convention)."""
    out = np.array(keypoints, np.float64)
    labelled = out[..., 2:] > 0
    out[..., :2] = np.where(labelled, out[..., :2] / scale[:, None, None, :], 0.0)
    return out

  def summarize(self, total):
    gt, results = self.coco_json(total)
    if not gt["images"]:
      empty = {"AP": 0.0, "AP50": 0.0, "num_images": 0}
      for output in self.instance_outputs:
        prefix = {"masks": "mask_", "keypoints": "keypoint_"}[output]
        empty.update({prefix + "AP": 0.0, prefix + "AP50": 0.0})
      return empty
    result = coco_eval.evaluate(gt, results, "bbox")
    stats = result.stats_dict()
    summary = {k: stats[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
    summary.update(self._instance_summary(gt, results))
    summary["AR"] = stats["AR100"]
    summary.update(AR1=stats["AR1"], AR10=stats["AR10"])
    for cat_id, ap in result.per_category_ap().items():
      summary[f"AP/{self.class_names[cat_id]}"] = ap
    summary["detections_per_image"] = len(results) / len(gt["images"])
    regions = float(np.mean(np.concatenate([t["num_proposals"] for t in total])))
    if getattr(self.model, "regions", None) == "windows":
      summary["windows_per_image"] = regions
    else:
      summary["proposals_per_image"] = regions
    if "eval" in self.proposal_seconds:
      seconds, n = self.proposal_seconds["eval"]
      summary["proposal_seconds_per_image"] = seconds / max(n, 1)
    if self._pr_canvas is not None:  # redraw the pictured PR plot from the whole set
      self._pr_canvas[...] = self._pr_plot(result, f"{len(gt['images'])} eval images")
    return summary

  def _instance_summary(self, gt, results) -> dict:
    """Mask AP ("mask_AP", "mask_AP50", ...: COCO's `segm`) and keypoint AP
    ("keypoint_AP", ...: OKS with the source's sigmas) of the exported JSON pair."""
    summary = {}
    for output, iou_type, prefix, extra in (
        ("masks", "segm", "mask_", {}),
        ("keypoints", "keypoints", "keypoint_", {"kpt_oks_sigmas": self.keypoint_sigmas})):
      if output not in self.instance_outputs:
        continue
      stats = coco_eval.evaluate(gt, results, iou_type, **extra).stats_dict()
      summary.update({prefix + k: v for k, v in stats.items()
                      if k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR", "AR100")})
    return summary

  # -- pictures -----------------------------------------------------------------------
  def visualize(self, batch, predictions, max_rows: int = 8):
    """{"": rows of ground truth | detections, "pr": per-class PR curves} (module doc)."""
    images = viz.to_uint8(np.asarray(batch["image"][:max_rows]))
    rows = []
    for i, image in enumerate(images):
      truth = viz.draw_detections(image, batch["boxes"][i], batch["labels"][i],
                                  class_names=self.class_names, valid=batch["valid"][i],
                                  scale=2, **self._instance_drawing(batch, i))
      pred = viz.draw_detections(image, predictions["boxes"][i], predictions["classes"][i],
                                 predictions["scores"][i], class_names=self.class_names,
                                 valid=predictions["valid"][i],
                                 score_threshold=PICTURE_SCORE_THRESHOLD, scale=2,
                                 **self.instance_drawing(predictions, i, image.shape[:2]))
      rows.append([viz.caption(truth, "ground truth"),
                   viz.caption(pred, f"detections >= {PICTURE_SCORE_THRESHOLD}")])
    main = viz.grid(rows) if rows else np.zeros((8, 8, 3), np.uint8)
    stats = {f"det_{k}": predictions[k] for k in ("boxes", "scores", "classes", "valid")}
    stats.update({f"gt_{k}": batch[k] for k in GT_KEYS})
    n = len(batch["image"])
    stats.update(image_id=np.arange(1, n + 1), scale_xy=np.ones((n, 2), np.float32),
                 num_proposals=np.zeros((n,)))
    gt, results = self.coco_json([stats])
    result = coco_eval.evaluate(gt, results, "bbox") if gt["images"] else None
    self._pr_canvas = self._pr_plot(result, f"first eval batch, {n} images")
    return {"": main, "pr": self._pr_canvas}

  def _instance_drawing(self, batch, i: int) -> dict:
    """draw_detections' masks / keypoints arguments for ground-truth row i of a batch."""
    out = {}
    if "masks" in self.instance_outputs:
      out.update(masks=np.asarray(batch["masks"][i]), instance_colours=True)
    if "keypoints" in self.instance_outputs:
      out.update(keypoints=np.asarray(batch["keypoints"][i]), keypoint_edges=self.skeleton)
    return out

  def instance_drawing(self, predictions, i: int, image_hw) -> dict:
    """draw_detections' masks (pasted at image_hw, >= 0.5) / keypoints arguments for the
    predictions of image i (also `./launch.sh predict`'s)."""
    out = {}
    if "masks" in predictions:
      masks = ops.roi.paste_masks(np.asarray(predictions["masks"][i]),
                                  np.maximum(np.asarray(predictions["boxes"][i]), 0),
                                  *image_hw)
      out.update(masks=masks >= 0.5, instance_colours=True)
    if "keypoints" in predictions:
      xy = np.asarray(predictions["keypoints"][i])
      out.update(keypoints=np.concatenate([xy, np.full(xy.shape[:-1] + (1,), 2.0)], -1),
                 keypoint_edges=self.skeleton)
    return out

  def _pr_plot(self, result, title: str) -> np.ndarray:
    """Precision-recall curves at IoU 0.5 (all areas, 100 detections) per class: uint8
    [320, 512, 3]."""
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    width, height, dpi = PR_SIZE
    fig, ax = plt.subplots(figsize=(width, height), dpi=dpi)
    if result is not None:
      p = result.params
      t = int(np.argmin(np.abs(p.iou_thrs - 0.5)))
      a, m = p.area_rng_lbl.index("all"), len(p.max_dets) - 1
      ap50 = result.per_category_ap(iou_thr=p.iou_thrs[t])
      for k, cat_id in enumerate(result.cat_ids):
        precision = result.precision[t, :, k, a, m]
        if np.all(precision < 0):
          continue
        colour = viz.palette(self.num_classes)[cat_id] / 255.0
        ax.plot(p.rec_thrs, np.clip(precision, 0, None), color=colour,
                label=f"{self.class_names[cat_id]} (AP50 {ap50[cat_id]:.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision",
           title=f"precision-recall at IoU 0.5, {title}")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(loc="lower left")
    fig.tight_layout()
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    expected = (int(height * dpi), int(width * dpi))
    if image.shape[:2] != expected:  # a backend rounding the size: pad / crop to it
      out = np.full(expected + (3,), 255, np.uint8)
      h, w = min(expected[0], image.shape[0]), min(expected[1], image.shape[1])
      out[:h, :w] = image[:h, :w]
      image = out
    return image
