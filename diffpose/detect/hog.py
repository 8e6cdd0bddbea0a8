"""OpenCV's pretrained HOG + linear-SVM people detector (Dalal & Triggs; INRIA person data).

Works offline: the SVM ships inside OpenCV (``cv2.HOGDescriptor_getDefaultPeopleDetector``). Its
window is 64 x 128 with the person about 96 px tall inside it, so people smaller than that are
missed: ``resize`` scales each frame first (2.0 finds the 50-120 px walkers of OpenCV's
vtest.avi; 0.5 suits 1080p PoseTrack frames) and boxes are mapped back to the original pixels.
Raw windows are merged by our own greedy NMS (OpenCV's grouping is switched off), which also
drops a window lying mostly inside a better one (``nms_inside``: share of its area).
Score = m / (1 + m) for the SVM margin m >= 0, so it is in [0, 1) and ordered like the margin.
``shrink`` trims the window's margin to fit the person (1.0 = the raw 64 x 128 window).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from diffpose.detect.base import EMPTY_BOXES, as_boxes, nms


class HogDetector:
    needs_images = True

    def __init__(
        self,
        *,
        resize: float = 2.0,
        win_stride: int = 8,
        pyramid_scale: float = 1.05,
        hit_threshold: float = 0.0,
        nms_iou: float = 0.3,
        nms_inside: float = 0.6,
        shrink_x: float = 0.75,
        shrink_y: float = 0.9,
    ) -> None:
        if resize <= 0:
            raise ValueError(f"resize must be > 0, got {resize}")
        if not 1.0 < pyramid_scale < 2.0:
            raise ValueError(f"pyramid_scale must be in (1, 2), got {pyramid_scale}")
        if not (0 < shrink_x <= 1 and 0 < shrink_y <= 1):
            raise ValueError(f"shrink_x and shrink_y must be in (0, 1], got {shrink_x}, {shrink_y}")
        self.resize = resize
        self.win_stride = (win_stride, win_stride)
        self.pyramid_scale = pyramid_scale
        self.hit_threshold = hit_threshold
        self.nms_iou = nms_iou
        self.nms_inside = nms_inside
        self.shrink = (shrink_x, shrink_y)
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def detect_one(self, image: np.ndarray) -> np.ndarray:
        """[N, 5] x, y, w, h, score in the pixels of ``image`` (H x W x 3 BGR uint8)."""
        if self.resize != 1.0:
            interp = cv2.INTER_LINEAR if self.resize > 1 else cv2.INTER_AREA
            work = cv2.resize(image, None, fx=self.resize, fy=self.resize, interpolation=interp)
        else:
            work = image
        if work.shape[0] < 128 or work.shape[1] < 64:
            return EMPTY_BOXES.copy()
        rects, weights = self.hog.detectMultiScale(
            work, hitThreshold=self.hit_threshold, winStride=self.win_stride, padding=(8, 8),
            scale=self.pyramid_scale, groupThreshold=0,
        )
        if len(rects) == 0:
            return EMPTY_BOXES.copy()
        rects = np.asarray(rects, np.float32).reshape(-1, 4) / self.resize
        margin = np.clip(np.asarray(weights, np.float32).reshape(-1), 0, None)
        sx, sy = self.shrink
        cx, cy = rects[:, 0] + rects[:, 2] / 2, rects[:, 1] + rects[:, 3] / 2
        w, h = rects[:, 2] * sx, rects[:, 3] * sy
        boxes = np.stack([cx - w / 2, cy - h / 2, w, h, margin / (1 + margin)], axis=1)
        return nms(as_boxes(boxes), self.nms_iou, inside_threshold=self.nms_inside)

    def detect(self, images: Sequence[np.ndarray | None], file_names: Sequence[str] = ()) -> list[np.ndarray]:
        return [self.detect_one(image) for image in images]
