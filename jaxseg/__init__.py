"""jaxseg: the vision tasks of CS231n lecture 11 as a JAX/Flax research framework."""
__version__ = "0.1.0"
