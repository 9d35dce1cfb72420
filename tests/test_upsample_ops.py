"""Upsampling, unpooling and (transpose) convolution ops: the lecture's worked examples
exactly, then each op against a plain NumPy loop reference and its gradients."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import ops
from jaxseg.ops import upsample

RTOL = ATOL = 1e-5


def _grid(rows):
  """Rows of a single-channel image -> [1, H, W, 1] float32."""
  return jnp.asarray(rows, jnp.float32)[None, :, :, None]


def _normal(seed, shape):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _small_ints(seed, shape, high):
  """Values in {0, ..., high-1}: many ties inside pooling windows."""
  return np.random.default_rng(seed).integers(0, high, shape).astype(np.float32)


# --- NumPy references (loops over the definition, no lax) ---------------------------------

def conv_ref(x, k, stride, padding, dilation=1):
  """Cross-correlation: out[o] = sum_{i,c} xpad[o*S + i*d, c] k[i, c, :], per axis."""
  (sh, sw), (ph, pw), (dh, dw) = (upsample._pair(v, "") for v in (stride, padding, dilation))
  x = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
  kh, kw, _, cout = k.shape
  n, hp, wp, _ = x.shape
  ho, wo = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
  out = np.zeros((n, ho, wo, cout), np.float64)
  for oh, ow, i, j in itertools.product(range(ho), range(wo), range(kh), range(kw)):
    out[:, oh, ow] += x[:, oh * sh + i * dh, ow * sw + j * dw] @ k[i, j]
  return out


def conv_same_ref(x, k):
  """Stride-1 'SAME' convolution: (k-1)//2 zeros before, k//2 after (lax/TF convention)."""
  kh, kw = k.shape[:2]
  x = np.pad(x, ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)))
  return conv_ref(x, k, 1, 0)


def conv_transpose_ref(x, k, stride, padding, output_padding=0, dilation=1):
  """Scatter definition: input pixel (h, w) adds x[h, w] @ k[i, j] at (h*S + i*d, w*S + j*d)
  of the full output; then P rows/cols are cropped from each side (output_padding at the
  bottom/right is kept)."""
  n, h, w, _ = x.shape
  kh, kw, _, cout = k.shape
  s, p, op, d = stride, padding, output_padding, dilation
  full = np.zeros((n, (h - 1) * s + d * (kh - 1) + 1 + op, (w - 1) * s + d * (kw - 1) + 1 + op,
                   cout), np.float64)
  for hh, ww, i, j in itertools.product(range(h), range(w), range(kh), range(kw)):
    full[:, hh * s + i * d, ww * s + j * d] += x[:, hh, ww] @ k[i, j]
  return full[:, p:full.shape[1] - p, p:full.shape[2] - p]


def pool_argmax_ref(x, window, stride):
  n, h, w, c = x.shape
  ho, wo = (h - window) // stride + 1, (w - window) // stride + 1
  pooled = np.zeros((n, ho, wo, c), x.dtype)
  switches = np.zeros((n, ho, wo, c), np.int32)
  for b, oh, ow, ch in itertools.product(range(n), range(ho), range(wo), range(c)):
    best = None
    for i, j in itertools.product(range(window), range(window)):  # row-major; strict > keeps first
      r, q = oh * stride + i, ow * stride + j
      if best is None or x[b, r, q, ch] > best:
        best, switches[b, oh, ow, ch] = x[b, r, q, ch], r * w + q
    pooled[b, oh, ow, ch] = best
  return pooled, switches


def unpool_ref(x, switches, size):
  n, h, w, c = x.shape
  out = np.zeros((n, size[0] * size[1], c), np.float64)
  for b, hh, ww, ch in itertools.product(range(n), range(h), range(w), range(c)):
    out[b, switches[b, hh, ww, ch], ch] += x[b, hh, ww, ch]
  return out.reshape(n, size[0], size[1], c)


def linear_1d_ref(v, factor, convention):
  n = len(v)
  out = []
  for o in range(n * factor):
    if convention == "half_pixel":
      src = min(max((o + 0.5) / factor - 0.5, 0.0), n - 1.0)
    elif convention == "align_corners":
      src = o * (n - 1) / (n * factor - 1) if n * factor > 1 else 0.0
    else:
      src = o / factor
    lo = min(int(np.floor(src)), max(n - 2, 0))
    hi = min(lo + 1, n - 1)
    out.append(v[lo] * (1 - (src - lo)) + v[hi] * (src - lo))
  return np.array(out)


def bilinear_ref(x, factor, convention):
  x = np.apply_along_axis(linear_1d_ref, 1, x, factor, convention)
  return np.apply_along_axis(linear_1d_ref, 2, x, factor, convention)


def depth_to_space_ref(y, f):
  n, h, w, cf = y.shape
  c = cf // (f * f)
  out = np.zeros((n, h * f, w * f, c), y.dtype)
  for hh, ww, i, j in itertools.product(range(h), range(w), range(f), range(f)):
    out[:, hh * f + i, ww * f + j] = y[:, hh, ww, (i * f + j) * c:(i * f + j + 1) * c]
  return out


def _conv_vjp(y, kernel, stride, padding, output_padding, dilation=1):
  """VJP at cotangent y of z -> conv(z, kernel with I/O swapped): what conv_transpose is."""
  size = [ops.transpose_output_size(y.shape[1 + a], kernel.shape[a], *(
      upsample._pair(v, "")[a] for v in (stride, padding, output_padding, dilation)))
          for a in range(2)]
  z = jnp.zeros((y.shape[0], *size, kernel.shape[3]), y.dtype)
  swapped = jnp.swapaxes(kernel, 2, 3)
  out, vjp = jax.vjp(lambda v: ops.conv(v, swapped, stride, padding, dilation), z)
  assert out.shape == y.shape
  return vjp(y)[0]


def _assert_transpose_is_vjp(y, kernel, stride, padding, output_padding, dilation=1):
  np.testing.assert_allclose(
      _conv_vjp(y, kernel, stride, padding, output_padding, dilation),
      ops.conv_transpose(y, kernel, stride, padding, output_padding, dilation),
      rtol=1e-4, atol=1e-4)


# --- The lecture's worked examples (LECTURE.md, semantic segmentation, item 4) -------------

def test_lecture_nearest_neighbour():
  np.testing.assert_array_equal(
      ops.nearest_upsample(_grid([[1, 2], [3, 4]]))[0, :, :, 0],
      [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])


def test_lecture_bed_of_nails():
  np.testing.assert_array_equal(
      ops.bed_of_nails_upsample(_grid([[1, 2], [3, 4]]))[0, :, :, 0],
      [[1, 0, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]])


@pytest.mark.parametrize("window_arg", [2, None])  # one-hot fast path, scatter path
def test_lecture_max_pool_then_max_unpool(window_arg):
  pooled, switches = jax.jit(ops.max_pool_with_argmax, static_argnums=1)(
      _grid([[1, 2, 6, 3], [3, 5, 2, 1], [1, 2, 2, 1], [7, 3, 4, 8]]), 2)
  np.testing.assert_array_equal(pooled[0, :, :, 0], [[5, 6], [7, 8]])
  np.testing.assert_array_equal(switches[0, :, :, 0], [[1 * 4 + 1, 0 * 4 + 2],
                                                       [3 * 4 + 0, 3 * 4 + 3]])
  unpooled = jax.jit(lambda v, s: ops.max_unpool(v, s, (4, 4), window=window_arg))(
      _grid([[1, 2], [3, 4]]), switches)
  np.testing.assert_array_equal(unpooled[0, :, :, 0],
                                [[0, 0, 2, 0], [0, 1, 0, 0], [0, 0, 0, 0], [3, 0, 0, 4]])


def test_lecture_bilinear_is_the_asymmetric_convention():
  row = jnp.array([1.0, 2.0]).reshape(1, 1, 2, 1)
  y = ops.bilinear_upsample(row, 2, convention="asymmetric")
  np.testing.assert_allclose(y[0, 0, :, 0], [1, 1.5, 2, 2.5])
  np.testing.assert_allclose(y[0, 1, :, 0], [1, 1.5, 2, 2.5])  # H: 1 row stays constant
  # the other conventions give other numbers for the same input
  np.testing.assert_allclose(ops.bilinear_upsample(row, 2)[0, 0, :, 0], [1, 1.25, 1.75, 2])
  np.testing.assert_allclose(ops.bilinear_upsample(row, 2, "align_corners")[0, 0, :, 0],
                             [1, 4 / 3, 5 / 3, 2], rtol=1e-6)


def _as_1d(values):
  """A 1-D signal -> [1, 1, L, 1] (convolve along W only)."""
  return jnp.asarray(values, jnp.float32).reshape(1, 1, -1, 1)


def test_lecture_convolution_as_matrix_multiplication_stride_1():
  x, y, z, a, b, c, d = (float(v) for v in _normal(0, (7,)))
  kernel = jnp.array([x, y, z], jnp.float32).reshape(1, 3, 1, 1)
  big_x = np.array([[x, y, z, 0, 0, 0], [0, x, y, z, 0, 0],
                    [0, 0, x, y, z, 0], [0, 0, 0, x, y, z]])
  padded = np.array([0, a, b, c, d, 0])
  out = ops.conv(_as_1d([a, b, c, d]), kernel, stride=1, padding=(0, 1)).ravel()
  np.testing.assert_allclose(out, big_x @ padded, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(out, [a*y + b*z, a*x + b*y + c*z, b*x + c*y + d*z, c*x + d*y],
                             rtol=RTOL, atol=ATOL)
  # transpose convolution multiplies by X^T: padding 0 gives all 6 entries ...
  full = ops.conv_transpose(_as_1d([a, b, c, d]), kernel, stride=1, padding=0).ravel()
  np.testing.assert_allclose(full, big_x.T @ np.array([a, b, c, d]), rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(full, [a*x, a*y + b*x, a*z + b*y + c*x, b*z + c*y + d*x,
                                    c*z + d*y, d*z], rtol=RTOL, atol=ATOL)
  # ... padding 1 (the adjoint of the padded conv) the middle 4
  mid = ops.conv_transpose(_as_1d([a, b, c, d]), kernel, stride=1, padding=(0, 1)).ravel()
  np.testing.assert_allclose(mid, (big_x.T @ np.array([a, b, c, d]))[1:5], rtol=RTOL, atol=ATOL)
  # with stride 1 it is a normal convolution with the flipped kernel (other padding)
  np.testing.assert_allclose(
      mid, ops.conv(_as_1d([a, b, c, d]), kernel[:, ::-1], padding=(0, 1)).ravel(),
      rtol=RTOL, atol=ATOL)
  _assert_transpose_is_vjp(_as_1d([a, b, c, d]), kernel, 1, (0, 1), 0)


def test_lecture_convolution_as_matrix_multiplication_stride_2():
  x, y, z, a, b, c, d = (float(v) for v in _normal(1, (7,)))
  kernel = jnp.array([x, y, z], jnp.float32).reshape(1, 3, 1, 1)
  big_x = np.array([[x, y, z, 0, 0, 0], [0, 0, x, y, z, 0]])
  out = ops.conv(_as_1d([a, b, c, d]), kernel, stride=2, padding=(0, 1)).ravel()
  np.testing.assert_allclose(out, big_x @ np.array([0, a, b, c, d, 0]), rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(out, [a*y + b*z, b*x + c*y + d*z], rtol=RTOL, atol=ATOL)
  xt_ab = big_x.T @ np.array([a, b])
  np.testing.assert_allclose(xt_ab, [a*x, a*y, a*z + b*x, b*y, b*z, 0], rtol=RTOL, atol=ATOL)
  # padding 0: (2-1)*2 + 3 = 5 entries; the 6th (always 0) needs output_padding=1
  five = ops.conv_transpose(_as_1d([a, b]), kernel, stride=2).ravel()
  np.testing.assert_allclose(five, xt_ab[:5], rtol=RTOL, atol=ATOL)
  six = ops.conv_transpose(_as_1d([a, b]), kernel, stride=2, output_padding=(0, 1)).ravel()
  np.testing.assert_allclose(six, xt_ab, rtol=RTOL, atol=ATOL)
  # padding 1 crops one from each end; output_padding=1 recovers the input length 4
  mid = ops.conv_transpose(_as_1d([a, b]), kernel, stride=2, padding=(0, 1),
                           output_padding=(0, 1)).ravel()
  np.testing.assert_allclose(mid, xt_ab[1:5], rtol=RTOL, atol=ATOL)
  _assert_transpose_is_vjp(_as_1d([a, b]), kernel, 2, (0, 1), (0, 1))


def test_lecture_transpose_conv_3x3_stride_2_pad_1_2x2_to_4x4():
  # (2-1)*2 - 2*1 + 3 = 3, so 2x2 -> 4x4 needs output_padding=1 (as in PyTorch).
  kernel = _normal(2, (3, 3, 1, 1))
  x = _normal(3, (1, 2, 2, 1))
  assert ops.conv_transpose(x, kernel, 2, 1).shape == (1, 3, 3, 1)
  y = ops.conv_transpose(x, kernel, 2, 1, output_padding=1)
  assert y.shape == (1, 4, 4, 1)
  np.testing.assert_allclose(y, conv_transpose_ref(x, kernel, 2, 1, 1), rtol=RTOL, atol=ATOL)
  # the input weights copies of the filter, moved 2 output pixels per input pixel; overlaps sum
  k = kernel[:, :, 0, 0]
  one_hot = np.zeros((1, 2, 2, 1), np.float32)
  one_hot[0, 0, 0, 0] = 1.0
  copy = np.zeros((5, 5))
  copy[:3, :3] = k  # full (uncropped) output, then pad 1 crops the first row/column
  np.testing.assert_allclose(ops.conv_transpose(one_hot, kernel, 2, 1, 1)[0, :, :, 0],
                             copy[1:5, 1:5], rtol=RTOL, atol=ATOL)
  ones = np.ones((1, 2, 2, 1), np.float32)
  full = np.zeros((5, 5))
  for h, w in itertools.product(range(2), range(2)):
    full[2 * h:2 * h + 3, 2 * w:2 * w + 3] += k
  np.testing.assert_allclose(ops.conv_transpose(ones, kernel, 2, 1, 1)[0, :, :, 0],
                             full[1:5, 1:5], rtol=RTOL, atol=ATOL)
  _assert_transpose_is_vjp(x, kernel, 2, 1, 1)


def test_lecture_output_size_rule():
  assert ops.output_size(4, 3, 1, 1) == (4 - 3 + 2) // 1 + 1 == 4
  assert ops.output_size(4, 3, 2, 1) == 2
  assert ops.output_size(7, 3, 1, 0, dilation=2) == 3  # effective kernel 5
  assert ops.transpose_output_size(2, 3, 2, 1, output_padding=1) == 4
  assert ops.transpose_output_size(4, 3, 1, 1) == 4
  assert ops.transpose_output_size(3, 4, 2, 1) == 6
  for n in range(1, 9):  # stride-S conv maps each of the S transpose sizes back to n
    for op in range(3):
      assert ops.output_size(ops.transpose_output_size(n, 3, 3, 1, op), 3, 3, 1) == n


@pytest.mark.parametrize("call,pattern", [
    (lambda: ops.output_size(2, 5, 1, 1), "kernel 5 .* does not fit an input of size 2"),
    (lambda: ops.output_size(4, 3, 0, 1), "stride=0"),
    (lambda: ops.output_size(4, 3, 1, -1), "padding=-1"),
    (lambda: ops.transpose_output_size(4, 3, 2, 1, output_padding=2), "output_padding=2"),
    (lambda: ops.transpose_output_size(1, 1, 1, 1), "output size -1"),
    (lambda: ops.conv(jnp.ones((1, 2, 2, 1)), jnp.ones((3, 3, 1, 1))), "does not fit"),
    (lambda: ops.conv_transpose(jnp.ones((1, 2, 2, 3)), jnp.ones((2, 2, 2, 1))),
     "expects 2 input channels"),
    (lambda: ops.conv_transpose(jnp.ones((1, 2, 2, 1)), jnp.ones((3, 3, 1, 1)), 2,
                                impl="depth_to_space"), "depth_to_space"),
    (lambda: ops.bilinear_upsample(jnp.ones((1, 2, 2, 1)), 2, "cubic"), "unknown convention"),
    (lambda: ops.subpixel_conv(jnp.ones((1, 2, 2, 1)), jnp.ones((3, 3, 1, 6))), "multiple"),
    (lambda: ops.resize_conv(jnp.ones((1, 2, 2, 1)), jnp.ones((3, 3, 1, 1)), method="area"),
     "unknown method"),
])
def test_clear_errors(call, pattern):
  with pytest.raises(ValueError, match=pattern):
    call()


# --- Each op against its NumPy reference (each case one jit compile: fast tests) -----------

def test_nearest_and_bed_of_nails_random():
  x = _normal(4, (2, 3, 5, 3))
  for factor in (2, 3):
    near, nails = jax.jit(lambda v, f=factor: (ops.nearest_upsample(v, f),
                                               ops.bed_of_nails_upsample(v, f)))(x)
    np.testing.assert_array_equal(near, np.repeat(np.repeat(x, factor, 1), factor, 2))
    expected = np.zeros((2, 3 * factor, 5 * factor, 3), np.float32)
    expected[:, ::factor, ::factor] = x
    np.testing.assert_array_equal(nails, expected)


@pytest.mark.parametrize("shape,window,stride", [
    ((2, 6, 8, 3), 2, None), ((2, 7, 5, 2), 2, 2), ((1, 9, 9, 2), 3, 3), ((2, 7, 6, 3), 3, 2),
    ((2, 6, 5, 2), 2, 1), ((2, 9, 8, 2), 2, 3)])
def test_max_pool_with_argmax_random_and_ties(shape, window, stride):
  # continuous values (no ties), and small integers (many ties: the first max in row-major
  # window order wins)
  for x in (_normal(5, shape),
            _small_ints(6, shape, 3)):
    (pooled, switches), reference = jax.jit(
        lambda v: (ops.max_pool_with_argmax(v, window, stride), ops.max_pool(v, window, stride)))(x)
    ref_pooled, ref_switches = pool_argmax_ref(x, window, stride or window)
    np.testing.assert_array_equal(pooled, ref_pooled)
    np.testing.assert_array_equal(pooled, reference)
    np.testing.assert_array_equal(switches, ref_switches)
    assert switches.dtype == jnp.int32


def test_argmax_of_a_constant_window_is_its_top_left():
  for window, stride in [(2, 2), (3, 2)]:
    _, switches = jax.jit(lambda v, k=window, s=stride: ops.max_pool_with_argmax(v, k, s))(
        jnp.ones((1, 7, 7, 1)))
    oh, ow = np.meshgrid(*(np.arange(k) for k in switches.shape[1:3]), indexing="ij")
    np.testing.assert_array_equal(switches[0, :, :, 0], oh * stride * 7 + ow * stride)


def test_max_pool_general_path_equals_fast_path_on_non_overlapping_windows():
  for seed, window in [(7, 2), (8, 3)]:
    x = _small_ints(seed, (2, 9, 6, 3), 4)
    ho, wo = 9 // window, 6 // window
    fast, general = jax.jit(lambda v, k=window, a=ho, b=wo: (
        upsample._blocks_max_argmax(v, k, a, b), upsample._slices_max_argmax(v, k, k, a, b)))(x)
    for a, b in zip(fast, general):
      np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape,window,stride", [
    ((2, 6, 8, 3), 2, 2), ((2, 7, 5, 2), 2, 2), ((1, 9, 6, 2), 3, 3), ((2, 7, 6, 3), 3, 2),
    ((2, 5, 5, 2), 2, 1)])
def test_max_unpool_random_and_gradient(shape, window, stride):
  x = _normal(9, shape)
  pooled, switches = jax.jit(lambda v: ops.max_pool_with_argmax(v, window, stride))(x)
  values, size = _normal(10, pooled.shape), shape[1:3]
  g = _normal(11, (shape[0],) + size + (shape[3],))
  n, c = shape[0], shape[3]
  # d/d values of <unpool(values), g> = g read at the switches
  grad_ref = g.reshape(n, -1, c)[np.arange(n)[:, None, None, None], np.asarray(switches),
                                 np.arange(c)]
  for win in [None] + ([window] if stride == window else []):  # scatter-add, one-hot
    def unpool_and_grad(v, p, win=win):
      unpool = lambda u: ops.max_unpool(u, switches, size, window=win)
      return unpool(v), jax.grad(lambda u: jnp.sum(unpool(u) * g))(v), unpool(p)
    unpooled, grad, back = jax.jit(unpool_and_grad)(values, pooled)
    np.testing.assert_allclose(unpooled, unpool_ref(values, np.asarray(switches), size),
                               rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(grad, grad_ref, rtol=RTOL, atol=ATOL)
    if stride == window:  # unpooling the pooled values puts each max back where it was
      kept = np.asarray(back) != 0
      np.testing.assert_array_equal(np.asarray(back)[kept], x[kept])
      assert kept.sum() == pooled.size


@pytest.mark.parametrize("shape,kernel,stride,padding,dilation", [
    ((2, 7, 6, 3), (3, 3), 1, 1, 1), ((2, 8, 9, 2), (3, 3), 2, 1, 1),
    ((1, 9, 7, 2), (4, 2), 3, 2, 1), ((2, 9, 9, 1), (3, 3), 1, 0, 2),
    ((2, 10, 8, 3), (2, 3), 2, (1, 0), 2)])
def test_conv_random(shape, kernel, stride, padding, dilation):
  x, k = _normal(12, shape), _normal(13, kernel + (shape[-1], 4))
  y = jax.jit(lambda a, b: ops.conv(a, b, stride, padding, dilation))(x, k)
  np.testing.assert_allclose(y, conv_ref(x, k, stride, padding, dilation), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape,kernel,stride,padding,output_padding,dilation", [
    ((2, 3, 4, 3), 1, 1, 0, 0, 1), ((2, 3, 4, 3), 2, 2, 0, 0, 1), ((2, 3, 3, 2), 3, 3, 0, 0, 1),
    ((2, 3, 4, 3), 3, 2, 1, 1, 1), ((1, 4, 3, 2), 4, 2, 1, 0, 1), ((2, 2, 3, 3), 3, 1, 1, 0, 1),
    ((1, 3, 3, 2), 4, 3, 2, 2, 1), ((2, 3, 2, 2), 3, 2, 0, 1, 2), ((1, 4, 4, 1), 2, 1, 1, 0, 2),
    ((1, 4, 4, 2), 3, 2, 3, 1, 1)])  # the last has P > F - 1 (negative lax padding)
def test_conv_transpose_random_and_is_the_vjp_of_conv(shape, kernel, stride, padding,
                                                      output_padding, dilation):
  x, k = _normal(14, shape), _normal(15, (kernel, kernel, shape[-1], 5))
  args = (stride, padding, output_padding, dilation)
  y, y_lax, y_vjp = jax.jit(lambda a, b: (
      ops.conv_transpose(a, b, *args), ops.conv_transpose(a, b, *args, impl="lax"),
      _conv_vjp(a, b, *args)))(x, k)
  for axis in (1, 2):
    assert y.shape[axis] == ops.transpose_output_size(shape[axis], kernel, *args)
  np.testing.assert_allclose(y, conv_transpose_ref(x, k, *args), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(y_lax, y, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(y_vjp, y, rtol=1e-4, atol=1e-4)


def test_conv_transpose_gradients_of_both_impls():
  x, k, g = _normal(18, (2, 3, 3, 2)), _normal(19, (2, 2, 2, 3)), _normal(20, (2, 6, 6, 3))
  grads = jax.jit(lambda a, b: [
      jax.grad(lambda u, v, i=i: jnp.sum(ops.conv_transpose(u, v, 2, impl=i) * g), (0, 1))(a, b)
      for i in ("depth_to_space", "lax")])(x, k)
  # out[2h+i, 2w+j] = x[h, w] @ k[i, j]: dL/dx[h, w] = sum_ij k[i, j] @ g[2h+i, 2w+j] ...
  dx = sum(np.einsum("nhwo,co->nhwc", g[:, i::2, j::2], k[i, j]) for i in range(2)
           for j in range(2))
  # ... and dL/dk[i, j] = sum_{n,h,w} x[h, w]^T g[2h+i, 2w+j]
  dk = np.stack([np.stack([np.einsum("nhwc,nhwo->co", x, g[:, i::2, j::2]) for j in range(2)])
                 for i in range(2)])
  for grad_x, grad_k in grads:
    np.testing.assert_allclose(grad_x, dx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grad_k, dk, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape,factor", [((2, 3, 4, 2), 2), ((1, 1, 5, 3), 3), ((2, 5, 3, 1), 4)])
def test_bilinear_random_and_half_pixel_equals_jax_image_resize(shape, factor):
  x = _normal(21, shape)
  n, h, w, c = shape
  conventions = ("half_pixel", "align_corners", "asymmetric")
  *ys, resized = jax.jit(lambda v: [ops.bilinear_upsample(v, factor, m) for m in conventions] + [
      jax.image.resize(v, (n, h * factor, w * factor, c), "bilinear")])(x)
  for y, convention in zip(ys, conventions):
    np.testing.assert_allclose(y, bilinear_ref(x, factor, convention), rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(ys[0], resized, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("method,kernel,factor", [
    ("nearest", 3, 2), ("bilinear", 3, 2), ("nearest", 1, 3), ("bilinear", 2, 2)])
def test_resize_conv_random(method, kernel, factor):
  x, k = _normal(23, (2, 3, 4, 3)), _normal(24, (kernel, kernel, 3, 4))
  if method == "nearest":
    up = np.repeat(np.repeat(x, factor, 1), factor, 2)
  else:
    up = bilinear_ref(x, factor, "half_pixel")
  y = jax.jit(lambda a, b: ops.resize_conv(a, b, factor, method))(x, k)
  np.testing.assert_allclose(y, conv_same_ref(up, k), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kernel,factor", [(3, 2), (1, 3)])
def test_subpixel_conv_random(kernel, factor):
  x, k = _normal(25, (2, 3, 4, 3)), _normal(26, (kernel, kernel, 3, 2 * factor * factor))
  y = jax.jit(lambda a, b: ops.subpixel_conv(a, b, factor))(x, k)
  assert y.shape == (2, 3 * factor, 4 * factor, 2)
  np.testing.assert_allclose(y, depth_to_space_ref(conv_same_ref(x, k), factor),
                             rtol=1e-4, atol=1e-4)


def test_every_op_differentiates_under_jit():
  x, k3, k2 = _normal(27, (2, 4, 4, 2)), _normal(28, (3, 3, 2, 8)), _normal(29, (2, 2, 2, 3))

  def loss(x, k3, k2):
    pooled, switches = ops.max_pool_with_argmax(x, 2)
    parts = [ops.nearest_upsample(x), ops.bed_of_nails_upsample(x), ops.bilinear_upsample(x),
             ops.bilinear_upsample(x, 2, "asymmetric"),
             ops.max_unpool(pooled, switches, (4, 4), window=2),
             ops.resize_conv(x, k3[..., :2]), ops.subpixel_conv(pooled, k3),
             ops.conv_transpose(x, k2, 2), ops.conv_transpose(x, k3[..., :3], 2, 1, 1)]
    return sum(jnp.sum(p ** 2) for p in parts)

  grads = jax.jit(jax.grad(loss, (0, 1, 2)))(x, k3, k2)
  assert all(bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0 for g in grads)


@pytest.mark.parametrize("size,k,stride,dilation", [((9, 8), 3, 1, 1), ((9, 8), 3, 2, 1),
                                                    ((10, 7), 5, 1, 2), ((11, 12), 3, 2, 3),
                                                    ((6, 6), 1, 1, 1)])
def test_depthwise_conv_equals_grouped_convolution(size, k, stride, dilation):
  rng = np.random.default_rng(k * 10 + stride)
  x = rng.normal(size=(2, *size, 5)).astype(np.float32)
  kernel = rng.normal(size=(k, k, 1, 5)).astype(np.float32)

  def grouped(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), "SAME",
                                        rhs_dilation=(dilation, dilation),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=5)

  ours = lambda x, kernel: ops.depthwise_conv(x, kernel, stride, dilation)
  np.testing.assert_allclose(ours(x, kernel), grouped(x, kernel), rtol=1e-5, atol=1e-5)
  g = rng.normal(size=grouped(x, kernel).shape).astype(np.float32)
  for a, b in zip(jax.vjp(ours, x, kernel)[1](g), jax.vjp(grouped, x, kernel)[1](g)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
