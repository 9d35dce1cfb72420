"""2-D convolution (NHWC input, HWIO kernel) with a backend-chosen lowering.

PLACEHOLDER - being benchmarked.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax import lax

_DN = ("NHWC", "HWIO", "NHWC")


def cpu_compiler_options(variant="dot,reduce") -> dict[str, str]:
  v = ",".join("LIBRARY_FUSION_TYPE_" + t.upper() for t in variant.replace("dot", "individual_dot").split(","))
  return {"xla_cpu_experimental_ynn_fusion_type": v}


def _pair(v):
  return (v, v) if isinstance(v, int) else tuple(v)


def _lax_conv(x, kernel, stride, padding, dilation):
  return lax.conv_general_dilated(x, kernel, stride, padding, rhs_dilation=dilation,
                                  dimension_numbers=_DN)


def _dw_taps(x, dy, kh, kw):
  n, h, w, c = x.shape
  co = dy.shape[-1]
  ph, pw = (kh - 1) // 2, (kw - 1) // 2
  xp = jnp.pad(x, ((0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)))
  d = dy.reshape(-1, co)
  out = []
  for i in range(kh):
    for j in range(kw):
      s = xp[:, i:i + h, j:j + w, :].reshape(-1, c)
      out.append(lax.dot_general(s, d, (((0,), (0,)), ((), ()))))
  return jnp.stack(out).reshape(kh, kw, c, co)


@jax.custom_vjp
def _conv_same_taps(x, kernel):
  return _lax_conv(x, kernel, (1, 1), "SAME", (1, 1))


def _taps_fwd(x, kernel):
  return _conv_same_taps(x, kernel), (x, kernel)


def _taps_bwd(res, dy):
  x, kernel = res
  _, vjp_x = jax.vjp(lambda x: _lax_conv(x, kernel, (1, 1), "SAME", (1, 1)), x)
  dx, = vjp_x(dy)
  return dx, _dw_taps(x, dy, kernel.shape[0], kernel.shape[1]).astype(kernel.dtype)


_conv_same_taps.defvjp(_taps_fwd, _taps_bwd)

IMPLS = ("auto", "lax", "taps")


def conv2d(x, kernel, stride=1, padding="SAME", dilation=1, impl="auto"):
  stride, dilation = _pair(stride), _pair(dilation)
  if impl == "auto":
    impl = "lax"
  if impl == "lax":
    return _lax_conv(x, kernel, stride, padding, dilation)
  if impl == "taps":
    kh, kw = kernel.shape[:2]
    if (stride == (1, 1) and dilation == (1, 1) and padding == "SAME" and kh % 2 and kw % 2):
      return _conv_same_taps(x, kernel)
    return _lax_conv(x, kernel, stride, padding, dilation)
  raise ValueError(impl)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None,
                         impl="auto"):
  simple = (lhs.ndim == 4 and (lhs_dilation is None or tuple(lhs_dilation) == (1, 1))
            and feature_group_count == 1 and batch_group_count == 1 and precision is None
            and preferred_element_type is None and
            (dimension_numbers is None or lax.conv_dimension_numbers(
                lhs.shape, rhs.shape, dimension_numbers) == lax.conv_dimension_numbers(
                    lhs.shape, rhs.shape, _DN)))
  if not simple:
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                    rhs_dilation, dimension_numbers, feature_group_count,
                                    batch_group_count, precision, preferred_element_type)
  return conv2d(lhs, rhs, tuple(window_strides), padding,
                tuple(rhs_dilation) if rhs_dilation is not None else 1, impl=impl)
