"""Degradations that make single frames hard and their neighbours easy.

Short bursts (1-2 frames) of camera motion blur or defocus hit whole frames; other bursts blur
one person only (fast motion); sensor noise is on every frame. A burst never lasts longer than
two frames, so a key frame's +-2 neighbours usually show the same joints sharply.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

NONE, MOTION, DEFOCUS = 0, 1, 2


def bursts(rng: np.random.Generator, shape: tuple[int, ...], rate: float) -> np.ndarray:
    """Boolean (T, ...) mask: bursts start with probability ``rate`` per frame, last 1-2 frames."""
    start = rng.random(shape) < rate
    longer = rng.random(shape) < 0.5
    out = start.copy()
    out[1:] |= start[:-1] & longer[:-1]
    return out


@dataclass(frozen=True)
class Schedule:
    frame_kind: np.ndarray  # (T,) NONE/MOTION/DEFOCUS for the whole frame
    frame_param: np.ndarray  # (T, 2) blur length/sigma and angle
    person_blur: np.ndarray  # (T, P) bool
    person_param: np.ndarray  # (T, P, 2)
    noise_sigma: float

    def degraded(self, t: int, p: int) -> bool:
        return bool(self.frame_kind[t] != NONE or self.person_blur[t, p])


def sample_schedule(
    rng: np.random.Generator,
    n: int,
    people: int,
    *,
    frame_rate: float = 0.05,
    person_rate: float = 0.05,
    scale: float = 1.0,
) -> Schedule:
    on = bursts(rng, (n,), frame_rate)
    kind = np.where(on, np.where(rng.random(n) < 0.6, MOTION, DEFOCUS), NONE)
    param = np.stack([rng.uniform(6, 14, n) * scale, rng.uniform(0, 180, n)], 1)
    param[kind == DEFOCUS, 0] = rng.uniform(1.6, 3.0, int((kind == DEFOCUS).sum())) * scale
    pb = bursts(rng, (n, people), person_rate)
    pparam = np.stack([rng.uniform(7, 16, (n, people)) * scale, rng.uniform(0, 180, (n, people))], -1)
    return Schedule(kind, param, pb, pparam, float(rng.uniform(1.5, 4.0)))


def motion_kernel(length: float, angle_deg: float) -> np.ndarray:
    k = max(3, int(round(length)) | 1)
    kernel = np.zeros((k, k), np.float32)
    c = k // 2
    a = np.radians(angle_deg)
    d = np.array([np.cos(a), np.sin(a)]) * (k - 1) / 2
    cv2.line(
        kernel,
        (int(round(c - d[0])), int(round(c - d[1]))),
        (int(round(c + d[0])), int(round(c + d[1]))),
        1.0,
        1,
        cv2.LINE_AA,
    )
    return kernel / kernel.sum()


def blur(img: np.ndarray, kind: int, param: np.ndarray) -> np.ndarray:
    if kind == MOTION:
        return cv2.filter2D(img, -1, motion_kernel(param[0], param[1]), borderType=cv2.BORDER_REFLECT)
    if kind == DEFOCUS:
        return cv2.GaussianBlur(img, (0, 0), float(param[0]))
    return img


def blur_region(img: np.ndarray, box: tuple[float, float, float, float], param: np.ndarray) -> None:
    """Motion-blur the pixels in ``box`` (x0, y0, x1, y1), feathered at its border; in place."""
    h, w = img.shape[:2]
    pad = int(param[0]) + 4
    x0, y0 = max(0, int(box[0]) - pad), max(0, int(box[1]) - pad)
    x1, y1 = min(w, int(box[2]) + pad), min(h, int(box[3]) + pad)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return
    crop = img[y0:y1, x0:x1]
    blurred = blur(crop, MOTION, param).astype(np.float32)
    mask = np.zeros(crop.shape[:2], np.float32)
    m = pad // 2
    mask[m : -m or None, m : -m or None] = 1.0
    mask = cv2.GaussianBlur(mask, (0, 0), max(pad / 3, 1.0))[..., None]
    img[y0:y1, x0:x1] = np.clip(mask * blurred + (1 - mask) * crop, 0, 255).astype(np.uint8)


def add_noise(rng: np.random.Generator, img: np.ndarray, sigma: float) -> np.ndarray:
    noise = rng.standard_normal(img.shape, dtype=np.float32) * sigma
    return np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
