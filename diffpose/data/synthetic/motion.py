"""Motion: ground trajectories, headings and joint-angle curves for each person.

Walkers follow a gait cycle (hips swing in antiphase, knees flex in the swing phase, arms swing
against the legs) while steering towards waypoints inside the visible area, which produces turns
and, when they walk towards or away from the camera, scale changes. Standing people turn in place
and gesture (arms raised, waving, crouching). Every curve is smooth (sums of low-frequency
sinusoids or integrated turn rates), so a joint moves a few pixels between frames and a joint hidden
in one frame is predictable from its neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffpose.data.synthetic.skeleton import Pose


def smooth_noise(
    rng: np.random.Generator, t: np.ndarray, *, freq: tuple[float, float] = (0.2, 0.8), terms: int = 3
) -> np.ndarray:
    """A smooth random curve over times ``t`` (seconds) with values in about [-1, 1]."""
    out = np.zeros_like(t, dtype=np.float64)
    weights = rng.uniform(0.5, 1.0, terms)
    for w in weights:
        out += w * np.sin(2 * np.pi * rng.uniform(*freq) * t + rng.uniform(0, 2 * np.pi))
    return out / weights.sum()


@dataclass(frozen=True)
class Bounds:
    """Where a person may walk: depth range and lateral half-width at a depth (world units)."""

    z_near: float
    z_far: float
    half_width_per_depth: float  # visible |X| / Z at the canvas edge

    def clamp_target(self, x: float, z: float) -> tuple[float, float]:
        z = float(np.clip(z, self.z_near, self.z_far))
        lim = 0.8 * self.half_width_per_depth * z
        return float(np.clip(x, -lim, lim)), z


@dataclass(frozen=True)
class Gait:
    """Gait parameters: speed in body heights per second, stride (one cycle) in body heights,
    amplitudes in radians (hip swing, knee swing on top of knee0, arm swing), elbow bend, lean."""

    speed: float
    stride: float
    hip: float
    knee: float
    knee0: float
    arm: float
    elbow: float
    lean: float


def sample_gait(rng: np.random.Generator, style: str) -> Gait:
    """Gait of a ``jog``, ``walk`` or ``stand`` (no cycle)."""
    if style == "jog":
        return Gait(
            speed=rng.uniform(1.1, 1.6),
            stride=rng.uniform(1.0, 1.2),
            hip=rng.uniform(0.45, 0.65),
            knee=rng.uniform(1.0, 1.4),
            knee0=0.25,
            arm=rng.uniform(0.45, 0.8),
            elbow=rng.uniform(1.2, 1.6),
            lean=rng.uniform(0.08, 0.2),
        )
    if style == "walk":
        return Gait(
            speed=rng.uniform(0.45, 0.9),
            stride=rng.uniform(0.75, 0.95),
            hip=rng.uniform(0.28, 0.45),
            knee=rng.uniform(0.6, 0.95),
            knee0=0.08,
            arm=rng.uniform(0.2, 0.5),
            elbow=rng.uniform(0.15, 0.5),
            lean=rng.uniform(0.0, 0.08),
        )
    return Gait(speed=0.0, stride=1.0, hip=0.0, knee=0.0, knee0=0.05, arm=0.0, elbow=0.2, lean=0.0)


def walk_path(
    rng: np.random.Generator,
    n: int,
    fps: float,
    *,
    start: tuple[float, float],
    yaw0: float,
    speed: float,
    bounds: Bounds,
    waypoint: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Integrate a steered walk. Returns ground points (n, 3) and headings (n,)."""
    dt = 1.0 / fps
    x, z = start
    yaw = yaw0
    tx, tz = waypoint if waypoint is not None else _new_waypoint(rng, bounds)
    wobble = smooth_noise(rng, np.arange(n) * dt, freq=(0.2, 0.6)) * rng.uniform(0.0, 0.6)
    max_turn = rng.uniform(1.2, 2.5) * dt  # rad per frame
    ground, yaws = np.zeros((n, 3)), np.zeros(n)
    for i in range(n):
        if speed > 0:
            dx, dz = tx - x, tz - z
            if dx * dx + dz * dz < 0.15:
                tx, tz = _new_waypoint(rng, bounds)
                dx, dz = tx - x, tz - z
            want = np.arctan2(dx, -dz)
            diff = (want - yaw + np.pi) % (2 * np.pi) - np.pi
            yaw += float(np.clip(diff, -max_turn, max_turn)) + wobble[i] * dt
            x += speed * np.sin(yaw) * dt
            z -= speed * np.cos(yaw) * dt
            z = float(np.clip(z, bounds.z_near * 0.95, bounds.z_far * 1.05))
        ground[i] = (x, 0.0, z)
        yaws[i] = yaw
    return ground, yaws


def _new_waypoint(rng: np.random.Generator, bounds: Bounds) -> tuple[float, float]:
    z = rng.uniform(bounds.z_near, bounds.z_far)
    lim = 0.8 * bounds.half_width_per_depth * z
    return float(rng.uniform(-lim, lim)), float(z)


def gait_pose(rng: np.random.Generator, n: int, fps: float, yaw: np.ndarray, gait: Gait, style: str) -> Pose:
    """Joint angles for ``n`` frames: a gait cycle (walk/jog) or gestures (stand), plus noise."""
    t = np.arange(n) / fps
    freq = gait.speed / gait.stride if style != "stand" else 0.0
    phase = 2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi)
    sw = np.sin(phase)
    legs = np.stack([sw, -sw], 1)
    hip_flex = gait.hip * legs
    swing = np.stack([np.cos(phase), -np.cos(phase)], 1)
    knee = gait.knee0 + gait.knee * np.clip(swing, 0, None) ** 1.5
    shoulder_flex = -gait.arm * legs
    elbow = np.full((n, 2), gait.elbow) + 0.15 * gait.arm * (1 - legs)
    shoulder_abd = np.full((n, 2), rng.uniform(0.05, 0.2))
    hip_abd = np.full((n, 2), rng.uniform(0.0, 0.06))
    lean = np.full(n, gait.lean)

    def nz(scale: float, lo: float = 0.2, hi: float = 0.8) -> np.ndarray:
        return scale * np.stack([smooth_noise(rng, t, freq=(lo, hi)) for _ in range(2)], 1)

    if style == "stand":
        # gestures: each arm wanders over a wide range (raised, forward, akimbo, waving)
        shoulder_flex = 0.9 + nz(1.3, 0.15, 0.7) + rng.uniform(-0.6, 0.6, 2)
        shoulder_abd = np.clip(0.5 + nz(0.8, 0.15, 0.7) + rng.uniform(-0.3, 0.5, 2), 0.02, 2.6)
        elbow = np.clip(0.9 + nz(1.0, 0.2, 1.0), 0.0, 2.3)
        crouch = np.clip(smooth_noise(rng, t, freq=(0.1, 0.4)) * rng.uniform(0.0, 1.4) - 0.1, 0.0, None)
        knee = 0.05 + np.stack([crouch, crouch], 1) * 1.3 + np.abs(nz(0.15))
        hip_flex = np.stack([crouch, crouch], 1) * 0.75 + nz(0.2)
        hip_abd = np.clip(hip_abd + rng.uniform(0.0, 0.2) + nz(0.08), 0.0, 0.5)
        lean = 0.35 * crouch + 0.05 * smooth_noise(rng, t)
    else:
        shoulder_flex = shoulder_flex + nz(0.15)
        elbow = elbow + np.abs(nz(0.2))
        if rng.random() < 0.25:  # one arm busy (waving, pointing, on the phone) while walking
            s = int(rng.integers(2))
            shoulder_flex[:, s] = 1.2 + 0.9 * smooth_noise(rng, t, freq=(0.3, 1.0))
            elbow[:, s] = np.clip(1.0 + 0.9 * smooth_noise(rng, t, freq=(0.3, 1.2)), 0.0, 2.3)
    nod = 0.1 * smooth_noise(rng, t) + rng.uniform(-0.1, 0.15)
    return Pose(
        yaw=yaw,
        hip_flex=hip_flex,
        hip_abd=hip_abd,
        knee=np.clip(knee, 0.0, 2.4),
        shoulder_flex=shoulder_flex,
        shoulder_abd=np.clip(shoulder_abd, 0.0, 2.8),
        elbow=np.clip(elbow, 0.0, 2.4),
        lean=lean,
        nod=nod,
    )


def standing_yaw(rng: np.random.Generator, n: int, fps: float) -> np.ndarray:
    t = np.arange(n) / fps
    return rng.uniform(-np.pi, np.pi) + rng.uniform(0.3, 1.8) * smooth_noise(rng, t, freq=(0.1, 0.4))
