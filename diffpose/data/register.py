"""Point the pipeline at a PoseTrack copy the user already has: check it, count it, record it.

Expected layout under the root (PoseTrack's own, and what ``diffpose download`` extracts)::

    <root>/images/<split>/<sequence>/<frame>.jpg          (--images DIR for another folder)
    <root>/annotations/<split>/<sequence>.json            (or posetrack_data/annotations/<split>/,
                                                           PoseTrack21: posetrack_data/<split>/;
                                                           --annotations DIR for another folder)

Every sequence file is validated (:func:`diffpose.data.posetrack.load_sequence`); the label
version is read from the files themselves: PoseTrack17 is the ``annolist`` format, PoseTrack21
is the PoseTrack18 format with ``person_id`` on people or ``has_labeled_person`` on frames. Every
frame a file names must exist (one directory listing per sequence folder), and the first labelled
frame of each sequence is opened to check it is an image. The record (:func:`register`) holds per
split the counts and the sha256 of the annotation files (:func:`diffpose.provenance.annotations_version`,
the ``data_version`` that inference and evaluation write), and the absolute paths. Nothing is
copied or written under the root. Problems are :class:`DataError` s on one line naming the path.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any

from diffpose import __version__
from diffpose.data import posetrack
from diffpose.data.download import unsafe_name
from diffpose.errors import DataError
from diffpose.io import read_json
from diffpose.progress import track

DATASETS = ("posetrack17", "posetrack18", "posetrack21")
DEFAULT_SPLITS = ("train", "val")
# where each dataset's releases put the per-split folders, relative to the root, in search order
ANNOTATION_DIRS = {
    "posetrack17": ("annotations", "posetrack_data/annotations"),
    "posetrack18": ("annotations", "posetrack_data/annotations"),
    "posetrack21": ("annotations", "posetrack_data"),
}
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
NAMES = {"posetrack17": "PoseTrack17", "posetrack18": "PoseTrack18", "posetrack21": "PoseTrack21"}


def label_version(raw: Any) -> tuple[str, str]:
    """(dataset name, reason) of one parsed sequence file."""
    if isinstance(raw, dict) and "annolist" in raw:
        return "posetrack17", "an annolist file"
    images = raw.get("images") if isinstance(raw, dict) else None
    anns = raw.get("annotations") if isinstance(raw, dict) else None
    if isinstance(anns, list) and any(isinstance(a, dict) and "person_id" in a for a in anns):
        return "posetrack21", "people carry person_id"
    if isinstance(images, list) and any(isinstance(im, dict) and "has_labeled_person" in im for im in images):
        return "posetrack21", "frames carry has_labeled_person"
    return "posetrack18", "COCO-style frames and people without PoseTrack21 fields"


def _raw_json(path: Path) -> Any:
    """The parsed file (orjson when installed); errors come from the standard library's reading,
    which names the line and column."""
    try:
        import orjson
    except ImportError:
        return read_json(path, allow_nan=True)
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return read_json(path, allow_nan=True)


def find_annotations(root: Path, dataset: str, splits: tuple[str, ...], override: str | None) -> Path:
    if override is not None:
        folder = Path(override) if Path(override).is_absolute() else root / override
        if not folder.is_dir():
            raise DataError(f"{folder}: no such annotations folder (--annotations)")
        return folder
    candidates = [root / rel for rel in ANNOTATION_DIRS[dataset]]
    for folder in candidates:
        if folder.is_dir() and all((folder / split).is_dir() for split in splits):
            return folder
    for folder in candidates:
        if folder.is_dir():
            missing = next(split for split in splits if not (folder / split).is_dir())
            raise DataError(f"{folder / missing}: missing: expected a folder of <sequence>.json files for the "
                            f"{missing} split (--splits names the splits to check)")
    looked = ", ".join(f"{rel}/" for rel in ANNOTATION_DIRS[dataset])
    raise DataError(f"{root}: no annotations folder (looked for {looked}; --annotations DIR names another)")


def _frame_path(images: Path, file_name: str, source: Path) -> Path:
    problem = unsafe_name(file_name)
    if problem:
        raise DataError(f"{source}: frame file name {file_name!r} is {problem}")
    parts = PurePosixPath(file_name.replace("\\", "/")).parts
    if parts and parts[0] == "images":
        parts = parts[1:]
    return images.joinpath(*parts)


def _has_keypoints(ann: dict) -> bool:
    values = ann.get("keypoints") or []
    return any(values[k] or values[k + 1] or values[k + 2] for k in range(0, len(values) - 2, 3))


class _Listing:
    """Directory listings, one per folder, for the frames of one split."""

    def __init__(self) -> None:
        self.folders: dict[Path, set[str] | None] = {}

    def has(self, path: Path) -> bool:
        folder = path.parent
        if folder not in self.folders:
            try:
                self.folders[folder] = set(os.listdir(folder))
            except OSError:
                self.folders[folder] = None
        names = self.folders[folder]
        return names is not None and path.name in names

    def images_on_disk(self) -> int:
        return sum(sum(n.lower().endswith(IMAGE_SUFFIXES) for n in names)
                   for names in self.folders.values() if names)


def _check_image(path: Path) -> None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as err:
        raise DataError(f"{path}: cannot read the frame ({err.strerror or err})") from None
    if not head.startswith(IMAGE_MAGIC):
        raise DataError(f"{path}: not a JPEG or PNG image ({len(head)} bytes read)")


def count_split(folder: Path, images: Path, dataset: str, *, progress: bool = True) -> dict[str, Any]:
    files = posetrack.sequence_files(folder)
    if not files:
        raise DataError(f"{folder}: no <sequence>.json files in this split folder")
    counts: Counter = Counter()
    versions: Counter = Counter()
    listing = _Listing()
    first_missing: Path | None = None
    for path in track(files, f"register {folder.name}", "sequences", enabled=progress):
        version, reason = label_version(_raw_json(path))
        versions[version] += 1
        if version != dataset:
            raise DataError(f"{path}: these labels look like {NAMES[version]} ({reason}), not {NAMES[dataset]}: "
                            f"check --dataset and --root")
        seq = posetrack.load_sequence(path)
        frames = seq["images"]
        anns = seq.get("annotations", [])
        with_points = {a["image_id"] for a in anns if _has_keypoints(a)}
        flagged = [im for im in frames if "is_labeled" in im]
        labelled = [im for im in flagged if im["is_labeled"]] if flagged else \
            [im for im in frames if im["id"] in with_points]
        counts["sequences"] += 1
        counts["frames"] += len(frames)
        counts["labelled_frames"] += len(labelled)
        counts["persons"] += len(anns)
        counts["persons_with_keypoints"] += sum(_has_keypoints(a) for a in anns)
        counts["tracks"] += len({a.get("track_id") for a in anns})
        for im in frames:
            frame = _frame_path(images, im["file_name"], path)
            if not listing.has(frame):
                counts["frames_missing"] += 1
                first_missing = first_missing or frame
        sample = (labelled or frames)[:1]
        for im in sample:
            frame = _frame_path(images, im["file_name"], path)
            if listing.has(frame):
                _check_image(frame)
    if first_missing is not None:
        more = counts["frames_missing"] - 1
        tail = f" (and {more} more frame(s) the annotations of {folder} name)" if more else ""
        raise DataError(f"{first_missing}: missing: a frame named by the annotations{tail}; check --root or --images")
    from diffpose.provenance import annotations_version

    return {
        "annotations": str(folder.resolve()),
        "sequences": counts["sequences"],
        "frames": counts["frames"],
        "labelled_frames": counts["labelled_frames"],
        "persons": counts["persons"],
        "persons_with_keypoints": counts["persons_with_keypoints"],
        "tracks": counts["tracks"],
        "frames_on_disk": listing.images_on_disk(),
        "annotations_version": annotations_version(folder),
    }


def register(dataset: str, root: str | os.PathLike, *, splits: tuple[str, ...] = DEFAULT_SPLITS,
             annotations: str | None = None, images: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Check the copy under ``root`` and return its record (see the module docstring)."""
    if dataset not in DATASETS:
        raise DataError(f"--dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    if not splits or len(set(splits)) != len(splits) or any(unsafe_name(s) or "/" in s for s in splits):
        raise DataError(f"--splits must name distinct split folders (train, val, ...), got {list(splits)}")
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{root}: no such folder (--root)")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (--root)")
    ann_dir = find_annotations(root, dataset, tuple(splits), annotations)
    image_dir = (Path(images) if Path(images).is_absolute() else root / images) if images else root / "images"
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: missing: expected the frames as images/<split>/<sequence>/<frame>.jpg "
                        f"(--images DIR names another folder)")
    record: dict[str, Any] = {
        "dataset": dataset,
        "label_version": dataset,
        "root": str(root.resolve()),
        "annotations": str(ann_dir.resolve()),
        "images": str(image_dir.resolve()),
        "splits": {split: count_split(ann_dir / split, image_dir, dataset, progress=progress) for split in splits},
        "diffpose_version": __version__,
    }
    return record


def summary_lines(record: dict[str, Any]) -> list[str]:
    lines = [f"{NAMES[record['dataset']]} at {record['root']} (labels: {record['annotations']})"]
    for split, c in record["splits"].items():
        lines.append(f"  {split}: {c['sequences']} sequences, {c['frames']} frames ({c['labelled_frames']} labelled, "
                     f"{c['frames_on_disk']} image files on disk), {c['persons']} people "
                     f"({c['persons_with_keypoints']} with keypoints), data version {c['annotations_version'][:12]}")
    return lines
