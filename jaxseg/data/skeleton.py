"""The 14-joint LSP skeleton: joint names and order, limbs, PCP parts, drawn edges.

Joints follow the Leeds Sports Pose order (Johnson & Everingham, BMVC 2010); right and
left are the person's. Keypoints are ``[K, 3]`` float32 ``(x, y, v)`` in pixels
(continuous: the image spans ``[0, W] x [0, H]``, pixel (row i, col j) has centre
``(j + 0.5, i + 0.5)``); ``v`` is COCO's visibility: 0 not labelled (x = y = 0),
1 labelled but occluded, 2 labelled and visible.

Three tuples of joint pairs, each for one use:

* `LIMBS`: the 8 arm and leg segments ``(name, joint_a, joint_b)``.
* `PCP_LIMBS`: the 10 parts of LSP's strict PCP (Ferrari et al., CVPR 2008, with the
  sticks of Pishchulin et al.'s LSP evaluation): the 8 `LIMBS`, ``head`` (neck to
  head top) and ``torso`` (mid-hip to mid-shoulder). An end is a tuple of joints whose
  mean is the end point, so every entry is ``(name, (joints...), (joints...))``.
* `SKELETON_EDGES`: what `jaxseg.viz.draw_skeleton` draws, ``(name, joint_a,
  joint_b)``: the 8 `LIMBS`, the hip and shoulder lines, the torso sides, neck to
  shoulders, and neck to head top.

`OKS_SIGMAS`: the per-joint OKS sigmas for keypoint AP (COCO's object keypoint
similarity) on this skeleton.
"""
from __future__ import annotations

JOINT_NAMES = (
    'right_ankle', 'right_knee', 'right_hip',
    'left_hip', 'left_knee', 'left_ankle',
    'right_wrist', 'right_elbow', 'right_shoulder',
    'left_shoulder', 'left_elbow', 'left_wrist',
    'neck', 'head_top',
)
NUM_JOINTS = len(JOINT_NAMES)
_J = {name: i for i, name in enumerate(JOINT_NAMES)}

# 'right', 'left' or 'centre' for each joint (from its name).
JOINT_SIDES = tuple(
    name.split('_')[0] if name.split('_')[0] in ('right', 'left') else 'centre'
    for name in JOINT_NAMES
)

LIMBS = (
    ('right_lower_leg', _J['right_ankle'], _J['right_knee']),
    ('right_upper_leg', _J['right_knee'], _J['right_hip']),
    ('left_lower_leg', _J['left_ankle'], _J['left_knee']),
    ('left_upper_leg', _J['left_knee'], _J['left_hip']),
    ('right_lower_arm', _J['right_wrist'], _J['right_elbow']),
    ('right_upper_arm', _J['right_elbow'], _J['right_shoulder']),
    ('left_lower_arm', _J['left_wrist'], _J['left_elbow']),
    ('left_upper_arm', _J['left_elbow'], _J['left_shoulder']),
)

PCP_LIMBS = tuple((name, (a,), (b,)) for name, a, b in LIMBS) + (
    ('head', (_J['neck'],), (_J['head_top'],)),
    ('torso', (_J['right_hip'], _J['left_hip']),
     (_J['right_shoulder'], _J['left_shoulder'])),
)

SKELETON_EDGES = LIMBS + (
    ('hips', _J['right_hip'], _J['left_hip']),
    ('shoulders', _J['right_shoulder'], _J['left_shoulder']),
    ('right_side', _J['right_shoulder'], _J['right_hip']),
    ('left_side', _J['left_shoulder'], _J['left_hip']),
    ('right_neck', _J['neck'], _J['right_shoulder']),
    ('left_neck', _J['neck'], _J['left_shoulder']),
    ('head', _J['neck'], _J['head_top']),
)


def _mirror(name: str) -> str:
  for a, b in (('right_', 'left_'), ('left_', 'right_')):
    if name.startswith(a):
      return b + name[len(a):]
  return name


# FLIP_PERMUTATION[k] is the joint whose label joint k takes after a horizontal flip
# (keypoints_flipped = keypoints[FLIP_PERMUTATION] with x -> W - x); an involution.
FLIP_PERMUTATION = tuple(_J[_mirror(name)] for name in JOINT_NAMES)

# Left shoulder and right hip: the torso diameter that normalizes PCK / PDJ
# (Toshev & Szegedy, DeepPose, CVPR 2014).
TORSO_JOINTS = (_J['left_shoulder'], _J['right_hip'])

# Per-joint OKS sigmas (JOINT_NAMES order), CrowdPose's choice for its 14 joints (Li et
# al., CVPR 2019; crowdposetools / xtcocoapi demo_crowdpose.py): COCO's sigmas for the 12
# limb joints (ankles .089, knees .087, hips .107, wrists .062, elbows .072, shoulders
# .079) and the shoulders' .079 for neck and head_top, which COCO does not have.
OKS_SIGMAS = (
    .089, .087, .107,  # right ankle, knee, hip
    .107, .087, .089,  # left hip, knee, ankle
    .062, .072, .079,  # right wrist, elbow, shoulder
    .079, .072, .062,  # left shoulder, elbow, wrist
    .079, .079,        # neck, head_top
)
