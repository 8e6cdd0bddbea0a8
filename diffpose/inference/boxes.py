"""Person boxes to run the model on: ground truth, or a detection file (COCO results, or the
DCPose/PoseWarper box files) read through diffpose.detect."""

from __future__ import annotations

import logging
import os

import numpy as np

from diffpose.data.clips import Sample, Sequence, person_samples
from diffpose.data.posetrack import has_keypoints, unlabelled_frame_ids
from diffpose.errors import DataError
from diffpose.io import read_json

log = logging.getLogger(__name__)


def gt_samples(sequences: list[tuple[Sequence, dict]]) -> list[Sample]:
    """One sample per annotated person with a box (or labelled keypoints to derive one), score 1.

    Only people a pose is expected for: a PoseTrack21 box-only person (a box, every keypoint
    (0, 0, 0)) and every person on a frame whose ``is_labeled`` is false get none. A pose written
    for them would be a false positive under poseval, which evaluates every frame with a person
    annotation, box-only ones included.
    """
    wanted = []
    for seq, obj in sequences:
        unlabelled = unlabelled_frame_ids(obj)
        people = [a for a in obj.get("annotations", []) if a["image_id"] not in unlabelled and has_keypoints(a)]
        wanted.append((seq, {**obj, "annotations": people}))
    return person_samples(wanted, labelled_only=False)


def detection_samples(path: str | os.PathLike, sequences: list[tuple[Sequence, dict]], *,
                      score_threshold: float = 0.2) -> list[Sample]:
    """One sample per detected box scoring at least ``score_threshold`` (no NMS, as in DCPose),
    on every frame of every sequence. Raises DataError naming the file for unreadable input."""
    from diffpose.detect.frames import Frame
    from diffpose.detect.precomputed import read_boxes
    from diffpose.detect.frames import frame_key

    frames = [Frame(image_id, name, True, seq.source)  # type: ignore[arg-type]
              for seq, _ in sequences for image_id, name in zip(seq.image_ids, seq.file_names)]
    by_frame = read_boxes(path, frames, ignore_unmatched=True)
    if frames and not by_frame:
        if read_json(path):  # boxes, but for other images: the wrong file, or the wrong split
            raise DataError(f"{path}: no boxes for any frame of the {len(sequences)} sequences")
        log.warning("%s: the detector found nobody; every frame is written without people", path)
    samples = []
    for s, (seq, _) in enumerate(sequences):
        for i, name in enumerate(seq.file_names):
            for x, y, w, h, score in by_frame.get(frame_key(name), np.zeros((0, 5))):
                if score >= score_threshold and w > 0 and h > 0:
                    samples.append(Sample(s, i, (float(x), float(y), float(w), float(h)), float(score)))
    return samples
