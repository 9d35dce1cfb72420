"""Pictures: class-colour maps, legends, heat maps with colour bars, image grids as PNG."""
from __future__ import annotations

import os
import textwrap
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

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
