"""`stick_figures`: a synthetic TFDS pose dataset of articulated figures with LSP joints.

Every example is one figure in a random pose on a textured background (the `shapes`
backgrounds), labelled with the 14 LSP joints, its box and its mask, for pose
regression such as DeepPose (Toshev & Szegedy, CVPR 2014) and for person detection,
instance masks and keypoints (Mask / Keypoint R-CNN, `jaxseg.data.detection`):

* ``image``: ``(S, S, 3)`` uint8.
* ``joints``: ``(14, 3)`` float32 ``(x, y, v)`` in pixels, in `jaxseg.data.skeleton`
  order (right ankle ... head top) and conventions: continuous coordinates (the image
  spans ``[0, S] x [0, S]``; pixel (row i, col j) has centre ``(j + 0.5, i + 0.5)``),
  ``v`` COCO's visibility (2 visible, 1 occluded; every joint is labelled, so never 0).
  Every joint lies at least 1 px inside the image.
* ``box``: ``(4,)`` float32 pixel ``[x1, y1, x2, y2]``, the tight extent of the
  figure's painted pixels (x1 = first column, x2 = last column + 1; the convention of
  `jaxseg.data.detection`), for person detection.
* ``mask``: ``(S, S, 1)`` uint8, 1 on the figure's painted pixels (any part), else 0.

The generator (`render_example`, numpy only, nothing downloaded) builds a kinematic
tree: a torso (pentagon through the shoulders, the neck and the hips), a head disc on a
short neck stick beyond the neck toward head_top, and two-segment arms and legs (round
capped sticks) with random joint angles in plausible ranges (arms from across the body
to raised overhead, elbows and knees bent either way), random foreshortening of each
segment, limb thickness, shoulder and hip widths; then a random figure height (0.45-0.9
of the image when standing, shrunk where a pose would not fit), an in-plane rotation
(+-30 degrees) and a position keeping every joint inside. Each arm or leg is painted
behind the torso with some probability, else in front, in random order.

Left and right are learnable: the figure faces the viewer (before the rotation, the
person's right shoulder and hip are on the image's left), and the person's right limbs
are painted in a clearly darker shade (`RIGHT_SHADE` = 0.55 times) of the figure's
colour than the left limbs (torso and head: `CENTRE_SHADE`). So a horizontally flipped
image with left/right joints swapped (`skeleton.FLIP_PERMUTATION`) is *not* from the
same distribution (its darker limbs are the left ones): pose configs keep flip off.
Colours are chosen to contrast with the background they cover.

Visibility: parts are painted in order into a part-id map; a joint is visible (v = 2)
if the pixel containing it belongs to a part incident to the joint (the limbs meeting
there, the torso for shoulders, hips and neck, the head for neck and head_top), and
occluded (v = 1) if a later-painted unrelated part covers it (see `joint_visibility`).

Example ``i`` of a split is rendered from ``np.random.default_rng([SPLIT_SEEDS[split],
i])``: deterministic and independent of generation order. Configs are named from their
parameters by `stick_figures_config`, e.g. ``s64_n4000-500`` (the default); such names
also work as strings::

  tfds.load('stick_figures/s32_n200-50', split='train', data_dir=...)
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np
import tensorflow_datasets as tfds

from jaxseg.data import skeleton
from jaxseg.data.shapes import GeneratedBuilder, parse_config_name, render_background
from jaxseg.errors import ConfigError

SPLIT_SEEDS = {'train': 0, 'validation': 1}

# Part ids of the part-id map (0 = background), also the paint units.
PART_NAMES = ('background', 'torso', 'head') + tuple(n for n, _, _ in skeleton.LIMBS)
_PART = {name: i for i, name in enumerate(PART_NAMES)}

# Colour of each side as a fraction of the figure's (left) colour.
RIGHT_SHADE = 0.55
CENTRE_SHADE = 0.78

# Body proportions as fractions of the standing figure height (neck to head_top, neck
# above the shoulder line, shoulder line to hip line, half widths, limb segments).
_HEAD, _NECK, _TORSO = 0.16, 0.03, 0.30
_SHOULDER_HALF, _HIP_HALF = 0.10, 0.065
_UPPER_ARM, _LOWER_ARM, _UPPER_LEG, _LOWER_LEG = 0.16, 0.15, 0.235, 0.235
_STANDING = _HEAD + _NECK + _TORSO + _UPPER_LEG + _LOWER_LEG
# Joint angles in degrees from straight down; positive = away from the body's midline.
_UPPER_ARM_DEG, _ELBOW_DEG = (-25.0, 160.0), (-120.0, 120.0)
_UPPER_LEG_DEG, _KNEE_DEG = (-15.0, 50.0), (-50.0, 60.0)
_HEAD_TILT_DEG, _ROTATION_DEG = 20.0, 30.0
_HEIGHT_RANGE = (0.45, 0.9)  # standing height / image size
_THICKNESS_RANGE = (0.045, 0.075)  # leg thickness / standing height (arms: 0.8 of it)
_MIN_RADIUS = 1.0  # px: a stick always covers the pixel holding its end joints
_BEHIND_PROB = {'arm': 0.3, 'leg': 0.15}  # a limb painted behind the torso
_MIN_CONTRAST = 60.0  # L2 RGB distance of each shade from the background it covers
_NUM_COLOUR_CANDIDATES = 16

_NAME_RE = re.compile(r's(\d+)_n(\d+)-(\d+)')


@dataclasses.dataclass(eq=False, kw_only=True)
class StickFiguresConfig(tfds.core.BuilderConfig):
  """Parameters of the `stick_figures` dataset. Immutable; see `stick_figures_config`."""

  image_size: int = 64
  num_train: int = 4000
  num_validation: int = 500

  def __post_init__(self):
    if self.image_size < 32:
      raise ConfigError(f'stick_figures image_size={self.image_size}; expected >= 32.')
    if self.num_train < 0 or self.num_validation < 0:
      raise ConfigError(
          f'stick_figures split sizes num_train={self.num_train}, '
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
_CONFIGS: dict[str, StickFiguresConfig] = {}


def stick_figures_config(**overrides) -> StickFiguresConfig:
  """The interned `StickFiguresConfig` with these parameters, named from them
  (``s{image_size}_n{num_train}-{num_validation}``)."""
  unknown = set(overrides) - set(_PARAM_NAMES)
  if unknown:
    raise ConfigError(f'Unknown stick_figures parameters {sorted(unknown)}; expected '
                      f'some of {list(_PARAM_NAMES)}.')
  defaults = {f.name: f.default for f in dataclasses.fields(StickFiguresConfig)}
  p = {k: int(overrides.get(k, defaults[k])) for k in _PARAM_NAMES}
  name = f"s{p['image_size']}_n{p['num_train']}-{p['num_validation']}"
  if name not in _CONFIGS:
    _CONFIGS[name] = StickFiguresConfig(
        name=name,
        description=(f"{p['image_size']}x{p['image_size']} images, {p['num_train']} "
                     f"train / {p['num_validation']} validation."),
        **p)
  return _CONFIGS[name]


def _config_from_name(name: str) -> StickFiguresConfig | None:
  """Inverse of the naming in `stick_figures_config`; None if `name` is not one."""
  return parse_config_name(name, _NAME_RE, _PARAM_NAMES, stick_figures_config, ConfigError)


# ----------------------------------------------------------------------------
# Pose and geometry.


def _incidence() -> np.ndarray:
  """[num_parts, 14] bool: which joints each part touches (background: none)."""
  j = {name: i for i, name in enumerate(skeleton.JOINT_NAMES)}
  table = np.zeros((len(PART_NAMES), skeleton.NUM_JOINTS), bool)
  table[_PART['torso'], [j['right_hip'], j['left_hip'], j['right_shoulder'],
                         j['left_shoulder'], j['neck']]] = True
  table[_PART['head'], [j['neck'], j['head_top']]] = True
  for name, a, b in skeleton.LIMBS:
    table[_PART[name], [a, b]] = True
  table.flags.writeable = False
  return table


INCIDENCE = _incidence()


def joint_visibility(part_map: np.ndarray, xy: np.ndarray) -> np.ndarray:
  """COCO visibility [14] float32 of joints `xy` [14, 2] (continuous pixel coordinates)
  given the final part-id map [S, S] (`PART_NAMES` ids): 2 if the pixel holding a joint
  belongs to a part incident to it (`INCIDENCE`), else 1 (painted over)."""
  size = part_map.shape[0]
  col, row = np.clip(np.floor(xy), 0, size - 1).astype(np.int64).T
  parts = part_map[row, col]
  visible = INCIDENCE[parts, np.arange(len(xy))]
  return np.where(visible, 2.0, 1.0).astype(np.float32)


def _direction(degrees, side: float) -> np.ndarray:
  """Unit vector at `degrees` from straight down (+y), turned away from the midline on
  `side` (-1: the person's right = image left, +1: left)."""
  a = np.deg2rad(degrees)
  return np.array([side * np.sin(a), np.cos(a)])


def _sample_pose(rng: np.random.Generator) -> np.ndarray:
  """[14, 2] joints of a random upright pose in units of the standing height; origin at
  the middle of the shoulder line, y down, facing the viewer."""
  j = {name: i for i, name in enumerate(skeleton.JOINT_NAMES)}
  xy = np.zeros((skeleton.NUM_JOINTS, 2))
  shoulder = _SHOULDER_HALF * rng.uniform(0.8, 1.2)
  hip = _HIP_HALF * rng.uniform(0.8, 1.2)
  torso = _TORSO * rng.uniform(0.85, 1.0)
  xy[j['neck']] = (0, -_NECK)
  tilt = rng.uniform(-_HEAD_TILT_DEG, _HEAD_TILT_DEG)
  xy[j['head_top']] = xy[j['neck']] - _HEAD * rng.uniform(0.9, 1.0) * _direction(tilt, 1)
  for side, sign in (('right', -1.0), ('left', 1.0)):
    xy[j[f'{side}_shoulder']] = (sign * shoulder, 0)
    xy[j[f'{side}_hip']] = (sign * hip, torso)
    chains = (('shoulder', 'elbow', 'wrist', _UPPER_ARM, _LOWER_ARM,
               _UPPER_ARM_DEG, _ELBOW_DEG),
              ('hip', 'knee', 'ankle', _UPPER_LEG, _LOWER_LEG, _UPPER_LEG_DEG, _KNEE_DEG))
    for root, mid, end, upper, lower, upper_deg, bend_deg in chains:
      a1 = rng.uniform(*upper_deg)
      a2 = a1 + rng.uniform(*bend_deg)
      xy[j[f'{side}_{mid}']] = (xy[j[f'{side}_{root}']]
                                + upper * rng.uniform(0.8, 1.0) * _direction(a1, sign))
      xy[j[f'{side}_{end}']] = (xy[j[f'{side}_{mid}']]
                                + lower * rng.uniform(0.8, 1.0) * _direction(a2, sign))
  return xy


def _head_disc(xy: np.ndarray) -> tuple[np.ndarray, float]:
  """Centre and radius of the head: the disc's top reaches 1 px beyond head_top, so
  head_top's pixel is always inside."""
  neck, top = xy[skeleton.JOINT_NAMES.index('neck')], xy[skeleton.JOINT_NAMES.index('head_top')]
  length = np.linalg.norm(top - neck)
  return neck + 0.55 * (top - neck), 0.45 * length + 1.0


def _place(rng: np.random.Generator, pose: np.ndarray, size: int):
  """Scales, rotates and positions a pose; returns pixel joints [14, 2], the head disc
  (centre, radius) and the leg and arm stick radii."""
  height = rng.uniform(*_HEIGHT_RANGE) * size
  rotation = np.deg2rad(rng.uniform(-_ROTATION_DEG, _ROTATION_DEG))
  thickness = rng.uniform(*_THICKNESS_RANGE)
  c, s = np.cos(rotation), np.sin(rotation)
  turned = pose @ np.array([[c, s], [-s, c]])
  while True:  # Shrink poses that would not fit (rarely more than a few steps).
    scale = height / _STANDING
    xy = turned * scale
    leg = max(_MIN_RADIUS, 0.5 * thickness * height)
    arm = max(_MIN_RADIUS, 0.8 * leg)
    centre, radius = _head_disc(xy)
    lo = np.minimum((xy - 1 - leg).min(0), centre - radius)
    hi = np.maximum((xy + 1 + leg).max(0), centre + radius)
    if (hi - lo).max() <= size or height < 4:
      break
    height *= 0.93
  shift = rng.uniform(-lo, np.maximum(size - hi, -lo))
  xy = xy + shift
  return np.clip(xy, 1.0, size - 1.0), (centre + shift, radius), leg, arm


def _stick_mask(size: int, p: np.ndarray, q: np.ndarray, radius: float) -> np.ndarray:
  """Pixels whose centres lie within `radius` of the segment p-q (a round-capped stick)."""
  c = np.arange(size) + 0.5
  px, py = c[None, :] - p[0], c[:, None] - p[1]
  d = q - p
  t = np.clip((px * d[0] + py * d[1]) / max(d @ d, 1e-12), 0, 1)
  return (px - t * d[0]) ** 2 + (py - t * d[1]) ** 2 <= radius * radius


def _convex_mask(size: int, vertices: np.ndarray) -> np.ndarray:
  """Pixels whose centres lie inside the convex polygon `vertices` [V, 2] (in order)."""
  c = np.arange(size) + 0.5
  edge = np.roll(vertices, -1, axis=0) - vertices
  cross = (edge[:, 0, None, None] * (c[None, :, None] - vertices[:, 1, None, None])
           - edge[:, 1, None, None] * (c[None, None, :] - vertices[:, 0, None, None]))
  return (cross >= 0).all(0) | (cross <= 0).all(0)


def _part_masks(xy, head, leg, arm, size) -> dict[str, np.ndarray]:
  j = {name: i for i, name in enumerate(skeleton.JOINT_NAMES)}
  torso = xy[[j['right_shoulder'], j['neck'], j['left_shoulder'], j['left_hip'],
              j['right_hip']]]
  centre, radius = head
  c = np.arange(size) + 0.5
  disc = (c[None, :] - centre[0]) ** 2 + (c[:, None] - centre[1]) ** 2 <= radius ** 2
  masks = {'torso': _convex_mask(size, torso),
           'head': disc | _stick_mask(size, xy[j['neck']], centre, arm)}
  for name, a, b in skeleton.LIMBS:
    masks[name] = _stick_mask(size, xy[a], xy[b], leg if 'leg' in name else arm)
  return masks


def _paint_order(rng: np.random.Generator) -> list[str]:
  """Limbs behind the torso (random order), torso, head, limbs in front (random order);
  the lower segment of a limb always on top of its upper segment."""
  behind, front = [], []
  for side in ('right', 'left'):
    for kind in ('arm', 'leg'):
      chain = [f'{side}_upper_{kind}', f'{side}_lower_{kind}']
      (behind if rng.uniform() < _BEHIND_PROB[kind] else front).append(chain)
  order = []
  for group in (behind, [['torso', 'head']], front):
    for k in rng.permutation(len(group)):
      order += group[k]
  return order


def _shade_of(part: str) -> float:
  side = part.split('_')[0]
  return {'right': RIGHT_SHADE, 'left': 1.0}.get(side, CENTRE_SHADE)


def _figure_colour(rng, background, part_map) -> np.ndarray:
  """The figure's (left-side) RGB colour: bright enough that the right side is clearly
  darker, and every shade at least `_MIN_CONTRAST` from the mean background under it
  (else the candidate with the largest smallest contrast)."""
  shades = np.array([RIGHT_SHADE, CENTRE_SHADE, 1.0])
  groups = [np.isin(part_map, [_PART[p] for p in PART_NAMES[1:] if _shade_of(p) == s])
            for s in shades]
  covered = [background[g].mean(0) if g.any() else None for g in groups]
  best, best_contrast = None, -1.0
  for _ in range(_NUM_COLOUR_CANDIDATES):
    colour = rng.uniform(0, 255, 3)
    colour *= rng.uniform(170, 255) / max(colour.max(), 1e-6)
    contrast = min((np.linalg.norm(s * colour - m) for s, m in zip(shades, covered)
                    if m is not None), default=np.inf)
    if contrast > best_contrast:
      best, best_contrast = colour, contrast
    if contrast >= _MIN_CONTRAST:
      break
  return best


def _render(rng: np.random.Generator, config: StickFiguresConfig):
  """(example as in `render_example`, final part-id map [S, S] uint8)."""
  size = config.image_size
  image = render_background(rng, size)
  xy, head, leg, arm = _place(rng, _sample_pose(rng), size)
  masks = _part_masks(xy, head, leg, arm, size)
  part_map = np.zeros((size, size), np.uint8)
  order = _paint_order(rng)
  for part in order:
    part_map[masks[part]] = _PART[part]
  colour = _figure_colour(rng, image, part_map)
  noise = rng.uniform(2, 6)
  for part in order:
    m = part_map == _PART[part]
    image[m] = _shade_of(part) * colour + noise * rng.standard_normal((m.sum(), 3))
  joints = np.concatenate([xy, joint_visibility(part_map, xy)[:, None]], axis=1)
  figure = part_map > 0
  example = {'image': np.clip(np.rint(image), 0, 255).astype(np.uint8),
             'joints': joints.astype(np.float32),
             'box': figure_box(figure),
             'mask': figure.astype(np.uint8)[..., None]}
  return example, part_map


def figure_box(figure: np.ndarray) -> np.ndarray:
  """float32 [x1, y1, x2, y2] of the True pixels of `figure` [S, S] (x2 = last column
  + 1); zeros if there are none (never for a rendered figure)."""
  rows, cols = np.flatnonzero(figure.any(1)), np.flatnonzero(figure.any(0))
  if not len(rows):
    return np.zeros(4, np.float32)
  return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)


def render_example(rng: np.random.Generator,
                   config: StickFiguresConfig) -> dict[str, np.ndarray]:
  """Renders one example as numpy arrays laid out like the TFDS features."""
  return _render(rng, config)[0]


# ----------------------------------------------------------------------------
# TFDS builder.


class StickFigures(GeneratedBuilder):
  """Synthetic articulated figures with 14 LSP joints (see module doc)."""

  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {
      '1.0.0': 'Initial release.',
      '1.1.0': 'Adds `box` (the figure\'s tight pixel extent) and `mask` (its painted '
               'pixels) for detection and instance segmentation; images and joints '
               'unchanged.',
  }
  BUILDER_CONFIGS = [stick_figures_config()]
  config_from_name = staticmethod(_config_from_name)
  render_example = staticmethod(render_example)
  split_seeds = SPLIT_SEEDS

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    return self._info_from_doc(__doc__, {
        'image': tfds.features.Image(shape=(size, size, 3), dtype=np.uint8),
        'joints': tfds.features.Tensor(shape=(skeleton.NUM_JOINTS, 3),
                                       dtype=np.float32),
        'box': tfds.features.Tensor(shape=(4,), dtype=np.float32),
        'mask': tfds.features.Image(shape=(size, size, 1), dtype=np.uint8),
    }, supervised_keys=('image', 'joints'))
