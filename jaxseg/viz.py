"""Pictures: class-colour maps, legends, heat maps with colour bars, image grids as PNG,
boxes, skeletons and detections (boxes, masks, keypoints) drawn on images."""
from __future__ import annotations

import os
import textwrap
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from jaxseg.data import skeleton

IGNORE_COLOUR = (255, 255, 255)
# Matplotlib's perceptually uniform 'viridis' colour map at 9 evenly spaced points
# (dark purple = low, yellow = high); `heatmap` interpolates linearly between them.
VIRIDIS = np.array([(68, 1, 84), (71, 45, 123), (59, 82, 139), (44, 114, 142),
                    (33, 145, 140), (40, 174, 128), (94, 201, 98), (173, 220, 48),
                    (253, 231, 37)], np.float32)


def palette(num_classes: int) -> np.ndarray:
  """[num_classes, 3] uint8 distinct colours; class 0 (background) is black (PASCAL VOC's
  bit-interleaved colour map)."""
  colours = np.zeros((num_classes, 3), np.uint8)
  for c in range(num_classes):
    label, r, g, b = c, 0, 0, 0
    for shift in range(7, -1, -1):
      r |= ((label >> 0) & 1) << shift
      g |= ((label >> 1) & 1) << shift
      b |= ((label >> 2) & 1) << shift
      label >>= 3
    colours[c] = (r, g, b)
  return colours


def colourize(labels: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
  """int labels [..., H, W] -> uint8 RGB [..., H, W, 3]; ignored pixels white."""
  colours = palette(num_classes)
  out = colours[np.clip(labels, 0, num_classes - 1)]
  out[labels == ignore_index] = IGNORE_COLOUR
  return out


def legend(class_names: Sequence[str], width: int) -> np.ndarray:
  """A strip of colour swatches with class names, `width` pixels wide."""
  colours = palette(len(class_names))
  row_height, per_row = 16, max(1, width // 110)
  rows = -(-len(class_names) // per_row)
  strip = Image.new("RGB", (width, rows * row_height + 4), (255, 255, 255))
  draw = ImageDraw.Draw(strip)
  for i, name in enumerate(class_names):
    x, y = (i % per_row) * 110 + 4, (i // per_row) * row_height + 2
    draw.rectangle([x, y, x + 12, y + 12], fill=tuple(int(v) for v in colours[i]),
                   outline=(128, 128, 128))
    draw.text((x + 16, y), str(name)[:14], fill=(0, 0, 0))
  return np.asarray(strip)


def heatmap(values: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
  """float [..., H, W] -> uint8 RGB [..., H, W, 3] on the viridis scale, `vmin` dark,
  `vmax` bright (values outside are clipped): a fixed scale, comparable across pictures."""
  t = np.clip((np.asarray(values, np.float32) - vmin) / max(vmax - vmin, 1e-12), 0, 1)
  x = t * (len(VIRIDIS) - 1)
  i = np.minimum(x.astype(np.int32), len(VIRIDIS) - 2)
  w = (x - i)[..., None]
  return np.rint((1 - w) * VIRIDIS[i] + w * VIRIDIS[i + 1]).astype(np.uint8)


def colour_bar(width: int, vmin: float, vmax: float, label: str) -> np.ndarray:
  """A strip `width` pixels wide: the `heatmap` scale from `vmin` to `vmax`, its end
  values, and `label` (wrapped) below."""
  bar_width = max(width - 8, 2)
  lines = textwrap.wrap(label, max(width // 6 - 1, 8))
  strip = Image.new("RGB", (width, 25 + 11 * len(lines)), (255, 255, 255))
  ramp = heatmap(np.linspace(vmin, vmax, bar_width)[None].repeat(10, 0), vmin, vmax)
  strip.paste(Image.fromarray(ramp), (4, 2))
  draw = ImageDraw.Draw(strip)
  draw.text((4, 13), f"{vmin:.2f}", fill=(0, 0, 0))
  high = f"{vmax:.2f}"
  draw.text((max(4 + bar_width - 6 * len(high), 40), 13), high, fill=(0, 0, 0))
  for i, line in enumerate(lines):
    draw.text((4, 24 + 11 * i), line, fill=(0, 0, 0))
  return np.asarray(strip)


def grid(rows: Sequence[Sequence[np.ndarray]], pad: int = 2) -> np.ndarray:
  """Tile equally sized uint8 RGB images [H, W, 3] into one image, white padding."""
  h, w, _ = rows[0][0].shape
  cols = max(len(r) for r in rows)
  out = np.full((len(rows) * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
  for i, row in enumerate(rows):
    for j, img in enumerate(row):
      y, x = pad + i * (h + pad), pad + j * (w + pad)
      out[y:y + h, x:x + w] = img
  return out


def to_uint8(images: np.ndarray) -> np.ndarray:
  return np.clip(np.asarray(images, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def save_png(image: np.ndarray, path: str) -> str:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  Image.fromarray(image).save(path)
  return path


# ----------------------------------------------------------------------------
# Keypoints and boxes drawn on images (continuous pixel coordinates: the image spans
# [0, W] x [0, H]; pixel (row i, col j) has centre (j + 0.5, i + 0.5)).

# Skeleton colours by the person's side (see jaxseg.data.skeleton.JOINT_SIDES).
SIDE_COLOURS = {"right": (230, 50, 50), "left": (40, 110, 240), "centre": (250, 210, 30)}
# Default box colours, cycled over boxes.
BOX_COLOURS = ((255, 60, 60), (60, 200, 60), (60, 120, 255), (255, 200, 0),
               (200, 60, 255), (0, 210, 210), (255, 130, 0), (255, 255, 255))


def upscale(image: np.ndarray, scale: int) -> np.ndarray:
  """uint8 RGB copy of `image` (uint8, or float in [0, 1]; [H, W] grey or [H, W, 3])
  enlarged `scale` (integer) times by nearest neighbour: every pixel a sharp block."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    image = to_uint8(image)
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, -1)
  scale = int(scale)
  if scale < 1:
    raise ValueError(f"scale must be a positive integer, got {scale}.")
  return np.ascontiguousarray(image.repeat(scale, 0).repeat(scale, 1))


def _stroke_unit(out: Image.Image, scale: int) -> float:
  """Stroke size multiplier: `scale`, or more for large images (one unit per 64 px), so
  an image enlarged before drawing gets the same strokes as one enlarged by `scale`."""
  return max(float(scale), min(out.size) / 64)


def _rgb(colour) -> tuple[int, int, int]:
  return tuple(int(c) for c in np.asarray(colour).reshape(3))


def draw_skeleton(image: np.ndarray, joints: np.ndarray, edges=None, colour=None,
                  scale: int = 1) -> np.ndarray:
  """Draws keypoints and the edges between them on a copy of `image`, enlarged `scale`
  times (integer) so small pictures stay readable; returns uint8 [H*scale, W*scale, 3].

  `joints`: [K, 2] (all drawn as visible) or [K, 3] (x, y, v); joints with v == 0 and
  edges touching them are skipped, occluded joints (v == 1) are drawn hollow. `edges`:
  (joint_a, joint_b) or (name, joint_a, joint_b) entries; default: the LSP
  `SKELETON_EDGES` when K = 14, else none. Colours: one `colour` for everything, or
  else by the person's side (`SIDE_COLOURS`: right, left, and centre for joints and for
  edges whose ends are on different sides); sides are known only for the 14 LSP joints.
  Strokes grow with `scale` or with the image (`_stroke_unit`): drawing on a 64 px
  image with scale=3 equals drawing on its 192 px enlargement with joints times 3.
  """
  out = Image.fromarray(upscale(image, scale))
  _skeleton_onto(out, joints, edges, colour, scale, _stroke_unit(out, scale))
  return np.asarray(out)


def _skeleton_onto(out: Image.Image, joints, edges, colour, scale: int, unit: float):
  """`draw_skeleton`'s drawing onto the (already enlarged) PIL image `out`."""
  joints = np.asarray(joints, np.float32)
  k = len(joints)
  vis = joints[:, 2] if joints.shape[1] > 2 else np.full(k, 2, np.float32)
  drawn = (vis > 0) & np.isfinite(joints[:, :2]).all(1)
  # Continuous coordinates -> PIL's, where integer coordinates are pixel centres.
  xy = joints[:, :2] * scale - 0.5
  sides = skeleton.JOINT_SIDES if k == skeleton.NUM_JOINTS else ("centre",) * k
  if edges is None:
    edges = skeleton.SKELETON_EDGES if k == skeleton.NUM_JOINTS else ()
  width = max(1, round(0.75 * unit))
  radius = max(1.0, 0.9 * unit)

  def pick(side_a, side_b=None):
    if colour is not None:
      return _rgb(colour)
    side = side_a if side_b in (None, side_a) else "centre"
    return SIDE_COLOURS[side]

  draw = ImageDraw.Draw(out)
  for edge in edges:
    a, b = int(edge[-2]), int(edge[-1])
    if drawn[a] and drawn[b]:
      draw.line([tuple(xy[a]), tuple(xy[b])], fill=pick(sides[a], sides[b]), width=width)
  for j in np.flatnonzero(drawn):
    x, y = xy[j]
    box = [x - radius, y - radius, x + radius, y + radius]
    c = pick(sides[j])
    if vis[j] == 1:
      draw.ellipse(box, outline=c, width=max(1, round(unit / 3)))
    else:
      draw.ellipse(box, fill=c, outline=(0, 0, 0) if unit >= 3 else c)


def draw_boxes(image: np.ndarray, boxes: np.ndarray, labels=None, colours=None,
               scale: int = 1) -> np.ndarray:
  """Draws box outlines (and optional text labels such as "circle 0.93") on a copy of
  `image` enlarged `scale` times; returns uint8 [H*scale, W*scale, 3].

  `boxes`: [M, 4] absolute pixel x1, y1, x2, y2 (continuous coordinates); the outline
  runs along the outermost pixels the box touches. Rows with a negative (padding, -1)
  or non-finite coordinate are skipped. `labels`: M strings (or None entries);
  `colours`: one RGB colour for all boxes or [M, 3]; default `BOX_COLOURS` cycled.
  """
  out = Image.fromarray(upscale(image, scale))
  _boxes_onto(out, boxes, labels, colours, scale, _stroke_unit(out, scale))
  return np.asarray(out)


def _boxes_onto(out: Image.Image, boxes, labels, colours, scale: int, unit: float):
  """`draw_boxes`'s drawing onto the (already enlarged) PIL image `out`."""
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  if colours is None:
    colours = [BOX_COLOURS[m % len(BOX_COLOURS)] for m in range(len(boxes))]
  elif np.asarray(colours).ndim == 1:
    colours = [colours] * len(boxes)
  draw = ImageDraw.Draw(out)
  width = max(1, round(unit / 2))
  for m, box in enumerate(boxes):
    if not np.isfinite(box).all() or (box < 0).any():
      continue
    x1, y1 = np.floor(box[:2] * scale).astype(int)
    x2, y2 = np.ceil(box[2:] * scale).astype(int) - 1
    x2, y2 = max(x1, x2), max(y1, y2)
    c = _rgb(colours[m])
    draw.rectangle([x1, y1, x2, y2], outline=c, width=width)
    label = None if labels is None else labels[m]
    if label:
      left, top, right, bottom = draw.textbbox((0, 0), str(label))
      h = bottom - top + 2
      ty = y1 - h if y1 - h >= 0 else y1 + width
      draw.rectangle([x1, ty, x1 + right - left + 2, ty + h - 1], fill=c)
      ink = (0, 0, 0) if 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] > 128 else (255, 255, 255)
      draw.text((x1 + 1 - left, ty + 1 - top), str(label), fill=ink)


def detection_colours(labels) -> np.ndarray:
  """[M, 3] uint8 colour of each label: `palette`'s, as in the segmentation pictures."""
  labels = np.asarray(labels, np.int64).reshape(-1)
  return palette(int(max(labels.max(initial=0), 0)) + 1)[np.clip(labels, 0, None)]


def draw_detections(image: np.ndarray, boxes: np.ndarray, labels, scores=None,
                    class_names: Sequence[str] | None = None, masks=None, keypoints=None,
                    keypoint_edges=None, valid=None, score_threshold: float | None = None,
                    mask_alpha: float = 0.5, scale: int = 1,
                    instance_colours: bool = False) -> np.ndarray:
  """Detections (or ground truth) drawn on a copy of `image` enlarged `scale` times;
  returns uint8 [H*scale, W*scale, 3].

  `boxes` [M, 4] pixel x1, y1, x2, y2 and `labels` [M] (1..C; padded rows -1): outlines
  with "name score" text (`class_names[label]`, e.g. a source's class names with
  background at 0; else the label number; the score with two decimals when `scores`
  [M] is given). Rows are drawn where `valid` [M] (default: all), label >= 0 and (with
  `score_threshold`) score >= score_threshold. Each row's colour is its label's
  (`detection_colours`), or with `instance_colours` one of its own (instance
  segmentation: two objects of a class stay apart). `masks` [M, H, W] (at the image's resolution, nonzero = inside):
  translucent overlays, pixel = (1 - mask_alpha) * pixel + mask_alpha * colour, rows in
  order; `keypoints` [M, K, 3] (x, y, v): `draw_skeleton` per row in its colour, with
  `keypoint_edges` ((a, b) pairs; default: the LSP edges when K = 14, else none).
  Strokes as in `draw_boxes` / `draw_skeleton` at the same `scale`.
  """
  image = np.asarray(image)
  if image.dtype != np.uint8:
    image = to_uint8(image)
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, -1)
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  labels = np.asarray(labels, np.int64).reshape(-1)
  if len(labels) != len(boxes):
    raise ValueError(f"{len(boxes)} boxes but {len(labels)} labels")
  rows = labels >= 0
  if valid is not None:
    rows &= np.asarray(valid, bool).reshape(-1)
  if scores is not None:
    scores = np.asarray(scores, np.float32).reshape(-1)
    if score_threshold is not None:
      rows &= scores >= score_threshold
  rows = np.flatnonzero(rows)
  colours = detection_colours(labels)
  if instance_colours:  # the drawn rows in turn take the palette's colours after black
    colours = colours.copy()
    colours[rows] = palette(len(rows) + 1)[1:]
  if masks is not None and len(rows):
    masks = np.asarray(masks)
    if masks.shape[1:] != image.shape[:2]:
      raise ValueError(f"masks {masks.shape} do not match the image {image.shape[:2]}; "
                       f"expected [M, H, W]")
    blended = image.astype(np.float32)
    for m in rows:
      inside = masks[m] > 0
      blended[inside] = (1 - mask_alpha) * blended[inside] + mask_alpha * colours[m]
    image = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
  out = Image.fromarray(upscale(image, scale))
  unit = _stroke_unit(out, scale)
  if keypoints is not None:
    keypoints = np.asarray(keypoints, np.float32)
    for m in rows:
      _skeleton_onto(out, keypoints[m], keypoint_edges, colours[m], scale, unit)

  def text(m):
    name = (class_names[labels[m]] if class_names is not None and labels[m] < len(class_names)
            else str(labels[m]))
    return name if scores is None else f"{name} {scores[m]:.2f}"

  _boxes_onto(out, boxes[rows], [text(m) for m in rows], colours[rows], scale, unit)
  return np.asarray(out)


def caption(image: np.ndarray, text: str, lines: int = 1) -> np.ndarray:
  """`image` (uint8 RGB) with `text` on `lines` white strips below it: wrapped at words
  to the image's width, the last strip clipped (ending "...") when it does not fit; the
  strips not needed stay blank, so images given the same `lines` line up."""
  h, w, _ = image.shape
  strips = Image.new("RGB", (w, 14 * lines), (255, 255, 255))
  draw = ImageDraw.Draw(strips)
  fits = lambda line: draw.textlength(line) <= w - 4  # noqa: E731
  wrapped = [""]
  for word in str(text).split():
    joined = f"{wrapped[-1]} {word}".strip()
    if fits(joined) or not wrapped[-1]:
      wrapped[-1] = joined
    else:
      wrapped.append(word)
  if len(wrapped) > lines:
    wrapped = wrapped[:lines]
    wrapped[-1] += "..."
  for k, line in enumerate(wrapped):
    while not fits(line) and len(line) > 4:  # a word longer than the strip, or the "..."
      line = line[:-4] + "..."
    draw.text((2, 1 + 14 * k), line, fill=(0, 0, 0))
  return np.concatenate([np.asarray(image, np.uint8), np.asarray(strips)], axis=0)
