"""Greedy non-maximum suppression with static shapes (jit- and vmap-able).

Greedy NMS as in R-CNN / Faster R-CNN (Girshick et al. 2014; Ren et al. 2015): visit the
candidate boxes by descending score and keep a box unless a box kept before it overlaps
it with IoU > iou_threshold (strictly); stop after max_outputs. Candidates are the boxes
with `valid` and score > score_threshold (strictly; NaN scores are never candidates).

Tie rule: equal scores are visited lower index first (a stable sort by descending score;
-0.0 and 0.0 are equal). IoU is `boxes.pairwise_iou` (float32; 0 where the union is 0,
so zero-area boxes never suppress or get suppressed).

Algorithm (blocked, after the tiled NMS of TF's padded NMS and torchvision's CUDA
kernel): candidates are sorted once, then processed in tiles of `tile_size` boxes until
max_outputs are kept or the candidates run out. A tile is first suppressed by the boxes
kept so far (at most max_outputs of them, held in a fixed buffer), then by itself: the
greedy recursion keep_i = alive_i & ~any_{j<i}(keep_j & iou_ij > t) within the tile is
solved by iterating it to its fixed point (element i is exact after i + 1 sweeps, and a
fixed point is the unique solution, so it stops after a few sweeps, B + 1 at most).
Work is O(N log N) for the sort plus O(B (B + max_outputs)) per visited tile, instead of
the N x N IoU matrix. Only the top 2 tiles of candidates are selected first (top_k); the
full sort runs only when they do not yield max_outputs boxes (under vmap, `lax.cond`
becomes a select, so a batch always pays for the full sort).
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from jaxseg.errors import ConfigError
from jaxseg.ops.boxes import pairwise_iou


@functools.partial(jax.jit, static_argnames=("max_outputs", "tile_size"))
def nms(boxes, scores, iou_threshold=0.5, max_outputs=100, score_threshold=-math.inf,
        valid=None, *, tile_size=256):
  """Class-agnostic greedy NMS of boxes [N, 4] xyxy with scores [N] (see module doc).

  valid: optional [N] bool (padded rows False). iou_threshold, score_threshold: floats
  or scalar arrays; max_outputs, tile_size: static ints. vmap for a batch of images.
  Returns (indices [max_outputs] int32 into boxes, by descending score, padded with -1;
  count int32: the number of kept boxes).
  """
  return _nms(boxes, scores, None, iou_threshold, max_outputs, score_threshold, valid,
              tile_size)


@functools.partial(jax.jit, static_argnames=("max_outputs", "tile_size"))
def batched_nms(boxes, scores, classes, iou_threshold=0.5, max_outputs=100,
                score_threshold=-math.inf, valid=None, *, tile_size=256):
  """Per-class greedy NMS: as `nms`, but a box only suppresses boxes of its own class
  (classes [N] int). Uses a same-class mask on the IoU, not the coordinate-offset trick:
  offsets of class * image size would round float32 coordinates and change IoUs, so the
  result would differ from NMS run class by class. The result equals running `nms` per
  class and merging by descending score (ties: lower index), cut at max_outputs overall.
  Returns (indices [max_outputs] int32 padded with -1, count int32).
  """
  return _nms(boxes, scores, jnp.asarray(classes), iou_threshold, max_outputs,
              score_threshold, valid, tile_size)


def _nms(boxes, scores, classes, iou_threshold, max_outputs, score_threshold, valid,
         tile_size):
  if boxes.ndim != 2 or boxes.shape[-1] != 4 or scores.shape != boxes.shape[:1]:
    raise ValueError(f"boxes {boxes.shape} and scores {scores.shape}; expected [N, 4] and "
                     "[N] (vmap over a batch of images)")
  if classes is not None and classes.shape != scores.shape:
    raise ValueError(f"classes {classes.shape}; expected {scores.shape}")
  if not isinstance(max_outputs, int) or max_outputs < 0:
    raise ConfigError(f"max_outputs={max_outputs!r}; expected an int >= 0")
  if not isinstance(tile_size, int) or tile_size < 1:
    raise ConfigError(f"tile_size={tile_size!r}; expected a positive int")
  n = boxes.shape[0]
  empty = (jnp.full((max_outputs,), -1, jnp.int32), jnp.zeros((), jnp.int32))
  if n == 0 or max_outputs == 0:
    return empty
  boxes = boxes.astype(jnp.float32)
  scores = scores.astype(jnp.float32)
  cand = scores > score_threshold
  if valid is not None:
    cand = cand & jnp.asarray(valid, bool)
  # Sort keys: candidates by score (-0.0 made 0.0, since top_k orders -0.0 below 0.0),
  # the rest -inf; top_k puts equal keys lower index first.
  keys = jnp.where(cand, jnp.where(scores == 0, 0.0, scores), -jnp.inf)
  num_cand = jnp.sum(cand, dtype=jnp.int32)

  tile = min(tile_size, n)
  num_tiles = -(-n // tile)
  iou_threshold = jnp.asarray(iou_threshold, jnp.float32)
  if classes is None:
    classes = jnp.zeros((n,), jnp.int32)
  classes = classes.astype(jnp.int32)

  def sorted_tiles(k):
    """The top-k candidates by key, padded to whole tiles: boxes, classes, index, cand."""
    _, order = jax.lax.top_k(keys, k)
    pad = -(-k // tile) * tile - k
    idx = jnp.pad(order.astype(jnp.int32), (0, pad), constant_values=-1)
    ok = jnp.pad(jnp.arange(k) < num_cand, (0, pad))
    b = jnp.pad(boxes[order], ((0, pad), (0, 0)))
    c = jnp.pad(classes[order], (0, pad))
    return (b.reshape(-1, tile, 4), c.reshape(-1, tile), idx.reshape(-1, tile),
            ok.reshape(-1, tile))

  lower = jnp.tril(jnp.ones((tile, tile), bool), -1)  # [i, j]: j before i

  def process(data, start, state):
    tb, tcls, tidx, tok = data
    stop = tb.shape[0]

    def cond(s):
      t, count = s[0], s[1]
      return (t < stop) & (count < max_outputs) & ((start + t) * tile < num_cand)

    def body(s):
      t, count, kept_boxes, kept_cls, out = s
      b, c, ix, ok = tb[t], tcls[t], tidx[t], tok[t]
      # 1. Suppressed by the boxes kept in earlier tiles.
      prev = ((pairwise_iou(b, kept_boxes) > iou_threshold)
              & (c[:, None] == kept_cls[None, :])
              & (jnp.arange(max_outputs) < count)[None, :])
      alive = ok & ~jnp.any(prev, axis=1)
      # 2. Greedy within the tile, by fixed-point iteration of the recursion.
      #    (Skipped when at most one box is alive: then keep == alive.)
      def within(alive):
        sup = (pairwise_iou(b, b) > iou_threshold) & (c[:, None] == c[None, :]) & lower

        def sweep(keep):
          return alive & ~jnp.any(sup & keep[None, :], axis=1)

        return jax.lax.while_loop(lambda kk: jnp.any(kk[0] != kk[1]),
                                  lambda kk: (kk[1], sweep(kk[1])),
                                  (alive, sweep(alive)))[1]

      keep = jax.lax.cond(jnp.sum(alive) > 1, within, lambda a: a, alive)
      # 3. Append the kept boxes (those past max_outputs are dropped).
      pos = count + jnp.cumsum(keep) - 1
      pos = jnp.where(keep, pos, max_outputs)
      kept_boxes = kept_boxes.at[pos].set(b, mode="drop")
      kept_cls = kept_cls.at[pos].set(c, mode="drop")
      out = out.at[pos].set(ix, mode="drop")
      count = jnp.minimum(count + jnp.sum(keep, dtype=jnp.int32), max_outputs)
      return t + 1, count, kept_boxes, kept_cls, out

    _, count, kept_boxes, kept_cls, out = jax.lax.while_loop(
        cond, body, (jnp.int32(0),) + state)
    return count, kept_boxes, kept_cls, out

  state = (jnp.int32(0), jnp.zeros((max_outputs, 4), jnp.float32),
           jnp.zeros((max_outputs,), jnp.int32), empty[0])
  # Stage 1: the top candidates only (cheap top_k); stage 2, if they did not suffice:
  # the remaining tiles of the full sort (whose head equals stage 1's order).
  first = min(num_tiles, _PREFETCH_TILES)
  state = process(sorted_tiles(first * tile if first < num_tiles else n), 0, state)
  if first < num_tiles:
    def rest(state):
      data = sorted_tiles(n)
      return process(tuple(x[first:] for x in data), first, state)
    need_more = (state[0] < max_outputs) & (first * tile < num_cand)
    state = jax.lax.cond(need_more, rest, lambda s: s, state)
  return state[3], state[0]


# Tiles sorted by the first (top_k) stage; see the module docstring.
_PREFETCH_TILES = 2
