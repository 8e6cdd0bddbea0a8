"""Run a detector over a split's frames: batched decoding, progress, COCO-results records."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from diffpose.detect.base import Detector, as_boxes, filter_score
from diffpose.detect.frames import Frame

log = logging.getLogger(__name__)


@dataclass
class DetectionRun:
    records: list[dict] = field(default_factory=list)  # COCO results, one per box
    failed: list[str] = field(default_factory=list)  # file names that did not decode
    frames: int = 0  # frames detected on
    seconds: float = 0.0  # detection time (decode included)

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def frame_records(frame: Frame, boxes: np.ndarray, **extra) -> list[dict]:
    """COCO-results records of one frame's [N, 5] boxes, best score first (stable), rounded to
    0.01 px and 1e-5; ``extra`` keys are added to every record."""
    boxes = as_boxes(boxes)
    return [
        {"image_id": frame.image_id, "file_name": frame.file_name, "category_id": 1,
         "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)], "score": round(s, 5), **extra}
        for x, y, w, h, s in boxes[np.argsort(-boxes[:, 4], kind="stable")].tolist()
    ]


def _decode(path: Path) -> np.ndarray | None:
    try:
        return cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error:
        return None


def _batches(items: Sequence[Frame], size: int) -> Iterator[Sequence[Frame]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def detect_frames(
    detector: Detector,
    frames: Sequence[Frame],
    image_root: str | os.PathLike,
    *,
    score_threshold: float = 0.0,
    batch_size: int = 8,
    progress: bool = True,
) -> DetectionRun:
    """Detect people on every frame; boxes scoring below ``score_threshold`` are dropped.

    A frame that fails to decode is logged by name, recorded in ``failed`` and skipped; the
    caller decides whether that fails the run. Decoding of the next batch overlaps detection.
    """
    from diffpose.progress import progress_bar

    root = Path(image_root)
    result = DetectionRun()
    batches = list(_batches(list(frames), max(1, batch_size)))
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1) as loader, ThreadPoolExecutor(max_workers=2) as decoder, progress_bar(
        len(frames), "detect", "frame", enabled=progress
    ) as bar:
        def load(batch: Sequence[Frame]):
            if not detector.needs_images:
                return [None] * len(batch)
            return list(decoder.map(lambda f: _decode(root / f.file_name), batch))

        pending = loader.submit(load, batches[0]) if batches else None
        for i, batch in enumerate(batches):
            images = pending.result()
            pending = loader.submit(load, batches[i + 1]) if i + 1 < len(batches) else None
            ok = [j for j, img in enumerate(images) if img is not None or not detector.needs_images]
            for j in sorted(set(range(len(batch))) - set(ok)):
                log.error("%s: cannot decode image (missing or corrupt); skipped", root / batch[j].file_name)
                result.failed.append(batch[j].file_name)
            if ok:
                boxes = detector.detect([images[j] for j in ok], [batch[j].file_name for j in ok])
                for j, frame_boxes in zip(ok, boxes):
                    result.records.extend(frame_records(batch[j], filter_score(frame_boxes, score_threshold)))
                result.frames += len(ok)
            bar.update(len(batch))
            elapsed = time.perf_counter() - start
            bar.set_postfix(fps=f"{result.frames / elapsed:.1f}" if elapsed > 0 else "-")
    result.seconds = time.perf_counter() - start
    return result
