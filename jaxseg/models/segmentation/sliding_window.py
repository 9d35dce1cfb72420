"""Sliding-window semantic segmentation: classify the centre pixel of a patch around every
pixel (Farabet, Couprie, Najman & LeCun, "Learning Hierarchical Features for Scene
Labeling", TPAMI 2013; Pinheiro & Collobert, "Recurrent Convolutional Neural Networks for
Scene Labeling", ICML 2014) -- the lecture's first, "very inefficient" approach.

`SlidingWindowClassifier` holds one small patch classifier: `patch_size` x `patch_size` RGB
patch -> [3x3 VALID conv -> BN -> ReLU -> 2x2 max pool] per entry of `conv_widths` ->
fully connected layers (`hidden_widths`) -> `num_classes` scores for the patch's centre
pixel. Two ways to run the same weights over a whole image (`inference`):

* "sliding": pad the image by patch_size // 2, cut out the patch around EVERY pixel
  (N*H*W patches, a gather) and classify each independently; nothing computed for one
  patch is reused for its overlapping neighbours. `chunk_size` bounds memory by classifying
  that many patches at a time, sequentially (a lifted `lax.scan`).
* "convolutional": the same network rewritten as a fully convolutional one and run once on
  the padded image. The fully connected layers are convolutions (the first with the
  kernel size of its input map, the rest 1x1), every stride-2 pooling becomes a stride-1
  pooling, and every later layer is dilated by the product of the strides before it
  (the "dilation trick" / d-regularly sparse kernels of Li et al. 2014 and Giusti et al.
  2013; Long et al. CVPR 2015 call it shift-and-stitch). Output pixel (y, x) is then
  exactly the patch classifier's score for the patch around (y, x).

Both modes have the same parameters and, in evaluation mode (`train=False`), the same
logits up to float rounding (tests check 1e-5). In training mode they differ only in
BatchNorm batch statistics (computed over patches vs over positions).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg import ops
from jaxseg.models.segmentation.base import SegmentationModel

INFERENCE_MODES = ("sliding", "convolutional")


def _dilated_max_pool2(x, dilation: int):
  """2x2 max pooling with stride 1 and window dilation `dilation` (VALID): out[p] =
  max(x[p], x[p + d]) along H and W. The stride-1 equivalent of 2x2 stride-2 pooling."""
  d = dilation
  x = jnp.maximum(x[:, :-d], x[:, d:])
  return jnp.maximum(x[:, :, :-d], x[:, :, d:])


def _extract_patches(padded, pixels, patch_size: int):
  """Patches [B, P, P, C] of `padded` [N, H', W', C] whose top-left corners are
  `pixels` [B, 3] = (n, y, x) (a gather; with padding P // 2, the patch centred on (y, x))."""
  c = padded.shape[-1]

  def one(p):
    return jax.lax.dynamic_slice(padded, (p[0], p[1], p[2], 0),
                                 (1, patch_size, patch_size, c))[0]

  return jax.vmap(one)(pixels)


class PatchClassifier(nn.Module):
  """The centre-pixel classifier; `dense=True` applies it convolutionally (see module doc).

  dense=False: patches [B, P, P, 3] -> scores [B, 1, 1, num_classes].
  dense=True:  image [N, H, W, 3] -> scores [N, H - E + 1, W - E + 1, num_classes] where
               output (y, x) is the score of the patch with top-left corner (y, x) and E
               (`extent`) <= P is the part of the patch the network actually reads.
  """
  num_classes: int
  patch_size: int = 15
  conv_widths: Sequence[int] = (16, 32)
  hidden_widths: Sequence[int] = (64,)
  norm: bool = True
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  def fc_input_size(self) -> int:
    """Spatial size of the map entering the first fully connected layer."""
    size = self.patch_size
    for _ in self.conv_widths:
      size = (size - 2) // 2
    return size

  def extent(self) -> int:
    """Rows/columns of the patch that influence the output (the rest is cut by pooling)."""
    e, d = 1, 1
    for _ in self.conv_widths:
      e += 2 * d + d  # 3x3 conv, then 2x2 pool at the current spacing
      d *= 2
    return e + (self.fc_input_size() - 1) * d

  def _norm_act(self, x, train, name):
    if self.norm:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype,
                       name=f"{name}_bn")(x)
    return nn.relu(x)

  @nn.compact
  def __call__(self, x, train: bool = False, dense: bool = False):
    s = self.fc_input_size()
    if s < 1:
      raise ValueError(f"patch_size {self.patch_size} is too small for "
                       f"{len(self.conv_widths)} conv+pool stages; it needs at least "
                       f"{self._min_patch_size()}")
    d = 1
    for i, width in enumerate(self.conv_widths):
      name = f"conv{i + 1}"
      x = nn.Conv(width, (3, 3), padding="VALID", kernel_dilation=d, use_bias=not self.norm,
                  dtype=self.dtype, name=name)(x)
      x = self._norm_act(x, train, name)
      if dense:
        x = _dilated_max_pool2(x, d)
        d *= 2
      else:
        x = ops.max_pool(x, 2)
    for i, width in enumerate(self.hidden_widths):
      name = f"fc{i + 1}"
      k = s if i == 0 else 1
      x = nn.Conv(width, (k, k), padding="VALID", kernel_dilation=d, use_bias=not self.norm,
                  dtype=self.dtype, name=name)(x)
      x = self._norm_act(x, train, name)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    k = s if not self.hidden_widths else 1
    return nn.Conv(self.num_classes, (k, k), padding="VALID", kernel_dilation=d,
                   dtype=self.dtype, name="classifier")(x)

  def _min_patch_size(self) -> int:
    size = 1
    for _ in self.conv_widths:
      size = 2 * size + 2
    return size


class SlidingWindowClassifier(SegmentationModel):
  """Per-pixel class logits [N, H, W, num_classes] for images [N, H, W, 3] in [0, 1], by
  classifying the `patch_size` x `patch_size` patch around every pixel.

  `inference`: "sliding" (one independent patch classification per pixel, `chunk_size`
  patches at a time if set) or "convolutional" (the same weights as one fully
  convolutional pass). `pad_mode` ("reflect", "constant" = zeros after normalization, i.e.
  the mean colour, or "edge") pads the normalized image by patch_size // 2. `dropout_rate`
  applies before the classifier.
  """
  patch_size: int = 15
  conv_widths: Sequence[int] = (16, 32)
  hidden_widths: Sequence[int] = (64,)
  inference: str = "sliding"
  chunk_size: int | None = None
  pad_mode: str = "reflect"

  @nn.compact
  def __call__(self, images, train: bool = False):
    p = self.patch_size
    if p < 1 or p % 2 == 0:
      raise ValueError(f"SlidingWindowClassifier patch_size must be a positive odd number "
                       f"(the patch is centred on its pixel); got {p}")
    if self.inference not in INFERENCE_MODES:
      raise ValueError(f"unknown inference {self.inference!r}; expected one of "
                       f"{INFERENCE_MODES}")
    if self.chunk_size is not None and self.chunk_size < 1:
      raise ValueError(f"chunk_size must be a positive number of patches or None; got "
                       f"{self.chunk_size}")
    n, h, w, _ = images.shape
    r = p // 2
    if self.pad_mode == "reflect" and (h <= r or w <= r):
      raise ValueError(f"reflect padding by patch_size // 2 = {r} needs height and width "
                       f"> {r}; got {h}x{w} (use a smaller patch_size or pad_mode='edge')")
    x = self.normalize(images)
    padded = jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode=self.pad_mode)
    net = PatchClassifier(self.num_classes, p, self.conv_widths, self.hidden_widths,
                          norm=self.norm, dropout_rate=self.dropout_rate, dtype=self.dtype,
                          name="patch_net")

    if self.inference == "convolutional":
      return net(padded, train, dense=True)[:, :h, :w]

    # Sliding window: one patch per pixel, each classified on its own.
    ys, xs = jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij")
    pixels = jnp.stack([jnp.repeat(jnp.arange(n), h * w),
                        jnp.tile(ys.reshape(-1), n), jnp.tile(xs.reshape(-1), n)], axis=-1)
    total = n * h * w
    if self.chunk_size is None or self.chunk_size >= total:
      logits = net(_extract_patches(padded, pixels, p), train)[:, 0, 0]
    else:
      # The last chunk is filled up with copies of pixel (0, 0, 0), dropped afterwards (in
      # training they do enter that chunk's BatchNorm batch statistics).
      chunks = -(-total // self.chunk_size)
      pixels = jnp.pad(pixels, ((0, chunks * self.chunk_size - total), (0, 0)))
      pixels = pixels.reshape(chunks, self.chunk_size, 3)

      if self.is_initializing():  # create params and batch_stats before the loop carries them
        net(_extract_patches(padded, pixels[0], p), train)

      def body(module, carry, image, chunk):
        return carry, module(_extract_patches(image, chunk, p), train)[:, 0, 0]

      # BatchNorm statistics are updated chunk after chunk when they are mutable, else read.
      update_stats = train and self.is_mutable_collection("batch_stats")
      scan = nn.scan(body,
                     variable_broadcast="params" if update_stats else ["params", "batch_stats"],
                     variable_carry="batch_stats" if update_stats else False,
                     split_rngs={"params": False, "dropout": True},
                     in_axes=(nn.broadcast, 0), length=chunks)
      _, logits = scan(net, None, padded, pixels)
      logits = logits.reshape(chunks * self.chunk_size, -1)[:total]
    return logits.reshape(n, h, w, self.num_classes)
