"""A small 3D kinematic body model and its perspective projection.

World frame: X to the right of the camera, Y up from the ground, Z away from the camera (depth),
all in units of a standard person's height. A person stands at a ground point (X, 0, Z) with a
heading ``yaw``: yaw 0 faces the camera, +pi/2 walks to the image's right. Their body axes are

    forward f = (sin yaw, 0, -cos yaw),  left l = (cos yaw, 0, sin yaw),  up u = (0, 1, 0)

so that, facing the camera, the person's left side is on the image's right (as in real footage).

Joint angles (radians, per frame, left/right as index 0/1) drive a chain per limb: hip flexion
(+ = thigh forward) and abduction, knee flexion, shoulder flexion (+ = arm forward/up) and
abduction, elbow flexion, torso lean and head nod. Proportions follow adult anatomy as fractions of
standing height (shoulders 0.815, hips 0.52, knees 0.285, ankles 0.045). ``head_bottom`` sits at
the neck base (0.835) and ``head_top`` on the crown (1.0), which matches where PoseTrack annotators
put them (head_top to head_bottom ~ 0.17-0.2 of the person's height on the real fixtures).

Shapes: T frames; points (T, 3) in world units; projected points (T, 2) in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffpose.data.keypoints import NAME_TO_INDEX, NUM_KEYPOINTS

# Heights of body landmarks above the ground, as fractions of standing height.
PELVIS_HEIGHT = 0.52
SHOULDER_ABOVE_PELVIS = 0.295
NECK_ABOVE_PELVIS = 0.315  # head_bottom
HEAD_RY = 0.075  # head ellipse half-height; crown = head_top
HEAD_RX = 0.06
ANKLE_HEIGHT = 0.045


@dataclass(frozen=True)
class Body:
    """One person's build. Lengths are fractions of their own height ``scale`` (world units)."""

    scale: float = 1.0
    shoulder_half: float = 0.12
    hip_half: float = 0.085
    thigh: float = 0.24
    shin: float = 0.235
    upper_arm: float = 0.165
    forearm: float = 0.15
    # limb widths at the proximal/distal joint
    arm_width: tuple[float, float] = (0.055, 0.042)
    leg_width: tuple[float, float] = (0.085, 0.055)
    torso_depth: float = 0.12


def sample_body(rng: np.random.Generator, scale: float) -> Body:
    j = lambda v, s=0.08: float(v * (1.0 + rng.uniform(-s, s)))
    heavy = rng.uniform(0.85, 1.3)
    return Body(
        scale=scale,
        shoulder_half=j(0.12),
        hip_half=j(0.085),
        thigh=j(0.24, 0.04),
        shin=j(0.235, 0.04),
        upper_arm=j(0.165, 0.05),
        forearm=j(0.15, 0.05),
        arm_width=(0.055 * heavy, 0.042 * heavy),
        leg_width=(0.085 * heavy, 0.055 * heavy),
        torso_depth=0.12 * heavy,
    )


@dataclass(frozen=True)
class Pose:
    """Joint angles over T frames; (T, 2) arrays are [left, right]."""

    yaw: np.ndarray  # (T,)
    hip_flex: np.ndarray  # (T, 2)
    hip_abd: np.ndarray  # (T, 2)
    knee: np.ndarray  # (T, 2) >= 0
    shoulder_flex: np.ndarray  # (T, 2)
    shoulder_abd: np.ndarray  # (T, 2) >= 0 (outwards)
    elbow: np.ndarray  # (T, 2) >= 0
    lean: np.ndarray  # (T,)
    nod: np.ndarray  # (T,)


def body_axes(yaw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """forward, left, up unit vectors, each (T, 3)."""
    zero = np.zeros_like(yaw)
    f = np.stack([np.sin(yaw), zero, -np.cos(yaw)], -1)
    l = np.stack([np.cos(yaw), zero, np.sin(yaw)], -1)
    u = np.stack([zero, zero + 1.0, zero], -1)
    return f, l, u


def _col(a: np.ndarray) -> np.ndarray:
    return a[:, None]


def _unit(v: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.where(n > 1e-4, v / np.maximum(n, 1e-9), fallback)


def forward_kinematics(body: Body, pose: Pose, ground: np.ndarray) -> dict[str, np.ndarray]:
    """World positions of the 17 keypoints and the renderer's extra landmarks.

    ``ground`` (T, 3): the point on the ground under the pelvis. Returns a dict with
    ``keypoints`` (T, 17, 3) in COCO/PoseTrack18 order, and (T, 3) or (T, 2, 3) arrays for
    ``head_centre``, ``hand``, ``toe``, ``hip``, ``pelvis``, plus the axes ``forward``/``left``/``up``.
    """
    f, l, u = body_axes(pose.yaw)
    T = len(pose.yaw)
    side = np.array([1.0, -1.0])  # left, right
    # Legs relative to the pelvis, then lift the pelvis so the lower foot touches the ground.
    a, b, k = pose.hip_flex, pose.hip_abd, pose.knee
    knee_rel, ankle_rel, hip_rel = [], [], []
    for s in range(2):
        hip_o = side[s] * body.hip_half * l
        thigh = -_col(np.cos(a[:, s])) * u + _col(np.sin(a[:, s])) * f
        thigh = _col(np.cos(b[:, s])) * thigh + _col(np.sin(b[:, s])) * side[s] * l
        shin = -_col(np.cos(a[:, s] - k[:, s])) * u + _col(np.sin(a[:, s] - k[:, s])) * f
        shin = _col(np.cos(b[:, s])) * shin + _col(np.sin(b[:, s])) * side[s] * l
        kn = hip_o + body.thigh * thigh
        hip_rel.append(hip_o)
        knee_rel.append(kn)
        ankle_rel.append(kn + body.shin * shin)
    lowest = np.minimum(ankle_rel[0][:, 1], ankle_rel[1][:, 1])
    pelvis = _col(ANKLE_HEIGHT - lowest) * u  # relative to the ground point
    tu = _col(np.cos(pose.lean)) * u + _col(np.sin(pose.lean)) * f
    hu = _col(np.cos(pose.lean + pose.nod)) * u + _col(np.sin(pose.lean + pose.nod)) * f
    sh_centre = pelvis + SHOULDER_ABOVE_PELVIS * tu
    neck = pelvis + NECK_ABOVE_PELVIS * tu
    head_c = neck + 0.015 * tu + HEAD_RY * hu
    head_top = head_c + HEAD_RY * hu
    nose = head_c + 0.058 * f - 0.012 * hu
    shoulders, elbows, wrists, hands = [], [], [], []
    for s in range(2):
        sh = sh_centre + side[s] * body.shoulder_half * l
        fl, ab, el = pose.shoulder_flex[:, s], pose.shoulder_abd[:, s], pose.elbow[:, s]
        ud = -_col(np.cos(fl)) * u + _col(np.sin(fl)) * f
        ud = _col(np.cos(ab)) * ud + _col(np.sin(ab)) * side[s] * l
        ref = f + 0.5 * u
        perp = _unit(ref - np.sum(ref * ud, -1, keepdims=True) * ud, u)
        fd = _col(np.cos(el)) * ud + _col(np.sin(el)) * perp
        elb = sh + body.upper_arm * ud
        wr = elb + body.forearm * fd
        shoulders.append(sh)
        elbows.append(elb)
        wrists.append(wr)
        hands.append(wr + 0.055 * fd)
    kp = np.zeros((T, NUM_KEYPOINTS, 3))
    named = {
        "nose": nose,
        "head_bottom": neck,
        "head_top": head_top,
        "left_ear": head_c + HEAD_RX * l,
        "right_ear": head_c - HEAD_RX * l,
        "left_shoulder": shoulders[0],
        "right_shoulder": shoulders[1],
        "left_elbow": elbows[0],
        "right_elbow": elbows[1],
        "left_wrist": wrists[0],
        "right_wrist": wrists[1],
        "left_hip": hip_rel[0] + pelvis,
        "right_hip": hip_rel[1] + pelvis,
        "left_knee": knee_rel[0] + pelvis,
        "right_knee": knee_rel[1] + pelvis,
        "left_ankle": ankle_rel[0] + pelvis,
        "right_ankle": ankle_rel[1] + pelvis,
    }
    for name, p in named.items():
        kp[:, NAME_TO_INDEX[name]] = p
    ankles = kp[:, [NAME_TO_INDEX["left_ankle"], NAME_TO_INDEX["right_ankle"]]]
    toe = ankles + (0.075 * f - 0.02 * u)[:, None]
    out = {
        "keypoints": kp,
        "head_centre": head_c,
        "hand": np.stack(hands, 1),
        "toe": toe,
        "pelvis": pelvis,
        "forward": f,
        "left": l,
        "up": u,
        "head_up": hu,
    }
    g = ground[:, None, :]
    S = body.scale
    for key in ("keypoints", "hand", "toe"):
        out[key] = g + S * out[key]
    for key in ("head_centre", "pelvis"):
        out[key] = ground + S * out[key]
    return out


@dataclass(frozen=True)
class Camera:
    """Pinhole camera at height ``height`` looking along +Z; pixels on the background canvas."""

    focal: float
    cx: float
    horizon: float  # image row of the horizon
    height: float

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(..., 3) world -> ((..., 2) canvas pixels, (...) depth)."""
        z = np.maximum(points[..., 2], 1e-3)
        x = self.cx + self.focal * points[..., 0] / z
        y = self.horizon + self.focal * (self.height - points[..., 1]) / z
        return np.stack([x, y], -1), z

    def scale_at(self, depth: np.ndarray | float) -> np.ndarray | float:
        """Pixels per world unit at a depth."""
        return self.focal / depth
