"""Pure array functions without parameters (NHWC). Imports nothing else from jaxseg but
`jaxseg.errors` (for one-line user errors)."""
from jaxseg.ops import anchors
from jaxseg.ops import boxes
from jaxseg.ops import matching
from jaxseg.ops import nms
from jaxseg.ops import proposals
from jaxseg.ops import roi
from jaxseg.ops.resample import crop_and_resize
from jaxseg.ops.resample import depth_to_space
from jaxseg.ops.resample import max_pool
from jaxseg.ops.resample import resize
from jaxseg.ops.resample import space_to_depth
from jaxseg.ops.upsample import bed_of_nails_upsample
from jaxseg.ops.upsample import bilinear_upsample
from jaxseg.ops.upsample import conv
from jaxseg.ops.upsample import conv_transpose
from jaxseg.ops.upsample import depthwise_conv
from jaxseg.ops.upsample import max_pool_with_argmax
from jaxseg.ops.upsample import max_unpool
from jaxseg.ops.upsample import nearest_upsample
from jaxseg.ops.upsample import output_size
from jaxseg.ops.upsample import resize_conv
from jaxseg.ops.upsample import subpixel_conv
from jaxseg.ops.upsample import transpose_output_size

__all__ = [
    "anchors", "bed_of_nails_upsample", "bilinear_upsample", "boxes", "matching", "nms", "proposals", "roi", "conv", "conv_transpose",
    "crop_and_resize", "depth_to_space",
    "depthwise_conv",
    "max_pool", "max_pool_with_argmax", "max_unpool", "nearest_upsample", "output_size",
    "resize", "resize_conv", "space_to_depth", "subpixel_conv", "transpose_output_size",
]
