"""Boxes computed elsewhere: the DCPose/PoseWarper files and plain COCO detection results.

Two layouts are read, entry by entry:
- DCPose / PoseWarper ``val_boxes.json``: ``{"image_name": "images/val/000342_mpii_test/000000.jpg",
  "bbox": [x, y, w, h], "score": s, "category_id": 1, "nframes": ..., "frame_id": ...}``; the
  image name may carry any prefix (absolute paths, other roots) and any zero padding;
- COCO results: ``{"image_id": 10003420000, "bbox": [...], "score": s, "category_id": 1}`` (image ids
  resolved through the split's annotations), optionally with ``file_name``.
Names are normalised to (sequence, frame number), so they match the frames layout
``images/{split}/<seq>/%06d.jpg`` whatever their prefix. Entries of another category are dropped.
No NMS is applied: the DCPose protocol uses the boxes as given, above a score threshold.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from diffpose.detect.base import EMPTY_BOXES, as_boxes
from diffpose.detect.frames import Frame, frame_key
from diffpose.errors import DataError
from diffpose.io import is_finite_number, read_json

log = logging.getLogger(__name__)
SHOW = 5  # unmatched names listed in an error


def _entry_name(entry: dict, index: int, path: Path, id_to_name: dict[int, str]) -> str:
    for key in ("image_name", "file_name"):
        if isinstance(entry.get(key), str):
            return entry[key]
    if "image_id" in entry:
        try:
            return id_to_name[int(entry["image_id"])]
        except (KeyError, TypeError, ValueError):
            return f"<image_id {entry['image_id']}>"
    raise DataError(f"{path}: entry {index} has none of image_name, file_name, image_id")


def read_boxes(path: str | os.PathLike, frames: Sequence[Frame], *, ignore_unmatched: bool = False) -> dict[tuple, np.ndarray]:
    """Boxes per frame key (see ``frame_key``) for the given frames.

    Raises DataError when an entry is malformed (naming the entry) or when the file names images
    that are not frames of the split (naming the first few), unless ``ignore_unmatched``.
    """
    path = Path(path)
    data = read_json(path)
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        data = data["annotations"]  # a COCO-style {"annotations": [...]} wrapper
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of detections ({{image_name or image_id, bbox, score}})")
    id_to_name = {f.image_id: f.file_name for f in frames}
    known = {frame_key(f.file_name) for f in frames}
    boxes: dict[tuple, list[list[float]]] = {}
    unmatched: dict[str, None] = {}
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise DataError(f"{path}: entry {i} is not an object")
        if entry.get("category_id", 1) != 1:
            continue
        name = _entry_name(entry, i, path, id_to_name)
        bbox, score = entry.get("bbox"), entry.get("score", 1.0)
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_finite_number(v) for v in bbox)):
            raise DataError(f"{path}: entry {i} ({name}): bbox must be [x, y, w, h] finite numbers, got {bbox!r}")
        if bbox[2] < 0 or bbox[3] < 0:
            raise DataError(f"{path}: entry {i} ({name}): bbox [x, y, w, h] must have a width and height >= 0, got {bbox!r}")
        if not is_finite_number(score):
            raise DataError(f"{path}: entry {i} ({name}): score must be a number, got {score!r}")
        try:
            key = frame_key(name)
        except ValueError as err:
            raise DataError(f"{path}: entry {i}: {err}") from None
        if key not in known:
            unmatched[name] = None
            continue
        boxes.setdefault(key, []).append([*map(float, bbox), float(score)])
    if unmatched and (not ignore_unmatched or not boxes):
        names = list(unmatched)
        more = f" and {len(names) - SHOW} more" if len(names) > SHOW else ""
        raise DataError(
            f"{path}: {len(names)} image(s) are not frames of the split's annotations "
            f"(first: {', '.join(names[:SHOW])}{more}); wrong split or annotation folder?"
            + ("" if ignore_unmatched else " (set detect.precomputed.ignore_unmatched to skip them)")
        )
    if unmatched:
        log.warning("%s: %d image(s) not in the annotations were skipped", path, len(unmatched))
    return {k: as_boxes(v) for k, v in boxes.items()}


class PrecomputedDetector:
    """Looks boxes up by frame name; never decodes an image."""

    needs_images = False

    def __init__(self, boxes_file: str | os.PathLike, frames: Sequence[Frame], *, ignore_unmatched: bool = False) -> None:
        self.boxes_file = Path(boxes_file)
        self.boxes = read_boxes(self.boxes_file, frames, ignore_unmatched=ignore_unmatched)
        missing = sum(frame_key(f.file_name) not in self.boxes for f in frames)
        if missing == len(frames) and frames:
            raise DataError(f"{self.boxes_file}: no boxes for any of the {len(frames)} frames")
        if missing:
            log.info("%s: %d of %d frames have no box (kept with none)", self.boxes_file, missing, len(frames))

    def detect(self, images: Sequence[np.ndarray | None], file_names: Sequence[str]) -> list[np.ndarray]:
        return [self.boxes.get(frame_key(name), EMPTY_BOXES).copy() for name in file_names]
