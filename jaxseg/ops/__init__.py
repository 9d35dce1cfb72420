"""Pure array functions without parameters (NHWC). Imports nothing else from jaxseg."""
from jaxseg.ops.resample import depth_to_space
from jaxseg.ops.resample import max_pool
from jaxseg.ops.resample import resize
from jaxseg.ops.resample import space_to_depth

__all__ = ["depth_to_space", "max_pool", "resize", "space_to_depth"]
