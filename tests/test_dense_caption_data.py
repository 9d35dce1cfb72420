"""Dense-captioning data: vocabulary and tokenisation, the shapes_captions grammar
checked against the rendered pixels, Visual Genome region descriptions (a fixture in
VG's format, bad cases included), and captions travelling with their boxes through
preprocessing and batching."""
import itertools
import json
import logging
import re

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from jaxseg.data import detection, pipeline, shapes_captions, visual_genome, vocab
from jaxseg.data.vocab import END_ID, PAD_ID, START_ID, UNK_ID, Vocabulary
from jaxseg.errors import ConfigError, DataError


# -- vocabulary ------------------------------------------------------------------------------
def test_tokenize_by_hand():
  assert vocab.tokenize("A man's RED hat, on-top.") == ["a", "man's", "red", "hat", "on",
                                                        "top"]
  assert vocab.tokenize(b"Two  dogs!!  'playing' 42x") == ["two", "dogs", "playing", "42x"]
  assert vocab.tokenize("  ... ") == [] and vocab.tokenize(b"") == []
  assert vocab.tokenize("rock'n'roll isn't") == ["rock'n'roll", "isn't"]


def _toy():
  # counts: a 3, b 2, c 1, d 1 -> a, b, then c, d alphabetically
  return Vocabulary.build(["b a", "A, c!", b"a b", "d"])


def test_build_order_min_count_max_size():
  v = _toy()
  assert v.words == ("<pad>", "<start>", "<end>", "<unk>", "a", "b", "c", "d")
  assert (vocab.PAD_ID, START_ID, END_ID, UNK_ID) == (0, 1, 2, 3) and len(v) == 8
  assert v.id("a") == 4 and v.id("d") == 7 and v.id("zebra") == UNK_ID
  assert Vocabulary.build(["b a", "a c", "a b", "d"], min_count=2).words[4:] == ("a", "b")
  assert Vocabulary.build(["b a", "a c", "a b", "d"], max_size=5).words[4:] == ("a",)
  assert Vocabulary.build(["d c", "c d"]).words[4:] == ("c", "d")  # ties: alphabetical
  with pytest.raises(ConfigError, match="min_count=0"):
    Vocabulary.build(["a"], min_count=0)
  with pytest.raises(ConfigError, match="special tokens"):
    Vocabulary(("a", "b"))


def test_encode_decode_by_hand():
  v = _toy()
  ids, truncated = v.encode("A b zebra", 4)
  assert ids.dtype == np.int32 and ids.tolist() == [4, 5, 3, 2, 0] and not truncated
  ids, truncated = v.encode("a b c d a", 3)
  assert ids.tolist() == [4, 5, 6, 2] and truncated
  ids, truncated = v.encode("a b c", 3)  # exactly max_length words: not truncated
  assert ids.tolist() == [4, 5, 6, 2] and not truncated
  assert v.encode("...", 3)[0].tolist() == [2, 0, 0, 0]
  assert v.decode([START_ID, 4, UNK_ID, 5, END_ID, 6]) == "a <unk> b"
  assert v.decode([7, 6, PAD_ID, 4]) == "d c" and v.decode([]) == ""
  assert v.decode(v.encode("d, a!", 5)[0]) == "d a"
  captions = np.array([[b"a b", b""], [b"c d a b c", b"?!"]], dtype=object)
  ids, truncated, empty = v.encode_batch(captions, 3)
  assert ids.shape == (2, 2, 4) and ids.dtype == np.int32
  assert ids[0, 0].tolist() == [4, 5, 2, 0] and ids[1, 0].tolist() == [6, 7, 4, 2]
  assert ids[0, 1].tolist() == [0] * 4 and ids[1, 1].tolist() == [0] * 4
  assert truncated.tolist() == [[False, False], [True, False]]
  assert empty.tolist() == [[False, True], [False, True]]
  with pytest.raises(ConfigError, match="max_length=0"):
    v.encode("a", 0)


def test_vocabulary_files(tmp_path):
  v = _toy()
  assert Vocabulary.from_json(v.to_json()) == v
  assert json.loads(v.to_json())["format"] == "jaxseg-vocab-1"
  path = str(tmp_path / "vocab.json")
  v.save(path)
  assert Vocabulary.load(path) == v
  bad = tmp_path / "bad.json"
  bad.write_text("{not json")
  with pytest.raises(DataError, match=r"bad\.json") as e:
    Vocabulary.load(str(bad))
  assert "\n" not in str(e.value)
  bad.write_text(json.dumps({"words": ["a"], "format": "other"}))
  with pytest.raises(DataError, match="not a jaxseg vocabulary"):
    Vocabulary.load(str(bad))
  bad.write_text(json.dumps({"words": ["x", "<start>", "<end>", "<unk>"],
                             "format": "jaxseg-vocab-1"}))
  with pytest.raises(DataError, match="special tokens"):
    Vocabulary.load(str(bad))
  with pytest.raises(DataError, match="missing.json"):
    Vocabulary.load(str(tmp_path / "missing.json"))


# -- shapes_captions: the grammar against the pixels -------------------------------------------
_GRAMMAR = re.compile(r"a (small|medium|large) (\w+) (circle|square|triangle)"
                      r"(?: (behind|in front of) (a|an) (\w+) (circle|square|triangle))?")


def _expected_relation(scene, instance, k, min_overlap):
  """(word, other) recomputed from the placed shapes and the final instance map."""
  best = None
  for j in range(len(scene.placed)):
    if j == k:
      continue
    if j > k:  # j painted later: pixels of k's shape that show j
      overlap, word = int((scene.placed[k] & (instance == j + 1)).sum()), "behind"
    else:  # k painted later: pixels of j's shape that show k
      overlap, word = int((scene.placed[j] & (instance == k + 1)).sum()), "in front of"
    if overlap >= min_overlap and (best is None or overlap > best[0]):
      best = (overlap, word, j)
  return None if best is None else best[1:]


def test_captions_describe_the_rendered_objects():
  config = shapes_captions.shapes_captions_config()
  palette = shapes_captions.PALETTE_RGB
  min_overlap = shapes_captions.min_overlap_area(128)
  seen_sizes, seen_relations, seen_colours = set(), set(), set()
  for i in range(60):
    scene = shapes_captions.render_scene(np.random.default_rng([10, i]), config)
    ex = scene.example
    instance = ex["instance_mask"][..., 0]
    image = ex["image"].astype(np.float32)
    objects = ex["objects"]
    for k, text in enumerate(objects["caption"]):
      match = _GRAMMAR.fullmatch(text)
      assert match, text
      size, colour, shape, word, article, other_colour, other_shape = match.groups()
      visible = instance == k + 1
      # colour: the palette colour nearest to the object's mean visible pixel
      mean = image[visible].mean(0)
      nearest = shapes_captions.COLOUR_NAMES[
          int(np.argmin(np.linalg.norm(palette - mean, axis=1)))]
      assert colour == nearest, (i, k, text, mean)
      # shape and size from the label and the visible extent
      assert shape == shapes_captions.SHAPE_NAMES[objects["label"][k]]
      rows, cols = np.flatnonzero(visible.any(1)), np.flatnonzero(visible.any(0))
      side = max(rows[-1] + 1 - rows[0], cols[-1] + 1 - cols[0]) / 128
      assert size == ("small" if side < 0.245 else "medium" if side < 0.33 else "large")
      assert objects["colour"][k] == shapes_captions.COLOUR_NAMES.index(colour)
      assert objects["size"][k] == shapes_captions.SIZE_NAMES.index(size)
      # relation: "behind" only when the named object hides part of this one
      relation = _expected_relation(scene, instance, k, min_overlap)
      if relation is None:
        assert word is None, text
      else:
        expected_word, j = relation
        assert word == expected_word, text
        assert other_colour == shapes_captions.COLOUR_NAMES[scene.colours[j]]
        assert other_shape == shapes_captions.SHAPE_NAMES[objects["label"][j]]
        assert article == ("an" if other_colour == "orange" else "a")
        if word == "behind":
          assert j > k and (scene.placed[k] & (instance == j + 1)).sum() >= min_overlap
        seen_relations.add(word)
      seen_sizes.add(size)
      seen_colours.add(colour)
  assert seen_sizes == set(shapes_captions.SIZE_NAMES)
  assert seen_relations == {"behind", "in front of"}
  assert len(seen_colours) >= 6
  again = shapes_captions.render_example(np.random.default_rng([10, 3]), config)
  first = shapes_captions.render_example(np.random.default_rng([10, 3]), config)
  np.testing.assert_array_equal(again["image"], first["image"])
  assert again["objects"]["caption"] == first["objects"]["caption"]


def _dataset(name, data_dir, image_size=32, **overrides):
  config = ml_collections.ConfigDict(dict(
      name=name, data_dir=data_dir, image_size=image_size, train_split="", eval_split="",
      crowd_max_area=0, generator=dict(num_train=4, num_validation=3, min_objects=2,
                                       max_objects=3)))
  config.update(overrides)
  return config


@pytest.fixture(scope="module")
def captions_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("captions_tfds"))


def test_shapes_captions_source_matches_the_renderer(captions_dir):
  config = _dataset("shapes_captions", captions_dir)
  source = detection.get_detection_source("shapes_captions", config)
  assert source.class_names == ("background", "circle", "square", "triangle")
  assert source.provides == ("masks", "captions")
  ds, n = detection.load_split(config, "train")
  examples = list(tfds.as_numpy(ds))
  assert n == 4 and len(examples) == 4
  builder_config = shapes_captions.shapes_captions_config(
      image_size=32, num_train=4, num_validation=3, min_objects=2, max_objects=3)
  assert builder_config.name == "s32_n4-3_o2-3"
  renders = [shapes_captions.render_example(np.random.default_rng([10, i]), builder_config)
              for i in range(4)]
  matched = set()
  for ex in examples:  # (TFDS stores the examples in an order of its own)
    i = next(i for i, r in enumerate(renders) if np.array_equal(r["image"], ex["image"]))
    matched.add(i)
    rendered = renders[i]
    assert [c.decode() for c in ex["captions"]] == rendered["objects"]["caption"]
    assert ex["labels"].tolist() == (rendered["objects"]["label"] + 1).tolist()
    assert ex["masks"].shape[0] == len(ex["captions"]) == len(ex["boxes"])
  assert matched == {0, 1, 2, 3}
  no_captions = list(tfds.as_numpy(detection.load_split(config, "eval", require=())[0]))
  assert "captions" not in no_captions[0] and len(no_captions) == 3


# -- captions travel with their boxes ---------------------------------------------------------
def _rects(h, w, rects):
  """Rectangles (rows r0..r1, cols c0..c1 inclusive), labels 1..n, caption 'object k'."""
  n = len(rects)
  image = np.zeros((h, w, 3), np.uint8)
  for k, (r0, r1, c0, c1) in enumerate(rects):
    image[r0:r1 + 1, c0:c1 + 1] = 40 * (k + 1)
  return {"image": image,
          "boxes": np.array([[c0, r0, c1 + 1, r1 + 1] for r0, r1, c0, c1 in rects],
                            np.float32).reshape(-1, 4),
          "labels": np.arange(1, n + 1, dtype=np.int32), "is_crowd": np.zeros(n, bool),
          "difficult": np.zeros(n, bool), "image_id": np.int64(7),
          "captions": np.array([f"object {k + 1}".encode() for k in range(n)], object)}


def _agree(out):
  """Every row's caption names its label; padded rows have b""."""
  for label, text, valid in zip(out["labels"], out["captions"], out["valid"]):
    assert text == (f"object {label}".encode() if valid else b""), (label, text)


def test_captions_stay_with_their_boxes_through_flip_crop_and_pad():
  ex = _rects(40, 40, [(0, 39, 0, 39), (10, 20, 10, 20), (0, 5, 0, 5), (34, 39, 34, 39)])
  flipped = detection.flip_left_right(dict(ex, image=ex["image"].astype(np.float32)))
  assert [c.decode() for c in flipped["captions"]] == [f"object {k}" for k in (1, 2, 3, 4)]
  np.testing.assert_array_equal(flipped["boxes"][2], [34, 0, 40, 6])
  preprocess = detection.make_train_preprocess(
      32, 5, dict(flip=True, min_scale=1.25, max_scale=1.25))
  kept = set()
  for i in range(10):
    out = {k: np.asarray(v) for k, v in preprocess(ex, tf.constant([5, i], tf.int64)).items()}
    assert out["captions"].shape == (5,) and out["captions"].dtype == object
    _agree(out)
    kept.add(tuple(out["labels"][out["valid"]]))
  assert len(kept) > 1  # the crop dropped different objects (and their captions)
  # more objects than max_boxes: the largest kept with their captions
  many = _rects(20, 20, [(0, 1, 0, 1), (0, 5, 0, 5), (10, 11, 10, 11), (4, 12, 4, 12)])
  out = {k: np.asarray(v) for k, v in detection.make_eval_preprocess(
      20, 2, overflow="keep_largest", name="captions")(many).items()}
  assert out["labels"].tolist() == [2, 4] and out["captions"].tolist() == [b"object 2",
                                                                          b"object 4"]
  padded = detection.pad_objects({k: (v[:0] if k in detection.OBJECT_KEYS else v)
                                  for k, v in many.items()}, 3)
  assert np.asarray(padded["captions"]).tolist() == [b"", b"", b""]


def test_caption_count_must_match_the_objects():
  ex = _rects(16, 16, [(0, 3, 0, 3), (5, 9, 5, 9)])
  ex["captions"] = ex["captions"][:1]
  with pytest.raises(tf.errors.InvalidArgumentError, match="1 captions for 2 objects"):
    detection._checked(ex, "toy", 3)  # pylint: disable=protected-access


def test_captions_through_the_pipeline_cache_and_process_share(captions_dir, monkeypatch):
  config = _dataset("shapes_captions", captions_dir)
  ds, n = detection.load_split(config, "train")
  names = shapes_captions.SHAPE_NAMES
  preprocess = detection.make_train_preprocess(24, 4, dict(flip=True, min_scale=0.8,
                                                           max_scale=1.25))

  def check(batch, rows):
    assert batch["captions"].shape == (rows, 4) and batch["captions"].dtype == object
    for labels, captions, valid in zip(batch["labels"], batch["captions"], batch["valid"]):
      for label, text, ok in zip(labels, captions, valid):
        # the caption's (first) shape word is the box's class
        assert (text.split()[3].decode() == names[label - 1]) if ok else text == b""

  single = list(itertools.islice(pipeline.train_batches(ds, n, preprocess, 4, seed=3), 2))
  for batch in single:  # epoch 1 reads the cache
    check(batch, 4)
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  share = next(pipeline.train_batches(ds, n, preprocess, 4, seed=3, cache=False))
  check(share, 2)  # process 1 feeds rows 2..3 of the global batch
  np.testing.assert_array_equal(share["captions"], single[0]["captions"][2:])
  eval_ds, eval_n = detection.load_split(config, "eval")
  batches = list(pipeline.eval_batches(eval_ds, eval_n, detection.make_eval_preprocess(
      16, 4), 4))
  assert len(batches) == 1 and batches[0]["example_mask"].tolist() == [True, False]
  check(batches[0], 2)
  assert batches[0]["captions"][1].tolist() == [b""] * 4


# -- Visual Genome ------------------------------------------------------------------------------
_IMAGES = {1: ("images", 20, 16, "RGB"), 2: ("VG_100K", 12, 10, "L"),
           8: ("VG_100K_2", 10, 10, "RGB"), 9: ("images", 8, 6, "RGB")}


def _region(rid, image_id, phrase, x, y, w, h):
  return {"region_id": rid, "image_id": image_id, "phrase": phrase, "x": x, "y": y,
          "width": w, "height": h}


def _descriptions():
  return [
      {"id": 1, "regions": [
          _region(11, 1, "A red car.", 2, 3, 5, 4),
          _region(12, 1, "tree on the right", 15, 10, 10, 10),  # clipped to 20 x 16
          _region(13, 1, "  ... ", 1, 1, 3, 3)]},               # empty caption
      {"id": 2, "regions": [
          _region(21, 2, "a zero-width line", 3, 3, 0, 4),      # zero size
          _region(22, 2, "far away", 100, 100, 5, 5),           # wholly outside
          _region(23, 2, "man's hat ", 0, 0, 12, 10)]},
      {"id": 8, "regions": [_region(81, 8, "sky", 0, 0, 10, 5)]},
      {"id": 9, "regions": [_region(91, 9, "grass", 1, 1, 2, 2)]},
  ]


def _write_vg(root, descriptions=None, skip_image=None):
  for image_id, (folder, w, h, mode) in _IMAGES.items():
    if image_id == skip_image:
      continue
    (root / folder).mkdir(parents=True, exist_ok=True)
    Image.new(mode, (w, h), 120).save(root / folder / f"{image_id}.jpg")
  text = descriptions if isinstance(descriptions, str) else json.dumps(
      _descriptions() if descriptions is None else descriptions)
  (root / "region_descriptions.json").write_text(text)
  return str(root)


def test_visual_genome_build_and_read(tmp_path, caplog):
  root = _write_vg(tmp_path / "VG")
  data_dir = str(tmp_path / "tfds")
  with caplog.at_level(logging.WARNING):
    visual_genome.build(data_dir, root)
  counts = visual_genome.read_builder(data_dir).info.metadata["warnings"]
  assert {k: counts[k] for k in ("empty_caption", "clipped", "outside_or_empty")} == {
      "empty_caption": 1, "clipped": 1, "outside_or_empty": 2}
  logged = [r.getMessage() for r in caplog.records if "visual_genome" in r.getMessage()]
  assert len(logged) == 1 and "1 region(s) with an empty caption" in logged[0]
  assert "2 region(s) wholly outside" in logged[0]
  config = _dataset("visual_genome", data_dir)
  source = detection.get_detection_source("visual_genome", config)
  assert source.class_names == ("background", "region") and source.provides == ("captions",)
  train = list(tfds.as_numpy(detection.load_split(config, "train")[0]))
  by_id = {int(ex["image_id"]): ex for ex in train}
  assert sorted(by_id) == [1, 2]  # 8 -> validation, 9 -> test (id % 10)
  one, two = by_id[1], by_id[2]
  np.testing.assert_array_equal(one["boxes"], [[2, 3, 7, 7], [15, 10, 20, 16]])
  assert one["captions"].tolist() == [b"A red car.", b"tree on the right"]
  assert one["labels"].tolist() == [1, 1] and one["image"].shape == (16, 20, 3)
  assert two["captions"].tolist() == [b"man's hat"] and two["image"].shape == (10, 12, 3)
  np.testing.assert_array_equal(two["boxes"], [[0, 0, 12, 10]])
  val = list(tfds.as_numpy(detection.load_split(config, "eval")[0]))
  assert [int(ex["image_id"]) for ex in val] == [8]
  test = list(tfds.as_numpy(detection.load_split(
      _dataset("visual_genome", data_dir, eval_split="test"), "eval")[0]))
  assert [ex["captions"].tolist() for ex in test] == [[b"grass"]]
  # DenseCap's split file
  splits = tmp_path / "densecap_splits.json"
  splits.write_text(json.dumps({"train": [1, 8, 9], "val": [2], "test": [77]}))
  other = str(tmp_path / "tfds2")
  visual_genome.build(other, root, splits=str(splits))
  counts = visual_genome.read_builder(other).info.metadata["warnings"]
  assert counts["missing_from_descriptions"] == 1 and counts["not_in_splits"] == 0
  val = list(tfds.as_numpy(detection.load_split(_dataset("visual_genome", other), "eval")[0]))
  assert [int(ex["image_id"]) for ex in val] == [2]
  with pytest.raises(ConfigError, match="split 'test'"):  # no image: left out
    detection.load_split(_dataset("visual_genome", other, eval_split="test"), "eval")


def _edit(path, value):
  def edit(data):
    target = data
    for key in path[:-1]:
      target = target[key]
    if value is None:
      del target[path[-1]]
    else:
      target[path[-1]] = value
    return data
  return edit


@pytest.mark.parametrize("edit, message", [
    (_edit((1, "regions", 2, "phrase"), None),
     r"image 2: region 23 lacks required key\(s\) \['phrase'\]"),
    (_edit((0, "regions"), None), r"image entry 0 lacks required key 'regions'"),
    (_edit((0, "regions", 0, "width"), "wide"), r"region 11 has x, y, width, height"),
    (_edit((2, "regions", 0, "image_id"), 9), r"region 81 has image_id 9"),
])
def test_visual_genome_bad_input(tmp_path, edit, message):
  root = _write_vg(tmp_path / "VG", edit(_descriptions()))
  with pytest.raises(DataError, match=message) as e:
    visual_genome.build(str(tmp_path / "tfds"), root)
  assert "\n" not in str(e.value)


def test_visual_genome_missing_image_and_cli(tmp_path, capsys):
  root = _write_vg(tmp_path / "VG", skip_image=8)
  with pytest.raises(DataError, match=r"image id 8: looked for 8\.jpg in .*VG_100K_2"):
    visual_genome.load_regions(root)
  bad = _write_vg(tmp_path / "bad", "[{\"id\": 1, ")
  assert visual_genome.main(["--data_dir", str(tmp_path / "tfds"), "--root", bad]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("jaxseg: error: region descriptions") and "not valid JSON" in err
  assert "\n" not in err
  with pytest.raises(DataError, match="python -m jaxseg.data.visual_genome"):
    detection.load_split(_dataset("visual_genome", str(tmp_path / "empty")), "train")
