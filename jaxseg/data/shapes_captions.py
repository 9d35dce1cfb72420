"""`shapes_captions`: the `shapes` scenes with named colours and one sentence per object.

The images are rendered by `jaxseg.data.shapes.render_example` (same backgrounds, shapes,
placement rules and shading), except that each object's colour is drawn uniformly among
the `PALETTE` colours that contrast enough with what the object covers (the most
contrasting one if none does; `shapes.paint_shape(..., palette=...)`). Each object gets
ONE caption, a deterministic function of the rendered image:

  caption  := object [relation]
  object   := "a" SIZE COLOUR SHAPE
  relation := "behind" ART COLOUR SHAPE      (this object is partly hidden by that one)
            | "in front of" ART COLOUR SHAPE (this object hides part of that one)
  ART      := "an" before orange, else "a"
  SIZE     := small | medium | large   (the longer side of the object's visible box,
                                        as a fraction of the image side: < 0.245 small,
                                        < 0.33 medium, else large (SIZE_THRESHOLDS; about
                                        a third each in the default config)
  COLOUR   := red | green | blue | yellow | purple | orange | white | black
  SHAPE    := circle | square | triangle

e.g. "a large red circle", "a small green triangle in front of a white circle",
"a medium blue square behind an orange triangle".

Relations: object j hides part of object k when j was painted later and at least
`min_overlap_area(S)` pixels of k's placed shape show j (visible in the image as j
cutting into k); k is then "behind" j and j "in front of" k. Of all the objects an
object is behind or in front of, the caption names the one with the largest such
overlap (ties: the earlier object); no clause when there is none. No left/right words:
the images are flipped in augmentation.

Features:
* ``image``: ``(S, S, 3)`` uint8; ``instance_mask``: ``(S, S, 1)`` uint8 (0 background,
  k the k-th object), as in `shapes`.
* ``objects``: sequence of ``bbox`` (normalized visible box, as `shapes`), ``label``
  (circle / square / triangle), ``colour`` (ClassLabel of `COLOUR_NAMES`), ``size``
  (ClassLabel small / medium / large), ``caption`` (Text) and ``area`` (visible pixels).

Configs (`shapes_captions_config`, names derived as for `shapes`: ``s128_n2000-300_o1-4``,
the default): image_size, num_train, num_validation, min_objects, max_objects. Generated
offline; example i of a split is rendered from
``np.random.default_rng([SPLIT_SEEDS[split], i])`` (a different stream from `shapes`).
"""
from __future__ import annotations

import dataclasses
import functools
import re

import numpy as np
import tensorflow_datasets as tfds

from jaxseg.data import shapes

# Colours chosen to stay apart (nearest-colour) after paint_shape's shading (+-25 on every
# channel) and noise: the closest pair (orange / yellow) is ~90 apart.
PALETTE = (
    ("red", (215, 30, 30)),
    ("green", (30, 165, 45)),
    ("blue", (35, 60, 215)),
    ("yellow", (240, 225, 40)),
    ("purple", (140, 40, 165)),
    ("orange", (245, 135, 20)),
    ("white", (245, 245, 245)),
    ("black", (20, 20, 20)),
)
COLOUR_NAMES = tuple(name for name, _ in PALETTE)
PALETTE_RGB = np.array([rgb for _, rgb in PALETTE], np.float32)
SIZE_NAMES = ("small", "medium", "large")
# Longer side of the visible box / image side: thresholds small | medium | large.
SIZE_THRESHOLDS = (0.245, 0.33)
SHAPE_NAMES = shapes.SHAPE_NAMES
CLASS_NAMES = shapes.CLASS_NAMES
SPLIT_SEEDS = {"train": 10, "validation": 11}
_NAME_RE = re.compile(r"s(\d+)_n(\d+)-(\d+)_o(\d+)-(\d+)")
_PARAM_NAMES = ("image_size", "num_train", "num_validation", "min_objects", "max_objects")


def min_overlap_area(image_size: int) -> int:
  """Pixels of an object's shape another must hide for a behind / in front of clause."""
  return max(2, int(round(8 * (image_size / 128) ** 2)))


def size_name(box_side_fraction: float) -> str:
  """small / medium / large of the visible box's longer side over the image side."""
  return SIZE_NAMES[int(np.searchsorted(SIZE_THRESHOLDS, box_side_fraction, side="right"))]


@dataclasses.dataclass(eq=False, kw_only=True)
class ShapesCaptionsConfig(shapes.ShapesConfig):
  """Parameters of `shapes_captions` (immutable; see `shapes_captions_config`)."""
  num_validation: int = 300


_CONFIGS: dict[str, ShapesCaptionsConfig] = {}


def shapes_captions_config(**overrides) -> ShapesCaptionsConfig:
  """The interned config with these parameters (image_size, num_train, num_validation,
  min_objects, max_objects), named ``s{S}_n{train}-{validation}_o{min}-{max}``."""
  unknown = set(overrides) - set(_PARAM_NAMES)
  if unknown:
    raise TypeError(f"Unknown ShapesCaptionsConfig parameters: {sorted(unknown)}.")
  defaults = {f.name: f.default for f in dataclasses.fields(ShapesCaptionsConfig)}
  p = {k: int(overrides.get(k, defaults[k])) for k in _PARAM_NAMES}
  name = (f"s{p['image_size']}_n{p['num_train']}-{p['num_validation']}"
          f"_o{p['min_objects']}-{p['max_objects']}")
  if name not in _CONFIGS:
    _CONFIGS[name] = ShapesCaptionsConfig(
        name=name, description=(
            f"{p['image_size']}x{p['image_size']} images, {p['min_objects']}-"
            f"{p['max_objects']} captioned objects each, {p['num_train']} train / "
            f"{p['num_validation']} validation."), **p)
  return _CONFIGS[name]


def _config_from_name(name: str) -> ShapesCaptionsConfig | None:
  return shapes.parse_config_name(name, _NAME_RE, _PARAM_NAMES, shapes_captions_config)


# -- rendering (numpy) ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Scene:
  """A rendered example and what its captions are made from."""
  example: dict  # laid out like the TFDS features
  placed: tuple[np.ndarray, ...]  # each object's whole shape (bool [S, S]) as placed
  colours: tuple[int, ...]  # palette index per object
  relations: tuple[tuple[str, int] | None, ...]  # ("behind" | "in front of", other) or None


def _relations(placed, instance: np.ndarray, min_overlap: int):
  """Per object k: the (relation, other) with the largest hidden-pixel count (module
  docstring), or None."""
  n = len(placed)
  # hidden[k, j]: pixels of k's placed shape that show j (j painted later, on top).
  hidden = np.zeros((n, n), np.int64)
  for k in range(n):
    shown = instance[placed[k]]
    counts = np.bincount(shown, minlength=n + 1)[1:]
    hidden[k, k + 1:] = counts[k + 1:]
  out = []
  for k in range(n):
    best = None
    for j in range(n):
      if j == k:
        continue
      overlap = hidden[k, j] if j > k else hidden[j, k]
      if overlap >= min_overlap and (best is None or overlap > best[0]):
        best = (overlap, "behind" if j > k else "in front of", j)
    out.append(None if best is None else best[1:])
  return tuple(out)


def caption(size: str, colour: str, shape: str, relation=None) -> str:
  """The sentence of the grammar (module docstring); relation = (word, colour, shape)."""
  text = f"a {size} {colour} {shape}"
  if relation is not None:
    word, other_colour, other_shape = relation
    article = "an" if other_colour[0] in "aeiou" else "a"
    text += f" {word} {article} {other_colour} {other_shape}"
  return text


def render_scene(rng: np.random.Generator, config: ShapesCaptionsConfig) -> Scene:
  """One example (as the TFDS features) and the placed shapes its captions describe."""
  placed, colours = [], []

  def paint(rng, image, mask, shade):
    colours.append(shapes.paint_shape(rng, image, mask, shade, palette=PALETTE_RGB))
    placed.append(mask.copy())

  raw = shapes.render_example(rng, config, paint=paint)
  size = config.image_size
  instance = raw["instance_mask"][..., 0]
  objects = raw["objects"]
  relations = _relations(placed, instance, min_overlap_area(size))
  bbox = objects["bbox"]  # normalized ymin, xmin, ymax, xmax
  sides = np.maximum(bbox[:, 2] - bbox[:, 0], bbox[:, 3] - bbox[:, 1])
  sizes = [SIZE_NAMES.index(size_name(float(s))) for s in sides]
  labels = [int(l) for l in objects["label"]]
  captions = []
  for k in range(len(labels)):
    rel = relations[k]
    other = None if rel is None else (rel[0], COLOUR_NAMES[colours[rel[1]]],
                                      SHAPE_NAMES[labels[rel[1]]])
    captions.append(caption(SIZE_NAMES[sizes[k]], COLOUR_NAMES[colours[k]],
                            SHAPE_NAMES[labels[k]], other))
  example = {
      "image": raw["image"],
      "instance_mask": raw["instance_mask"],
      "objects": {
          "bbox": bbox, "label": objects["label"],
          "colour": np.asarray(colours, np.int64), "size": np.asarray(sizes, np.int64),
          "caption": captions, "area": objects["area"],
      },
  }
  return Scene(example, tuple(placed), tuple(colours), relations)


def render_example(rng: np.random.Generator, config: ShapesCaptionsConfig) -> dict:
  """One example as numpy arrays laid out like the TFDS features."""
  return render_scene(rng, config).example


# -- TFDS builder ----------------------------------------------------------------------------
class ShapesCaptions(shapes.GeneratedBuilder):
  """`shapes` scenes with a caption per object (see the module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [shapes_captions_config()]
  config_from_name = staticmethod(_config_from_name)
  render_example = staticmethod(render_example)
  split_seeds = SPLIT_SEEDS

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    image = functools.partial(tfds.features.Image, dtype=np.uint8)
    return self._info_from_doc(__doc__, {
        "image": image(shape=(size, size, 3)),
        "instance_mask": image(shape=(size, size, 1)),
        "objects": tfds.features.Sequence({
            "bbox": tfds.features.BBoxFeature(),
            "label": tfds.features.ClassLabel(names=SHAPE_NAMES),
            "colour": tfds.features.ClassLabel(names=COLOUR_NAMES),
            "size": tfds.features.ClassLabel(names=SIZE_NAMES),
            "caption": tfds.features.Text(),
            "area": np.int32,
        }),
    })
