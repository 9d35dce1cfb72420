"""COCO run-length encoded masks in NumPy, equal to `pycocotools.mask` (maskApi.c).

Used by both `jaxseg.data` (COCO-format datasets) and `jaxseg.metrics` (segm evaluation),
so it lives on the floor below both; `jaxseg.metrics.masks` re-exports it with the box IoU
of `pycocotools.mask.iou`.

A mask of ``h x w`` pixels is read in column-major (Fortran) order and stored as the
lengths of its alternating runs, starting with a run of zeros (possibly empty). An RLE is
``{'size': [h, w], 'counts': bytes}``; ``counts`` is COCO's compressed string: each
count (from the fourth on, as the difference to the count two places before) in
little-endian groups of 5 bits plus a continuation bit, as ASCII characters 48..111
(Lin et al., "Microsoft COCO", ECCV 2014; cocodataset/cocoapi `maskApi.c`).

Reimplemented from the behaviour of pycocotools 2.0 and checked against it in
`tests/test_masks.py`. Where pycocotools would crash, read uninitialized memory or return
a meaningless value, these functions raise `DataError` instead:

- `encode`: values other than 0/1 (pycocotools encodes every change of value);
- compressed counts with characters outside ``'0'..'o'``, a truncated last value, a
  value of more than 7 characters, negative counts, or counts that do not add up to
  ``h * w`` (pycocotools decodes these into garbage);
- `to_rle`: an empty polygon list, a first polygon of fewer than 3 points (pycocotools
  raises TypeError, or takes 2 points for a box it then fails to read), a polygon of odd
  length (pycocotools drops the last value), non-finite or huge coordinates, an RLE whose
  ``size`` is not ``[height, width]``;
- `merge`, `iou`: masks of different sizes (pycocotools returns an empty ``[0, 0]`` mask,
  or -1 as IoU);
- `iou` returns an empty ``[D, G]`` array when D or G is 0 (pycocotools returns ``[]``).

Later polygons of a list with fewer than 3 points are rasterized as pycocotools does (they
cover no pixel). Counts with zero-length runs after the first are not canonical (`encode`
never makes them); all functions treat them as pycocotools does (`iou` too, whose
run-merging loop can stop before the end of such masks), except `merge`, which returns
the union or intersection of the masks they represent (pycocotools' loop there can stop
early or never end).
"""
from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import numpy as np

from jaxseg.errors import DataError

RLE = dict  # {'size': [h, w], 'counts': bytes}

_MAX_GROUPS = 7  # 35 bits: enough for any 32-bit count or difference of counts
_MAX_POLY_POINTS = 20_000_000  # upsampled boundary points of one polygon
_IOU_CHUNK = 1 << 22  # evaluation points per step of `iou`
_EMPTY = np.zeros((0,), np.int64)
_EMPTY.flags.writeable = False


# ----------------------------------------------------------------------------------------
# Counts <-> compressed string.

def _counts_to_string(counts: np.ndarray) -> bytes:
  """maskApi.c rleToString: deltas to the count two back (from index 3), 5-bit groups."""
  c = np.asarray(counts, np.int64)
  if c.size == 0:
    return b""
  x = c.copy()
  x[3:] -= c[1:-2]
  # Fewest groups n >= 1 with x representable as a signed 5n-bit number.
  groups = np.ones(x.shape, np.int64)
  for n in range(1, _MAX_GROUPS):
    half = np.int64(1) << (5 * n - 1)
    groups += (x < -half) | (x >= half)
  k = np.arange(_MAX_GROUPS, dtype=np.int64)
  chars = (x[:, None] >> (5 * k)) & 0x1F
  chars |= np.where(k[None, :] < groups[:, None] - 1, 0x20, 0)
  chars += 48
  return chars[k[None, :] < groups[:, None]].astype(np.uint8).tobytes()


@functools.lru_cache(maxsize=4096)
def _string_to_counts(s: bytes) -> np.ndarray:
  """maskApi.c rleFrString, validated: int64 counts (not yet checked against the size).

  Cached (evaluators parse the same masks for areas, boxes and IoUs); read-only.
  """
  b = np.frombuffer(s, np.uint8)
  if b.size == 0:
    return _EMPTY
  if b.min() < 48 or b.max() > 111:
    raise DataError(f"RLE counts {s[:40]!r} hold characters outside '0'..'o'; expected "
                    "a COCO compressed RLE string")
  c = b.astype(np.int64) - 48
  more = (c & 0x20) != 0
  if more[-1]:
    raise DataError(f"RLE counts {s[:40]!r} end inside a value (last character has the "
                    "continuation bit)")
  ends = np.flatnonzero(~more)
  starts = np.concatenate([[0], ends[:-1] + 1])
  groups = ends - starts + 1
  if groups.max() > _MAX_GROUPS:
    raise DataError(f"RLE counts {s[:40]!r} hold a value of {groups.max()} characters; "
                    f"expected at most {_MAX_GROUPS}")
  k = np.arange(c.size) - np.repeat(starts, groups)
  x = np.add.reduceat((c & 0x1F) << (5 * k), starts)
  negative = (c[ends] & 0x10) != 0
  x[negative] -= np.int64(1) << (5 * groups[negative])
  counts = x.copy()
  counts[1::2] = np.cumsum(x[1::2])
  counts[2::2] = np.cumsum(x[2::2])
  counts.flags.writeable = False
  return counts


# ----------------------------------------------------------------------------------------
# Validation and conversion of one RLE.

def _size(size: Any, what: str = "RLE") -> tuple[int, int]:
  try:
    h, w = (int(v) for v in size)
    ok = h >= 0 and w >= 0 and [h, w] == [float(v) for v in size]
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise DataError(f"{what} size {size!r} is not [height, width] of non-negative ints")
  return h, w


def _check_counts(counts: np.ndarray, h: int, w: int, what: str) -> np.ndarray:
  if counts.size and counts.min() < 0:
    raise DataError(f"{what} has a negative count ({counts.min()})")
  total = int(counts.sum())
  if total != h * w:
    raise DataError(f"{what} counts add up to {total} pixels; expected h * w = {h}*{w} = "
                    f"{h * w}")
  return counts


def _parse(rle: Any, what: str = "RLE") -> tuple[int, int, np.ndarray]:
  """(h, w, int64 counts) of a compressed RLE dict, validated."""
  if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
    raise DataError(f"{what} {_short(rle)} is not a dict with 'size' and 'counts'")
  h, w = _size(rle["size"], what)
  counts = _ascii(rle["counts"], what)
  if not isinstance(counts, (bytes, bytearray)):
    raise DataError(f"{what} counts of type {type(counts).__name__} are not a compressed "
                    "string; convert uncompressed RLEs with to_rle first")
  return h, w, _check_counts(_string_to_counts(bytes(counts)), h, w, what)


def _parse_list(rles: Any, what: str) -> tuple[list[tuple[int, int, np.ndarray]], bool]:
  """Parsed RLEs and whether the input was a single dict."""
  if isinstance(rles, Mapping):
    return [_parse(rles, what)], True
  rles = list(rles)
  fast = _parse_many(rles)
  if fast is not None:
    return fast, False
  return [_parse(r, f"{what}[{i}]") for i, r in enumerate(rles)], False


_BATCH_CACHE: dict = {}  # compressed string -> read-only counts (see `_parse_many`)
_BATCH_CACHE_SIZE = 1 << 15


def _parse_many(rles: list) -> list[tuple[int, int, np.ndarray]] | None:
  """`_parse` of many plain RLE dicts at once (strings decoded together), or None when
  any is unusual or invalid (the caller then parses one by one, raising the error)."""
  sizes, strings = [], []
  for r in rles:
    if type(r) is not dict:  # pylint: disable=unidiomatic-typecheck
      return None
    size, counts = r.get("size"), _plain_string(r.get("counts"))
    if type(size) is not list or len(size) != 2 or counts is None:
      return None
    h, w = size
    if type(h) is not int or type(w) is not int or h < 0 or w < 0:
      return None
    sizes.append((h, w))
    strings.append(counts)
  return _counts_many(sizes, strings)


def _plain_string(counts: Any) -> bytes | None:
  """Compressed counts as bytes, or None unless bytes or an ASCII str."""
  if type(counts) is bytes:  # pylint: disable=unidiomatic-typecheck
    return counts
  if type(counts) is str and counts.isascii():  # pylint: disable=unidiomatic-typecheck
    return counts.encode("ascii")
  return None


def _counts_many(sizes: list, strings: list) -> list[tuple[int, int, np.ndarray]] | None:
  """Validated ``(h, w, counts)`` of compressed strings, or None if any is invalid."""
  cache = _BATCH_CACHE
  missing = [s for s in dict.fromkeys(strings) if s not in cache]
  if missing:
    decoded = _strings_to_counts(missing)
    if decoded is None:
      return None
    if len(cache) + len(missing) > _BATCH_CACHE_SIZE:
      cache.clear()
    cache.update(zip(missing, decoded))
  out = []
  for (h, w), s in zip(sizes, strings):
    counts, total, ok = cache[s]
    if not ok or total != h * w:
      return None
    out.append((h, w, counts))
  return out


def _strings_to_counts(strings: list[bytes]) -> list | None:
  """`_string_to_counts` of many strings in one pass: ``(counts, sum, no negative)`` per
  string, or None if any string is malformed."""
  lengths = np.fromiter((len(s) for s in strings), np.int64, len(strings))
  b = np.frombuffer(b"".join(strings), np.uint8)
  empty = (_EMPTY, 0, True)
  if b.size == 0:
    return [empty] * len(strings)
  if b.min() < 48 or b.max() > 111:
    return None
  c = b.astype(np.int64) - 48
  more = (c & 0x20) != 0
  str_end = np.cumsum(lengths)
  nonempty = lengths > 0
  if more[str_end[nonempty] - 1].any():
    return None
  ends = np.flatnonzero(~more)
  starts = np.empty_like(ends)
  starts[0] = 0
  starts[1:] = ends[:-1] + 1
  groups = ends - starts + 1
  if groups.max() > _MAX_GROUPS:
    return None
  k = np.arange(c.size) - np.repeat(starts, groups)
  x = np.add.reduceat((c & 0x1F) << (5 * k), starts)
  negative = (c[ends] & 0x10) != 0
  x[negative] -= np.int64(1) << (5 * groups[negative])
  # values per string; value index r inside its string
  n_vals = np.diff(np.concatenate([[0], np.searchsorted(ends, str_end, side="left")]))
  first = np.cumsum(n_vals) - n_vals
  r = np.arange(x.size) - np.repeat(first, n_vals)
  counts = x.copy()
  for parity in (1, 0):  # counts[r] = x[r] + counts[r - 2] for r >= 2 (cumsum by parity)
    sel = (r >= 1) & ((r & 1) == parity)
    y = np.where(sel, x, 0)
    cs = np.cumsum(y)
    before = np.where(first > 0, cs[np.maximum(first - 1, 0)], 0)
    counts = np.where(sel, cs - np.repeat(before, n_vals), counts)
  counts.flags.writeable = False
  csum = np.concatenate([[0], np.cumsum(counts)])
  last = first + n_vals
  totals = (csum[last] - csum[first]).tolist()
  neg = np.concatenate([[0], np.cumsum(counts < 0)])
  ok = (neg[last] == neg[first]).tolist()
  pieces = np.split(counts, last[:-1].tolist())
  return [(piece, t, o) if n else empty
          for piece, t, o, n in zip(pieces, totals, ok, n_vals.tolist())]


def _ascii(counts: Any, what: str) -> Any:
  if not isinstance(counts, str):
    return counts
  try:
    return counts.encode("ascii")
  except UnicodeEncodeError as e:
    raise DataError(f"{what} counts {_short(counts)} are not an ASCII string") from e


def _short(value: Any) -> str:
  text = repr(value)
  return text if len(text) <= 80 else text[:77] + "..."


def _make(h: int, w: int, counts: np.ndarray) -> RLE:
  return {"size": [h, w], "counts": _counts_to_string(counts)}


def _encode_flat(flat: np.ndarray) -> np.ndarray:
  """Run lengths of a flat bool mask, first run of zeros (maskApi.c rleEncode)."""
  n = flat.size
  if n == 0:
    return np.zeros((1,), np.int64)
  change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
  counts = np.diff(np.concatenate([[0], change, [n]]))
  if flat[0]:
    counts = np.concatenate([[0], counts])
  return counts.astype(np.int64)


def _decode_flat(counts: np.ndarray) -> np.ndarray:
  values = (np.arange(counts.size) & 1).astype(bool)
  return np.repeat(values, counts)


# ----------------------------------------------------------------------------------------
# Public API.

def encode(binary) -> RLE | list[RLE]:
  """RLE of an ``[H, W]`` mask, or the list of RLEs of an ``[H, W, N]`` stack
  (pycocotools.mask.encode; the counts are byte-for-byte the same)."""
  m = np.asarray(binary)
  if m.ndim not in (2, 3):
    raise DataError(f"mask of shape {m.shape} is neither [H, W] nor [H, W, N]")
  if m.dtype != bool:
    if not (np.issubdtype(m.dtype, np.integer)):
      raise DataError(f"mask dtype {m.dtype} is not bool or an integer type with values 0/1")
    if m.size and (m.min() < 0 or m.max() > 1):
      raise DataError(f"mask values span [{m.min()}, {m.max()}]; expected only 0 and 1")
  h, w = m.shape[:2]
  if m.ndim == 2:
    return _make(h, w, _encode_flat(m.astype(bool).ravel(order="F")))
  return [_make(h, w, _encode_flat(m[:, :, i].astype(bool).ravel(order="F")))
          for i in range(m.shape[2])]


def to_json(rle: RLE) -> dict:
  """The RLE as COCO's JSON files hold it: {"size": [h, w], "counts": str}."""
  counts = rle["counts"]
  return {"size": [int(v) for v in rle["size"]],
          "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def decode(rles) -> np.ndarray:
  """``[H, W]`` uint8 mask of an RLE, or ``[H, W, N]`` (Fortran order, as pycocotools)
  of a list of RLEs; an empty list gives shape ``[0, 0, 0]``."""
  parsed, single = _parse_list(rles, "RLE")
  if single:
    h, w, counts = parsed[0]
    return _decode_flat(counts).astype(np.uint8).reshape((h, w), order="F")
  if not parsed:
    return np.zeros((0, 0, 0), np.uint8)
  h, w = _common_size(parsed, "decode")
  out = np.empty((h, w, len(parsed)), np.uint8, order="F")
  for i, (_, _, counts) in enumerate(parsed):
    out[:, :, i] = _decode_flat(counts).reshape((h, w), order="F")
  return out


def area(rles) -> np.ndarray:
  """Pixels of each mask: uint32 ``[N]`` for a list, a scalar for one RLE (pycocotools)."""
  parsed, single = _parse_list(rles, "RLE")
  a = np.array([c[1::2].sum() for _, _, c in parsed], np.uint32)
  return a[0] if single else a


def to_bbox(rles) -> np.ndarray:
  """``[x, y, w, h]`` float64 box of each mask: ``[N, 4]`` for a list, ``[4]`` for one RLE
  (pycocotools.mask.toBbox as built from ppwwyyxx/cocoapi, the PyPI package: the box of
  the non-empty runs of ones, full height once a run spans columns; fewer than 2 counts
  give zeros, and an empty mask of 2 or more counts gives pycocotools' unsigned
  wrap-around ``[w, h, 2**32 + 1 - w, 2**32 + 1 - h]``)."""
  parsed, single = _parse_list(rles, "RLE")
  out = np.zeros((len(parsed), 4), np.float64)
  for i, (h, w, counts) in enumerate(parsed):
    if counts.size < 2:
      continue
    start, end = _intervals(counts)
    if start.size == 0:
      out[i] = (w, h, (1 - w) % 2**32, (1 - h) % 2**32)
      continue
    x0, x1 = start // h, (end - 1) // h
    xs, xe = int(x0.min()), int(x1.max())
    if np.any(x0 < x1):  # a run of ones spans more than one column
      ys, ye = 0, h - 1
    else:
      ys, ye = int((start % h).min()), int(((end - 1) % h).max())
    out[i] = (xs, ys, xe - xs + 1, ye - ys + 1)
  return out[0] if single else out


def _common_size(parsed, what: str) -> tuple[int, int]:
  sizes = {(h, w) for h, w, _ in parsed}
  if len(sizes) > 1:
    raise DataError(f"{what} got masks of different sizes {sorted(sizes)}; expected one "
                    "[h, w]")
  return next(iter(sizes))


def merge(rles: Sequence[RLE], intersect: bool = False) -> RLE:
  """Union (or intersection) of RLEs of one size (pycocotools.mask.merge). One RLE comes
  back re-encoded; none gives ``{'size': [0, 0], 'counts': b''}`` as in pycocotools."""
  parsed, single = _parse_list(rles, "RLE")
  if not parsed:
    return {"size": [0, 0], "counts": b""}
  h, w = _common_size(parsed, "merge")
  if len(parsed) == 1:
    return _make(h, w, parsed[0][2])
  flat = _decode_flat(parsed[0][2])
  for _, _, counts in parsed[1:]:
    other = _decode_flat(counts)
    flat = (flat & other) if intersect else (flat | other)
  return _make(h, w, _encode_flat(flat))


def _intervals(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """[start, end) of the non-empty runs of ones."""
  pos = np.concatenate([[0], np.cumsum(counts)])
  m = counts.size
  s, e = pos[1:m:2], pos[2:m + 1:2]
  keep = e > s
  return s[keep], e[keep]


def iou(dt_rles: Sequence[RLE], gt_rles: Sequence[RLE], iscrowd: Sequence[bool]) -> np.ndarray:
  """``[D, G]`` float64 IoU of every detection with every ground truth mask, equal to
  pycocotools.mask.iou: for a crowd ground truth it is intersection / detection area.

  Exact integer arithmetic on the runs, no decoded masks: the ground-truth masks, laid
  end to end, define a cumulative "pixels of ones before position p" function; for each
  pair whose spans of (column-major) positions overlap, it is evaluated by binary search
  at the ends of those detection runs that fall inside the ground truth's span.
  """
  dts, _ = _parse_list(dt_rles, "dt")
  gts, _ = _parse_list(gt_rles, "gt")
  crowd = np.asarray(iscrowd, bool).reshape(-1)
  if crowd.size != len(gts):
    raise DataError(f"iscrowd has {crowd.size} flags for {len(gts)} ground truth masks")
  d_count, g_count = len(dts), len(gts)
  if d_count == 0 or g_count == 0:
    return np.zeros((d_count, g_count), np.float64)
  h, w = _common_size(dts + gts, "iou")
  hw = h * w
  d_area, d_lo, d_hi, d_start, d_end, d_odd = _runs(dts, hw)
  g_area, g_lo, g_hi, g_start, g_end, g_odd = _runs(gts, hw)
  g_len = g_end - g_start
  g_before = np.concatenate([[0], np.cumsum(g_len)[:-1]]).astype(np.int64)

  def ones_before(p):  # ones of the ground-truth line at positions < p
    k = np.searchsorted(g_start, p, side="right") - 1
    kk = np.maximum(k, 0)
    return np.where(k < 0, 0, g_before[kk] + np.minimum(p - g_start[kk], g_len[kk]))

  inter = np.zeros((d_count, g_count), np.int64)
  pd, pg = np.nonzero((d_lo[:, None] < g_hi[None, :]) & (g_lo[None, :] < d_hi[:, None]))
  # Runs of detection pd that overlap the span of ground truth pg: [first, last).
  first = np.searchsorted(d_end, pd * hw + g_lo[pg], side="right")
  last = np.searchsorted(d_start, pd * hw + g_hi[pg], side="left")
  n = np.maximum(last - first, 0)
  ends = np.cumsum(n)
  p0 = 0
  while p0 < pd.size:  # chunks of about _IOU_CHUNK runs
    base = ends[p0] - n[p0]
    p1 = max(p0 + 1, int(np.searchsorted(ends, base + _IOU_CHUNK, side="right")))
    cnt = n[p0:p1]
    pair = np.repeat(np.arange(p1 - p0), cnt)
    run = (np.arange(int(cnt.sum()), dtype=np.int64) - np.repeat(np.cumsum(cnt) - cnt, cnt)
           + np.repeat(first[p0:p1], cnt))
    shift = (pg[p0:p1] - pd[p0:p1])[pair] * hw  # detection line -> ground-truth line
    per_run = ones_before(d_end[run] + shift) - ones_before(d_start[run] + shift)
    inter[pd[p0:p1], pg[p0:p1]] = np.bincount(pair, weights=per_run,
                                              minlength=p1 - p0).astype(np.int64)
    p0 = p1
  union = np.where(crowd[None, :], d_area[:, None],
                   d_area[:, None] + g_area[None, :] - inter)
  for d, g in zip(*np.nonzero((d_odd[:, None] | g_odd[None, :]) & (inter > 0))):
    inter[d, g], loop_union = _loop_overlap(dts[d][2], gts[g][2])
    if not crowd[g]:
      union[d, g] = loop_union
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(inter > 0, inter / np.maximum(union, 1), 0.0)


def _loop_overlap(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
  """Intersection and union as maskApi.c rleIou's run-merging loop counts them. It stops
  as soon as both current runs are empty, which on non-canonical counts can be before
  the end of the masks; on canonical counts it gives the exact values."""
  a, b = a.tolist(), b.tolist()
  ca, cb, ia, ib, va, vb = a[0], b[0], 1, 1, False, False
  inter = union = 0
  while True:
    c = min(ca, cb)
    if va or vb:
      union += c
      inter += c if va and vb else 0
    ca -= c
    if ca == 0 and ia < len(a):
      ca, ia, va = a[ia], ia + 1, not va
    cb -= c
    if cb == 0 and ib < len(b):
      cb, ib, vb = b[ib], ib + 1, not vb
    if ca + cb == 0:
      return inter, union


def _runs(parsed, hw: int):
  """Areas, position spans [lo, hi) and the runs of ones of masks laid end to end (mask i
  at positions [i*hw, (i+1)*hw)), and which masks hold non-canonical counts."""
  n = len(parsed)
  lengths = np.fromiter((c.size for _, _, c in parsed), np.int64, n)
  counts = np.concatenate([c for _, _, c in parsed]).astype(np.int64)
  pos = np.zeros(counts.size + 1, np.int64)
  np.cumsum(counts, out=pos[1:])  # each mask adds up to hw: mask i starts at i * hw
  first = np.cumsum(lengths) - lengths
  mask = np.repeat(np.arange(n), lengths)
  r = np.arange(counts.size) - first[mask]
  odd = np.flatnonzero((r & 1 == 1) & (counts > 0))
  start, end = pos[odd], pos[odd + 1]
  owner = mask[odd]
  per = np.bincount(owner, minlength=n)
  area = np.zeros(n, np.int64)
  np.add.at(area, owner, end - start)
  k0 = np.cumsum(per) - per
  has = per > 0
  offsets = np.arange(n, dtype=np.int64) * hw
  lo = np.full(n, hw, np.int64)
  hi = np.zeros(n, np.int64)
  lo[has] = start[k0[has]] - offsets[has]
  hi[has] = end[k0[has] + per[has] - 1] - offsets[has]
  odd_masks = np.bincount(mask[(r >= 1) & (counts == 0)], minlength=n) > 0
  return area, lo, hi, start, end, odd_masks


# ----------------------------------------------------------------------------------------
# Polygons.

def _poly_counts(xy: np.ndarray, h: int, w: int) -> np.ndarray:
  """maskApi.c rleFrPoly: run lengths of a polygon ``[x1, y1, x2, y2, ...]``.

  The vertices are scaled by 5 and rounded (C ``(int)(5 x + .5)``, truncating toward
  zero); each edge is walked one upsampled step at a time along its major axis, always in
  the direction of increasing major coordinate (so both traversals of an edge round
  alike), the minor coordinate rounded the same way. Every step that changes the
  upsampled x and lands on a pixel centre column gives a boundary point: column
  ``(x' + .5) / 5 - .5``, row ``ceil`` of the smaller upsampled y, clipped to [0, h]. The
  mask toggles at each boundary point ``x * h + y`` (column-major); points that repeat an
  even number of times cancel, as maskApi.c's merge of zero-length runs does.
  """
  k = xy.size // 2
  if k < 2:
    return np.array([h * w], np.int64)
  scale = 5.0
  x = np.trunc(scale * xy[0::2] + 0.5).astype(np.int64)
  y = np.trunc(scale * xy[1::2] + 0.5).astype(np.int64)
  xs, ys, xe, ye = x, y, np.roll(x, -1), np.roll(y, -1)
  dx, dy = np.abs(xe - xs), np.abs(ys - ye)
  xmajor = dx >= dy
  flip = (xmajor & (xs > xe)) | (~xmajor & (ys > ye))
  xs, xe = np.where(flip, xe, xs), np.where(flip, xs, xe)
  ys, ye = np.where(flip, ye, ys), np.where(flip, ys, ye)
  steps = np.maximum(dx, dy)
  with np.errstate(invalid="ignore", divide="ignore"):
    slope = np.where(xmajor, (ye - ys).astype(np.float64) / dx,
                     (xe - xs).astype(np.float64) / dy)
  slope = np.where(steps == 0, 0.0, slope)  # C: NaN, only for a point never used below
  n = steps + 1
  total = int(n.sum())
  if total > _MAX_POLY_POINTS:
    raise DataError(f"polygon spans {total} upsampled boundary points; expected at most "
                    f"{_MAX_POLY_POINTS} (coordinates far outside the image?)")
  edge = np.repeat(np.arange(k), n)
  d = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)
  t = np.where(flip[edge], steps[edge] - d, d)
  xm = xmajor[edge]
  major = t + np.where(xm, xs[edge], ys[edge])
  minor_start = np.where(xm, ys[edge], xs[edge]).astype(np.float64)
  minor = np.trunc(minor_start + slope[edge] * t.astype(np.float64) + 0.5).astype(np.int64)
  u = np.where(xm, major, minor)
  v = np.where(xm, minor, major)

  j = np.flatnonzero(u[1:] != u[:-1]) + 1
  uj, up = u[j], u[j - 1]
  xd = np.where(uj < up, uj, uj - 1).astype(np.float64)
  xd = (xd + 0.5) / scale - 0.5
  keep = (np.floor(xd) == xd) & (xd >= 0) & (xd <= w - 1)
  yd = np.minimum(v[j], v[j - 1])[keep].astype(np.float64)
  yd = np.ceil(np.clip((yd + 0.5) / scale - 0.5, 0, h))
  points = xd[keep].astype(np.int64) * h + yd.astype(np.int64)
  values, times = np.unique(points, return_counts=True)
  toggles = values[(times % 2 == 1) & (values < h * w)]
  return np.diff(np.concatenate([[0], toggles, [h * w]])).astype(np.int64)


def _poly_counts_many(polys: list[np.ndarray], h: int, w: int) -> list[np.ndarray] | None:
  """`_poly_counts` of many polygons (each >= 2 points) in one pass; None if one is too
  large (then `_poly_counts` raises)."""
  k = np.array([p.size // 2 for p in polys], np.int64)
  xy = np.concatenate(polys)
  scale = 5.0
  x = np.trunc(scale * xy[0::2] + 0.5).astype(np.int64)
  y = np.trunc(scale * xy[1::2] + 0.5).astype(np.int64)
  first = np.cumsum(k) - k
  nxt = np.arange(1, x.size + 1)
  nxt[first + k - 1] = first  # np.roll(-1) inside each polygon
  xs, ys, xe, ye = x, y, x[nxt], y[nxt]
  dx, dy = np.abs(xe - xs), np.abs(ys - ye)
  xmajor = dx >= dy
  flip = (xmajor & (xs > xe)) | (~xmajor & (ys > ye))
  xs, xe = np.where(flip, xe, xs), np.where(flip, xs, xe)
  ys, ye = np.where(flip, ye, ys), np.where(flip, ys, ye)
  steps = np.maximum(dx, dy)
  with np.errstate(invalid="ignore", divide="ignore"):
    slope = np.where(xmajor, (ye - ys).astype(np.float64) / dx,
                     (xe - xs).astype(np.float64) / dy)
  slope = np.where(steps == 0, 0.0, slope)
  n = steps + 1
  poly_of_edge = np.repeat(np.arange(len(polys)), k)
  per_poly = np.bincount(poly_of_edge, weights=n, minlength=len(polys))
  if per_poly.max() > _MAX_POLY_POINTS:
    return None
  total = int(n.sum())
  edge = np.repeat(np.arange(x.size), n)
  d = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)
  t = np.where(flip[edge], steps[edge] - d, d)
  xm = xmajor[edge]
  major = t + np.where(xm, xs[edge], ys[edge])
  minor_start = np.where(xm, ys[edge], xs[edge]).astype(np.float64)
  minor = np.trunc(minor_start + slope[edge] * t.astype(np.float64) + 0.5).astype(np.int64)
  u = np.where(xm, major, minor)
  v = np.where(xm, minor, major)
  pid = poly_of_edge[edge]

  j = np.flatnonzero((u[1:] != u[:-1]) & (pid[1:] == pid[:-1])) + 1
  uj, up = u[j], u[j - 1]
  xd = np.where(uj < up, uj, uj - 1).astype(np.float64)
  xd = (xd + 0.5) / scale - 0.5
  keep = (np.floor(xd) == xd) & (xd >= 0) & (xd <= w - 1)
  yd = np.minimum(v[j], v[j - 1])[keep].astype(np.float64)
  yd = np.ceil(np.clip((yd + 0.5) / scale - 0.5, 0, h))
  hw = h * w
  points = xd[keep].astype(np.int64) * h + yd.astype(np.int64)
  keys = pid[j][keep] * (hw + 1) + points
  values, times = np.unique(keys, return_counts=True)
  values = values[times % 2 == 1]
  tp, tv = values // (hw + 1), values % (hw + 1)
  sel = tv < hw
  tp, tv = tp[sel], tv[sel]
  m = np.bincount(tp, minlength=len(polys))  # toggles per polygon
  start = np.cumsum(m) - m
  prev = np.zeros_like(tv)
  if tv.size:
    prev[1:] = tv[:-1]
    prev[start[m > 0]] = 0
  out = np.empty(tv.size + len(polys), np.int64)
  out[np.arange(tv.size) + tp] = tv - prev
  last = np.where(m > 0, tv[np.maximum(start + m - 1, 0)] if tv.size else 0, 0)
  out[start + m + np.arange(len(polys))] = hw - last
  return np.split(out, (start + m + np.arange(len(polys)) + 1)[:-1].tolist())


def _counts_to_strings(counts_list: list[np.ndarray]) -> list[bytes]:
  """`_counts_to_string` of many counts in one pass."""
  lengths = np.array([c.size for c in counts_list], np.int64)
  c = np.concatenate(counts_list).astype(np.int64)
  first = np.cumsum(lengths) - lengths
  r = np.arange(c.size) - np.repeat(first, lengths)
  x = c.copy()
  back = r >= 3
  x[back] -= c[np.flatnonzero(back) - 2]
  groups = np.ones(x.shape, np.int64)
  for g in range(1, _MAX_GROUPS):
    half = np.int64(1) << (5 * g - 1)
    groups += (x < -half) | (x >= half)
  k = np.arange(_MAX_GROUPS, dtype=np.int64)
  chars = (x[:, None] >> (5 * k)) & 0x1F
  chars |= np.where(k[None, :] < groups[:, None] - 1, 0x20, 0)
  chars += 48
  data = chars[k[None, :] < groups[:, None]].astype(np.uint8).tobytes()
  gsum = np.concatenate([[0], np.cumsum(groups)])
  bounds = gsum[np.concatenate([first, [c.size]])].tolist()
  return [data[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _polygons_many(items: list[tuple[int, list[np.ndarray]]], h: int, w: int) -> dict:
  """RLEs of validated polygon lists (index, polygons) of one image size, by index."""
  flat, owner = [], []
  for i, polys in items:
    for p in polys:
      if p.size >= 4:
        flat.append(p)
        owner.append(i)
  counts = _poly_counts_many(flat, h, w) if flat else []
  if counts is None:
    return {}
  per: dict = {i: [] for i, _ in items}
  for i, c in zip(owner, counts):
    per[i].append(c)
  merged = {}
  for i, polys in items:
    cs = per[i]
    if len(cs) == 1 and len(polys) == 1:
      merged[i] = cs[0]
      continue
    flat_mask = np.zeros(h * w, bool)
    for c in cs:
      flat_mask |= _decode_flat(c)
    merged[i] = _encode_flat(flat_mask)
  keys = list(merged)
  strings = _counts_to_strings([merged[i] for i in keys])
  cache = _BATCH_CACHE
  if len(cache) + len(keys) > _BATCH_CACHE_SIZE:
    cache.clear()
  out = {}
  for i, s_ in zip(keys, strings):
    c = merged[i]
    c.flags.writeable = False
    cache[s_] = (c, h * w, True)
    out[i] = {"size": [h, w], "counts": s_}
  return out


def _polygon(poly: Any, i: int) -> np.ndarray:
  if isinstance(poly, (str, bytes)) or np.asarray(poly, object).ndim != 1:
    raise DataError(f"polygon {i} {_short(poly)} is not a flat list [x1, y1, x2, y2, ...]")
  try:
    xy = np.asarray(poly, np.float64)
  except (TypeError, ValueError) as e:
    raise DataError(f"polygon {i} {_short(poly)} is not a list of numbers") from e
  if xy.size % 2:
    raise DataError(f"polygon {i} has an odd number of coordinates ({xy.size}); expected "
                    "[x1, y1, x2, y2, ...]")
  if not np.all(np.isfinite(xy)) or (xy.size and np.abs(xy).max() >= 4e8):
    raise DataError(f"polygon {i} has non-finite or huge coordinates {_short(poly)}")
  return xy


def to_rles(segmentations: Sequence[Any], height: int, width: int) -> list[RLE]:
  """`to_rle` of each segmentation of one image (compressed RLEs checked together)."""
  h, w = _size((height, width), "image")
  segs = list(segmentations)
  out: list = [None] * len(segs)
  fast, strings = [], []
  for i, seg in enumerate(segs):
    if type(seg) is dict and "counts" in seg:  # pylint: disable=unidiomatic-typecheck
      size, counts = seg.get("size"), _plain_string(seg["counts"])
      if (counts is not None and type(size) is list and len(size) == 2
          and type(size[0]) is int and type(size[1]) is int and size[0] == h
          and size[1] == w):
        fast.append(i)
        strings.append(counts)
  if fast and _counts_many([(h, w)] * len(fast), strings) is not None:
    for i, counts in zip(fast, strings):
      out[i] = {"size": [h, w], "counts": counts}
  polys = []
  if h and w:
    for i, seg in enumerate(segs):
      if out[i] is None and type(seg) is list and seg:  # pylint: disable=unidiomatic-typecheck
        try:
          ps = [_polygon(p, j) for j, p in enumerate(seg)]
        except DataError:
          continue
        if ps[0].size >= 6:
          polys.append((i, ps))
  if polys:
    for i, rle in _polygons_many(polys, h, w).items():
      out[i] = rle
  for i, seg in enumerate(segs):
    if out[i] is None:
      out[i] = to_rle(seg, h, w)
  return out


def to_rle(segmentation: Any, height: int, width: int) -> RLE:
  """Compressed RLE of a COCO segmentation for an image of ``height x width`` pixels, as
  pycocotools' ``merge(frPyObjects(segmentation, h, w))`` (COCO.annToRLE):

  - a list of polygons ``[[x1, y1, x2, y2, ...], ...]``, each rasterized as maskApi.c
    rleFrPoly and their union taken (the first needs >= 3 points, see the module doc);
  - an uncompressed RLE ``{'size': [h, w], 'counts': [ints]}`` (whole floats allowed);
  - a compressed RLE ``{'size': [h, w], 'counts': str | bytes}`` (returned with bytes
    counts, otherwise as given).
  """
  h, w = _size((height, width), "image")
  if isinstance(segmentation, Mapping):
    if "counts" not in segmentation or "size" not in segmentation:
      raise DataError(f"segmentation {_short(segmentation)} is a dict without 'counts' "
                      "and 'size'")
    size = _size(segmentation["size"], "segmentation")
    if size != (h, w):
      raise DataError(f"segmentation size {list(size)} is not the image size [{h}, {w}]")
    counts = segmentation["counts"]
    if isinstance(counts, (str, bytes, bytearray)):
      raw = _ascii(counts, "segmentation")
      _parse({"size": [h, w], "counts": bytes(raw)}, "segmentation")
      return {"size": [h, w], "counts": bytes(raw)}
    try:
      array = np.asarray(counts)
      ok = array.ndim == 1 and (array.size == 0 or np.issubdtype(array.dtype, np.integer) or (
          np.issubdtype(array.dtype, np.floating) and np.all(array == np.round(array))))
    except (TypeError, ValueError):
      ok = False
    if not ok:
      raise DataError(f"segmentation counts {_short(counts)} are not a string or a list of "
                      "whole numbers")
    counts = _check_counts(array.astype(np.int64), h, w, "segmentation")
    return _make(h, w, counts)
  if isinstance(segmentation, (str, bytes)) or not isinstance(segmentation, Sequence):
    raise DataError(f"segmentation {_short(segmentation)} is neither a list of polygons nor "
                    "an RLE dict")
  if len(segmentation) == 0:
    raise DataError("segmentation is an empty list of polygons")
  polys = [_polygon(p, i) for i, p in enumerate(segmentation)]
  if polys[0].size < 6:
    raise DataError(f"polygon 0 has {polys[0].size // 2} points; expected at least 3")
  if h == 0 or w == 0:
    raise DataError(f"cannot rasterize polygons into a {h}x{w} image")
  counts = [_poly_counts(p, h, w) for p in polys]
  if len(counts) == 1:
    return _make(h, w, counts[0])
  flat = _decode_flat(counts[0])
  for c in counts[1:]:
    flat |= _decode_flat(c)
  return _make(h, w, _encode_flat(flat))
