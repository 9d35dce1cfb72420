"""Backend settings jaxseg applies before jax creates its backends.

XLA:CPU (jaxlib 0.10) hands convolutions to YNNPACK by default. Its forward and
input-gradient convolutions are as fast as Eigen's, but the filter gradient is 2-8x slower
(3x3, 8x128x128, 32->32: ~300 ms vs ~70 ms), which made the U-Net train step 1.6-1.8x
slower (measured with bench/train_step.py --variants=jaxseg,xla_default). jaxseg keeps
YNNPACK for dots and reductions (without it BatchNorm's reductions get slower) and leaves
convolutions to Eigen. Hand-written filter gradients (per-tap or im2col matmuls, blocked
batched matmuls) were all slower than Eigen's convolution, so nothing else changes.
"""
from __future__ import annotations

import os

YNN_FUSION_FLAG = "xla_cpu_experimental_ynn_fusion_type"
JAXSEG_YNN_FUSION_TYPES = ("individual_dot", "reduce")
XLA_DEFAULT_YNN_FUSION_TYPES = ("individual_dot", "reduce", "individual_convolution")


def cpu_compiler_options(fusion_types=JAXSEG_YNN_FUSION_TYPES) -> dict[str, str]:
  """The same setting for one compile: `jitted.lower(...).compile(compiler_options=...)`."""
  return {YNN_FUSION_FLAG: ",".join("LIBRARY_FUSION_TYPE_" + t.upper() for t in fusion_types)}


def configure_xla_cpu() -> bool:
  """Add jaxseg's XLA:CPU setting to XLA_FLAGS unless the user set that flag already.

  XLA reads XLA_FLAGS once, when jax first creates a backend; returns whether the setting
  is (or will be) in effect.
  """
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
