"""`./launch.sh predict`: a tiny run of each task, then its checkpoint on PNGs of other
sizes; the JSON equals `task.predict` on the same resized image, mapped back to the
source pixels; bad input is a one-line error."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from conftest import REPO, load_config
from jaxseg import predict
from jaxseg.errors import CheckpointError, ConfigError, DataError

CONFIGS = {
    "segmentation": os.path.join(REPO, "experiments", "segmentation", "unet_shapes.py"),
    "classification": os.path.join(REPO, "experiments", "classification", "classify_shapes.py"),
    "localization": os.path.join(REPO, "experiments", "localization", "localize_shapes.py"),
    "pose": os.path.join(REPO, "experiments", "pose", "deeppose_stick_figures.py"),
    "detection": os.path.join(REPO, "experiments", "detection", "faster_rcnn_shapes.py"),
}
SIZES = ((40, 56), (33, 21))
IMAGE_LEVEL = ("classification", "localization", "pose")  # (H, W) of the user's images: not the model's 32 x 32


@pytest.fixture(scope="module")
def image_data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds_predict"))


def _config(task, data_dir, image_data_dir):
  """The tiny config as the other tests train it (same data dirs and programs, so the
  session's compilation cache serves the train and eval steps)."""
  config = load_config(CONFIGS[task])
  config.dataset.data_dir = image_data_dir if task in IMAGE_LEVEL else data_dir
  if task == "segmentation":
    config.num_steps = 4  # as test_main's run
  return config


def _train(config, workdir):
  from jaxseg.train import loop  # pylint: disable=g-import-not-at-top
  # the meshes of test_main (all devices) and of the task tests (2 devices)
  devices = jax.devices() if config.task == "segmentation" else jax.devices()[:2]
  return loop.train_and_evaluate(config, str(workdir), mesh=loop.make_mesh(devices))


def _images(tmp_path):
  rng = np.random.default_rng(0)
  paths = []
  for k, (h, w) in enumerate(SIZES):
    path = str(tmp_path / "in" / f"photo{k}.png")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    mode = "RGB" if k == 0 else "L"  # a grey image is converted to RGB
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    paths.append(path)
  return paths


def _check_against_task(task_name, records, config, workdir):
  """Each record equals task.predict on the prepared image, mapped to source pixels."""
  task, state = predict.restore(config, str(workdir))
  predict_fn = jax.jit(task.predict)  # compiled as predict_files compiled it (cache hit)
  for record in records:
    image = predict.read_image(record["input"])
    model_input, geometry = predict.prepare(config, image)
    assert record["image_size"] == list(image.shape[:2])
    assert record["model_input_size"] == [config.dataset.image_size] * 2
    p = jax.tree.map(lambda a: np.asarray(a)[0], predict_fn(state.variables,
                                                            model_input[None]))
    saved = json.load(open(record["json"]))
    assert saved["checkpoint_step"] == config.num_steps and os.path.exists(saved["overlay"])
    overlay = np.asarray(Image.open(saved["overlay"]))
    assert overlay.ndim == 3 and overlay.shape[2] == 3
    if task_name == "segmentation":
      class_map = np.asarray(Image.open(saved["class_map"]))
      assert class_map.shape == tuple(image.shape[:2])
      s = config.dataset.image_size
      h, w = image.shape[:2]
      # nearest: source pixel (i, j) reads model pixel (floor((i + .5) s / h), ...)
      for i, j in ((0, 0), (h - 1, w - 1), (h // 2, w // 3)):
        assert class_map[i, j] == p["labels"][int((i + .5) * s / h), int((j + .5) * s / w)]
      assert sum(c["pixels"] for c in saved["classes"]) == h * w
      from jaxseg.formats import rle  # pylint: disable=g-import-not-at-top
      for c in saved["classes"]:
        np.testing.assert_array_equal(rle.decode(c["mask"]), class_map == c["label"])
    if task_name in ("classification", "localization"):
      assert saved["label"] == int(p["label"])
      assert saved["class"] == task.class_names[int(p["label"])]
      assert saved["score"] == pytest.approx(float(p["score"]), rel=1e-5)
      assert [t["label"] for t in saved["top"]] == np.asarray(p["top_labels"]).tolist()
    if task_name == "localization":
      expected = geometry.clip(geometry.to_source(p["box"]))
      np.testing.assert_allclose(saved["box"], expected, rtol=1e-5, atol=1e-4)
      h, w = image.shape[:2]  # the model's box, scaled per axis to the source
      np.testing.assert_allclose(
          saved["box"], np.clip(np.asarray(p["box"]) * ([w / 32, h / 32] * 2), 0, [w, h] * 2),
          rtol=1e-5, atol=1e-4)
    if task_name == "pose":
      h, w = image.shape[:2]
      got = np.asarray([[j["x"], j["y"]] for j in saved["joints"]])
      np.testing.assert_allclose(got, np.asarray(p["joints"]) * [w / 32, h / 32], rtol=1e-5,
                                 atol=1e-4)
      assert saved["joints"][0]["name"]
    if task_name == "detection":
      valid = np.asarray(p["valid"], bool)
      assert len(saved["detections"]) == int(valid.sum())
      scale = np.asarray(geometry.scale_xy * 2)
      for d in saved["detections"]:
        assert 0 <= d["box"][0] <= d["box"][2] <= image.shape[1]
        assert d["class"] == task.class_names[d["label"]]
      if valid.any():
        best = int(np.argmax(np.where(valid, p["scores"], -np.inf)))
        top = saved["detections"][0]
        assert top["score"] == pytest.approx(float(p["scores"][best]), rel=1e-5)
        np.testing.assert_allclose(top["box"], geometry.clip(p["boxes"][best] / scale),
                                   rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("task_name", ["segmentation", "classification", "localization",
                                       "pose"])
def test_predict_each_task(task_name, data_dir, image_data_dir, tmp_path):
  config = _config(task_name, data_dir, image_data_dir)
  workdir = tmp_path / "run"
  _train(config, workdir)
  paths = _images(tmp_path)
  files = predict.find_inputs(str(tmp_path / "in" / "*.png"))
  assert files == sorted(paths)
  records = predict.predict_files(config, files, str(workdir), str(tmp_path / "out"))
  assert [os.path.basename(r["json"]) for r in records] == ["photo0.json", "photo1.json"]
  _check_against_task(task_name, records, config, workdir)


def test_predict_detection(data_dir, image_data_dir, tmp_path):
  if not os.path.exists(CONFIGS["detection"]):
    pytest.skip("no detection config")
  config = _config("detection", data_dir, image_data_dir)
  workdir = tmp_path / "run"
  _train(config, workdir)
  files = _images(tmp_path)
  records = predict.predict_files(config, files, str(workdir), str(tmp_path / "out"),
                                  score_threshold=0.0)
  assert all(r["detections"] for r in records)  # an untrained tiny detector's scores ~ 1/4
  _check_against_task("detection", records, config, workdir)


def test_eval_crop_geometry_matches_the_preprocessing():
  """The centre of the source maps where the image-level preprocessing puts it."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from jaxseg.data import image_preprocess  # pylint: disable=g-import-not-at-top
  for (h, w), crop in (((40, 56), 0.875), ((33, 21), 0.5), ((50, 50), None)):
    g = predict._crop_geometry(h, w, 32, crop)  # pylint: disable=protected-access
    probe = np.array([[w / 2, h / 2, 2.0], [w / 2 + 1, h / 2 + 1, 2.0]], np.float32)
    out = image_preprocess.make_eval_preprocess(32, crop)(
        {"image": tf.zeros((h, w, 3), tf.uint8), "joints": tf.constant(probe)})
    np.testing.assert_allclose(g.to_source(np.asarray(out["joints"])[:, :2].reshape(-1)),
                               probe[:, :2].reshape(-1), rtol=1e-5)


def test_output_names_and_inputs(tmp_path):
  assert predict.output_stems(["a/x.png", "b/x.png", "c/y.jpg"]) == ["x", "x_2", "y"]
  (tmp_path / "d").mkdir()
  Image.new("RGB", (4, 3)).save(tmp_path / "d" / "a.png")
  (tmp_path / "d" / "notes.txt").write_text("hi")
  assert predict.find_inputs(str(tmp_path / "d")) == [str(tmp_path / "d" / "a.png")]
  with pytest.raises(ConfigError, match="matches no file"):
    predict.find_inputs(str(tmp_path / "nothing" / "*.png"))
  (tmp_path / "bad.png").write_bytes(b"not a png")
  with pytest.raises(DataError, match="cannot read image .*bad.png"):
    predict.read_image(str(tmp_path / "bad.png"))


def test_workdir_without_checkpoint(data_dir, tmp_path):
  config = load_config()
  config.dataset.data_dir = data_dir
  with pytest.raises(CheckpointError, match="no checkpoint"):
    predict.restore(config, str(tmp_path / "empty"))
  (tmp_path / "empty2" / "checkpoints").mkdir(parents=True)
  with pytest.raises(CheckpointError, match="no readable checkpoint"):
    predict.restore(config, str(tmp_path / "empty2"))


def test_command_line_errors_are_one_line(tmp_path):
  config = CONFIGS["segmentation"] + ":tiny"
  env = dict(os.environ, JAX_PLATFORMS="cpu")

  def run(*args):
    r = subprocess.run([sys.executable, "-m", "jaxseg.predict", f"--config={config}", *args],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    lines = r.stderr.strip().splitlines()
    return r.returncode, lines[-1] if lines else ""

  code, err = run(f"--input={tmp_path}/*.png", f"--workdir={tmp_path}/w")
  assert code == 2 and err.startswith("jaxseg: error: --input=") and "matches no file" in err
  Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
  code, err = run(f"--input={tmp_path}/x.png", f"--workdir={tmp_path}/w")
  assert code == 2 and err.startswith("jaxseg: error: no checkpoint"), err
