"""jaxseg's CPU-only settings stay on the CPU (issue 18): `platform.default_backend()`
guesses jax's backend without starting it; on a GPU or TPU the XLA:CPU flag is not added
and the local launcher's forced CPU devices are an error."""
import os
import shutil

import pytest

from jaxseg import platform
from jaxseg.errors import ConfigError
from jaxseg.train import multihost


@pytest.mark.parametrize("platforms, expected", [
    ("cpu", "cpu"), ("cuda", "gpu"), ("cuda,cpu", "gpu"), ("rocm", "gpu"), ("gpu", "gpu"),
    ("tpu", "tpu"), (" TPU , cpu", "tpu")])
def test_jax_platforms_decides(monkeypatch, platforms, expected):
  monkeypatch.setenv("JAX_PLATFORMS", platforms)
  assert platform.default_backend() == expected


_HAS_TPU = platform._has_tpu  # pylint: disable=protected-access


def _fake_machine(monkeypatch, tmp_path, installed=(), nvidia=False, tpu=False):
  monkeypatch.delenv("JAX_PLATFORMS", raising=False)
  monkeypatch.setattr(platform, "_installed", lambda module: module in installed)
  node = tmp_path / "nvidiactl"
  if nvidia:
    node.write_text("")
  monkeypatch.setattr(platform, "_NVIDIA_DEVICE_NODES", (str(node),))
  pci = tmp_path / "pci"
  shutil.rmtree(pci, ignore_errors=True)
  for i, (vendor, device) in enumerate([("0x1ae0", "0x0042")] + tpu * [("0x1ae0", "0x006f")]):
    (pci / str(i)).mkdir(parents=True)
    (pci / str(i) / "vendor").write_text(vendor + "\n")
    (pci / str(i) / "device").write_text(device + "\n")
  monkeypatch.setattr(platform, "_has_tpu", lambda: _HAS_TPU(str(pci)))


def test_without_jax_platforms_an_installed_build_and_its_device_decide(monkeypatch, tmp_path):
  _fake_machine(monkeypatch, tmp_path)
  assert platform.default_backend() == "cpu"
  _fake_machine(monkeypatch, tmp_path, installed=("jax_cuda12_plugin",))
  assert platform.default_backend() == "cpu"  # the CUDA build without a GPU: jax uses the CPU
  _fake_machine(monkeypatch, tmp_path, installed=("jax_cuda13_plugin",), nvidia=True)
  assert platform.default_backend() == "gpu"
  _fake_machine(monkeypatch, tmp_path, nvidia=True)
  assert platform.default_backend() == "cpu"  # a GPU, but the CPU build of jax
  _fake_machine(monkeypatch, tmp_path, installed=("libtpu",), tpu=True)
  assert platform.default_backend() == "tpu"
  _fake_machine(monkeypatch, tmp_path, installed=("libtpu",))  # only a gVNIC: no TPU
  assert platform.default_backend() == "cpu"


def test_this_test_session_runs_on_the_cpu():
  assert platform.default_backend() == "cpu"  # conftest: JAX_PLATFORMS=cpu


def test_xla_cpu_flag_is_left_out_on_a_gpu_or_tpu(monkeypatch):
  for platforms in ("cuda", "tpu"):
    monkeypatch.setenv("JAX_PLATFORMS", platforms)
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_autotune_level=2")
    assert not platform.configure_xla_cpu()
    assert os.environ["XLA_FLAGS"] == "--xla_gpu_autotune_level=2"


def test_forced_cpu_devices_on_a_gpu_or_tpu_are_an_error(monkeypatch):
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  multihost.check_forced_cpu_devices("--num_processes=2")  # the CPU: as before
  for platforms, backend in (("cuda", "gpu"), ("tpu", "tpu")):
    monkeypatch.setenv("JAX_PLATFORMS", platforms)
    with pytest.raises(ConfigError) as e:
      multihost.check_forced_cpu_devices("--devices_per_process=2")
    assert str(e.value) == (
        f"--devices_per_process=2 starts local processes on forced CPU devices, but jax here "
        f"runs on {backend}; on GPUs and TPUs start one process per GPU or host with "
        f"--distributed (docs/multihost.md), or set JAX_PLATFORMS=cpu to run the local job "
        f"on the CPU")
