"""Scene: a cluttered background canvas, a panning/zooming camera and moving occluders.

The background is drawn once per sequence on a canvas larger than the frame (walls, windows,
ground texture, and limb-like distractors: sticks, bent "arms", stripes, head-sized blobs in skin
and clothing colours, so that a detector cannot rely on "anything elongated is a limb"). Each
frame shows a window of it through ``camera_affine(t)`` (pan + zoom about the frame centre); people
and occluders are projected through the same transform so the whole scene moves together.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from diffpose.data.synthetic.motion import smooth_noise
from diffpose.data.synthetic.render import SKIN_TONES, Canvas, _random_colour, limb

CANVAS_MARGIN = 1.3  # canvas size / frame size


def background(rng: np.random.Generator, width: int, height: int, horizon: float) -> np.ndarray:
    """(height, width, 3) uint8 BGR canvas; ``horizon`` is the canvas row of the horizon."""
    img = np.zeros((height, width, 3), np.float32)
    wall, ground = np.array(_random_colour(rng), np.float32), np.array(_random_colour(rng), np.float32)
    ground = 0.5 * ground + 0.5 * np.array([90, 100, 105], np.float32)
    rows = np.arange(height, dtype=np.float32)[:, None, None]
    img[:] = np.where(
        rows < horizon,
        wall * (0.8 + 0.3 * rows / max(horizon, 1)),
        ground * (0.75 + 0.4 * (rows - horizon) / height),
    )
    # low-frequency colour noise
    for cells, amp, colour in ((4, 30, 0.3), (12, 16, 0.2), (40, 10, 0.1)):
        noise = rng.normal(0, 1, (cells, max(2, cells * width // height), 3)).astype(np.float32)
        noise = (1 - colour) * noise.mean(-1, keepdims=True) + colour * noise  # mostly brightness
        img += amp * cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img, 0, 255).astype(np.uint8)
    # buildings / panels with windows above the horizon
    for _ in range(int(rng.integers(2, 6))):
        x0, w = int(rng.integers(-20, width)), int(rng.integers(width // 8, width // 3))
        top = int(rng.uniform(0, horizon * 0.7))
        col = _random_colour(rng)
        cv2.rectangle(img, (x0, top), (x0 + w, int(horizon)), col, -1)
        step = int(rng.integers(8, 20))
        win = tuple(int(v * 0.6) for v in col)
        for y in range(top + 4, int(horizon) - step // 2, step):
            for x in range(x0 + 4, x0 + w - 4, step):
                cv2.rectangle(img, (x, y), (x + step // 2, y + step // 2), win, -1)
    # ground texture: receding stripes / paving lines
    for _ in range(int(rng.integers(3, 9))):
        y = int(rng.uniform(horizon, height))
        cv2.line(
            img,
            (0, y),
            (width, y + int(rng.integers(-10, 10))),
            tuple(int(v) for v in rng.integers(40, 200, 3)),
            1,
            cv2.LINE_AA,
        )
    _distractors(rng, img, horizon)
    return cv2.GaussianBlur(img, (3, 3), 0.7)


def _distractors(rng: np.random.Generator, img: np.ndarray, horizon: float) -> None:
    """Limb-like clutter: straight and bent sticks, stripes and head-sized blobs."""
    h, w = img.shape[:2]
    canvas = Canvas(img)
    scale = h / 240.0
    for _ in range(int(rng.integers(12, 30))):
        col = SKIN_TONES[rng.integers(len(SKIN_TONES))] if rng.random() < 0.3 else _random_colour(rng)
        a = rng.uniform([0, 0], [w, h])
        length = rng.uniform(12, 55) * scale
        ang = rng.uniform(0, 2 * np.pi)
        b = a + length * np.array([np.cos(ang), np.sin(ang)])
        wa = rng.uniform(3, 12) * scale
        limb(canvas, a, b, wa, wa * rng.uniform(0.6, 1.0), col, -1)
        if rng.random() < 0.4:  # bent: an elbow or a knee
            ang2 = ang + rng.uniform(-2.0, 2.0)
            c = b + length * rng.uniform(0.7, 1.1) * np.array([np.cos(ang2), np.sin(ang2)])
            limb(canvas, b, c, wa * 0.8, wa * 0.6, col, -1)
    for _ in range(int(rng.integers(2, 7))):
        c = rng.uniform([0, 0], [w, h])
        r = rng.uniform(4, 12) * scale
        canvas.ellipse(
            c,
            (r, r * rng.uniform(1.0, 1.4)),
            float(rng.uniform(0, 180)),
            SKIN_TONES[rng.integers(len(SKIN_TONES))],
            -1,
        )
    for _ in range(int(rng.integers(0, 4))):  # stripes (railings, poles)
        x = rng.uniform(0, w)
        cv2.line(
            img,
            (int(x), 0),
            (int(x + rng.uniform(-30, 30)), h),
            _random_colour(rng),
            int(rng.integers(2, 8)),
            cv2.LINE_AA,
        )


@dataclass(frozen=True)
class CameraPath:
    """Per-frame zoom and canvas centre; canvas -> frame is ``zoom * (p - centre) + frame_centre``."""

    zoom: np.ndarray  # (T,)
    centre: np.ndarray  # (T, 2) canvas pixels
    frame_size: tuple[int, int]  # (width, height)

    def affine(self, t: int) -> np.ndarray:
        z = float(self.zoom[t])
        w, h = self.frame_size
        return np.array([[z, 0.0, w / 2 - z * self.centre[t, 0]], [0.0, z, h / 2 - z * self.centre[t, 1]]])

    def apply(self, t: int, pts: np.ndarray) -> np.ndarray:
        """(..., 2) canvas pixels -> frame pixels."""
        return self.zoom[t] * (pts - self.centre[t]) + np.array(self.frame_size, dtype=np.float64) / 2


def camera_path(
    rng: np.random.Generator,
    n: int,
    fps: float,
    frame: tuple[int, int],
    canvas: tuple[int, int],
    *,
    moving: bool,
) -> CameraPath:
    t = np.arange(n) / fps
    cw, ch = canvas
    if not moving:
        return CameraPath(np.ones(n), np.tile([cw / 2, ch / 2], (n, 1)).astype(np.float64), frame)
    zoom = 1.0 + rng.uniform(0.0, 0.18) * (0.5 + 0.5 * smooth_noise(rng, t, freq=(0.1, 0.5)))
    # the window (frame / zoom) must stay inside the canvas
    max_dx = (cw - frame[0] / zoom) / 2
    max_dy = (ch - frame[1] / zoom) / 2
    px = rng.uniform(0.3, 1.0) * smooth_noise(rng, t, freq=(0.1, 0.5))
    py = rng.uniform(0.0, 0.4) * smooth_noise(rng, t, freq=(0.1, 0.5))
    centre = np.stack([cw / 2 + px * max_dx, ch / 2 + py * max_dy], 1)
    return CameraPath(zoom, centre, frame)


@dataclass(frozen=True)
class Occluder:
    """A foreground object crossing the view: a polygon (canvas pixels) moving at ``velocity``."""

    shape: np.ndarray  # (K, 2) polygon at t = 0, canvas pixels
    velocity: np.ndarray  # (2,) canvas pixels per frame
    colour: tuple[int, int, int]
    stripes: tuple[int, int, int]

    def polygon(self, t: int) -> np.ndarray:
        return self.shape + t * self.velocity


def sample_occluders(
    rng: np.random.Generator, count: int, n: int, canvas: tuple[int, int], frame: tuple[int, int]
) -> list[Occluder]:
    cw, ch = canvas
    out = []
    for _ in range(count):
        kind = rng.choice(["pole", "board", "bush"])
        scale = frame[1] / 240.0
        if kind == "pole":
            w, h = rng.uniform(8, 22) * scale, ch * 1.2
            y0 = -0.1 * ch
        elif kind == "board":
            w, h = rng.uniform(40, 90) * scale, rng.uniform(50, 110) * scale
            y0 = rng.uniform(0.35, 0.8) * ch
        else:
            w, h = rng.uniform(50, 110) * scale, rng.uniform(35, 70) * scale
            y0 = ch - h * rng.uniform(0.6, 1.0)
        # cross the middle third of the canvas during the sequence
        x_mid = rng.uniform(0.3, 0.7) * cw
        speed = rng.uniform(0.4, 1.6) * cw / max(n, 1) * rng.choice([-1, 1])
        x0 = x_mid - speed * n / 2
        if kind == "bush":
            ang = np.linspace(0, 2 * np.pi, 14, endpoint=False)
            r = 1 + 0.15 * rng.standard_normal(14)
            shape = np.stack([w / 2 * r * np.cos(ang), h / 2 * r * np.sin(ang)], 1) + [x0, y0 + h / 2]
        else:
            shape = np.array([[x0 - w / 2, y0], [x0 + w / 2, y0], [x0 + w / 2, y0 + h], [x0 - w / 2, y0 + h]])
        out.append(Occluder(shape, np.array([speed, 0.0]), _random_colour(rng), _random_colour(rng)))
    return out


def draw_occluder(canvas: Canvas, occ: Occluder, t: int, to_frame, owner: int) -> None:
    """``to_frame``: (K, 2) canvas pixels -> frame pixels."""
    poly = to_frame(occ.polygon(t))
    canvas.poly(poly, occ.colour, owner)
    c = poly.mean(0)
    for k in (0.3, 0.6):  # texture that moves with the object
        a, b = poly[0] + k * (poly[3 % len(poly)] - poly[0]), poly[1] + k * (poly[2 % len(poly)] - poly[1])
        canvas.line(0.8 * a + 0.2 * c, 0.8 * b + 0.2 * c, occ.stripes, 2)
