"""Dense captioning (Johnson, Karpathy & Fei-Fei, "DenseCap: Fully Convolutional
Localization Networks for Dense Captioning", CVPR 2016): detection where every box gets
a sentence instead of a class (CS231n lecture 11, "The four tasks").

The detection task's data path (sources, geometry-consistent augmentation, static
padding: `jaxseg.tasks.detection`) with one more per-object feature, `captions`: the
source's sentences travel with their boxes and become `tokens` [B, M, T] int32 on the
host (`jaxseg.data.vocab`: word ids, <end>, <pad>; T = max words + 1). The vocabulary
is built from the training split's captions (config.vocab.min_count, .max_size) and
saved in the workdir (`vocab.json`, next to the checkpoints): a resumed run, `eval` and
`./launch.sh predict` read it from there, so decoding never depends on the data at hand.
A caption longer than config.dataset.max_caption_length words is truncated (a warning
with the count when the vocabulary is built; `captions_truncated` in the eval summary).

Model: `jaxseg.models.densecap.DenseCap` (config.model.name "densecap"): backbone ->
localization layer (the RPN) -> bilinear sampler -> recognition network -> LSTM language
model. Loss: the paper's five terms, each weighted by config.loss.<term>_weight:
rpn_objectness, rpn_box, box (recognition box refinement), confidence, caption; with
config.model.mask_head a sixth, mask, on the source's instance masks (training batches
carry them; a source without masks is an error naming it).

Evaluation (host side, per image, in source pixels):
- `map`: dense-captioning mAP exactly as the reference evaluator computes it
  (`jaxseg.metrics.dense_captioning`: merged ground truth, METEOR thresholds x IoU
  thresholds) and `detection_map` (the same without the language);
- `meteor`, `bleu4`, `cider`: of the detections matched to a ground-truth group at
  IoU >= 0.5 (pycocoevalcap);
- `AP`, `AP50`: class-agnostic box AP of the localization (jaxseg's COCO evaluator);
- `gt_exact_match`: the fraction of ground-truth boxes whose caption, generated from
  that very box (`DenseCap.caption_regions`), equals its reference word for word.
Pictures: ground truth | detections (score >= 0.3), boxes numbered with their captions
listed below.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxseg import viz
from jaxseg.data import detection as det_data
from jaxseg.data import vocab as vocab_lib
from jaxseg.errors import ConfigError
from jaxseg.metrics import coco as coco_eval
from jaxseg.metrics import dense_captioning as dc_metric
from jaxseg.models.densecap import DenseCap, build_densecap
from jaxseg.tasks import detection

VOCAB_FILE = "vocab.json"
PICTURE_SCORE_THRESHOLD = 0.3
PICTURE_MAX_BOXES = 6


class DenseCaptioningTask(detection.DetectionTask):
  """The task contract (jaxseg.tasks) for dense captioning; see the module docstring."""

  default_model = "densecap"
  uses_workdir = True

  def __init__(self, config, workdir: str | None = None):
    self.max_length = int(config.dataset.get("max_caption_length", 15))
    if self.max_length < 1:
      raise ConfigError(f"config.dataset.max_caption_length={self.max_length}; expected a "
                        "positive number of words")
    self.vocab = self._vocabulary(config, workdir)
    super().__init__(config)
    det_data.check_provides(self.source, self.required_features())  # e.g. masks: now
    self.class_names = ("background", "region")  # localization is class-agnostic
    self.num_classes = 2
    self.gt_keys = detection.GT_KEYS + ("tokens",)  # a batch's, once tokenised

  # -- vocabulary -----------------------------------------------------------------------
  def _vocabulary(self, config, workdir):
    """The workdir's saved vocabulary, else one built from the training captions."""
    path = os.path.join(workdir, VOCAB_FILE) if workdir else None
    if path and os.path.exists(path):
      return vocab_lib.Vocabulary.load(path)
    v = config.get("vocab") or {}
    captions = list(self._training_captions(config))
    lengths = np.array([len(vocab_lib.tokenize(t)) for t in captions])
    if not len(captions):
      raise ConfigError(f"dataset {config.dataset.name!r}: its training split has no region "
                        "captions to build a vocabulary from")
    truncated = int(np.sum(lengths > self.max_length))
    if truncated:
      logging.warning("%d of %d training captions have more than max_caption_length=%d words "
                      "(the longest %d); they are truncated", truncated, len(captions),
                      self.max_length, int(lengths.max()))
    return vocab_lib.Vocabulary.build(captions, min_count=int(v.get("min_count", 1)),
                                      max_size=v.get("max_size"))

  @staticmethod
  def _training_captions(config):
    # The whole split on every process (also with config.dataset.shard_by_process): every
    # process must build the same vocabulary.
    dataset = config.dataset.copy_and_resolve_references()
    with dataset.unlocked():
      dataset.shard_by_process = False
    ds, _ = det_data.load_split(dataset, "train", require=("captions",))
    for captions in ds.map(lambda e: e["captions"]).as_numpy_iterator():
      yield from (c.decode("utf-8") for c in captions)

  def workdir_files(self) -> dict:
    """Files the trainer writes into the workdir with the run (process 0)."""
    return {VOCAB_FILE: self.vocab.to_json()}

  # -- model ----------------------------------------------------------------------------
  def build_model(self, name, fields, dtype):
    if name != "densecap":
      raise ConfigError(f"config.model.name={name!r}; the dense_captioning task takes "
                        "'densecap'")
    lm = dict(fields.pop("lm", None) or {})
    if lm.setdefault("max_length", self.max_length) != self.max_length:
      raise ConfigError(f"config.model.lm.max_length={lm['max_length']} differs from "
                        f"config.dataset.max_caption_length={self.max_length}; set one")
    return build_densecap(len(self.vocab), dtype, lm=lm, **fields)

  def required_features(self):
    return ("captions",) + self.model.training_targets

  def _batch_keys(self, keys):
    """What the pipeline's batches keep: the captions, which `_tokenized` turns into the
    gt key `tokens`, and the model's training targets (e.g. masks; training batches only)."""
    return (tuple(k for k in super()._batch_keys(keys) if k != "tokens") + ("captions",)
            + self.model.training_targets)

  # -- data -----------------------------------------------------------------------------
  def _tokenized(self, batch):
    """The batch with `captions` (bytes [B, M]) replaced by `tokens` [B, M, T] and every
    region labelled 1 ("region": localization is class-agnostic); a valid region whose
    caption has no word is dropped from the targets (valid False)."""
    batch = dict(batch)
    tokens, truncated, empty = self.vocab.encode_batch(batch.pop("captions"), self.max_length)
    batch["tokens"] = tokens
    batch["captions_truncated"] = np.sum(truncated & batch["valid"], -1).astype(np.int32)
    batch["valid"] = batch["valid"] & ~empty
    batch["labels"] = np.where(batch["valid"], 1, -1).astype(np.int32)
    return batch

  def train_data(self, start_step: int = 0):
    for batch in super().train_data(start_step):
      batch = self._tokenized(batch)
      batch.pop("captions_truncated")
      yield batch

  def ordered_batches(self, which: str):
    for batch in map(self._tokenized, super().ordered_batches(which)):
      for key in self.model.training_targets:  # evaluation never reads them
        batch.pop(key)
      yield batch

  def example_batch(self, batch_size: int):
    batch = super().example_batch(batch_size)
    batch["tokens"] = np.zeros((batch_size, self.max_boxes, self.max_length + 1), np.int32)
    return batch

  def targets(self, batch):
    return {"boxes": batch["boxes"], "valid": batch["valid"] & ~batch["is_crowd"],
            "tokens": batch["tokens"], **{k: batch[k] for k in self.model.training_targets}}

  # -- inference ------------------------------------------------------------------------
  def predict(self, variables, images, proposals=None, proposal_valid=None):
    """Boxes [B, D, 4] (image pixels), scores, valid, tokens [B, D, T], caption_logprob,
    classes (1: "region"), num_proposals [B]."""
    del proposals, proposal_valid
    out = self.model.apply(variables, images, train=False)
    keys = ("boxes", "scores", "valid", "tokens", "caption_logprob")
    return {**{k: out[k] for k in keys}, "classes": jnp.where(out["valid"], 1, -1),
            "num_proposals": jnp.sum(out["proposal_valid"], -1)}

  def caption_boxes(self, variables, images, boxes, valid):
    """Captions (tokens [B, K, T]) generated for the given boxes."""
    return self.model.apply(variables, images, boxes, valid,
                            method=DenseCap.caption_regions)["tokens"]

  def query_logprob(self, variables, images, tokens):
    """Final detections and log p(query | region) [B, D, Q] of each query `tokens`
    [Q, T] (retrieval by text, the paper's open-world experiment)."""
    return self.model.apply(variables, images, tokens, method=DenseCap.region_log_likelihood)

  def query_tokens(self, query: str) -> np.ndarray:
    """`query` as tokens [1, T]; ConfigError if it has no word the vocabulary knows."""
    tokens, truncated, empty = self.vocab.encode_batch(np.array([query]), self.max_length)
    known = [w for w in vocab_lib.tokenize(query) if self.vocab.id(w) != vocab_lib.UNK_ID]
    if empty[0] or not known:
      raise ConfigError(f"--query={query!r} has no word of the model's vocabulary "
                        f"({len(self.vocab)} words, e.g. "
                        f"{', '.join(self.vocab.words[4:12])})")
    if truncated[0]:
      logging.warning("--query has more than %d words; truncated", self.max_length)
    return tokens

  def query_predictor(self, query: str):
    """`fn(variables, batch)` -> `predict_batch`'s detections with `query_logprob` [B, D]
    (log p(query | region) of each detection) for `./launch.sh predict --query`."""
    tokens = jnp.asarray(self.query_tokens(query))

    def fn(variables, batch):
      out = self.predict_batch(variables, batch)
      ranked = self.query_logprob(variables, batch["image"], tokens)
      return {**out, "query_logprob": ranked["query_logprob"][..., 0]}
    return fn

  # -- evaluation -----------------------------------------------------------------------
  def eval_stats(self, variables, batch, predictions=None):
    """The detection task's per-image stats (ground truth labelled 1: class-agnostic box
    AP), its tokens, and the captions generated for the ground-truth boxes themselves."""
    stats = super().eval_stats(variables, batch, predictions)
    stats.update(
        gt_caption_of_box=self.caption_boxes(variables, batch["image"], batch["boxes"],
                                             batch["valid"]),
        gt_captions_truncated=batch.get("captions_truncated",
                                        jnp.zeros(batch["image"].shape[:1], jnp.int32)))
    return stats

  def summarize(self, total, meteor=None):
    """The module docstring's metrics over the accumulated eval set. `meteor`: a scorer
    with `score(pairs)` (default: the METEOR 1.5 jar, `jaxseg.metrics.meteor`)."""
    if not total:  # no eval batch at all
      return {"map": 0.0, "detection_map": 0.0, "AP": 0.0, "AP50": 0.0,
              "gt_exact_match": 0.0, "num_images": 0}
    cat = lambda k: np.concatenate([t[k] for t in total])
    gt, results = self.coco_json(total)
    boxes_ap = coco_eval.evaluate(gt, results, "bbox").stats_dict()
    evaluator = dc_metric.DenseCaptioningEvaluator(meteor=meteor)
    scale = cat("scale_xy")
    factor = np.concatenate([scale, scale], -1)[:, None, :]
    det_boxes, gt_boxes = cat("det_boxes") / factor, cat("gt_boxes") / factor
    det_valid, gt_valid = cat("det_valid") > 0, (cat("gt_valid") > 0) & ~(cat("gt_is_crowd") > 0)
    det_tokens, gt_tokens = cat("det_tokens"), cat("gt_tokens")
    scores = cat("det_scores")
    for i in range(len(det_boxes)):
      d, g = np.flatnonzero(det_valid[i]), np.flatnonzero(gt_valid[i])
      evaluator.add(scores[i, d], dc_metric.continuous_to_inclusive(det_boxes[i, d]),
                    [self.vocab.decode(t) for t in det_tokens[i, d]],
                    dc_metric.continuous_to_inclusive(gt_boxes[i, g]),
                    [self.vocab.decode(t) for t in gt_tokens[i, g]])
    summary = evaluator.evaluate()
    summary = {k: float(v) for k, v in summary.items() if np.isscalar(v)}
    own = cat("gt_caption_of_box")
    same = np.all(own == gt_tokens, -1)[gt_valid]
    summary.update(AP=boxes_ap["AP"], AP50=boxes_ap["AP50"], AP75=boxes_ap["AP75"],
                   AR=boxes_ap["AR100"],
                   gt_exact_match=float(np.mean(same)) if same.size else 0.0,
                   captions_truncated=int(np.sum(cat("gt_captions_truncated"))),
                   num_images=len(det_boxes),
                   detections_per_image=(float(np.mean(np.sum(det_valid, -1)))
                                         if len(det_valid) else 0.0))
    return summary

  def exports(self, total) -> dict:
    """results/<step>/dense_captions.json: every image's detections with captions and its
    ground truth, in source pixels, each gt box with its reference `caption` and the
    caption `generated` from that box (gt_exact_match; `caption_errors` breaks it down)."""
    records = []
    for part in total:
      factor = np.concatenate([part["scale_xy"]] * 2, -1)[:, None, :]
      for i in range(len(part["image_id"])):
        d = np.flatnonzero(part["det_valid"][i])
        g = np.flatnonzero(part["gt_valid"][i])
        records.append({
            "image_id": int(part["image_id"][i]),
            "detections": [{"box": (part["det_boxes"][i, j] / factor[i, 0]).tolist(),
                            "score": float(part["det_scores"][i, j]),
                            "caption": self.vocab.decode(part["det_tokens"][i, j])}
                           for j in d],
            "ground_truth": [{"box": (part["gt_boxes"][i, j] / factor[i, 0]).tolist(),
                              "caption": self.vocab.decode(part["gt_tokens"][i, j]),
                              "generated": self.vocab.decode(part["gt_caption_of_box"][i, j])}
                             for j in g]})
    return {"dense_captions.json": records}

  # -- pictures -------------------------------------------------------------------------
  def visualize(self, batch, predictions, max_rows: int = 6):
    """Rows of ground truth | detections >= PICTURE_SCORE_THRESHOLD, numbered boxes and
    their captions listed under each image."""
    images = viz.to_uint8(np.asarray(batch["image"][:max_rows]))
    rows = []
    for i, image in enumerate(images):
      g = np.flatnonzero(np.asarray(batch["valid"][i]))[:PICTURE_MAX_BOXES]
      truth = captioned(image, np.asarray(batch["boxes"][i])[g],
                        [self.vocab.decode(t) for t in np.asarray(batch["tokens"][i])[g]],
                        lines=PICTURE_MAX_BOXES)
      p = np.asarray(predictions["scores"][i])
      keep = np.asarray(predictions["valid"][i]) & (p >= PICTURE_SCORE_THRESHOLD)
      d = np.flatnonzero(keep)[np.argsort(-p[keep], kind="stable")][:PICTURE_MAX_BOXES]
      pred = captioned(image, np.asarray(predictions["boxes"][i])[d],
                       [self.vocab.decode(t) for t in np.asarray(predictions["tokens"][i])[d]],
                       p[d], lines=PICTURE_MAX_BOXES)
      rows.append([viz.caption(truth, "ground truth"),
                   viz.caption(pred, f"detections >= {PICTURE_SCORE_THRESHOLD}")])
    return viz.grid(rows) if rows else np.zeros((8, 8, 3), np.uint8)

  # -- ./launch.sh predict --------------------------------------------------------------
  def predictions_to_json(self, p, geometry) -> dict:
    """Detections best first: box [x1, y1, x2, y2] in source pixels, score, caption."""
    valid = np.asarray(p["valid"], bool)
    boxes = geometry.clip(geometry.to_source(np.asarray(p["boxes"], np.float64)))
    scores = np.asarray(p["scores"], np.float64)
    order = [i for i in np.argsort(-scores, kind="stable").tolist() if valid[i]]
    out = [{"box": [float(v) for v in boxes[i]], "score": float(scores[i]),
            "caption": self.vocab.decode(np.asarray(p["tokens"])[i])} for i in order]
    if "query_logprob" in p:
      for record, i in zip(out, order):
        record["query_logprob"] = float(p["query_logprob"][i])
    return {"detections": out}

  def draw_prediction(self, image, record, score_threshold: float = PICTURE_SCORE_THRESHOLD):
    dets = record["detections"]
    if "query" in record:  # retrieval: the top confident regions for the query
      dets = sorted((d for d in dets if d["score"] >= record.get("min_score", score_threshold)),
                    key=lambda d: -d["query_logprob"])[:record.get("top_k", 3)]
    else:
      dets = [d for d in dets if d["score"] >= score_threshold][:PICTURE_MAX_BOXES]
    scale = max(1, 256 // max(image.shape[:2]))
    picture = captioned(image, np.asarray([d["box"] for d in dets], np.float32).reshape(-1, 4),
                        [d["caption"] for d in dets],
                        [d.get("query_logprob", d["score"]) for d in dets], scale=scale)
    if "query" in record:
      picture = viz.caption(picture, f"query: {record['query']}")
    return picture


def captioned(image, boxes, captions, scores=None, scale: int = 2,
              lines: int | None = None, strips_per_box: int = 2) -> np.ndarray:
  """`image` with boxes numbered 1..n and below it "n. caption (score)" per box, wrapped
  onto `strips_per_box` strips; `lines`: that many boxes' strips whatever n (blank ones
  added), so pictures line up."""
  labels = [str(k + 1) for k in range(len(boxes))]
  colours = viz.palette(len(boxes) + 1)[1:]
  out = viz.draw_boxes(image, boxes, labels, colours if len(boxes) else None, scale=scale)
  texts = [f"{k + 1}. {text}" + ("" if scores is None else f" ({float(scores[k]):.2f})")
           for k, text in enumerate(captions)]
  for text in texts + [""] * max((lines or 0) - len(texts), 0):
    out = viz.caption(out, text, strips_per_box)
  return out


# -- analysis: where gt-box captions go wrong ------------------------------------------------
CAPTION_PARTS = ("size", "colour", "shape", "relation said", "relation unsaid",
                 "relation direction", "relation object")
_DIRECTIONS = ("in front of", "behind")


def caption_parts(text: str):
  """"a SIZE COLOUR SHAPE [behind|in front of ART COLOUR SHAPE]" (shapes_captions'
  grammar) -> (size, colour, shape, direction | None, (colour, shape) | None); None when
  the caption does not follow the grammar."""
  words = text.split()
  if len(words) < 4 or words[0] != "a":
    return None
  head, rest = words[1:4], " ".join(words[4:])
  if not rest:
    return (*head, None, None)
  for direction in _DIRECTIONS:
    tail = rest[len(direction):].split()
    if rest.startswith(direction + " ") and len(tail) == 3 and tail[0] in ("a", "an"):
      return (*head, direction, tuple(tail[1:]))
  return None


def caption_errors(records, image_size: float | None = None) -> dict:
  """The gt-box captions of `exports`' records (each gt's reference `caption` and its
  `generated` caption) broken down by part: per part of CAPTION_PARTS the number of boxes
  with that part wrong (`wrong`) and with only that part wrong (`only`); "relation said":
  a clause the reference has not, "relation unsaid": the reference's clause missing;
  direction and object are counted where both have a clause; `malformed`: generated
  captions off the grammar. With `image_size` (pixels), `size_margin`: how far (in units
  of the image side) the longer box side of each size error is from the nearest
  threshold of shapes_captions.SIZE_THRESHOLDS (quantiles)."""
  from jaxseg.data.shapes_captions import SIZE_THRESHOLDS  # pylint: disable=import-outside-toplevel
  wrong = dict.fromkeys(CAPTION_PARTS, 0)
  only = dict.fromkeys(CAPTION_PARTS, 0)
  n = exact = malformed = 0
  margins = []
  for record in records:
    for gt in record["ground_truth"]:
      if "generated" not in gt:
        raise ValueError("dense_captions.json without the generated gt-box captions "
                         "(`generated`); written by evals since this tool exists")
      n += 1
      if gt["generated"] == gt["caption"]:
        exact += 1
        continue
      ref, gen = caption_parts(gt["caption"]), caption_parts(gt["generated"])
      if ref is None or gen is None:
        malformed += 1
        continue
      bad = [part for part, r, g in zip(CAPTION_PARTS[:3], ref, gen) if r != g]
      if ref[3] is None and gen[3] is not None:
        bad.append("relation said")
      elif ref[3] is not None and gen[3] is None:
        bad.append("relation unsaid")
      elif ref[3] is not None:
        bad += ["relation direction"] * (ref[3] != gen[3]) + ["relation object"] * (ref[4] != gen[4])
      for part in bad:
        wrong[part] += 1
      if len(bad) == 1:
        only[bad[0]] += 1
      if "size" in bad and image_size:
        x1, y1, x2, y2 = gt["box"]
        side = max(x2 - x1, y2 - y1) / float(image_size)
        margins.append(min(abs(side - t) for t in SIZE_THRESHOLDS))
  out = {"boxes": n, "exact": exact, "malformed": malformed, "wrong": wrong, "only": only}
  if margins:
    out["size_margin"] = {f"q{q}": float(np.quantile(margins, q / 100)) for q in (25, 50, 75, 90)}
  return out


def format_caption_errors(e: dict) -> str:
  n = max(e["boxes"], 1)
  lines = [f"{e['boxes']} gt boxes, exact {e['exact']} ({e['exact'] / n:.3f}), malformed "
           f"{e['malformed']} ({e['malformed'] / n:.3f})",
           f"{'part':<20}{'wrong':>7}{'of boxes':>10}{'only':>7}{'of boxes':>10}"]
  for part in CAPTION_PARTS:
    w, o = e["wrong"][part], e["only"][part]
    lines.append(f"{part:<20}{w:>7}{w / n:>10.3f}{o:>7}{o / n:>10.3f}")
  if "size_margin" in e:
    lines.append("size errors, |longer side / image side - nearest threshold|: "
                 + ", ".join(f"{k} {v:.4f}" for k, v in e["size_margin"].items()))
  return "\n".join(lines)


def main(argv=None):
  """python -m jaxseg.tasks.dense_captioning WORKDIR [--step N]: the gt-box caption error
  breakdown (caption_errors) of a run's eval output results/<step>/dense_captions.json
  (default: the last step)."""
  import argparse  # pylint: disable=import-outside-toplevel
  import json  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(description=main.__doc__)
  parser.add_argument("workdir")
  parser.add_argument("--step", type=int, default=None)
  args = parser.parse_args(argv)
  from jaxseg import cli  # pylint: disable=import-outside-toplevel
  results = os.path.join(args.workdir, "results")
  steps = sorted(int(s) for s in os.listdir(results) if s.isdigit()) if os.path.isdir(results) else []
  if not steps:
    cli.fail(f"{args.workdir}: no results/<step>/ (expected the workdir of a dense-captioning "
             "run that has evaluated)")
  step = steps[-1] if args.step is None else args.step
  if step not in steps:
    cli.fail(f"--step={step}: {args.workdir} has results of steps {steps}")
  image_size = None
  config_path = os.path.join(args.workdir, "config.json")
  if os.path.exists(config_path):
    with open(config_path) as f:
      image_size = json.load(f).get("dataset", {}).get("image_size")
  try:
    with open(os.path.join(results, f"{step:06d}", "dense_captions.json")) as f:
      errors = caption_errors(json.load(f), image_size)
  except (OSError, ValueError, KeyError, TypeError) as e:
    cli.fail(f"{args.workdir} step {step}: cannot read dense_captions.json ({e}); expected "
             "the eval output of a dense-captioning run")
  print(f"{args.workdir} step {step}")
  print(format_caption_errors(errors))


if __name__ == "__main__":
  main()
