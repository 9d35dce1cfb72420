"""bench/detection.py (Faster R-CNN R50-FPN and SSD300, jaxseg against torchvision) run tiny:
128 x 128 (Faster R-CNN) or 268 x 268 (SSD300), one round, inference only (the train step's
compile alone would take longer than this test may). Needs torch and torchvision, as the
equivalence tests it borrows weights from."""
import math
import re

import pytest

from conftest import load_bench
from jaxseg.weights import torchvision as tvw

tvw.hide_triton()  # before torchvision imports torch._dynamo (see hide_triton)
pytest.importorskip("torch")
pytest.importorskip("torchvision")


def _bench():
  return load_bench("detection")


def _check_inference_run(out, result, params) -> float:
  """What every inference-only run must show: a positive ratio line, the parameter count
  (asserted equal on both sides), the same detections, a compile time, the table row and
  no train step. Returns the printed ratio."""
  ratio = float(re.search(r"^inference ratio torchvision/jaxseg = (\S+)$", out, re.M).group(1))
  assert math.isfinite(ratio) and ratio > 0, out
  assert result["params"] == params
  tv_count, jax_count = result["inference"]["detections"]
  assert tv_count == jax_count > 10, out  # same weights, same image: the same detections
  assert result["inference"]["compile_s"] > 0
  assert re.search(r"^\| inference ms / image \| \d+ \(\d+ / \d+\) \| \d+ \(\d+ / \d+\) \| "
                   r"[\d.]+ \| [\d.]+ s \|$", out, re.M), out
  assert "train" not in result
  return ratio


def test_detection_bench_prints_a_ratio_on_equal_models(capsys):
  bench = _bench()
  result = bench.main(["--height=128", "--width=128", "--repeats=1", "--warmup=1",
                       "--threads=2", "--no-train"])
  out = capsys.readouterr().out
  _check_inference_run(out, result, 41_808_406)  # torchvision's fasterrcnn_resnet50_fpn


def test_detection_bench_rejects_sizes_torchvision_would_pad():
  with pytest.raises(SystemExit) as e:
    _bench().parse_args(["--height=100"])
  assert e.value.code == 2


def test_detection_bench_runs_ssd300_on_equal_models(capsys):
  # 268 x 268: the smallest input SSD300's extra layers take (and not the 300 x 300 of
  # tests/test_torchvision_ssd.py, so the fixed_size override is exercised too)
  bench = _bench()
  result = bench.main(["--model=ssd300", "--height=268", "--width=268", "--repeats=1",
                       "--warmup=1", "--threads=2", "--no-train"])
  out = capsys.readouterr().out
  assert out.startswith("SSD300 VGG-16, 35,641,826 parameters each; batch 1 x 268 x 268"), out
  assert result["model"] == "ssd300"
  ratio = _check_inference_run(out, result, 35_641_826)  # torchvision's ssd300_vgg16
  assert result["inference"]["ratio"] == pytest.approx(ratio, rel=1e-3)


def test_detection_bench_model_defaults_and_size_checks():
  bench = _bench()
  args = bench.parse_args(["--model=ssd300"])
  assert (args.height, args.width) == (300, 300)
  args = bench.parse_args([])
  assert (args.model, args.height, args.width) == ("faster_rcnn", 800, 1088)
  assert bench.parse_args(["--model=ssd300", "--height=300", "--width=500"]).width == 500
  for bad in (["--model=ssd300", "--height=256"], ["--model=yolo"]):
    with pytest.raises(SystemExit) as e:
      bench.parse_args(bad)
    assert e.value.code == 2
