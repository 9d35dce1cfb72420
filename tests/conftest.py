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
