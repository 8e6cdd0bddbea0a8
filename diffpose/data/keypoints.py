"""Keypoint metadata: the one table every module reads.

PoseTrack18/21 store 17 keypoints in COCO order, with ``head_bottom`` and ``head_top`` in the
places of COCO's eyes and the ears never labelled. PoseTrack17 and the official evaluator use 15
joints in their own order. Everything about joints (names, left/right pairs, skeleton, OKS sigmas,
the 17 -> 15 mapping, the paper's table columns) lives here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Joint:
    name: str
    flip: str  # name of the mirrored joint (itself for centre joints)
    sigma: float  # OKS sigma (COCO values; head_bottom/head_top take the eyes' values)
    posetrack15: int | None  # index in the 15-joint PoseTrack17/poseval order, None = not evaluated


# fmt: off
JOINTS: tuple[Joint, ...] = (
    Joint("nose",           "nose",           0.026, 13),
    Joint("head_bottom",    "head_bottom",    0.025, 12),
    Joint("head_top",       "head_top",       0.025, 14),
    Joint("left_ear",       "right_ear",      0.035, None),
    Joint("right_ear",      "left_ear",       0.035, None),
    Joint("left_shoulder",  "right_shoulder", 0.079, 9),
    Joint("right_shoulder", "left_shoulder",  0.079, 8),
    Joint("left_elbow",     "right_elbow",    0.072, 10),
    Joint("right_elbow",    "left_elbow",     0.072, 7),
    Joint("left_wrist",     "right_wrist",    0.062, 11),
    Joint("right_wrist",    "left_wrist",     0.062, 6),
    Joint("left_hip",       "right_hip",      0.107, 3),
    Joint("right_hip",      "left_hip",       0.107, 2),
    Joint("left_knee",      "right_knee",     0.087, 4),
    Joint("right_knee",     "left_knee",      0.087, 1),
    Joint("left_ankle",     "right_ankle",    0.089, 5),
    Joint("right_ankle",    "left_ankle",     0.089, 0),
)
# fmt: on

NUM_KEYPOINTS = len(JOINTS)  # 17, COCO / PoseTrack18 order
KEYPOINT_NAMES: tuple[str, ...] = tuple(j.name for j in JOINTS)
NAME_TO_INDEX = {name: i for i, name in enumerate(KEYPOINT_NAMES)}

FLIP_INDEX = np.array([NAME_TO_INDEX[j.flip] for j in JOINTS], dtype=np.int64)
"""``keypoints[FLIP_INDEX]`` swaps left and right after a horizontal flip."""
FLIP_PAIRS: tuple[tuple[int, int], ...] = tuple(
    (i, int(FLIP_INDEX[i])) for i in range(NUM_KEYPOINTS) if i < FLIP_INDEX[i]
)
OKS_SIGMAS = np.array([j.sigma for j in JOINTS], dtype=np.float64)

# Limbs as 0-based index pairs into the 17 keypoints; the PoseTrack18 files store the same list
# 1-based under categories[0].skeleton.
SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)
SKELETON_1BASED = [[a + 1, b + 1] for a, b in SKELETON]

LABELLED_IN_POSETRACK18 = np.array([j.posetrack15 is not None for j in JOINTS])
"""Ears are never labelled in PoseTrack18; every other joint may be."""

# The 15 PoseTrack joints in poseval's order, and where each sits among the 17.
POSETRACK15_NAMES: tuple[str, ...] = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
    "head_bottom", "nose", "head_top",
)
POSETRACK15_TO_COCO17 = np.array([NAME_TO_INDEX[n] for n in POSETRACK15_NAMES], dtype=np.int64)
"""``kpts17[POSETRACK15_TO_COCO17]`` gives the 15 PoseTrack joints in poseval order."""

# Columns of the paper's tables: each is the mean of these PoseTrack15 joints.
TABLE_GROUPS: dict[str, tuple[str, ...]] = {
    "Head": ("head_top", "head_bottom", "nose"),
    "Shou": ("left_shoulder", "right_shoulder"),
    "Elb": ("left_elbow", "right_elbow"),
    "Wri": ("left_wrist", "right_wrist"),
    "Hip": ("left_hip", "right_hip"),
    "Knee": ("left_knee", "right_knee"),
    "Ankl": ("left_ankle", "right_ankle"),
}


def _check_table() -> None:
    assert len(set(KEYPOINT_NAMES)) == NUM_KEYPOINTS
    assert all(FLIP_INDEX[FLIP_INDEX] == np.arange(NUM_KEYPOINTS))
    pt = sorted(j.posetrack15 for j in JOINTS if j.posetrack15 is not None)
    assert pt == list(range(15))
    for i, j in enumerate(JOINTS):
        if j.posetrack15 is not None:
            assert POSETRACK15_NAMES[j.posetrack15] == j.name


_check_table()
