"""Test set-up: 4 forced CPU devices, a compilation cache
shared by the session, and one tiny shapes dataset built once per session."""
import os
import tempfile

os.environ["JAX_PLATFORMS"] = "cpu"
# (--xla_backend_optimization_level=0 would halve compile times but produced NaN
# gradients in the tiny U-Net, so compiles stay optimized and cached instead.)
os.environ["XLA_FLAGS"] = " ".join([
    os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=4"])
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAXSEG_CACHE_DIR", tempfile.mkdtemp(prefix="jaxseg-xla-cache-"))

import jax  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.set_visible_devices([], "GPU")
jax.config.update("jax_compilation_cache_dir", os.environ["JAXSEG_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNET_CONFIG = os.path.join(REPO, "experiments", "segmentation", "unet_shapes.py")


def load_module(name: str, path: str):
  """The Python file at `path`, imported as a module named `name` (not in sys.modules)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_bench(name: str):
  """bench/<name>.py as a module (bench scripts are not a package)."""
  return load_module(f"bench_{name}", os.path.join(REPO, "bench", f"{name}.py"))


def load_config(path=UNET_CONFIG, arg="tiny"):
  return load_module("experiment_config", path).get_config(arg)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """A data_dir holding the tiny shapes dataset (built once per session)."""
  path = str(tmp_path_factory.mktemp("tfds"))
  config = load_config()
  with config.unlocked():
    config.dataset.data_dir = path
  from jaxseg.data import sources  # pylint: disable=g-import-not-at-top
  sources.load_split(config.dataset, "train")
  return path


@pytest.fixture
def tiny_config(data_dir):
  """The tiny U-Net shapes config (locked) pointing at the session's data_dir."""
  config = load_config()
  config.dataset.data_dir = data_dir
  return config


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "multihost: launches multi-process jobs as subprocesses (minutes on a "
      "loaded 2-core machine); CI runs them, `-m 'not multihost'` skips them locally")


# -- order: the slowest tests first in every pytest-xdist worker's share ------------------
SLOW_TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "slow_tests.txt")


def _slow_estimates() -> dict:
  """tests/slow_tests.txt: lines of pytest's `--durations` report ("12.3s call nodeid"),
  the slowest tests of an idle run -> {nodeid: seconds}."""
  out = {}
  if os.path.exists(SLOW_TESTS):
    with open(SLOW_TESTS) as f:
      for line in f:
        parts = line.split()
        if len(parts) == 3 and parts[1] == "call" and parts[0].endswith("s"):
          out[parts[2]] = float(parts[0][:-1])
  return out


def pytest_collection_modifyitems(config, items):
  """Longest processing time first: pytest-xdist's worksteal scheduler gives each of its n
  workers one contiguous share of the collection (sizes remaining // workers left), and
  idle workers steal from the end of the others' queues. The known slow tests
  (`_slow_estimates`) are dealt to the shares greedily, longest first onto the share with
  the least slow time, and each share starts with them: no long test is left to start
  last, with nothing left to steal beside it. Otherwise the order is pytest's."""
  del config
  workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
  estimates = _slow_estimates()
  if workers < 2 or not estimates:
    return
  slow = sorted((it for it in items if it.nodeid in estimates),
                key=lambda it: -estimates[it.nodeid])
  rest = [it for it in items if it.nodeid not in estimates]
  sizes, left = [], len(items)
  for k in range(workers):
    sizes.append(left // (workers - k))
    left -= sizes[-1]
  shares, load = [[] for _ in sizes], [0.0] * workers
  for it in slow:
    k = min((k for k in range(workers) if len(shares[k]) < sizes[k]), key=lambda k: load[k])
    shares[k].append(it)
    load[k] += estimates[it.nodeid]
  for k, share in enumerate(shares):
    take = sizes[k] - len(share)
    share.extend(rest[:take])
    del rest[:take]
  items[:] = [it for share in shares for it in share]
