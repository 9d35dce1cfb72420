"""`shapes10`: a synthetic TFDS classification dataset, 10 kinds of shape at 32 x 32 x 3.

HyperQuest's embedded dataset (the lecture's game: 10 classes, 32 x 32 x 3 images, 8,500
train / 1,500 validation). Each image shows one shape of class `CLASS_NAMES[label]`:

  circle, ring, square, triangle, pentagon, hexagon, star, cross, bar, crescent

with a random size (radius 0.16-0.34 of the image), position (kept at least half inside),
rotation, colour, shading and noise on the textured backgrounds of `shapes`, plus 0-2
smaller distractor blobs (discs and squares of other colours). Circles, pentagons and
hexagons differ by a few pixels at this size and distractors overlap the shape, so a
sensible small CNN stays well under 100% validation accuracy (HyperQuest's measured
default: see README).

* ``image``: ``(32, 32, 3)`` uint8 (``image_size`` is a parameter, 32 by default).
* ``label``: ClassLabel of `CLASS_NAMES`.

Generated offline with numpy (`render_example`); nothing is downloaded. Example ``i``
of a split is rendered from ``np.random.default_rng([SPLIT_SEEDS[split], i])``. Configs
are named from their parameters by `shapes10_config`, e.g. ``s32_n8500-1500`` (the
default); such names also work as strings::

  tfds.load('shapes10/s32_n200-100', split='train', data_dir=...)
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np
import tensorflow_datasets as tfds

from jaxseg.data import shapes
from jaxseg.errors import ConfigError

CLASS_NAMES = ('circle', 'ring', 'square', 'triangle', 'pentagon', 'hexagon', 'star',
               'cross', 'bar', 'crescent')
SPLIT_SEEDS = {'train': 0, 'validation': 1}
_RADIUS_RANGE = (0.16, 0.34)  # shape radius as a fraction of the image size
_MAX_DISTRACTORS = 2
_DISTRACTOR_RADIUS = (0.05, 0.12)
_NAME_RE = re.compile(r's(\d+)_n(\d+)-(\d+)')


@dataclasses.dataclass(eq=False, kw_only=True)
class Shapes10Config(tfds.core.BuilderConfig):
  """Parameters of the `shapes10` dataset. Immutable; see `shapes10_config`."""

  image_size: int = 32
  num_train: int = 8500
  num_validation: int = 1500

  def __post_init__(self):
    if self.image_size < 16:
      raise ConfigError(f'shapes10 image_size={self.image_size}; expected >= 16.')
    if self.num_train < 0 or self.num_validation < 0:
      raise ConfigError(f'shapes10 split sizes num_train={self.num_train}, '
                        f'num_validation={self.num_validation}; expected >= 0.')
    object.__setattr__(self, '_frozen', True)

  def __setattr__(self, name, value):
    # Configs are interned by name, so emulate `frozen=True` (see shapes.ShapesConfig).
    if getattr(self, '_frozen', False):
      raise dataclasses.FrozenInstanceError(f'cannot assign to field {name!r}')
    super().__setattr__(name, value)

  @property
  def num_examples(self) -> dict[str, int]:
    return {'train': self.num_train, 'validation': self.num_validation}


_PARAM_NAMES = ('image_size', 'num_train', 'num_validation')
_CONFIGS: dict[str, Shapes10Config] = {}


def shapes10_config(**overrides) -> Shapes10Config:
  """The interned `Shapes10Config` with these parameters, named from them
  (``s{image_size}_n{num_train}-{num_validation}``)."""
  unknown = set(overrides) - set(_PARAM_NAMES)
  if unknown:
    raise ConfigError(f'Unknown shapes10 parameters {sorted(unknown)}; expected some of '
                      f'{list(_PARAM_NAMES)}.')
  defaults = {f.name: f.default for f in dataclasses.fields(Shapes10Config)}
  p = {k: int(overrides.get(k, defaults[k])) for k in _PARAM_NAMES}
  name = f"s{p['image_size']}_n{p['num_train']}-{p['num_validation']}"
  if name not in _CONFIGS:
    _CONFIGS[name] = Shapes10Config(
        name=name, description=(f"{p['image_size']}x{p['image_size']} images, "
                                f"{p['num_train']} train / {p['num_validation']} validation."),
        **p)
  return _CONFIGS[name]


def _config_from_name(name: str) -> Shapes10Config | None:
  """Inverse of the naming in `shapes10_config`; None if `name` is not one."""
  return shapes.parse_config_name(name, _NAME_RE, _PARAM_NAMES, shapes10_config, ConfigError)


# ----------------------------------------------------------------------------
# Rendering (pure numpy).


def _polar(dx, dy, theta):
  """Distance and angle (rotated by theta) of each pixel centre from the shape centre."""
  return np.hypot(dx, dy), np.arctan2(dy, dx) - theta


def _regular_polygon(r, phi, n):
  """Inside a regular n-gon of circumradius r: r(phi) of its edge in polar form."""
  sector = np.mod(phi, 2 * np.pi / n) - np.pi / n
  return r * np.cos(np.pi / n) / np.cos(sector)


def _shape_mask(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
  """Boolean (size, size) mask of a random shape of class `label`."""
  yy, xx = shapes._pixel_centres(size)  # pylint: disable=protected-access
  radius = rng.uniform(*_RADIUS_RANGE) * size
  cy, cx = rng.uniform(0.2 * size, 0.8 * size, 2)
  theta = rng.uniform(0, 2 * np.pi)
  dx, dy = xx - cx, yy - cy
  dist, phi = _polar(dx, dy, theta)
  u = np.cos(theta) * dx + np.sin(theta) * dy  # rotated coordinates
  v = -np.sin(theta) * dx + np.cos(theta) * dy
  name = CLASS_NAMES[label]
  if name == 'circle':
    return dist <= radius
  if name == 'ring':
    return (dist <= radius) & (dist >= radius * rng.uniform(0.5, 0.65))
  if name in ('square', 'triangle', 'pentagon', 'hexagon'):
    n = {'square': 4, 'triangle': 3, 'pentagon': 5, 'hexagon': 6}[name]
    return dist <= _regular_polygon(radius, phi, n)
  if name == 'star':
    # 5 points: the edge radius runs linearly (in angle) between the tips and the notches.
    tri = np.abs(np.mod(phi, 2 * np.pi / 5) / (2 * np.pi / 5) - 0.5) * 2  # 1 at tips
    return dist <= radius * (rng.uniform(0.4, 0.5) + (1 - 0.45) * tri)
  if name == 'cross':
    half = radius * rng.uniform(0.25, 0.35)
    return (((np.abs(u) <= radius) & (np.abs(v) <= half))
            | ((np.abs(v) <= radius) & (np.abs(u) <= half)))
  if name == 'bar':
    return (np.abs(u) <= radius) & (np.abs(v) <= radius * rng.uniform(0.2, 0.35))
  # crescent: a disc minus a disc shifted along the rotation direction
  shift = radius * rng.uniform(0.45, 0.7)
  return (dist <= radius) & (np.hypot(u - shift, v) > radius * rng.uniform(0.8, 0.95))


def _distractor_mask(rng: np.random.Generator, size: int) -> np.ndarray:
  yy, xx = shapes._pixel_centres(size)  # pylint: disable=protected-access
  r = rng.uniform(*_DISTRACTOR_RADIUS) * size
  cy, cx = rng.uniform(0, size, 2)
  if rng.random() < 0.5:
    return np.hypot(xx - cx, yy - cy) <= r
  return np.maximum(np.abs(xx - cx), np.abs(yy - cy)) <= r


def render_example(rng: np.random.Generator, config: Shapes10Config) -> dict[str, np.ndarray]:
  """One example as numpy arrays laid out like the TFDS features (see module doc)."""
  size = config.image_size
  image = shapes.render_background(rng, size)
  label = int(rng.integers(len(CLASS_NAMES)))
  mask = _shape_mask(rng, label, size)
  while mask.sum() < 6:  # (only tiny image sizes could clip a shape this much)
    mask = _shape_mask(rng, label, size)
  layers = [mask] + [_distractor_mask(rng, size)
                     for _ in range(rng.integers(_MAX_DISTRACTORS + 1))]
  order = rng.permutation(len(layers))  # distractors may lie on top of the shape
  for i in order:
    if layers[i].any():
      shade = rng.uniform(-1, 1, (size, size)).astype(np.float32) * 0.3
      shapes.paint_shape(rng, image, layers[i], shade)
  return {'image': np.clip(np.rint(image), 0, 255).astype(np.uint8), 'label': label}


# ----------------------------------------------------------------------------
# TFDS builder.


class Shapes10(shapes.GeneratedBuilder):
  """10 kinds of shape, one per 32 x 32 image (see module doc)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [shapes10_config()]
  config_from_name = staticmethod(_config_from_name)
  render_example = staticmethod(render_example)
  split_seeds = SPLIT_SEEDS

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    return self._info_from_doc(__doc__, {
        'image': tfds.features.Image(shape=(size, size, 3), dtype=np.uint8),
        'label': tfds.features.ClassLabel(names=CLASS_NAMES),
    }, supervised_keys=('image', 'label'))
