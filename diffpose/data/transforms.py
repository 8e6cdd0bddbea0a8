"""Top-down crop geometry and training augmentation.

One person box becomes one affine transform ``M`` (2x3, image px -> crop px) that warps the key
frame and every neighbour the same way (as in DCPose), and maps the keypoints. Flip, rotation and
scale are all folded into ``M``, so image and keypoints can never disagree: a flipped crop is the
mirror image about the crop's centre, and only the joint *labels* need swapping
(``keypoints.FLIP_INDEX``). ``invert_affine(M)`` maps predictions back to the image.

Conventions: boxes are ``[x, y, w, h]`` in image px; crop sizes are ``(H, W)`` like tensors;
``center``/``size`` are ``(x, y)``/``(w, h)``; rotation in degrees, counter-clockwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from diffpose.data import keypoints as kp

LOWER_BODY = np.array([any(p in n for p in ("hip", "knee", "ankle")) for n in kp.KEYPOINT_NAMES])
"""Joints of the lower half for half-body augmentation (the rest is the upper half)."""


@dataclass(frozen=True)
class Augmentation:
    """Training augmentation (params.yaml ``data``); the defaults follow DCPose/FAMI-Pose."""

    flip_prob: float = 0.5
    rotation: float = 45.0  # std-like factor in degrees: r = clip(N(0,1) * rotation, +-2 rotation)
    rotation_prob: float = 0.6
    scale: float = 0.35  # s = clip(1 + N(0,1) * scale, 1 - scale, 1 + scale)
    half_body_prob: float = 0.3
    half_body_min_joints: int = 8


@dataclass(frozen=True)
class CropParams:
    """What one training sample's crop used (all frames of the clip share it)."""

    center: tuple[float, float]
    size: tuple[float, float]  # (w, h) of the image region that fills the crop
    rotation: float = 0.0
    flip: bool = False


def box_to_center_size(box, aspect: float, enlarge: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """``[x, y, w, h]`` -> centre ``(x, y)`` and region size ``(w, h)`` with ``w / h == aspect``
    (grown on one side, never cropped), enlarged by ``enlarge``."""
    x, y, w, h = (float(v) for v in box)
    center = np.array([x + 0.5 * w, y + 0.5 * h], dtype=np.float64)
    w, h = max(w, 1e-3), max(h, 1e-3)
    if w > aspect * h:
        h = w / aspect
    else:
        w = h * aspect
    return center, np.array([w, h], dtype=np.float64) * enlarge


def crop_affine(center, size, out_hw: tuple[int, int], *, rotation: float = 0.0, flip: bool = False) -> np.ndarray:
    """The 2x3 matrix mapping image px to crop px: the region ``size`` around ``center``, rotated by
    ``rotation`` degrees, fills an ``(H, W)`` crop; ``flip`` mirrors the crop about its centre."""
    out_h, out_w = out_hw
    cx, cy = float(center[0]), float(center[1])
    sx, sy = out_w / float(size[0]), out_h / float(size[1])
    theta = np.deg2rad(rotation)
    cos, sin = np.cos(theta), np.sin(theta)
    # translate centre to origin, rotate (counter-clockwise on screen, y down), scale, flip, recentre
    to_origin = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], dtype=np.float64)
    rotate = np.array([[cos, sin, 0], [-sin, cos, 0], [0, 0, 1]], dtype=np.float64)
    scale = np.diag([sx * (-1.0 if flip else 1.0), sy, 1.0])
    recentre = np.array([[1, 0, out_w / 2.0], [0, 1, out_h / 2.0], [0, 0, 1]], dtype=np.float64)
    return (recentre @ scale @ rotate @ to_origin)[:2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    full = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``points [..., 2]`` -> transformed ``[..., 2]`` (float64)."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ np.asarray(matrix, dtype=np.float64)[:, :2].T + np.asarray(matrix, dtype=np.float64)[:, 2]


def warp(image: np.ndarray, matrix: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Warp an ``[H, W, C]`` image into an ``(H, W)`` crop; outside the image is black."""
    out_h, out_w = out_hw
    return cv2.warpAffine(
        image, np.asarray(matrix, dtype=np.float64), (int(out_w), int(out_h)),
        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )


def half_body_region(keypoints: np.ndarray, rng: np.random.Generator, aspect: float,
                     min_joints: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Centre and size of the upper or lower body's visible joints (1.5x their extent), or None
    when too few joints are visible. ``keypoints [J, 3]`` in image px."""
    visible = keypoints[:, 2] > 0
    if visible.sum() < min_joints:
        return None
    upper = visible & ~LOWER_BODY
    lower = visible & LOWER_BODY
    pick = upper if (rng.random() < 0.5 and upper.sum() > 2) or lower.sum() <= 2 else lower
    if pick.sum() < 2:
        return None
    pts = keypoints[pick, :2]
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    center = (lo + hi) / 2.0
    w, h = max(hi[0] - lo[0], 1.0), max(hi[1] - lo[1], 1.0)
    if w > aspect * h:
        h = w / aspect
    else:
        w = h * aspect
    return center, np.array([w, h]) * 1.5


def sample_crop(box, keypoints: np.ndarray | None, out_hw: tuple[int, int], *, enlarge: float,
                aug: Augmentation | None, rng: np.random.Generator | None) -> CropParams:
    """The crop of one sample: the enlarged box, plus random augmentation when ``aug`` is given.

    Every random draw comes from ``rng`` in a fixed order, so a sample's crop depends only on the
    generator's seed (the dataset seeds it with ``(seed, epoch, index)``).
    """
    aspect = out_hw[1] / out_hw[0]
    center, size = box_to_center_size(box, aspect, enlarge)
    if aug is None or rng is None:
        return CropParams(tuple(center), tuple(size))
    draws = rng.random(4)
    normals = rng.standard_normal(2)
    if keypoints is not None and draws[0] < aug.half_body_prob:
        region = half_body_region(keypoints, rng, aspect, aug.half_body_min_joints)
        if region is not None:
            center, size = region
    s = float(np.clip(1.0 + normals[0] * aug.scale, 1.0 - aug.scale, 1.0 + aug.scale))
    r = float(np.clip(normals[1] * aug.rotation, -2 * aug.rotation, 2 * aug.rotation)) if draws[1] < aug.rotation_prob else 0.0
    flip = bool(draws[2] < aug.flip_prob)
    return CropParams(tuple(center), tuple(size * s), r, flip)


def crop_keypoints(keypoints: np.ndarray, matrix: np.ndarray, flip: bool, out_hw: tuple[int, int]) -> np.ndarray:
    """``keypoints [J, 3]`` (x, y, v) in image px -> crop px; left/right labels swapped when
    flipped; joints that leave the crop get v = 0."""
    out = np.array(keypoints, dtype=np.float64, copy=True)
    out[:, :2] = apply_affine(out[:, :2], matrix)
    if flip:
        out = out[kp.FLIP_INDEX]
    h, w = out_hw
    inside = (out[:, 0] >= 0) & (out[:, 0] <= w - 1) & (out[:, 1] >= 0) & (out[:, 1] <= h - 1)
    out[:, 2] = np.where((out[:, 2] > 0) & inside, out[:, 2], 0.0)
    return out
