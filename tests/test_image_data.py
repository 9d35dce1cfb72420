"""Image-level data: sources (label / box / joints per image) and their preprocessing."""
import itertools
import math

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from jaxseg.data import image_preprocess as ip
from jaxseg.data import image_sources, pipeline, skeleton, sources
from jaxseg.errors import ConfigError, DataError

NAN = math.nan


def _dataset(name, data_dir=None, image_size=32, **overrides):
  config = ml_collections.ConfigDict(dict(
      name=name, data_dir=data_dir, image_size=image_size, train_split="", eval_split="",
      label="breed", generator=dict(num_train=16, num_validation=8, min_objects=1,
                                    max_objects=1, class_probs=None)))
  config.update(overrides)
  return config


def _read(dataset_config, which="eval", require=None):
  ds, n = image_sources.load_split(dataset_config, which, require)
  return list(tfds.as_numpy(ds)), n


def _mock(examples, signature, seen=None):
  """Mock every TFDS builder: `as_dataset` yields `examples`; `seen` collects (builder
  name, config name, split) of each call."""
  def as_dataset(self, split, **kwargs):
    del kwargs
    if seen is not None:
      seen.append((self.name, self.builder_config and self.builder_config.name, split))
    return tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=signature)
  return tfds.testing.mock_data(as_dataset_fn=as_dataset)


def _eval_batches(dataset_config, require=None, size=8):
  ds, n = image_sources.load_split(dataset_config, "eval", require)
  return list(pipeline.eval_batches(ds, n, ip.make_eval_preprocess(size), 2,
                                    name=dataset_config.name))


# -- shapes (the real generated dataset) -------------------------------------------------
@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("image_tfds"))


def test_shapes_label_and_box_match_the_object_pixels(shapes_dir):
  config = _dataset("shapes", shapes_dir)
  source = image_sources.get_source("shapes", config)
  assert source.class_names == ("circle", "square", "triangle")
  examples, n = _read(config, "train")
  assert n == 16 and len(examples) == 16
  raw, _ = sources.read_split("shapes", "train", shapes_dir,
                              builder_config=sources.shapes_builder_config(config))
  for example, raw_example in zip(examples, tfds.as_numpy(raw)):
    mask = raw_example["segmentation_mask"][..., 0]
    np.testing.assert_array_equal(example["image"], raw_example["image"])
    assert example["label"].dtype == np.int32 and example["label"] == mask.max() - 1
    rows, cols = np.flatnonzero((mask > 0).any(1)), np.flatnonzero((mask > 0).any(0))
    np.testing.assert_allclose(example["box"], [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1],
                               atol=1e-4)
  _, n_eval = _read(config, "eval")
  assert n_eval == 8


def test_shapes_batches_through_the_pipeline(shapes_dir):
  config = _dataset("shapes", shapes_dir)
  ds, n = image_sources.load_split(config, "train", require=("label", "box"))
  augment = dict(flip=True, min_scale=0.8, max_scale=1.25, min_box_fraction=0.5)
  preprocess = ip.make_train_preprocess(24, augment)
  batches = list(itertools.islice(pipeline.train_batches(ds, n, preprocess, 4, seed=0), 5))
  again = next(iter(pipeline.train_batches(ds, n, preprocess, 4, seed=0)))
  np.testing.assert_array_equal(batches[0]["box"], again["box"])
  for batch in batches:
    assert batch["image"].shape == (4, 24, 24, 3) and batch["box"].shape == (4, 4)
    assert batch["label"].dtype == np.int32 and batch["box"].dtype == np.float32
    box = batch["box"]
    assert np.all(box[:, 2:] > box[:, :2]) and box.min() >= 0 and box.max() <= 24
  evals = list(pipeline.eval_batches(*image_sources.load_split(config, "eval"),
                                     ip.make_eval_preprocess(16, eval_crop=0.875), 3))
  assert len(evals) == 3 and evals[0]["image"].shape == (3, 16, 16, 3)
  assert evals[2]["example_mask"].tolist() == [True, True, False]


def test_shapes_needs_exactly_one_object(shapes_dir):
  config = _dataset("shapes", shapes_dir)
  config.generator.max_objects = 4
  with pytest.raises(ConfigError, match=r"max_objects=4.*min_objects = max_objects = 1"):
    image_sources.get_source("shapes", config)


def test_missing_feature_is_a_config_error(shapes_dir):
  config = _dataset("shapes", shapes_dir)
  with pytest.raises(ConfigError, match=r"'shapes' provides \['label', 'box'\].*\['joints'\]"):
    image_sources.load_split(config, "train", require=("label", "joints"))
  source = image_sources.get_source("cifar10")
  with pytest.raises(ConfigError, match=r"'cifar10' provides \['label'\].*\['box'\]"):
    image_sources.check_provides(source, "cifar10", ("label", "box"))
  with pytest.raises(ConfigError, match="unknown dataset name 'mnist'"):
    image_sources.get_source("mnist")


# -- cifar10 -----------------------------------------------------------------------------
CIFAR = {"image": tf.TensorSpec((None, None, 3), tf.uint8), "label": tf.TensorSpec((), tf.int64)}


def _label_examples(labels, hw=(8, 6)):
  rng = np.random.default_rng(0)
  return [{"image": rng.integers(0, 255, hw + (3,), dtype=np.uint8), "label": np.int64(l)}
          for l in labels]


def test_cifar10_labels_and_splits():
  seen = []
  examples = _label_examples([3, 0, 9])
  with _mock(examples, CIFAR, seen):
    source = image_sources.get_source("cifar10", _dataset("cifar10"))
    assert source.num_classes == 10 and source.class_names[3] == "cat"
    read, n = _read(_dataset("cifar10"), "eval")
    assert seen[-1] == ("cifar10", None, "test") and n == 3
    assert [r["label"] for r in read] == [3, 0, 9]
    assert set(read[0]) == {"image", "label"}
    np.testing.assert_array_equal(read[1]["image"], examples[1]["image"])
    _read(_dataset("cifar10"), "train")
    assert seen[-1] == ("cifar10", None, "train")


@pytest.mark.parametrize("label", [10, -1])
def test_label_out_of_range_is_a_data_error(label):
  with _mock(_label_examples([1, label]), CIFAR):
    with pytest.raises(DataError, match=rf"cifar10: label {label} outside 0\.\.9"):
      _eval_batches(_dataset("cifar10"))


def test_imagenet_class_names_and_not_prepared(tmp_path):
  source = image_sources.get_source("imagenet2012", _dataset("imagenet2012"))
  assert source.num_classes == 1000 and source.class_names[0] == "n01440764"
  with pytest.raises(DataError, match=r"'imagenet2012' .*not prepared.*manual_dir"):
    image_sources.load_split(_dataset("imagenet2012", str(tmp_path)), "train")


# -- oxford_iiit_pet ---------------------------------------------------------------------
PETS = {"image": tf.TensorSpec((None, None, 3), tf.uint8), "label": tf.TensorSpec((), tf.int64),
        "species": tf.TensorSpec((), tf.int64), "head_bbox": tf.TensorSpec((4,), tf.float32)}


def _pet(h, w, breed, species, voc_box):
  """A pet example whose head box is given as VOC xml values (xmin, ymin, xmax, ymax;
  1-based inclusive pixel indices), normalized as TFDS does."""
  xmin, ymin, xmax, ymax = voc_box
  return {"image": np.zeros((h, w, 3), np.uint8), "label": np.int64(breed),
          "species": np.int64(species),
          "head_bbox": np.array([ymin / h, xmin / w, ymax / h, xmax / w], np.float32)}


def test_pet_breed_species_and_head_box_in_pixels():
  examples = [_pet(40, 30, 36, 1, (4, 6, 20, 31)),  # -> pixels [3, 5, 20, 31]
              _pet(20, 50, 0, 0, (0, 0, 0, 0)),     # no head box (TFDS's all-zero marker)
              _pet(10, 10, 5, 0, (1, 1, 10, 10))]   # the whole image -> [0, 0, 10, 10]
  seen = []
  with _mock(examples, PETS, seen):
    breed = _dataset("oxford_iiit_pet")
    source = image_sources.get_source("oxford_iiit_pet", breed)
    assert source.num_classes == 37 and source.class_names[0] == "Abyssinian"
    read, n = _read(breed, "train")
    assert n == 2 and [r["label"] for r in read] == [36, 5]  # the unboxed one dropped
    assert seen[-1] == ("oxford_iiit_pet", None, "train[:90%]")
    np.testing.assert_allclose(read[0]["box"], [3, 5, 20, 31], atol=1e-4)
    np.testing.assert_allclose(read[1]["box"], [0, 0, 10, 10], atol=1e-4)
    _read(breed, "eval")
    assert seen[-1][2] == "train[90%:]"

    species = _dataset("oxford_iiit_pet", label="species")
    assert image_sources.get_source("oxford_iiit_pet", species).class_names == ("cat", "dog")
    read, n = _read(species, "eval", require=("label",))  # label only: test split, all kept
    assert seen[-1][2] == "test" and n == 3
    assert [r["label"] for r in read] == [1, 0, 0] and set(read[0]) == {"image", "label"}
  with pytest.raises(ConfigError, match=r"config\.dataset\.label='colour'"):
    image_sources.get_source("oxford_iiit_pet", _dataset("oxford_iiit_pet", label="colour"))


def test_box_partly_outside_the_image_is_clipped():
  example = _pet(10, 20, 0, 0, (0, 2, 30, 12))  # x1 = -1, x2 = 30 > 20, y2 = 12 > 10
  with _mock([example], PETS):
    (read,), _ = _read(_dataset("oxford_iiit_pet"), "train")
  np.testing.assert_allclose(read["box"], [0, 1, 20, 10], atol=1e-4)


@pytest.mark.parametrize("voc_box", [
    (6, 4, 5, 8),     # x1 = 5 (VOC's 1-based xmin 6), x2 = 5: empty
    (5, 4, 8, 2),     # y1 = 3 > y2 = 2
    (25, 2, 30, 8),   # [24, 1, 30, 8] clipped to the 20-wide image: x1 = x2 = 20
    (NAN, 2, 8, 8),   # not finite
])
def test_empty_box_is_a_data_error(voc_box):
  with _mock([_pet(10, 20, 0, 0, voc_box)], PETS):
    with pytest.raises(DataError, match=r"oxford_iiit_pet: box .* empty or not finite after "
                                        r"clipping to the 20 x 10 image"):
      _eval_batches(_dataset("oxford_iiit_pet"))


# -- joints: flic, stick_figures -----------------------------------------------------------
FLIC = {"image": tf.TensorSpec((None, None, 3), tf.uint8),
        "xcoords": tf.TensorSpec((None,), tf.float64),
        "ycoords": tf.TensorSpec((None,), tf.float64)}


def _flic_example(h=48, w=72):
  """FLIC points (1-based MATLAB coordinates) 1..11 annotated except knees / ankles."""
  x, y = np.full(29, NAN), np.full(29, NAN)
  annotated = {0: (10.5, 5.5), 1: (12.5, 15.5), 2: (14.5, 25.5),  # lsho lelb lwri
               3: (30.5, 6.5), 4: (32.5, 16.5), 5: (80.5, 26.5),  # rsho relb, rwri off-image
               6: (15.5, 40.5), 9: (28.5, 41.5),                  # lhip rhip
               12: (20.5, 2.5), 13: (25.5, 2.5), 16: (22.5, 3.5)}  # leye reye nose
  for i, (xi, yi) in annotated.items():
    x[i], y[i] = xi, yi
  return {"image": np.zeros((h, w, 3), np.uint8), "xcoords": x, "ycoords": y}


def test_flic_maps_to_lsp_joints():
  seen = []
  with _mock([_flic_example()], FLIC, seen):
    (read,), n = _read(_dataset("flic"), "eval")
  assert seen[-1] == ("flic", "small", "test") and n == 1
  expected = np.zeros((14, 3), np.float32)
  # LSP index: (x, y) = FLIC's - 0.5, v = 2
  for k, (x, y) in {2: (28, 41), 3: (15, 40), 7: (32, 16), 8: (30, 6), 9: (10, 5),
                    10: (12, 15), 11: (14, 25)}.items():
    expected[k] = (x, y, 2)
  # 0/1/4/5 knees and ankles: NaN in FLIC; 6 right wrist: x = 80 > 72, outside the image;
  # 12 neck, 13 head_top: no FLIC counterpart
  np.testing.assert_array_equal(read["joints"], expected)


def test_flic_with_the_wrong_point_count_is_a_data_error():
  example = _flic_example()
  example["xcoords"] = example["xcoords"][:28]
  with _mock([example], FLIC):
    with pytest.raises(DataError, match="flic: xcoords / ycoords do not hold 29 points"):
      _eval_batches(_dataset("flic"))


def test_stick_figures_joints_nan_and_outside_are_missing():
  joints = np.zeros((14, 3), np.float32)
  joints[:, 0], joints[:, 1], joints[:, 2] = np.arange(14) + 1.5, 3.25, 2
  joints[1, 2] = 1                   # occluded: kept
  joints[2, 0] = NAN                 # NaN: missing
  joints[3, 1] = -0.5                # above the image: missing
  joints[4, 0] = 16.0                # on the right border x = W: kept
  joints[5, 0] = 16.01               # just outside: missing
  examples = [{"image": np.zeros((8, 16, 3), np.uint8), "joints": joints}]
  seen = []
  signature = {"image": tf.TensorSpec((None, None, 3), tf.uint8),
               "joints": tf.TensorSpec((14, 3), tf.float32)}
  with _mock(examples, signature, seen):
    (read,), _ = _read(_dataset("stick_figures"), "train")
  assert seen[-1] == ("stick_figures", "s32_n16-8", "train")
  expected = joints.copy()
  expected[[2, 3, 5]] = 0
  np.testing.assert_array_equal(read["joints"], expected)
  assert image_sources.get_source("stick_figures").class_names is None


def test_joints_batches_through_the_pipeline_with_flip():
  rng = np.random.default_rng(3)
  examples = []
  for _ in range(4):
    joints = np.concatenate([rng.uniform(0, 20, (14, 2)), np.full((14, 1), 2.0)], -1)
    examples.append({"image": rng.integers(0, 255, (20, 20, 3), dtype=np.uint8),
                     "joints": joints.astype(np.float32)})
  signature = {"image": tf.TensorSpec((None, None, 3), tf.uint8),
               "joints": tf.TensorSpec((14, 3), tf.float32)}
  augment = dict(flip=True, min_scale=1.0, max_scale=1.6)
  with _mock(examples, signature):
    ds, n = image_sources.load_split(_dataset("stick_figures"), "train")
    # (a ConfigError; the pipeline's autograph-converted closure wraps it in a StagingError)
    with pytest.raises(Exception, match="needs a flip_permutation"):
      next(pipeline.train_batches(ds, n, ip.make_train_preprocess(16, augment), 2, seed=0))
    preprocess = ip.make_train_preprocess(16, augment, PERM)
    batches = list(itertools.islice(pipeline.train_batches(ds, n, preprocess, 2, seed=0), 4))
  for batch in batches:
    joints = batch["joints"]
    assert joints.shape == (2, 14, 3) and joints.dtype == np.float32
    labelled = joints[..., 2] > 0
    assert labelled.any() and not labelled.all()  # crops of up to 32 px cut some off
    assert joints[labelled][:, :2].min() >= 0 and joints[labelled][:, :2].max() <= 16
    assert np.all(joints[~labelled] == 0)


# -- preprocessing -------------------------------------------------------------------------
RED, BLUE = (255, 0, 0), (0, 0, 255)


def _rect_example(h, w, rows, cols, joint_pixels=()):
  """A black image with a red rectangle (pixel rows / cols inclusive), its box, and
  joints at the centres of blue pixels (the rest missing)."""
  image = np.zeros((h, w, 3), np.uint8)
  image[rows[0]:rows[1] + 1, cols[0]:cols[1] + 1] = RED
  joints = np.zeros((14, 3), np.float32)
  for k, (r, c) in joint_pixels:
    image[r, c] = BLUE
    joints[k] = (c + 0.5, r + 0.5, 2)
  box = np.array([cols[0], rows[0], cols[1] + 1, rows[1] + 1], np.float32)
  return {"image": image, "box": box, "joints": joints, "label": np.int64(2)}


def _np(example):
  return {k: np.asarray(v) for k, v in example.items()}


def _pixels_box(image, colour):
  """Box of the pixels of `colour` in a float [0, 1] image (x1, y1, x2, y2)."""
  m = np.all(np.abs(image - np.asarray(colour) / 255.0) < 1e-6, axis=-1)
  rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
  return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)


def _joints_from_pixels(image, joints):
  """For each labelled joint: does the output image hold a blue pixel at its centre?"""
  for x, y, v in joints:
    if v > 0:
      pixel = image[int(y), int(x)]
      assert x % 1 == 0.5 and y % 1 == 0.5
      np.testing.assert_allclose(pixel, np.asarray(BLUE) / 255.0, atol=1e-6)


PERM = skeleton.FLIP_PERMUTATION


def test_flip_twice_is_the_identity():
  rng = np.random.default_rng(0)
  example = {"image": rng.random((6, 9, 3)).astype(np.float32),
             "box": np.array([1.5, 2, 7, 5], np.float32),
             "joints": np.concatenate([rng.random((14, 2)) * 6, rng.integers(0, 3, (14, 1))],
                                      -1).astype(np.float32)}
  example["joints"][example["joints"][:, 2] == 0] = 0
  once = _np(ip.flip_left_right(example, PERM))
  twice = _np(ip.flip_left_right(once, PERM))
  for key in example:
    np.testing.assert_allclose(twice[key], example[key], atol=1e-5)
  assert not np.allclose(once["image"], example["image"])
  # joint k after the flip is joint PERM[k] mirrored; missing joints stay (0, 0, 0)
  for k in range(14):
    x, y, v = example["joints"][PERM[k]]
    np.testing.assert_allclose(once["joints"][k], (9 - x, y, v) if v > 0 else (0, 0, 0),
                               atol=1e-5)


def test_flipped_box_and_joints_follow_the_pixels():
  # right_wrist (6) at pixel (2, 3); after the flip it is the left_wrist (11)
  example = _rect_example(12, 16, rows=(2, 5), cols=(3, 8), joint_pixels=[(6, (9, 1))])
  example["image"] = example["image"].astype(np.float32) / 255.0
  out = _np(ip.flip_left_right(example, PERM))
  np.testing.assert_array_equal(out["box"], [16 - 9, 2, 16 - 3, 6])
  np.testing.assert_array_equal(out["box"], _pixels_box(out["image"], RED))
  assert out["joints"][6, 2] == 0 and out["joints"][11, 2] == 2
  np.testing.assert_array_equal(out["joints"][11], [16 - 1.5, 9.5, 2])
  _joints_from_pixels(out["image"], out["joints"])


def _seed(i):
  return tf.constant([7, i], tf.int64)


def test_train_crop_shifts_coordinates_exactly_and_keeps_the_box():
  # 40 x 40 at scale 1.25 of size 32: no resampling, an 8-pixel crop range per axis
  augment = dict(flip=False, min_scale=1.25, max_scale=1.25, min_box_fraction=0.5)
  preprocess = ip.make_train_preprocess(32, augment, PERM)
  example = _rect_example(40, 40, rows=(16, 39), cols=(0, 23),
                          joint_pixels=[(0, (2, 2)), (1, (20, 20)), (2, (39, 39))])
  offsets = set()
  for i in range(12):
    out = _np(preprocess(example, _seed(i)))
    assert out["image"].shape == (32, 32, 3) and out["image"].dtype == np.float32
    assert out["label"] == 2 and out["label"].dtype == np.int32
    np.testing.assert_array_equal(out["box"], _pixels_box(out["image"], RED))
    kept = np.prod(out["box"][2:] - out["box"][:2]) / (24 * 24)
    assert kept >= 0.5
    # the blue pixel of joint 1 fixes the crop offset
    blue = np.argwhere(np.all(out["image"] == np.asarray(BLUE) / 255.0, -1))
    oy, ox = 20 - blue[:, 0].min(), 20 - blue[:, 1].min()
    offsets.add((int(ox), int(oy)))
    np.testing.assert_array_equal(out["joints"][1], [20.5 - ox, 20.5 - oy, 2])
    for k, p in ((0, 2.5), (2, 39.5)):  # inside the crop or masked
      inside = 0 <= p - ox <= 32 and 0 <= p - oy <= 32
      expected = [p - ox, p - oy, 2] if inside else [0, 0, 0]
      np.testing.assert_array_equal(out["joints"][k], expected)
    _joints_from_pixels(out["image"], out["joints"])
  assert len(offsets) > 3  # the crop really moves
  # the box constraint (keep sqrt(0.5) of 24 px = 16.97 px per axis): the box's x range
  # [0, 24] -> ox <= 24 - 16.97; its y range [16, 40] -> oy >= 16 + 16.97 - 32
  assert all(ox <= 7 and oy >= 1 for ox, oy in offsets), offsets


def test_train_draws_are_deterministic_and_flip_half_the_time():
  augment = dict(flip=True, min_scale=1.0, max_scale=1.0)
  preprocess = ip.make_train_preprocess(16, augment, PERM)
  example = _rect_example(16, 16, rows=(2, 5), cols=(3, 8), joint_pixels=[(8, (4, 4))])
  flips = 0
  for i in range(16):
    out = _np(preprocess(example, _seed(i)))
    again = _np(preprocess(example, _seed(i)))
    for key in out:
      np.testing.assert_array_equal(out[key], again[key])
    np.testing.assert_array_equal(out["box"], _pixels_box(out["image"], RED))
    _joints_from_pixels(out["image"], out["joints"])
    flipped = out["box"][0] == 16 - 9
    flips += flipped
    assert out["joints"][9 if flipped else 8, 2] == 2  # right_shoulder <-> left_shoulder
  assert 3 <= flips <= 13


def test_train_scale_below_one_pads():
  augment = dict(flip=False, min_scale=0.5, max_scale=0.5)
  example = _rect_example(16, 16, rows=(4, 11), cols=(2, 9), joint_pixels=[(3, (8, 8))])
  out = _np(ip.make_train_preprocess(16, augment)(example, _seed(0)))
  np.testing.assert_array_equal(out["box"], [1, 2, 5, 6])  # scaled by 8 / 16
  np.testing.assert_array_equal(out["joints"][3], [4.25, 4.25, 2])
  assert np.all(out["image"][8:] == 0) and np.all(out["image"][:, 8:] == 0)  # padding


def test_eval_resize_scales_coordinates_per_axis():
  example = _rect_example(20, 40, rows=(4, 11), cols=(8, 15), joint_pixels=[(0, (9, 19))])
  out = _np(ip.make_eval_preprocess(10)(example))
  np.testing.assert_allclose(out["box"], [2, 2, 4, 6], atol=1e-6)  # x / 4, y / 2
  np.testing.assert_allclose(out["joints"][0], [19.5 / 4, 9.5 / 2, 2], atol=1e-6)
  # bilinear with half-pixel centres: output pixels wholly inside the box are pure red
  np.testing.assert_array_equal(_pixels_box(out["image"], RED), [2, 2, 4, 6])
  assert out["image"].shape == (10, 10, 3)


def test_eval_crop_resizes_the_short_side_and_takes_the_centre():
  example = _rect_example(20, 40, rows=(2, 9), cols=(4, 19))  # box [4, 2, 20, 10]
  example["joints"][0] = (20, 10, 2)
  example["joints"][1] = (30, 10, 1)
  out = _np(ip.make_eval_preprocess(8, eval_crop=0.5)(example))
  # short side 20 -> 16 (scale 0.8), image 16 x 32, centre crop offsets (12, 4)
  np.testing.assert_allclose(out["box"], [0, 0, 4, 4], atol=1e-5)  # [3.2, 1.6, 16, 8] - (12, 4)
  np.testing.assert_allclose(out["joints"][0], [4, 4, 2], atol=1e-5)
  np.testing.assert_array_equal(out["joints"][1], [0, 0, 0])  # x = 24 - 12 = 12 > 8
  assert out["image"].shape == (8, 8, 3)


def test_preprocess_argument_errors():
  example = _rect_example(16, 16, rows=(2, 5), cols=(3, 8))
  with pytest.raises(ConfigError, match="flip_permutation"):
    ip.make_train_preprocess(16, dict(flip=True, min_scale=1.0, max_scale=1.0))(
        example, _seed(0))
  with pytest.raises(ValueError, match="not a left/right swap"):
    ip.make_train_preprocess(16, dict(flip=True), flip_permutation=(1, 2, 0))
  with pytest.raises(ValueError, match="min_box_fraction=0.0"):
    ip.make_train_preprocess(16, dict(flip=False, min_box_fraction=0.0))
  with pytest.raises(ValueError, match="min_scale=2.0, max_scale=1.0"):
    ip.make_train_preprocess(16, dict(min_scale=2.0, max_scale=1.0))
  with pytest.raises(ValueError, match="eval_crop=1.5"):
    ip.make_eval_preprocess(16, eval_crop=1.5)
  # label-only examples pass through both without a permutation
  labelled = {"image": example["image"], "label": np.int64(1)}
  out = _np(ip.make_train_preprocess(8, dict(flip=True, min_scale=0.8, max_scale=1.2))(
      labelled, _seed(1)))
  assert set(out) == {"image", "label"} and out["image"].shape == (8, 8, 3)
