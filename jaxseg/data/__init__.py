"""Datasets: jaxseg's own TFDS builders (registered on import), adapters for catalog
datasets, tf.data preprocessing, and batches as globally sharded jax.Arrays."""
from jaxseg.data import shapes  # noqa: F401  (registers the `shapes` TFDS builder)
