"""jaxseg: the vision tasks of CS231n lecture 11 as a JAX/Flax research framework."""
from jaxseg import platform as _platform

__version__ = "0.1.0"

_platform.configure_xla_cpu()  # must precede jax's backend initialization
