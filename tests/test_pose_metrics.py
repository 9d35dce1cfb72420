"""Tests for the pose metrics (PCK, strict PCP) and the skeleton / box drawing."""
import math

import jax
import numpy as np
import pytest

from jaxseg import viz
from jaxseg.data import skeleton
from jaxseg.metrics import pose

J = {name: i for i, name in enumerate(skeleton.JOINT_NAMES)}
PARTS = [p[0] for p in skeleton.PCP_LIMBS]

# A person (x, y): torso diameter |left_shoulder - right_hip| = |(12, -16)| = 20; lower
# legs 10 long, head (neck to head top) 8, torso (mid-hip to mid-shoulder) 16.
XY = np.array([(20, 60), (20, 50), (26, 26), (34, 26), (40, 50), (40, 60),
               (10, 30), (12, 20), (22, 10), (38, 10), (48, 20), (50, 30),
               (30, 8), (30, 0)], np.float32)


def _person(v=2.0):
  return np.concatenate([XY, np.full((14, 1), v, np.float32)], axis=1)


@jax.jit
def _stats(pred_pck, pred_pcp, joints, mask):
  return {**pose.pck_stats(pred_pck, joints, 0.2, example_mask=mask),
          **pose.pcp_stats(pred_pcp, joints, example_mask=mask)}


def _hand_case():
  """4 examples: 0 normal, 1 padding, 2 without a torso for PCK (right hip missing) and
  without the left shoulder for PCP, 3 with a zero torso diameter."""
  joints = np.stack([_person()] * 4)
  joints[0, J['left_ankle']] = 0  # missing
  joints[0, J['right_wrist'], 2] = 1  # occluded: still counted
  joints[2, J['right_hip']] = 0
  joints[3, J['left_shoulder'], :2] = joints[3, J['right_hip'], :2]
  pred_pck = joints[..., :2].copy()
  pred_pck[0, J['right_ankle']] += (4, 0)  # exactly 0.2 * 20: correct
  pred_pck[0, J['right_knee']] += (0, 4.5)  # beyond: wrong
  pred_pck[2:] += 50  # no torso: not counted, however wrong

  pcp_joints = np.stack([_person()] * 4)
  pcp_joints[2, J['left_shoulder']] = 0
  pcp_joints[2, J['right_wrist'], 2] = 1
  pcp_joints[3] = 0  # nothing labelled
  pred_pcp = pcp_joints[..., :2].copy()
  pred_pcp[0, J['right_ankle']] += (5, 0)  # exactly half the lower leg: correct
  pred_pcp[0, J['left_ankle']] += (0, 5.5)  # wrong
  pred_pcp[0, J['head_top']] += (0, -4.5)  # head 8 long: wrong
  # Hips moved apart by 10 each: the mid-hip stays (torso right), the upper legs
  # (24.7 long) tolerate 10.
  pred_pcp[0, J['right_hip']] += (-10, 0)
  pred_pcp[0, J['left_hip']] += (10, 0)
  pred_pcp[1] += 30  # padding: not counted
  mask = np.array([True, False, True, True])
  return pred_pck, pred_pcp, joints, pcp_joints, mask


def test_pck_and_pcp_hand_computed():
  pred_pck, pred_pcp, joints, pcp_joints, mask = _hand_case()
  pck = _stats(pred_pck, pred_pck, joints, mask)
  count = np.ones(14, np.int32)
  count[J['left_ankle']] = 0
  correct = count.copy()
  correct[J['right_knee']] = 0
  np.testing.assert_array_equal(pck['pck_count'], count)
  np.testing.assert_array_equal(pck['pck_correct'], correct)
  assert pck['pck_count'].dtype == np.int32

  pcp = _stats(pred_pcp, pred_pcp, pcp_joints, mask)
  # Order: r/l lower leg, upper leg, ..., head, torso (PCP_LIMBS).
  assert PARTS[:4] == ['right_lower_leg', 'right_upper_leg', 'left_lower_leg',
                       'left_upper_leg'] and PARTS[8:] == ['head', 'torso']
  np.testing.assert_array_equal(pcp['pcp_count'], [2, 2, 2, 2, 2, 2, 2, 1, 2, 1])
  np.testing.assert_array_equal(pcp['pcp_correct'], [2, 2, 1, 2, 2, 2, 2, 1, 1, 1])


def test_example_mask_defaults_to_all_examples():
  pred_pck, _, joints, _, _ = _hand_case()
  stats = pose.pck_stats(pred_pck[:2], joints[:2])  # the padded example 1 now counts
  count = np.full(14, 2)
  count[J['left_ankle']] = 1
  correct = count.copy()
  correct[J['right_knee']] = 1
  np.testing.assert_array_equal(stats['pck_count'], count)
  np.testing.assert_array_equal(stats['pck_correct'], correct)
  # A larger threshold (0.25 * 20 = 5) accepts the knee.
  loose = pose.pck_stats(pred_pck[:1], joints[:1], threshold=0.25)
  np.testing.assert_array_equal(loose['pck_correct'], loose['pck_count'])


def _numpy_reference(pred, joints, mask, threshold=0.2):
  n, k, _ = joints.shape
  pck_correct, pck_count = np.zeros(k, int), np.zeros(k, int)
  pcp_correct, pcp_count = np.zeros(len(PARTS), int), np.zeros(len(PARTS), int)
  for i in range(n):
    if not mask[i]:
      continue
    lab = joints[i, :, 2] > 0
    a, b = skeleton.TORSO_JOINTS
    torso = math.dist(joints[i, a, :2], joints[i, b, :2])
    if lab[a] and lab[b] and torso > 0:
      for j in range(k):
        if lab[j]:
          pck_count[j] += 1
          pck_correct[j] += math.dist(pred[i, j], joints[i, j, :2]) <= threshold * torso
    for p, (_, end_a, end_b) in enumerate(skeleton.PCP_LIMBS):
      if not all(lab[list(end_a + end_b)]):
        continue
      ends = [(joints[i, list(e), :2].mean(0), pred[i, list(e)].mean(0))
              for e in (end_a, end_b)]
      length = math.dist(ends[0][0], ends[1][0])
      pcp_count[p] += 1
      pcp_correct[p] += all(math.dist(t, g) <= 0.5 * length for t, g in ends)
  return pck_correct, pck_count, pcp_correct, pcp_count


def test_stats_match_numpy_reference_on_random_data():
  rng = np.random.default_rng(0)
  for _ in range(3):
    joints = np.concatenate([rng.uniform(0, 64, (4, 14, 2)),
                             rng.choice([0, 1, 2], (4, 14, 1), p=[0.1, 0.2, 0.7])], -1)
    joints = joints.astype(np.float32)
    pred = (joints[..., :2] + rng.normal(0, 6, (4, 14, 2))).astype(np.float32)
    mask = rng.uniform(size=4) < 0.8
    stats = _stats(pred, pred, joints, mask)
    want = _numpy_reference(pred, joints, mask)
    for key, value in zip(('pck_correct', 'pck_count', 'pcp_correct', 'pcp_count'), want):
      np.testing.assert_array_equal(stats[key], value, err_msg=key)
    assert 0 < want[0].sum() < want[1].sum() and 0 < want[2].sum() < want[3].sum()


def test_summarize_keys_values_and_nan():
  pred_pck, pred_pcp, joints, pcp_joints, mask = _hand_case()
  stats = {**{k: v for k, v in _stats(pred_pck, pred_pck, joints, mask).items()
              if k.startswith('pck')},
           **{k: v for k, v in _stats(pred_pcp, pred_pcp, pcp_joints, mask).items()
              if k.startswith('pcp')}}
  summary = pose.summarize(stats)
  assert set(summary) == ({'PCK@0.2', 'PCP'} | {f'PCK/{n}' for n in skeleton.JOINT_NAMES}
                          | {f'PCP/{p}' for p in PARTS})
  assert summary['PCK@0.2'] == pytest.approx(12 / 13)
  assert summary['PCK/right_knee'] == 0 and summary['PCK/right_ankle'] == 1
  assert math.isnan(summary['PCK/left_ankle'])
  assert summary['PCP'] == pytest.approx(16 / 18)
  assert summary['PCP/head'] == 0.5 and summary['PCP/left_upper_arm'] == 1
  assert all(isinstance(v, float) for v in summary.values())

  other = pose.summarize({k: stats[k] for k in ('pck_correct', 'pck_count')},
                         pck_threshold=0.5)
  assert set(other) == {'PCK@0.5'} | {f'PCK/{n}' for n in skeleton.JOINT_NAMES}
  empty = pose.summarize({'pck_correct': np.zeros(14), 'pck_count': np.zeros(14),
                          'pcp_correct': np.zeros(10), 'pcp_count': np.zeros(10)})
  assert all(math.isnan(v) for v in empty.values()) and len(empty) == 2 + 14 + 10


# ----------------------------------------------------------------------------
# Drawing.

BLACK = (0, 0, 0)


def _changed(a, b):
  return np.any(a != b, axis=-1)


def test_draw_skeleton_edges_sides_and_missing_joints():
  image = np.zeros((8, 8, 3), np.uint8)
  joints = np.zeros((14, 3), np.float32)
  joints[J['right_ankle']] = (1.5, 1.5, 2)
  joints[J['right_knee']] = (1.5, 6.5, 2)
  joints[J['right_hip']] = (6.5, 6.5, 0)  # missing: neither it nor its edges are drawn
  out = viz.draw_skeleton(image, joints)
  assert out.shape == (8, 8, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out[1:7, 1], [viz.SIDE_COLOURS['right']] * 6)
  assert not _changed(out, image)[:, 4:].any()  # no right upper leg, no hip marker
  assert (image == 0).all()  # drawn on a copy

  # Shoulders: left joint, right joint, and the centre colour between them.
  joints = np.zeros((14, 3), np.float32)
  joints[J['right_shoulder']] = (1.5, 4.5, 2)
  joints[J['left_shoulder']] = (6.5, 4.5, 2)
  out = viz.draw_skeleton(image, joints)
  assert tuple(out[4, 1]) == viz.SIDE_COLOURS['right']
  assert tuple(out[4, 6]) == viz.SIDE_COLOURS['left']
  assert tuple(out[4, 4]) == viz.SIDE_COLOURS['centre']
  one = viz.draw_skeleton(image, joints, colour=(0, 255, 0))
  assert {tuple(c) for c in one[_changed(one, image)]} == {(0, 255, 0)}


def test_draw_skeleton_hollow_occluded_joints_and_scale():
  image = np.zeros((4, 4, 3), np.uint8)
  filled = viz.draw_skeleton(image, np.array([[2.0, 2.0, 2]]), scale=4)
  hollow = viz.draw_skeleton(image, np.array([[2.0, 2.0, 1]]), scale=4)
  plain = viz.draw_skeleton(image, np.array([[2.0, 2.0]]), scale=4)  # [K, 2]: visible
  assert filled.shape == (16, 16, 3)
  np.testing.assert_array_equal(plain, filled)
  assert _changed(filled, 0)[7:9, 7:9].all()  # the joint at pixel centre (8, 8)
  assert not _changed(hollow, 0)[7:9, 7:9].any()
  ring = _changed(hollow, 0)[7:9]  # the outline, 3-4 px left and right of the centre
  assert ring[:, 3:5].any(1).all() and ring[:, 11:13].any(1).all()
  assert not _changed(hollow, 0)[:, :3].any() and not _changed(hollow, 0)[:, 13:].any()
  nothing = viz.draw_skeleton(image, np.array([[2.0, 2.0, 0]]), scale=4)
  assert not nothing.any()
  # Enlarging first (joints times the scale) gives the same picture as `scale`.
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
  joints = np.concatenate([rng.uniform(4, 60, (14, 2)), rng.choice([0, 1, 2], (14, 1))], -1)
  scaled = joints.copy()
  scaled[:, :2] *= 2
  np.testing.assert_array_equal(viz.draw_skeleton(viz.upscale(image, 2), scaled),
                                viz.draw_skeleton(image, joints, scale=2))


def test_draw_boxes_outline_padding_labels_and_scale():
  image = np.zeros((10, 10, 3), np.uint8)
  boxes = np.array([[2, 2, 6, 6], [-1, -1, -1, -1]], np.float32)
  out = viz.draw_boxes(image, boxes, colours=[(255, 0, 0), (0, 255, 0)])
  expected = np.zeros((10, 10), bool)
  expected[2, 2:6] = expected[5, 2:6] = expected[2:6, 2] = expected[2:6, 5] = True
  np.testing.assert_array_equal(_changed(out, image), expected)
  assert {tuple(c) for c in out[expected]} == {(255, 0, 0)}
  np.testing.assert_array_equal(viz.draw_boxes(image, boxes[1:]), image)  # padding only
  # Fractional box: the outline runs along the outermost pixels it touches.
  frac = viz.draw_boxes(image, np.array([[2.5, 2.5, 5.2, 5.9]]))
  np.testing.assert_array_equal(_changed(frac, image), expected)

  big = viz.draw_boxes(image, boxes, scale=2)
  assert big.shape == (20, 20, 3)
  ch = _changed(big, 0)
  assert ch[4, 4] and ch[11, 11] and not ch[3, 3] and not ch[12, 12] and not ch[8, 8]

  canvas = np.zeros((40, 60, 3), np.uint8)
  box = np.array([[10, 20, 30, 35]], np.float32)
  plain = viz.draw_boxes(canvas, box)
  labelled = viz.draw_boxes(canvas, box, labels=['circle 0.93'])
  assert not _changed(plain, canvas)[:20].any()
  assert _changed(labelled, canvas)[:20, 10:].any()  # the label sits above the box
  assert not _changed(labelled, canvas)[:, :10].any()


def test_upscale_and_caption():
  grey = np.array([[0.0, 1.0]], np.float32)  # float [0, 1], [H, W]
  big = viz.upscale(grey, 3)
  assert big.shape == (3, 6, 3) and big.dtype == np.uint8
  assert (big[:, :3] == 0).all() and (big[:, 3:] == 255).all()
  with pytest.raises(ValueError, match='scale'):
    viz.upscale(grey, 0)
  tile = np.zeros((20, 60, 3), np.uint8)
  out = viz.caption(tile, 'truth')
  assert out.shape == (34, 60, 3)
  np.testing.assert_array_equal(out[:20], tile)
  assert (out[20:] < 255).any() and (out[20:, 40:] == 255).all()  # text at the left
