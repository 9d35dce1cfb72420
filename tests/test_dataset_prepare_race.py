"""Two processes that start on a fresh data_dir at the same moment both read the embedded
dataset: its generation is serialised per dataset and config (sources._preparing), so the
second does not fail on the first's final rename (FileExistsError, exit 1)."""
import os
import subprocess
import sys

from conftest import REPO

READ = """
import sys
from jaxseg.data import sources, shapes
ds, n = sources.read_split("shapes", "train", sys.argv[1], generated_offline=True,
                           builder_config=shapes.shapes_config(image_size=32, num_train=96,
                                                               num_validation=8))
print("examples", n, sum(1 for _ in ds))
"""


def test_two_processes_generate_one_dataset_together(tmp_path):
  data_dir = str(tmp_path / "tfds")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  procs = [subprocess.Popen([sys.executable, "-c", READ, data_dir], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for _ in range(4)]
  outs = [p.communicate(timeout=240) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-2000:]
    assert "examples 96 96" in out
  assert os.listdir(os.path.join(data_dir, "shapes", "s32_n96-8_o1-4")) == ["1.1.0"]
