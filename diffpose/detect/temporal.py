"""Fill detection gaps along a video: link boxes into tracks, interpolate the frames a track skips.

A per-frame detector loses a person for a few frames when someone walks in front of them, when
motion blur smears them, or when they are cut by the frame edge; the person is found before and
after. This pass (offline, on a whole sequence) links each frame's confident boxes to tracks and,
when a track is found again after a gap of at most ``max_gap`` frames, adds linearly
interpolated boxes on the frames in between, the linear gap interpolation of ByteTrack (Zhang et
al. 2022) and the box propagation idea of SimpleBaseline's tracking (Xiao et al. 2018) without
optical flow.

Linking is greedy on IoU: each live track predicts its box at the current frame with a constant
velocity (smoothed), and pairs (track, box) are taken in order of decreasing IoU while IoU >=
``iou``. Only boxes scoring >= ``min_score`` take part; a box no track takes starts a track. An
added box scores ``score_factor`` x the lower score of the two boxes it lies between, so it ranks
below the detections it was made from.

One person, one box: an added box that overlaps a box of its frame at IoU >= ``suppress_iou``
(the usual NMS threshold of a person detector) is the same person. When that box scores at least
as high, the person was found and nothing is added; when it scores lower (the detector saw the
person but was unsure, e.g. half hidden), the added box replaces it (``merge_filled``), so a
person the detector kept below the written score threshold is not lost and never gets a twin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from diffpose.detect.base import EMPTY_BOXES, as_boxes, iou_matrix
from diffpose.detect.frames import frame_key
from diffpose.detect.run import frame_records
from diffpose.errors import DataError


@dataclass(frozen=True)
class GapFill:
    min_score: float = 0.3  # boxes that take part in linking
    iou: float = 0.3  # least IoU between a track's predicted box and a box to link them
    max_gap: int = 16  # longest run of missed frames (frame numbers) that is filled
    score_factor: float = 0.8  # an added box scores this x the lower score of its two ends
    suppress_iou: float = 0.5  # an added box overlapping a box on its frame this much is not added


@dataclass
class _Track:
    frame: int
    box: np.ndarray  # x, y, w, h
    score: float
    velocity: np.ndarray  # per frame, x, y, w, h
    length: int = 1

    def predict(self, frame: int) -> np.ndarray:
        return self.box + self.velocity * (frame - self.frame)


def _greedy_pairs(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """(row, column) pairs in order of decreasing IoU, each row and column used once."""
    rows, cols = np.nonzero(iou >= threshold)
    order = np.argsort(-iou[rows, cols], kind="stable")
    taken_r: set[int] = set()
    taken_c: set[int] = set()
    pairs = []
    for k in order:
        r, c = int(rows[k]), int(cols[k])
        if r not in taken_r and c not in taken_c:
            taken_r.add(r)
            taken_c.add(c)
            pairs.append((r, c))
    return pairs


def fill_gaps(frames: Sequence[int], boxes: Sequence[np.ndarray], config: GapFill = GapFill()) -> list[np.ndarray]:
    """Boxes to add to each frame of one sequence.

    ``frames``: frame numbers in increasing order (holes allowed: an undecodable frame is simply
    absent); ``boxes``: per frame [N, 5] x, y, w, h, score. Returns per frame the [M, 5] added
    boxes (often none); an added box only lands on a frame number that is in ``frames``.
    """
    if len(frames) != len(boxes):
        raise ValueError(f"{len(frames)} frame numbers but {len(boxes)} box arrays")
    if any(b <= a for a, b in zip(frames, frames[1:])):
        raise ValueError("frame numbers must be strictly increasing")
    index = {int(f): i for i, f in enumerate(frames)}
    inputs = [as_boxes(b) for b in boxes]
    added: list[list[list[float]]] = [[] for _ in frames]
    tracks: list[_Track] = []

    def add(target: int, row: list[float]) -> None:
        """``row`` on frame ``target`` unless a box at least as strong is already the same person
        there (weaker overlapping input boxes are replaced later, by ``merge_filled``)."""
        present = np.concatenate([inputs[target], np.asarray(added[target], np.float64).reshape(-1, 5)])
        if len(present):
            same = iou_matrix(np.asarray([row[:4]]), present[:, :4])[0] >= config.suppress_iou
            if (present[same, 4] >= row[4]).any():
                return
        added[target].append(row)

    def link(track: _Track, frame: int, box: np.ndarray, score: float) -> None:
        """Extend ``track`` to ``box`` on ``frame``, filling the frames it skipped."""
        gap = frame - track.frame
        for step in range(1, gap):  # the frames this track skipped
            target = index.get(track.frame + step)
            if target is not None:
                a = step / gap
                add(target, [*((1 - a) * track.box + a * box), config.score_factor * min(track.score, score)])
        move = (box - track.box) / gap
        track.velocity = move if track.length == 1 else 0.5 * track.velocity + 0.5 * move
        track.frame, track.box, track.score, track.length = frame, box, score, track.length + 1

    for frame, frame_boxes in zip(frames, inputs):
        frame = int(frame)
        candidates = frame_boxes[frame_boxes[:, 4] >= config.min_score]
        live = [t for t in tracks if frame - t.frame <= config.max_gap + 1]
        pairs = []
        if live and len(candidates):
            predicted = np.stack([t.predict(frame) for t in live])
            pairs = _greedy_pairs(iou_matrix(predicted, candidates), config.iou)
        for r, c in pairs:
            link(live[r], frame, candidates[c, :4].astype(np.float64), float(candidates[c, 4]))
        linked = {c for _, c in pairs}
        tracks = live + [
            _Track(frame, candidates[c, :4].astype(np.float64), float(candidates[c, 4]), np.zeros(4))
            for c in range(len(candidates)) if c not in linked
        ]
    return [as_boxes(rows) if rows else EMPTY_BOXES.copy() for rows in added]


def fill_records(records: Sequence[dict], frames: Sequence, config: GapFill = GapFill()) -> list[dict]:
    """COCO-results records to add, sequence by sequence, for detections ``records`` on ``frames``
    (``diffpose.detect.frames.Frame``: the frames detected on, any order). Frames are grouped by
    their folder and ordered by frame number (``frame_key``); added records carry
    ``"interpolated": true``."""
    by_image: dict[int, list[list[float]]] = {}
    for r in records:
        by_image.setdefault(int(r["image_id"]), []).append([*r["bbox"], r["score"]])
    sequences: dict[str, list[tuple[int, object]]] = {}
    for frame in frames:
        folder, number = frame_key(frame.file_name)
        if not isinstance(number, int):
            raise DataError(f"{frame.file_name}: frame name is not a number, so frames cannot be put in time order "
                            "to fill detection gaps (set detect.fill_gaps.enabled: false)")
        sequences.setdefault(folder, []).append((number, frame))
    added: list[dict] = []
    for folder in sorted(sequences):
        items = sorted(sequences[folder], key=lambda item: item[0])
        boxes = [np.asarray(by_image.get(f.image_id, []), np.float32).reshape(-1, 5) for _, f in items]
        for (_, frame), new in zip(items, fill_gaps([n for n, _ in items], boxes, config)):
            added.extend(frame_records(frame, new, interpolated=True))
    return added


def merge_filled(records: Sequence[dict], filled: Sequence[dict], suppress_iou: float = 0.5) -> list[dict]:
    """``records`` (per-frame detections) with ``filled`` (from ``fill_records``) added, less every
    detection that an added box of its frame overlaps at IoU >= ``suppress_iou`` with a higher
    score: one person, one box."""
    by_image: dict[int, list[dict]] = {}
    for r in filled:
        by_image.setdefault(int(r["image_id"]), []).append(r)
    kept = []
    for r in records:
        rivals = by_image.get(int(r["image_id"]))
        if rivals:
            stronger = np.asarray([f["bbox"] for f in rivals if f["score"] > r["score"]], np.float64).reshape(-1, 4)
            if len(stronger) and iou_matrix(np.asarray([r["bbox"]], np.float64), stronger).max() >= suppress_iou:
                continue
        kept.append(r)
    return kept + list(filled)
