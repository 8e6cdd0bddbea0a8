"""The frames a detection run covers and their ground-truth person boxes, read from a split's
PoseTrack18 annotation folder (one COCO-like JSON per sequence).

Files are read and validated by diffpose.data.posetrack (PoseTrack17 files are converted on the
fly); from them detection keeps each image's ``id``, ``file_name`` and ``is_labeled`` flag, its
ignore polygons, and the person ``bbox`` of each annotation on labelled frames.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from diffpose.data.posetrack import load_sequence, sequence_files
from diffpose.errors import DataError

FRAME_SETS = ("labelled", "all")


@dataclass(frozen=True)
class Frame:
    """One image of a sequence: ``file_name`` is relative to the image root
    (``images/{split}/<seq>/%06d.jpg``)."""

    image_id: int
    file_name: str
    labelled: bool
    source: Path


@dataclass(frozen=True)
class FrameTruth:
    """Ground truth of one labelled frame.

    boxes   [K, 4] person boxes x, y, w, h (pixels)
    ignore  [K] bool: people without any labelled keypoint (neither rewarded nor penalised)
    regions list of [P, 2] ignore polygons (x, y): PoseTrack's unlabelled crowds
    """

    boxes: np.ndarray
    ignore: np.ndarray
    regions: list[np.ndarray] = field(default_factory=list)


def annotation_files(annotations: str | os.PathLike) -> list[Path]:
    """The per-sequence JSON files of a split folder (or the one file given)."""
    path = Path(annotations)
    if not path.exists():
        raise DataError(f"{path}: annotation folder not found")
    files = sequence_files(path)
    if not files:
        raise DataError(f"{path}: no PoseTrack18 annotation files (*.json) in this folder")
    return files


def frame_key(name: str) -> tuple[str, int | str]:
    """A name-format-independent key: (sequence folder, frame number).

    ``images/val/000342_mpii_test/000012.jpg``, ``/data/PoseTrack/images/val/000342_mpii_test/
    00000012.jpg`` and ``val/000342_mpii_test/000012.png`` all give ``("000342_mpii_test", 12)``.
    """
    parts = PurePosixPath(str(name).replace("\\", "/")).parts
    if len(parts) < 2:
        raise ValueError(f"image name {name!r} has no sequence folder (expected <seq>/<frame>.jpg)")
    stem = PurePosixPath(parts[-1]).stem
    digits = re.fullmatch(r"\d+", stem)
    return parts[-2], int(stem) if digits else stem


def _polygons(image: dict, source: Path) -> list[np.ndarray]:
    xs, ys = image.get("ignore_regions_x") or [], image.get("ignore_regions_y") or []
    if xs and not isinstance(xs[0], list):  # a single polygon written flat
        xs, ys = [xs], [ys]
    if len(xs) != len(ys):
        raise DataError(f"{source}: image {image.get('id')}: ignore_regions_x and _y differ in length")
    regions = []
    for px, py in zip(xs, ys):
        if len(px) != len(py):
            raise DataError(f"{source}: image {image.get('id')}: an ignore polygon has {len(px)} x and {len(py)} y")
        if len(px) >= 3:
            regions.append(np.stack([np.asarray(px, float), np.asarray(py, float)], axis=1))
    return regions


def _read_sequence(path: Path) -> tuple[list[Frame], dict[int, FrameTruth]]:
    data = load_sequence(path)
    frames: list[Frame] = []
    regions: dict[int, list[np.ndarray]] = {}
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise DataError(f"{path}: images[{i}] lacks 'id' or 'file_name'")
        image_id = int(image["id"])
        labelled = bool(image.get("is_labeled", True))
        frames.append(Frame(image_id=image_id, file_name=str(image["file_name"]), labelled=labelled, source=path))
        if labelled:
            regions[image_id] = _polygons(image, path)
    people: dict[int, list[tuple[list[float], bool]]] = {k: [] for k in regions}
    for i, ann in enumerate(data.get("annotations") or []):
        image_id = int(ann.get("image_id", -1))
        if image_id not in people:
            continue  # unlabelled frame or an id absent from 'images': nothing to score against
        bbox = ann.get("bbox")
        if not bbox:
            continue  # no box given: the person cannot be scored (documented in the README)
        if len(bbox) != 4 or bbox[2] <= 0 or bbox[3] <= 0:
            raise DataError(f"{path}: annotations[{i}] (image {image_id}): bad bbox {bbox}, expected [x, y, w, h] with w, h > 0")
        keypoints = ann.get("keypoints") or []
        has_joint = any(v > 0 for v in keypoints[2::3])
        people[image_id].append(([float(v) for v in bbox], not has_joint))
    truth = {
        image_id: FrameTruth(
            boxes=np.asarray([b for b, _ in rows], np.float64).reshape(-1, 4),
            ignore=np.asarray([ig for _, ig in rows], bool),
            regions=regions[image_id],
        )
        for image_id, rows in people.items()
    }
    return frames, truth


def read_split(annotations: str | os.PathLike, *, frames: str = "labelled") -> tuple[list[Frame], dict[int, FrameTruth]]:
    """Frames to detect on (``frames``: ``labelled`` or ``all``) and the truth of labelled frames.

    Raises DataError naming the files when two frames share an image id or a (sequence, frame)
    name, since detections could not be attributed.
    """
    if frames not in FRAME_SETS:
        raise DataError(f"frames must be one of {', '.join(FRAME_SETS)}, got {frames!r}")
    all_frames: list[Frame] = []
    truth: dict[int, FrameTruth] = {}
    for path in annotation_files(annotations):
        seq_frames, seq_truth = _read_sequence(path)
        all_frames.extend(seq_frames)
        truth.update(seq_truth)
    seen: dict[int, Frame] = {}
    for frame in all_frames:
        other = seen.setdefault(frame.image_id, frame)
        if other is not frame:
            raise DataError(
                f"{frame.source}: image id {frame.image_id} ({frame.file_name}) is also used by "
                f"{other.source} ({other.file_name}); image ids must be unique in a split"
            )
    chosen = [f for f in all_frames if f.labelled or frames == "all"]
    return chosen, truth
