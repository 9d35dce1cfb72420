"""Interchange formats in NumPy (COCO run-length encoded masks): the floor below both
`jaxseg.data` and `jaxseg.metrics`. Imports nothing of jaxseg but `jaxseg.errors`, and no
JAX, so the evaluators stay light."""
from jaxseg.formats import rle

__all__ = ["rle"]
