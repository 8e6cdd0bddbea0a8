"""The detector interface and the box helpers every backend shares.

A detector maps a batch of frames to one box array per frame:

    boxes = detector.detect(images, file_names)   # images: list of H x W x 3 uint8 BGR
    boxes[i]                                      # float32 [N, 5]: x, y, w, h, score (pixels)

``file_names`` are the PoseTrack-layout names (``images/val/<seq>/000012.jpg``) of the frames;
image-based detectors ignore them, the ``precomputed`` backend looks its boxes up by them and
sets ``needs_images = False`` so the stage does not decode frames for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

EMPTY_BOXES = np.zeros((0, 5), dtype=np.float32)


@runtime_checkable
class Detector(Protocol):
    """Anything with ``detect(images, file_names) -> list of [N, 5] (x, y, w, h, score)``."""

    needs_images: bool

    def detect(self, images: Sequence[np.ndarray | None], file_names: Sequence[str]) -> list[np.ndarray]:
        ...


def as_boxes(array: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Coerce to float32 [N, 5]; an empty input gives a [0, 5] array."""
    boxes = np.asarray(array, dtype=np.float32)
    if boxes.size == 0:
        return EMPTY_BOXES.copy()
    if boxes.ndim != 2 or boxes.shape[1] != 5:
        raise ValueError(f"boxes must be [N, 5] (x, y, w, h, score), got shape {boxes.shape}")
    return boxes


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` [N, >=4] with every box in ``b`` [M, >=4], both x, y, w, h."""
    a = np.asarray(a, dtype=np.float64)[:, :4]
    b = np.asarray(b, dtype=np.float64)[:, :4]
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(boxes: np.ndarray, iou_threshold: float, *, inside_threshold: float = 1.0) -> np.ndarray:
    """Greedy non-maximum suppression: keep the best-scoring box, drop boxes overlapping it by
    more than ``iou_threshold`` or lying inside it by more than ``inside_threshold`` (share of
    their own area; 1.0 = off), repeat. Returns the kept rows, best first."""
    boxes = as_boxes(boxes)
    order = np.argsort(-boxes[:, 4], kind="stable")
    keep: list[int] = []
    while order.size:
        best = order[0]
        keep.append(int(best))
        if order.size == 1:
            break
        rest = boxes[order[1:]]
        overlap = iou_matrix(boxes[best : best + 1], rest)[0]
        drop = overlap > iou_threshold
        if inside_threshold < 1.0:
            drop |= inside_share(rest, boxes[best]) > inside_threshold
        order = order[1:][~drop]
    return boxes[keep]


def inside_share(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Share of each box's area [N] that lies inside ``box`` (x, y, w, h)."""
    x0 = np.maximum(boxes[:, 0], box[0])
    y0 = np.maximum(boxes[:, 1], box[1])
    x1 = np.minimum(boxes[:, 0] + boxes[:, 2], box[0] + box[2])
    y1 = np.minimum(boxes[:, 1] + boxes[:, 3], box[1] + box[3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    return inter / np.maximum(boxes[:, 2] * boxes[:, 3], 1e-12)


def filter_score(boxes: np.ndarray, threshold: float) -> np.ndarray:
    """Rows with score >= threshold (the DCPose protocol keeps boxes scoring 0.2 and above)."""
    boxes = as_boxes(boxes)
    return boxes[boxes[:, 4] >= threshold]
