"""bench/detection.py (Faster R-CNN R50-FPN, jaxseg against torchvision) run tiny: 128 x 128,
one round, inference only (the train step's compile alone would take longer than this
test may). Needs torch and torchvision, as the equivalence tests it borrows weights from."""
import importlib.util
import math
import os
import re

import pytest

from conftest import REPO
from jaxseg.weights import torchvision as tvw

tvw.hide_triton()  # before torchvision imports torch._dynamo (see hide_triton)
pytest.importorskip("torch")
pytest.importorskip("torchvision")


def _bench():
  spec = importlib.util.spec_from_file_location("bench_detection",
                                                os.path.join(REPO, "bench", "detection.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_detection_bench_prints_a_ratio_on_equal_models(capsys):
  bench = _bench()
  result = bench.main(["--height=128", "--width=128", "--repeats=1", "--warmup=1",
                       "--threads=2", "--no-train"])
  out = capsys.readouterr().out
  ratio = float(re.search(r"^inference ratio torchvision/jaxseg = (\S+)$", out, re.M).group(1))
  assert math.isfinite(ratio) and ratio > 0, out
  assert result["params"] == 41_808_406  # torchvision's fasterrcnn_resnet50_fpn, asserted
  tv_count, jax_count = result["inference"]["detections"]
  assert tv_count == jax_count > 10, out  # same weights, same image: the same detections
  assert result["inference"]["compile_s"] > 0
  assert re.search(r"^\| inference ms / image \| \d+ \(\d+ / \d+\) \| \d+ \(\d+ / \d+\) \| "
                   r"[\d.]+ \| [\d.]+ s \|$", out, re.M), out
  assert "train" not in result


def test_detection_bench_rejects_sizes_torchvision_would_pad():
  with pytest.raises(SystemExit) as e:
    _bench().parse_args(["--height=100"])
  assert e.value.code == 2
