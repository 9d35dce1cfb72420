"""`shapes`: a synthetic TFDS dataset of random shapes on textured backgrounds.

Every example is an RGB image with one or more circles, squares and triangles
painted on a noisy, textured background, together with dense and per-object
annotations, so the same data serves semantic segmentation, detection and
instance segmentation:

* ``image``: ``(S, S, 3)`` uint8.
* ``segmentation_mask``: ``(S, S, 1)`` uint8 class id per pixel, see
  `CLASS_NAMES`: 0 background, 1 circle, 2 square, 3 triangle.
* ``instance_mask``: ``(S, S, 1)`` uint8, 0 background, ``k`` the ``k``-th
  entry of ``objects`` (1-based).
* ``objects``: sequence of ``bbox`` (normalized ``[ymin, xmin, ymax, xmax]``
  of the object's visible pixels), ``label`` (0 circle, 1 square, 2 triangle,
  i.e. semantic id - 1) and ``area`` (visible pixel count).

Everything is generated offline with numpy (`render_example`); nothing is
downloaded. Example ``i`` of a split is rendered from
``np.random.default_rng([SPLIT_SEEDS[split], i])``, so the data is
deterministic and independent of generation order.

Parameters live in `ShapesConfig`; build configs with `shapes_config`, which
derives the config name (hence the TFDS directory) from the parameters, e.g.
``s128_n2000-500_o1-4``. By default every object is a circle, square or
triangle with equal probability; ``class_probs`` makes a class-imbalanced
variant (e.g. ``(0.90, 0.08, 0.02)``, named ``..._p90-08-02``). Such names also
work as strings::

  tfds.load('shapes/s64_n200-50_o1-2', split='train', data_dir=...)
  tfds.load('shapes', builder_kwargs={'config': shapes_config(image_size=64)})
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Callable, Sequence

import numpy as np
import tensorflow_datasets as tfds

CLASS_NAMES = ('background', 'circle', 'square', 'triangle')
SHAPE_NAMES = CLASS_NAMES[1:]  # `objects/label` names (ClassLabel index).
SPLIT_SEEDS = {'train': 0, 'validation': 1}

# Shape "radius" (circle radius, square half-side, triangle circumradius) as a
# fraction of the image size.
_RADIUS_RANGE = (0.08, 0.22)
# An object must keep at least this fraction of the area it had when placed.
_MIN_KEPT_FRACTION = 0.5
# Minimum L2 RGB distance between a shape's mean colour and what it covers.
_MIN_CONTRAST = 60.0
# Background gratings: cycles per image width (periods of 4-13 px at 128 px: a texture,
# never bands as wide as a shape).
_GRATING_CYCLES = (10.0, 30.0)
_NUM_COLOUR_CANDIDATES = 16
# Placement attempts per optional object / per object below `min_objects`.
_MAX_ATTEMPTS = 20
_MAX_ATTEMPTS_REQUIRED = 200

_NAME_RE = re.compile(
    r's(\d+)_n(\d+)-(\d+)_o(\d+)-(\d+)(?:_p(\d+)-(\d+)-(\d+))?'
)


def _class_percents(class_probs) -> tuple[int, int, int] | None:
  """Validated `class_probs` as whole percentages (None stays None).

  Whole percentages keep the derived config name exact and parseable.
  """
  if class_probs is None:
    return None
  try:
    probs = tuple(float(p) for p in class_probs)
  except (TypeError, ValueError):
    probs = ()
  if (
      len(probs) != len(SHAPE_NAMES)
      or not all(math.isfinite(p) and p >= 0 for p in probs)
      or abs(sum(probs) - 1) > 1e-6
  ):
    raise ValueError(
        f'class_probs must be {len(SHAPE_NAMES)} non-negative probabilities of '
        f'{SHAPE_NAMES} summing to 1 (or None for uniform), got {class_probs!r}.'
    )
  percents = tuple(int(round(p * 100)) for p in probs)
  if any(abs(p * 100 - q) > 1e-6 for p, q in zip(probs, percents)):
    raise ValueError(
        'class_probs must be multiples of 0.01 (they are part of the dataset '
        f'name), got {class_probs!r}.'
    )
  return percents


@dataclasses.dataclass(eq=False, kw_only=True)
class ShapesConfig(tfds.core.BuilderConfig):
  """Parameters of the `shapes` dataset. Immutable; see `shapes_config`."""

  image_size: int = 128
  num_train: int = 2000
  num_validation: int = 500
  min_objects: int = 1
  max_objects: int = 4
  # Probability that an object is a circle / square / triangle; None = uniform.
  class_probs: tuple[float, float, float] | None = None

  def __post_init__(self):
    if self.image_size < 16:
      raise ValueError(f'image_size must be >= 16, got {self.image_size}.')
    if self.num_train < 0 or self.num_validation < 0:
      raise ValueError('Split sizes must be non-negative.')
    if not 0 <= self.min_objects <= self.max_objects <= 255:
      raise ValueError(
          'Need 0 <= min_objects <= max_objects <= 255, got '
          f'{self.min_objects}, {self.max_objects}.'
      )
    percents = _class_percents(self.class_probs)
    if percents is not None:
      self.class_probs = tuple(q / 100 for q in percents)
    object.__setattr__(self, '_frozen', True)

  def __setattr__(self, name, value):
    # The base class is a non-frozen dataclass, so `frozen=True` is not
    # allowed; configs are interned by name, so emulate it.
    if getattr(self, '_frozen', False):
      raise dataclasses.FrozenInstanceError(f'cannot assign to field {name!r}')
    super().__setattr__(name, value)

  @property
  def num_examples(self) -> dict[str, int]:
    return {'train': self.num_train, 'validation': self.num_validation}


# Integer parameters, in the order they appear in derived config names
# (`class_probs`, if set, follows them).
_PARAM_NAMES = (
    'image_size', 'num_train', 'num_validation', 'min_objects', 'max_objects'
)
_CONFIGS: dict[str, ShapesConfig] = {}


def shapes_config(**overrides) -> ShapesConfig:
  """Returns the `ShapesConfig` with the given parameters and a derived name.

  Configs are interned: equal parameters give the same object, which TFDS
  requires for configs named like one of `Shapes.BUILDER_CONFIGS`.
  """
  unknown = set(overrides) - set(_PARAM_NAMES) - {'class_probs'}
  if unknown:
    raise TypeError(f'Unknown ShapesConfig parameters: {sorted(unknown)}.')
  defaults = {f.name: f.default for f in dataclasses.fields(ShapesConfig)}
  p = {k: int(overrides.get(k, defaults[k])) for k in _PARAM_NAMES}
  percents = _class_percents(overrides.get('class_probs'))
  name = (
      f"s{p['image_size']}_n{p['num_train']}-{p['num_validation']}"
      f"_o{p['min_objects']}-{p['max_objects']}"
  )
  description = (
      f"{p['image_size']}x{p['image_size']} images, "
      f"{p['min_objects']}-{p['max_objects']} objects each, "
      f"{p['num_train']} train / {p['num_validation']} validation."
  )
  if percents is not None:
    name += '_p' + '-'.join(f'{q:02d}' for q in percents)
    description += ' Object classes %s with probabilities %s.' % (
        '/'.join(SHAPE_NAMES), '/'.join(f'{q / 100:.2f}' for q in percents))
  if name not in _CONFIGS:
    _CONFIGS[name] = ShapesConfig(
        name=name,
        description=description,
        class_probs=None if percents is None else tuple(q / 100 for q in percents),
        **p,
    )
  return _CONFIGS[name]


def _config_from_name(name: str) -> ShapesConfig | None:
  """Inverse of the naming in `shapes_config`; None if `name` is not one."""
  match = _NAME_RE.fullmatch(name)
  if match is None:
    return None
  groups = match.groups()
  params = dict(zip(_PARAM_NAMES, map(int, groups[:len(_PARAM_NAMES)])))
  if groups[len(_PARAM_NAMES)] is not None:
    params['class_probs'] = tuple(int(q) / 100 for q in groups[len(_PARAM_NAMES):])
  try:
    config = shapes_config(**params)
  except ValueError:
    return None
  return config if config.name == name else None


def parse_config_name(name: str, name_re: re.Pattern, param_names: Sequence[str],
                      make_config: Callable[..., tfds.core.BuilderConfig],
                      errors: type[Exception] | tuple[type[Exception], ...] = ValueError):
  """Inverse of a config naming whose parameters are all ints: the config
  ``make_config(**params)``, `params` the groups `name_re` captures in `name` (in
  `param_names` order); None if `name` does not match, `make_config` raises `errors`,
  or the config it makes has another name (e.g. ``s032...``). Used by `shapes10`,
  `stick_figures` and `shapes_captions`."""
  match = name_re.fullmatch(name)
  if match is None:
    return None
  try:
    config = make_config(**dict(zip(param_names, map(int, match.groups()))))
  except errors:
    return None
  return config if config.name == name else None


def min_visible_area(image_size: int) -> int:
  """Minimum number of visible pixels of every object in an image."""
  return max(10, int(round(30 * (image_size / 128) ** 2)))


# ----------------------------------------------------------------------------
# Rendering (pure numpy).


@functools.lru_cache(maxsize=8)
def _pixel_centres(size: int) -> tuple[np.ndarray, np.ndarray]:
  """(y, x) coordinates of the pixel centres, each of shape (size, size)."""
  c = np.arange(size, dtype=np.float32) + 0.5
  yy, xx = np.meshgrid(c, c, indexing='ij')
  yy.flags.writeable = False
  xx.flags.writeable = False
  return yy, xx


@functools.lru_cache(maxsize=32)
def _bilinear_matrix(g: int, size: int) -> np.ndarray:
  """(size, g) matrix resampling g samples to `size` with linear interpolation."""
  t = (np.arange(size) + 0.5) * ((g - 1) / size)
  i0 = np.minimum(t.astype(np.int64), g - 2)
  w = (t - i0).astype(np.float32)
  m = np.zeros((size, g), np.float32)
  m[np.arange(size), i0] = 1 - w
  m[np.arange(size), i0 + 1] = w
  m.flags.writeable = False
  return m


def _upsample_bilinear(grid: np.ndarray, size: int) -> np.ndarray:
  """Bilinearly resizes a (g, g, C) grid to (size, size, C)."""
  m = _bilinear_matrix(grid.shape[0], size)
  rows = np.tensordot(m, grid, axes=(1, 0))  # (size, g, C)
  return np.tensordot(rows, m, axes=(1, 1)).transpose(0, 2, 1)


def _render_background(rng: np.random.Generator, size: int) -> np.ndarray:
  """Float32 (size, size, 3) textured background in roughly [0, 255]."""
  image = np.empty((size, size, 3), np.float32)
  image[:] = rng.uniform(40, 215, 3)
  # Sinusoidal gratings: random orientation, frequency, phase and colour.
  # sin(fy*y + fx*x + phase) is expanded into separable row/column factors.
  n = rng.integers(1, 4)
  theta = rng.uniform(0, np.pi, n)
  freq = rng.uniform(*_GRATING_CYCLES, n) * (2 * np.pi / size)
  phase = rng.uniform(0, 2 * np.pi, n)
  c = np.arange(size) + 0.5
  row = np.outer(freq * np.sin(theta), c) + phase[:, None]  # (n, size)
  col = np.outer(freq * np.cos(theta), c)
  waves = (
      np.sin(row)[:, :, None] * np.cos(col)[:, None, :]
      + np.cos(row)[:, :, None] * np.sin(col)[:, None, :]
  ).astype(np.float32)
  amplitude = rng.uniform(-30, 30, (n, 3)).astype(np.float32)
  image += np.tensordot(waves, amplitude, axes=(0, 0))
  # Smooth low-frequency noise and per-pixel noise.
  g = rng.integers(3, 7)
  grid = rng.normal(0, 25, (g, g, 3)).astype(np.float32)
  image += _upsample_bilinear(grid, size)
  image += rng.uniform(3, 10) * rng.standard_normal(image.shape, np.float32)
  return image


render_background = _render_background  # Public: other generators reuse the backgrounds.


def _sample_shape(
    rng: np.random.Generator, label: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
  """Samples a random shape of class `label` (0 circle, 1 square, 2 triangle).

  Returns its boolean (size, size) mask (pixel centres inside the shape) and a
  (size, size) float32 array in [-1, 1] used to shade it.
  """
  yy, xx = _pixel_centres(size)
  radius = rng.uniform(*_RADIUS_RANGE) * size
  cy, cx = rng.uniform(0, size, 2)
  dy, dx = yy - cy, xx - cx
  if label == 0:
    mask = dx * dx + dy * dy <= radius * radius
  elif label == 1:
    theta = rng.uniform(0, np.pi / 2)
    c, s = np.cos(theta), np.sin(theta)
    mask = np.maximum(np.abs(c * dx + s * dy), np.abs(c * dy - s * dx)) <= radius
  else:
    # Jittered equilateral triangle: vertex angles stay ordered, so it is
    # never degenerate.
    angles = (
        rng.uniform(0, 2 * np.pi)
        + np.arange(3) * (2 * np.pi / 3)
        + rng.uniform(-0.25, 0.25, 3)
    )
    dist = radius * rng.uniform(0.85, 1.15, 3)
    vy, vx = dist * np.sin(angles), dist * np.cos(angles)
    ey, ex = np.roll(vy, -1) - vy, np.roll(vx, -1) - vx
    cross = (
        ex[:, None, None] * (dy - vy[:, None, None])
        - ey[:, None, None] * (dx - vx[:, None, None])
    )
    mask = (cross >= 0).all(0) | (cross <= 0).all(0)
  phi = rng.uniform(0, 2 * np.pi)
  shade = np.clip((np.cos(phi) * dx + np.sin(phi) * dy) / radius, -1, 1)
  return mask, shade


def _placement_ok(
    mask: np.ndarray,
    instance: np.ndarray,
    placed_areas: list[int],
    min_area: int,
) -> bool:
  """Whether painting `mask` on top keeps every object sufficiently visible."""
  if mask.sum() < min_area:
    return False
  if not placed_areas:
    return True
  n = len(placed_areas) + 1
  kept = np.bincount(instance.ravel(), minlength=n) - np.bincount(
      instance[mask], minlength=n
  )
  needed = np.maximum(_MIN_KEPT_FRACTION * np.asarray(placed_areas), min_area)
  return bool((kept[1:] >= needed).all())


def _paint_shape(
    rng: np.random.Generator,
    image: np.ndarray,
    mask: np.ndarray,
    shade: np.ndarray,
    palette: np.ndarray | None = None,
) -> int | None:
  """Paints a shaded, noisy shape of a contrasting random colour in place.

  With `palette` ((K, 3) RGB), the colour is drawn uniformly among the palette
  colours whose painted mean differs by at least `_MIN_CONTRAST` from what the
  shape covers (the most contrasting one if none does), and its index is
  returned. Without it (the default, used by `shapes`), the colour is random
  RGB and None is returned.
  """
  covered_mean = image[mask].mean(0)
  shading = rng.uniform(0, 25) * shade[mask][:, None]
  noise = rng.uniform(2, 8) * rng.standard_normal((len(shading), 3), np.float32)
  texture = shading + noise
  if palette is not None:
    painted = [np.clip(np.asarray(c, np.float32) + texture, 0, 255) for c in palette]
    contrast = np.array([np.linalg.norm(p.mean(0) - covered_mean) for p in painted])
    ok = np.flatnonzero(contrast >= _MIN_CONTRAST)
    index = int(rng.choice(ok)) if len(ok) else int(np.argmax(contrast))
    image[mask] = painted[index]
    return index
  best, best_contrast = None, -1.0
  for colour in rng.uniform(0, 255, (_NUM_COLOUR_CANDIDATES, 3)):
    pixels = np.clip(colour.astype(np.float32) + texture, 0, 255)
    contrast = np.linalg.norm(pixels.mean(0) - covered_mean)
    if contrast > best_contrast:
      best, best_contrast = pixels, contrast
    if contrast >= _MIN_CONTRAST:
      break
  image[mask] = best
  return None


paint_shape = _paint_shape  # Public: `shapes10` paints its shapes the same way.


def _objects_from_instances(
    instance: np.ndarray, labels: list[int]
) -> dict[str, np.ndarray]:
  """Visible bbox / label / area of each object of an instance mask."""
  size = instance.shape[0]
  bbox = np.zeros((len(labels), 4), np.float32)
  area = np.zeros(len(labels), np.int32)
  for k in range(len(labels)):
    m = instance == k + 1
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    bbox[k] = (rows[0], cols[0], rows[-1] + 1, cols[-1] + 1)
    area[k] = m.sum()
  return {
      'bbox': bbox / size,
      'label': np.asarray(labels, np.int64),
      'area': area,
  }


def render_example(
    rng: np.random.Generator, config: ShapesConfig, paint=None
) -> dict[str, np.ndarray | dict[str, np.ndarray]]:
  """Renders one example as numpy arrays laid out like the TFDS features.

  Shapes are painted in order, later ones on top. A candidate shape is
  rejected (and resampled, up to a limit) if it has fewer than
  `min_visible_area` pixels or would leave an earlier object with less than
  half of its placed area or fewer than `min_visible_area` pixels.

  `paint(rng, image, mask, shade)` paints each accepted shape (default
  `paint_shape`); other generators (`shapes_captions`) pass their own to pick
  colours and to record the placed masks.
  """
  paint = _paint_shape if paint is None else paint
  size = config.image_size
  min_area = min_visible_area(size)
  image = _render_background(rng, size)
  instance = np.zeros((size, size), np.uint8)
  labels, placed_areas = [], []
  num_objects = rng.integers(config.min_objects, config.max_objects + 1)
  for k in range(num_objects):
    required = k < config.min_objects
    for _ in range(_MAX_ATTEMPTS_REQUIRED if required else _MAX_ATTEMPTS):
      if config.class_probs is None:  # (the draw of the default datasets)
        label = int(rng.integers(len(SHAPE_NAMES)))
      else:
        label = int(rng.choice(len(SHAPE_NAMES), p=config.class_probs))
      mask, shade = _sample_shape(rng, label, size)
      if _placement_ok(mask, instance, placed_areas, min_area):
        break
    else:
      if required:
        raise RuntimeError(
            f'Could not place {config.min_objects} objects in a {size}x{size} '
            'image; lower min_objects.'
        )
      continue
    paint(rng, image, mask, shade)
    labels.append(label)
    placed_areas.append(int(mask.sum()))
    instance[mask] = len(labels)
  semantic = np.array([0] + [l + 1 for l in labels], np.uint8)[instance]
  return {
      'image': np.clip(np.rint(image), 0, 255).astype(np.uint8),
      'segmentation_mask': semantic[..., None],
      'instance_mask': instance[..., None],
      'objects': _objects_from_instances(instance, labels),
  }


# ----------------------------------------------------------------------------
# TFDS builder.


class GeneratedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """What jaxseg's builders of data rendered offline with numpy share (`shapes`,
  `shapes10`, `stick_figures`, `shapes_captions`): nothing to download, configs also
  resolved from their derived names, and example ``i`` of a split rendered from
  ``np.random.default_rng([split_seeds[split], i])``.

  A subclass sets `config_from_name` (a derived config name -> that config, or None if
  the name is not one) and `render_example` (rng, config -> example laid out like the
  features), both as staticmethods, and `split_seeds` (split name -> seed; the splits
  are the keys of `builder_config.num_examples`), besides its VERSION, configs and
  `_info` (which may use `_info_from_doc`). Not registered with TFDS itself: each
  subclass is, under its own name.
  """

  config_from_name: Callable[[str], tfds.core.BuilderConfig | None]
  render_example: Callable[[np.random.Generator, tfds.core.BuilderConfig], dict]
  split_seeds: dict[str, int]

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> None:
    """None: no checksums file to find (TFDS only uses this for downloads).

    Also avoids TFDS's lookup of the source file, which needs the optional
    `importlib_resources` package.
    """
    return None

  @classmethod
  def get_builder_config(cls, name, version=None):
    """Also resolves derived names of configs not in `BUILDER_CONFIGS`."""
    return super().get_builder_config(name, version) or cls.config_from_name(name)

  def _info_from_doc(self, doc: str, features: dict,
                     supervised_keys=None) -> tfds.core.DatasetInfo:
    """The DatasetInfo of these features, described by the first paragraph of `doc`
    (the subclass's module docstring)."""
    return self.dataset_info_from_configs(
        description=doc.split('\n\n')[0],
        features=tfds.features.FeaturesDict(features),
        supervised_keys=supervised_keys,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {
        split: self._generate_examples(split)
        for split in self.builder_config.num_examples
    }

  def _generate_examples(self, split: str):
    config = self.builder_config
    for i in range(config.num_examples[split]):
      yield i, self.render_example(np.random.default_rng([self.split_seeds[split], i]),
                                   config)


class Shapes(GeneratedBuilder):
  """Synthetic random shapes for segmentation and detection (see module doc)."""

  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {
      '1.0.0': 'Initial release.',
      '1.1.0': 'Finer background gratings (4-13 px periods at 128 px): a texture, not '
               'shape-sized bands.',
  }
  BUILDER_CONFIGS = [
      shapes_config(),
      shapes_config(min_objects=1, max_objects=1),
  ]
  config_from_name = staticmethod(_config_from_name)
  render_example = staticmethod(render_example)
  split_seeds = SPLIT_SEEDS

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    image = functools.partial(tfds.features.Image, dtype=np.uint8)
    return self._info_from_doc(__doc__, {
        'image': image(shape=(size, size, 3)),
        'segmentation_mask': image(shape=(size, size, 1)),
        'instance_mask': image(shape=(size, size, 1)),
        'objects': tfds.features.Sequence({
            'bbox': tfds.features.BBoxFeature(),
            'label': tfds.features.ClassLabel(names=SHAPE_NAMES),
            'area': np.int32,
        }),
    }, supervised_keys=('image', 'segmentation_mask'))
