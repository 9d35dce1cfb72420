"""Backend settings jaxseg applies before jax creates its backends.

XLA:CPU (jaxlib 0.10) hands convolutions to YNNPACK by default. Its forward and
input-gradient convolutions are as fast as Eigen's, but the filter gradient is 2-8x slower
(3x3, 8x128x128, 32->32: ~300 ms vs ~70 ms), which made the U-Net train step 1.6-1.8x
slower (measured with bench/train_step.py --variants=jaxseg,xla_default). jaxseg keeps
YNNPACK for dots and reductions (without it BatchNorm's reductions get slower) and leaves
convolutions to Eigen. Hand-written filter gradients (per-tap or im2col matmuls, blocked
batched matmuls) were all slower than Eigen's convolution, so nothing else changes.

These settings concern XLA:CPU only. On a GPU or TPU (`default_backend()` guesses which
backend jax will pick, without starting it) jaxseg leaves XLA_FLAGS alone, and the local
launcher's forced CPU devices (`--num_processes`, `--devices_per_process`) are an error
rather than a silent switch to the CPU (jaxseg.main).
"""
from __future__ import annotations

import glob
import importlib.util
import os

YNN_FUSION_FLAG = "xla_cpu_experimental_ynn_fusion_type"
JAXSEG_YNN_FUSION_TYPES = ("individual_dot", "reduce")
XLA_DEFAULT_YNN_FUSION_TYPES = ("individual_dot", "reduce", "individual_convolution")


# How jax itself finds accelerators (jax/_src/hardware_utils.py): NVIDIA device nodes, and
# TPUs as Google PCI devices with a TPU device id (v2/v3, v4, v5p, v5e, v6e, 7x).
_NVIDIA_DEVICE_NODES = ("/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg")
_GOOGLE_PCI_VENDOR_ID = "0x1ae0"
_TPU_PCI_DEVICE_IDS = ("0x0027", "0x0056", "0x005e", "0x0062", "0x0063", "0x006f", "0x0076")
_GPU_PLATFORMS = ("cuda", "rocm", "gpu")


def _installed(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except (ImportError, ValueError):
    return False


def _has_tpu(pci_devices: str = "/sys/bus/pci/devices") -> bool:
  for vendor in glob.glob(os.path.join(pci_devices, "*", "vendor")):
    try:
      with open(vendor) as f, open(os.path.join(os.path.dirname(vendor), "device")) as g:
        if f.read().strip() == _GOOGLE_PCI_VENDOR_ID and g.read().strip() in _TPU_PCI_DEVICE_IDS:
          return True
    except OSError:
      continue
  return False


def default_backend() -> str:
  """"cpu", "gpu" or "tpu": the backend jax will pick by default, guessed cheaply before
  jax starts (no jax import): the first of JAX_PLATFORMS when set, else "tpu" / "gpu" when
  that build of jax is installed (libtpu; jax-cuda12/13-plugin) and its device is present,
  else "cpu"."""
  platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
  if platforms:
    first = platforms.split(",")[0].strip()
    return "gpu" if first in _GPU_PLATFORMS else first
  if _installed("libtpu") and _has_tpu():
    return "tpu"
  if (any(_installed(f"jax_cuda{v}_plugin") for v in (12, 13))
      and any(os.path.exists(d) for d in _NVIDIA_DEVICE_NODES)):
    return "gpu"
  return "cpu"


def cpu_compiler_options(fusion_types=JAXSEG_YNN_FUSION_TYPES) -> dict[str, str]:
  """The same setting for one compile: `jitted.lower(...).compile(compiler_options=...)`."""
  return {YNN_FUSION_FLAG: ",".join("LIBRARY_FUSION_TYPE_" + t.upper() for t in fusion_types)}


def configure_xla_cpu() -> bool:
  """Add jaxseg's XLA:CPU setting to XLA_FLAGS unless the user set that flag already.

  XLA reads XLA_FLAGS once, when jax first creates a backend; returns whether the setting
  is (or will be) in effect. Nothing changes when jax will run on a GPU or TPU
  (`default_backend()`): the setting only concerns XLA:CPU.
  """
  if default_backend() != "cpu":
    return False
  flags = os.environ.get("XLA_FLAGS", "")
  wanted = f"--{YNN_FUSION_FLAG}={','.join(JAXSEG_YNN_FUSION_TYPES)}"
  if YNN_FUSION_FLAG in flags:
    return wanted in flags.split()
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    if xla_bridge.backends_are_initialized():
      return False
  except (ImportError, AttributeError):
    pass
  os.environ["XLA_FLAGS"] = f"{flags} {wanted}".strip()
  return True
