"""The dense captioning task (DenseCap): metrics from hand-made evaluation sets, the
vocabulary kept with the run, an end-to-end tiny run, `predict --query`, bad input."""
import json
import os

import jax
import numpy as np
import pytest

from conftest import REPO, load_bench, load_config
from jaxseg import predict, tasks
from jaxseg.data import detection as det_data
from jaxseg.data import vocab as vocab_lib
from jaxseg.errors import ConfigError
from jaxseg.tasks import dense_captioning
from jaxseg.train import loop

CONFIG = os.path.join(REPO, "experiments", "dense_captioning", "densecap_shapes.py")


@pytest.fixture(scope="module")
def config(data_dir):
  c = load_config(CONFIG, "tiny")
  c.dataset.data_dir = data_dir
  return c


@pytest.fixture(scope="module")
def task(config):
  return tasks.get_task(config)


class ExactMeteor:
  """A scorer for tests: 1 if the candidate is one of the references, else 0."""

  def score(self, pairs):
    return np.array([float(c in refs) for c, refs in pairs])


def _total(task, det_captions, det_boxes, det_scores, gt_captions, gt_boxes, own_captions):
  """One accumulated eval part from lists per image (captions as text, boxes pixel xyxy)."""
  t = task.max_length + 1
  n, d, m = len(gt_boxes), max(map(len, det_boxes)), max(map(len, gt_boxes))

  def tokens(rows, width):
    out = np.zeros((n, width, t), np.int32)
    for i, captions in enumerate(rows):
      for j, caption in enumerate(captions):
        out[i, j] = task.vocab.encode(caption, task.max_length)[0]
    return out

  def boxes(rows, width):
    out = np.full((n, width, 4), -1.0, np.float32)
    for i, b in enumerate(rows):
      out[i, :len(b)] = b
    return out

  valid = lambda rows, width: np.array([[j < len(r) for j in range(width)] for r in rows])
  det_valid, gt_valid = valid(det_boxes, d), valid(gt_boxes, m)
  scores = np.zeros((n, d), np.float32)
  for i, s in enumerate(det_scores):
    scores[i, :len(s)] = s
  return [{
      "det_boxes": boxes(det_boxes, d), "det_scores": scores, "det_valid": det_valid,
      "det_classes": np.where(det_valid, 1, -1), "det_tokens": tokens(det_captions, d),
      "gt_boxes": boxes(gt_boxes, m), "gt_valid": gt_valid,
      "gt_labels": np.where(gt_valid, 1, -1), "gt_is_crowd": np.zeros((n, m), bool),
      "gt_tokens": tokens(gt_captions, m), "gt_caption_of_box": tokens(own_captions, m),
      "gt_captions_truncated": np.zeros((n,), np.int32),
      "image_id": np.arange(1, n + 1), "scale_xy": np.full((n, 2), 0.5, np.float32),
      "orig_size": np.full((n, 2), 64, np.int32), "num_proposals": np.full((n,), 5)}]


BOXES = [[[2, 2, 14, 14], [16, 4, 30, 20]], [[4, 4, 28, 28]]]
CAPTIONS = [["a small red circle", "a large blue square"], ["a medium green triangle"]]


def test_perfect_detections_score_one_and_wrong_captions_only_lose_the_language(task):
  own = [["a small red circle", "a large red square"], ["a medium green triangle"]]
  perfect = task.summarize(_total(task, CAPTIONS, BOXES, [[0.9, 0.8], [0.7]], CAPTIONS, BOXES,
                                  own), meteor=ExactMeteor())
  assert perfect["map"] == pytest.approx(1.0) and perfect["detection_map"] == pytest.approx(1.0)
  assert perfect["AP50"] == pytest.approx(1.0)
  assert perfect["gt_exact_match"] == pytest.approx(2 / 3)  # one gt box captioned wrongly
  assert perfect["meteor_mean"] == pytest.approx(1.0)
  wrong = [["a large blue square", "a small red circle"], ["a small red circle"]]
  scored = task.summarize(_total(task, wrong, BOXES, [[0.9, 0.8], [0.7]], CAPTIONS, BOXES,
                                 CAPTIONS), meteor=ExactMeteor())
  assert scored["map"] == 0.0 and scored["detection_map"] == pytest.approx(1.0)
  assert scored["gt_exact_match"] == 1.0
  # the best-scored detection right, the other two wrong: mAP below 1, above 0
  half = [["a small red circle", "a small red circle"], ["a small red circle"]]
  mixed = task.summarize(_total(task, half, BOXES, [[0.9, 0.8], [0.7]], CAPTIONS, BOXES,
                                CAPTIONS), meteor=ExactMeteor())
  assert 0.0 < mixed["map"] < 1.0


def test_vocabulary_is_kept_with_the_run(config, tmp_path):
  """A workdir's vocab.json wins over the data: decoding never depends on the data."""
  saved = vocab_lib.Vocabulary(vocab_lib.SPECIALS + ("zebra", "giraffe"))
  saved.save(str(tmp_path / dense_captioning.VOCAB_FILE))
  task = tasks.get_task(config, str(tmp_path))
  assert task.vocab == saved and task.workdir_files() == {"vocab.json": saved.to_json()}
  with pytest.raises(ConfigError, match="no word of the model's vocabulary"):
    task.query_tokens("red circle")


def test_tiny_run_trains_evaluates_and_retrieves_by_query(config, tmp_path):
  workdir = str(tmp_path / "run")
  summary = loop.train_and_evaluate(config, workdir, mesh=loop.make_mesh(jax.devices()[:2]))
  assert summary["final_step"] == config.num_steps
  assert {"map", "detection_map", "AP50", "gt_exact_match", "meteor_mean"} <= set(summary["eval"])
  assert 0 <= summary["eval"]["map"] <= summary["eval"]["detection_map"] + 1e-9
  with open(os.path.join(workdir, "vocab.json")) as f:
    words = json.load(f)["words"]
  assert {"circle", "square", "triangle"} <= set(words)
  with open(os.path.join(summary["results"], "dense_captions.json")) as f:
    records = json.load(f)
  assert len(records) == config.dataset.generator.num_validation
  assert all(set(d) == {"box", "score", "caption"} for r in records for d in r["detections"])
  assert all(set(g) == {"box", "caption", "generated"} for r in records for g in r["ground_truth"])
  errors = dense_captioning.caption_errors(records)
  assert errors["exact"] / errors["boxes"] == pytest.approx(summary["eval"]["gt_exact_match"])
  assert os.path.exists(summary["picture"])

  image = np.zeros((40, 50, 3), np.uint8)
  image[8:30, 10:35] = (220, 40, 40)
  path = str(tmp_path / "red.png")
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.fromarray(image).save(path)
  out = str(tmp_path / "predictions")
  [record] = predict.predict_files(config, [path], workdir, out, score_threshold=0.0,
                                   query="red square", top_k=2)
  assert record["query"] == "red square" and record["detections"]
  for d in record["detections"]:
    assert 0 <= d["box"][0] <= d["box"][2] <= 50 and 0 <= d["box"][1] <= d["box"][3] <= 40
    assert np.isfinite(d["query_logprob"]) and d["query_logprob"] < 0
  with open(os.path.join(out, predict.QUERY_RANKING)) as f:
    ranking = json.load(f)
  logprobs = [r["query_logprob"] for r in ranking["regions"]]
  assert logprobs == sorted(logprobs, reverse=True) and len(logprobs) == len(record["detections"])
  # only detections scoring >= score_threshold are ranked
  predict.predict_files(config, [path], workdir, out, score_threshold=1.01, query="red square")
  with open(os.path.join(out, predict.QUERY_RANKING)) as f:
    assert json.load(f)["regions"] == []
  with pytest.raises(ConfigError, match="no word of the model's vocabulary"):
    predict.predict_files(config, [path], workdir, out, query="zebra")

  # bench/densecap_probe.py on this run: the codes the LM reads for the gt boxes, probed
  probe = load_bench("densecap_probe")
  task, state = predict.restore(config, workdir)
  codes, captions = probe.collect(task, state.variables, task.eval_data(), 1 << 30)
  assert len(captions) == errors["boxes"] and codes.shape[0] == len(captions)
  parts = probe.code_parts(task.model)  # the LM input's parts tile its columns
  assert [name for name, _ in parts] == ["region code", "caption geometry", "partner"]
  assert parts[0][1].start == 0 and parts[-1][1].stop == codes.shape[1]
  assert all(a.stop == b.start for (_, a), (_, b) in zip(parts, parts[1:]))
  rows = probe.probe_table(codes, captions, codes, captions, steps=50)
  labels = [probe.part_labels(c) for c in captions]
  for part, classes, fit, other, val in rows:
    assert classes == len({l[part] for l in labels})
    majority = max(sum(l[part] == v for l in labels[:len(labels) // 2]) for v in
                   {l[part] for l in labels}) / (len(labels) // 2)
    assert fit >= majority - 1e-9 and 0 <= other <= 1 and 0 <= val <= 1


def test_mask_head_batches_carry_the_objects_masks_in_training_only(config):
  """model.mask_head: training batches (and example_batch) carry each object's instance
  mask, inside its box; evaluation batches do not; a source without masks is an error."""
  c = config.copy_and_resolve_references()
  c.model.mask_head = (4,)
  task = tasks.get_task(c)
  assert "mask" in task.loss_terms and "masks" in task.targets(task.example_batch(2))
  size = c.dataset.image_size
  assert task.example_batch(2)["masks"].shape == (2, task.max_boxes, size, size)
  batch = next(task.train_data())
  masks, boxes, valid = batch["masks"], batch["boxes"], batch["valid"]
  assert masks.shape == valid.shape + batch["image"].shape[1:3] and valid.any()
  for mask, box in zip(masks[valid], boxes[valid]):
    ys, xs = np.nonzero(mask)
    assert len(ys) and xs.min() >= np.floor(box[0]) and xs.max() < np.ceil(box[2])
    assert ys.min() >= np.floor(box[1]) and ys.max() < np.ceil(box[3])
  assert not (masks[~valid] > 0).any()
  assert "masks" not in next(task.eval_data())
  with pytest.raises(ConfigError, match=r"'visual_genome' provides \['captions'\]; the task "
                     r"needs \['masks'\] too"):
    det_data.check_provides(det_data.get_detection_source("visual_genome"),
                            task.required_features())


def test_densecap_probe_parts_and_a_separable_probe():
  probe = load_bench("densecap_probe")
  assert probe.part_labels("a small green triangle in front of an orange circle") == {
      "size": "small", "colour": "green", "shape": "triangle", "direction": "in front of",
      "other colour": "orange", "other shape": "circle", "other": "orange circle"}
  assert probe.part_labels("a large red square")["other"] == "none none"
  with pytest.raises(ValueError, match="grammar"):
    probe.part_labels("two red squares")
  rng = np.random.default_rng(0)
  y = rng.integers(0, 3, 300)
  x = np.eye(3)[y] * 2 + rng.normal(0, 0.3, (300, 3))  # separable by a linear map
  assert np.mean(probe.fit_probe(x, y, steps=200)(x) == y) == 1.0


def test_bad_configs_are_one_line_errors(config, data_dir):
  for key, value, error in (
      ("model.name", "faster_rcnn", "takes 'densecap'"),
      ("dataset.max_caption_length", 0, "max_caption_length"),
      ("model.lm", {"max_length": 3}, "differs from config.dataset.max_caption_length")):
    c = load_config(CONFIG, "tiny")
    c.dataset.data_dir = data_dir
    with c.unlocked():
      node, name = c, key.split(".")
      for part in name[:-1]:
        node = node[part]
      node[name[-1]] = value
    with pytest.raises(ConfigError, match=error):
      tasks.get_task(c)
  detection = load_config(os.path.join(REPO, "experiments", "detection",
                                       "faster_rcnn_shapes.py"), "tiny")
  with pytest.raises(ConfigError, match="expected 'dense_captioning'"):
    predict.predict_files(detection, ["x.png"], "/nonexistent", "/tmp", query="red")


def test_caption_errors_break_gt_box_captions_down_by_part():
  parts = dense_captioning.caption_parts
  assert parts("a large red circle") == ("large", "red", "circle", None, None)
  assert parts("a small blue square behind an orange triangle") == (
      "small", "blue", "square", "behind", ("orange", "triangle"))
  assert parts("a small blue square in front of a red circle")[3:] == ("in front of",
                                                                       ("red", "circle"))
  assert parts("a red") is None and parts("a small red circle behind") is None
  ref = "a small red circle in front of a blue square"
  gt = lambda caption, generated: {"box": [0.0, 0.0, 32.0, 10.0], "caption": caption,
                                   "generated": generated}
  records = [{"ground_truth": [
      gt("a small red circle", "a small red circle"),
      gt("a small red circle", "a medium red circle"),                      # size only
      gt("a small red circle", "a small red circle behind a blue square"),  # said
      gt(ref, "a small red circle"),                                        # unsaid
      gt(ref, "a small red circle behind a blue square"),                   # direction
      gt(ref, "a large green circle in front of a blue circle"),  # size, colour, object
      gt(ref, "a small red circle in front of")]}]                          # malformed
  e = dense_captioning.caption_errors(records, image_size=128)
  assert (e["boxes"], e["exact"], e["malformed"]) == (7, 1, 1)
  assert e["wrong"] == {"size": 2, "colour": 1, "shape": 0, "relation said": 1,
                        "relation unsaid": 1, "relation direction": 1, "relation object": 1}
  assert e["only"] == {"size": 1, "colour": 0, "shape": 0, "relation said": 1,
                       "relation unsaid": 1, "relation direction": 1, "relation object": 0}
  assert e["size_margin"]["q50"] == pytest.approx(0.005)  # 32 / 128 = 0.25 vs 0.245
  text = dense_captioning.format_caption_errors(e)
  assert "7 gt boxes, exact 1 (0.143)" in text and "relation unsaid" in text
  with pytest.raises(ValueError, match="generated"):
    dense_captioning.caption_errors([{"ground_truth": [{"box": [0, 0, 1, 1], "caption": "a"}]}])


def test_picture_captions_wrap_onto_their_strips_and_clip_at_the_last():
  """viz.caption(lines=n): the text wrapped at words onto n strips of 14 px, nothing drawn
  past the image's width; what does not fit ends the last strip; a short text leaves the
  other strips blank. captioned() gives every box the same number of strips."""
  from jaxseg import viz  # pylint: disable=g-import-not-at-top
  image = np.zeros((10, 128, 3), np.uint8)
  long = "a small red triangle behind an orange triangle " * 3

  def inked(out):  # per strip: does any pixel differ from white, and in the right margin?
    strips = out[10:].reshape(-1, 14, 128, 3)
    return [bool((s < 250).any()) for s in strips], bool((out[10:, -2:] < 250).any())

  assert inked(viz.caption(image, "a red circle", 3)) == ([True, False, False], False)
  assert inked(viz.caption(image, long, 3)) == ([True, True, True], False)
  assert inked(viz.caption(image, long, 1)) == ([True], False)
  assert viz.caption(image, "x" * 200).shape == (24, 128, 3)
  boxes = np.asarray([[1.0, 1.0, 5.0, 5.0]])
  picture = dense_captioning.captioned(np.zeros((64, 64, 3), np.uint8), boxes, [long], lines=3)
  assert picture.shape == (128 + 3 * 2 * 14, 128, 3)  # scale 2, 3 boxes of 2 strips
