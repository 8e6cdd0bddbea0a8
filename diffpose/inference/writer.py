"""PoseTrack18 prediction files: one per sequence, every frame listed (poseval needs equal frame
counts), people as ``keypoints`` (x, y, score) x 17 plus ``scores``, ``bbox`` and ``score``.

Frames carry the GT's image ids unchanged (``Sequence.image_ids``), so the evaluators pair them
with the GT frames by id. ``track_id`` is the person's index within its frame (0, 1, ...), unique
in the frame: the pose-estimation mAP ignores it, but the evaluator requires it on every
prediction (and the PoseTrack21 kit requires it unique per frame). Real tracking is a separate
step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffpose.data.clips import Sample, Sequence
from diffpose.data.posetrack import write_sequence
from diffpose.errors import DataError


def sequence_predictions(seq: Sequence, samples: list[Sample], keypoints: np.ndarray, scores: np.ndarray) -> dict:
    """The PoseTrack18 dict of one sequence. ``samples`` are this sequence's people with their
    ``keypoints [N, J, 2]`` (image px) and ``scores [N, J]``."""
    images = [{"id": image_id, "file_name": name, "frame_id": image_id, "nframes": len(seq.file_names)}
              for image_id, name in zip(seq.image_ids, seq.file_names)]
    per_frame: dict[int, int] = {}
    annotations = []
    order = sorted(range(len(samples)), key=lambda i: (samples[i].frame, -samples[i].score))
    for i in order:
        sample = samples[i]
        track = per_frame.get(sample.frame, 0)
        per_frame[sample.frame] = track + 1
        kpts = np.concatenate([keypoints[i], scores[i][:, None]], axis=1)
        annotations.append({
            "id": len(annotations),
            "image_id": seq.image_ids[sample.frame],
            "track_id": track,
            "category_id": 1,
            "bbox": [round(float(v), 2) for v in sample.box],
            "score": round(float(sample.score), 5),
            "keypoints": [round(float(v), 3) for v in kpts.reshape(-1)],
            "scores": [round(float(v), 5) for v in scores[i]],
        })
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}


def write_predictions(out_dir: str | Path, sequences: list[Sequence], samples: list[Sample],
                      keypoints: np.ndarray, scores: np.ndarray) -> list[Path]:
    """Write ``out_dir/<sequence>.json`` for every sequence (atomically); returns the paths."""
    out = Path(out_dir)
    if not (np.isfinite(keypoints).all() and np.isfinite(scores).all()):  # JSON cannot hold them
        raise DataError(f"{out}: predictions hold NaN or infinite values; nothing was written")
    out.mkdir(parents=True, exist_ok=True)
    by_seq: dict[int, list[int]] = {}
    for i, sample in enumerate(samples):
        by_seq.setdefault(sample.seq, []).append(i)
    paths = []
    for s, seq in enumerate(sequences):
        idx = by_seq.get(s, [])
        obj = sequence_predictions(seq, [samples[i] for i in idx], keypoints[idx], scores[idx])
        path = out / f"{seq.name}.json"
        write_sequence(path, obj)
        paths.append(path)
    return paths
