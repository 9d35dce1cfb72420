"""Resampling ops and the 2x transpose convolution against references."""
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import ops
from jaxseg.models.layers import TransposeConv2x


def _reduce_window_max(x):
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def test_max_pool_matches_reduce_window_values_and_gradient():
  x = jax.random.normal(jax.random.key(0), (2, 8, 6, 3))  # continuous: no ties
  np.testing.assert_array_equal(ops.max_pool(x, 2), _reduce_window_max(x))
  g = jax.random.normal(jax.random.key(1), (2, 4, 3, 3))
  grad = jax.vjp(lambda v: ops.max_pool(v, 2), x)[1](g)[0]
  ref = jax.vjp(_reduce_window_max, x)[1](g)[0]
  np.testing.assert_allclose(grad, ref)


def test_max_pool_lecture_example():
  x = jnp.array([[1, 2, 6, 3], [3, 5, 2, 1], [1, 2, 2, 1], [7, 3, 4, 8]], jnp.float32)
  np.testing.assert_array_equal(ops.max_pool(x[None, :, :, None], 2)[0, :, :, 0],
                                [[5, 6], [7, 8]])


def test_depth_to_space_layout_and_inverse():
  x = jnp.arange(2 * 3 * 2 * 8, dtype=jnp.float32).reshape(2, 3, 2, 8)
  y = ops.depth_to_space(x, 2)
  assert y.shape == (2, 6, 4, 2)
  # channel (i * 2 + j) * C + c of input pixel (h, w) lands at (2h + i, 2w + j), channel c
  for i in range(2):
    for j in range(2):
      np.testing.assert_array_equal(y[:, i::2, j::2, :], x[..., (i * 2 + j) * 2:(i * 2 + j + 1) * 2])
  np.testing.assert_array_equal(ops.space_to_depth(y, 2), x)


def test_transpose_conv_2x_matches_definition_and_lax():
  x = jax.random.normal(jax.random.key(0), (2, 5, 6, 3))
  module = TransposeConv2x(4)
  variables = module.init(jax.random.key(1), x)
  variables = jax.tree.map(lambda v: v + 0.1, variables)  # non-zero bias
  kernel, bias = variables["params"]["kernel"], variables["params"]["bias"]
  expected = np.zeros((2, 10, 12, 4), np.float32)
  for i in range(2):
    for j in range(2):
      expected[:, i::2, j::2] = np.einsum("nhwc,co->nhwo", x, kernel[i, j]) + bias
  np.testing.assert_allclose(module.apply(variables, x), expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(TransposeConv2x(4, impl="lax").apply(variables, x), expected,
                             rtol=1e-5, atol=1e-5)
