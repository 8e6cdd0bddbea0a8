"""Draw predicted skeletons (keypoints.SKELETON) on frames and write an overlay video."""

from __future__ import annotations

import os
from collections.abc import Iterable

import cv2
import numpy as np

from diffpose.data import keypoints as kp
from diffpose.io import atomic_path


def draw_people(image: np.ndarray, people: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray | None]], *,
                threshold: float = 0.2) -> np.ndarray:
    """Draw each person (``keypoints [J, 2]``, ``scores [J]``, optional box x, y, w, h) on a copy
    of the BGR ``image``; joints scoring below ``threshold`` and their limbs are left out."""
    out = image.copy()
    thick = max(1, round(min(image.shape[:2]) / 240))
    for n, (xy, scores, box) in enumerate(people):
        hue = (n * 47) % 180
        colour = cv2.cvtColor(np.uint8([[[hue, 200, 255]]]), cv2.COLOR_HSV2BGR)[0, 0].tolist()
        if box is not None:
            x, y, w, h = (int(round(v)) for v in box)
            cv2.rectangle(out, (x, y), (x + w, y + h), colour, 1)
        for a, b in kp.SKELETON:
            if scores[a] >= threshold and scores[b] >= threshold:
                pa = tuple(int(round(v)) for v in xy[a])
                pb = tuple(int(round(v)) for v in xy[b])
                cv2.line(out, pa, pb, colour, thick + 1, cv2.LINE_AA)
        for j in range(len(xy)):
            if scores[j] >= threshold:
                cv2.circle(out, tuple(int(round(v)) for v in xy[j]), thick + 2, (255, 255, 255), -1, cv2.LINE_AA)
    return out


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float) -> int:
    """Write BGR frames to ``path`` (mp4v in .mp4, MJPG in .avi) atomically; returns the count."""
    path = str(path)
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.lower().endswith(".avi") else "mp4v"))
    count = 0
    with atomic_path(path) as tmp:
        writer = None
        try:
            for frame in frames:
                if writer is None:
                    h, w = frame.shape[:2]
                    writer = cv2.VideoWriter(str(tmp), fourcc, float(fps or 25.0), (w, h))
                    if not writer.isOpened():
                        raise OSError(f"{path}: OpenCV cannot open a video writer for this format")
                writer.write(frame)
                count += 1
        finally:
            if writer is not None:
                writer.release()
    return count
