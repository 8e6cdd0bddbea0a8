"""Gap filling along a video (diffpose.detect.temporal): linking, interpolation, limits."""

from __future__ import annotations

import numpy as np
import pytest

from diffpose.detect.base import iou_matrix
from diffpose.detect.frames import Frame
from diffpose.detect.temporal import GapFill, fill_gaps, fill_records, merge_filled
from diffpose.errors import DataError


def walker(t: float, x0: float = 20.0, speed: float = 3.0) -> list[float]:
    """A 40 x 120 box moving right at ``speed`` px per frame."""
    return [x0 + speed * t, 50.0, 40.0, 120.0]


def frames_of(per_frame: list[list[list[float]]]) -> list[np.ndarray]:
    return [np.asarray(rows, np.float32).reshape(-1, 5) for rows in per_frame]


def test_a_missed_stretch_is_interpolated_at_the_true_positions():
    numbers = list(range(12))
    missing = {4, 5, 6, 7}
    boxes = frames_of([[walker(t) + [0.9 if t != 8 else 0.6]] if t not in missing else [] for t in numbers])
    added = fill_gaps(numbers, boxes)
    assert [len(a) for a in added] == [1 if t in missing else 0 for t in numbers]
    for t in missing:  # constant motion: interpolation is exact
        np.testing.assert_allclose(added[t][0, :4], walker(t), atol=1e-3)
        assert added[t][0, 4] == pytest.approx(0.8 * 0.6)  # 0.8 x the weaker end (frame 8)


def test_a_person_passing_behind_another_is_filled_without_stealing_the_front_box():
    numbers = list(range(20))
    front = [150.0, 40.0, 50.0, 140.0]  # standing still
    hidden = range(8, 13)  # the walker is behind the front person here
    per_frame = []
    for t in numbers:
        rows = [front + [0.8]]
        if t not in hidden:
            rows.append(walker(t, x0=100.0, speed=3.0) + [0.7])
        per_frame.append(rows)
    added = fill_gaps(numbers, frames_of(per_frame))
    for t in numbers:
        if t in hidden:
            assert len(added[t]) == 1
            assert iou_matrix(added[t][:, :4], np.array([walker(t, x0=100.0)]))[0, 0] > 0.95
            assert iou_matrix(added[t][:, :4], np.array([front]))[0, 0] < 0.9
        else:
            assert len(added[t]) == 0


def test_long_gaps_low_scores_and_jumps_are_not_filled():
    numbers = list(range(30))
    long_gap = frames_of([[walker(t) + [0.9]] if t < 5 or t > 24 else [] for t in numbers])  # 20 missed
    assert sum(len(a) for a in fill_gaps(numbers, long_gap, GapFill(max_gap=16))) == 0
    assert sum(len(a) for a in fill_gaps(numbers, long_gap, GapFill(max_gap=20))) == 20
    weak = frames_of([[walker(t) + [0.25]] if t not in (3, 4) else [] for t in range(8)])
    assert sum(len(a) for a in fill_gaps(list(range(8)), weak, GapFill(min_score=0.3))) == 0
    assert sum(len(a) for a in fill_gaps(list(range(8)), weak, GapFill(min_score=0.2))) == 2
    # a box far from where the track should be is another person: no link, no fill
    jump = frames_of([[walker(t) + [0.9]] if t < 3 else [] for t in range(6)] + [[[250.0, 50.0, 40.0, 120.0, 0.9]]])
    assert sum(len(a) for a in fill_gaps(list(range(7)), jump)) == 0


def test_holes_in_the_frame_numbers_get_no_boxes_but_do_not_break_the_track():
    numbers = [0, 1, 2, 3, 6, 7]  # frames 4 and 5 do not exist (undecodable, say)
    boxes = frames_of([[walker(t) + [0.9]] if t != 3 else [] for t in numbers])
    added = fill_gaps(numbers, boxes)
    assert [len(a) for a in added] == [0, 0, 0, 1, 0, 0]
    np.testing.assert_allclose(added[3][0, :4], walker(3), atol=1e-3)
    with pytest.raises(ValueError, match="strictly increasing"):
        fill_gaps([0, 2, 1], frames_of([[], [], []]))
    with pytest.raises(ValueError, match="3 frame numbers but 2 box arrays"):
        fill_gaps([0, 1, 2], frames_of([[], []]))


def test_fill_records_orders_frames_by_number_within_each_sequence():
    frames = [Frame(image_id=100 + n, file_name=f"images/val/seq_a/{n:06d}.jpg", labelled=n % 4 == 0, source=None)
              for n in (5, 0, 3, 1, 4, 2)]  # shuffled on purpose
    frames += [Frame(image_id=200 + n, file_name=f"images/val/seq_b/{n:06d}.jpg", labelled=True, source=None)
               for n in range(6)]
    records = []
    for n in range(6):
        if n not in (2, 3):
            records.append({"image_id": 100 + n, "bbox": walker(n), "score": 0.9})
        records.append({"image_id": 200 + n, "bbox": walker(n, x0=200.0, speed=0.0), "score": 0.9})
    added = fill_records(records, frames)
    assert sorted(r["image_id"] for r in added) == [102, 103]
    assert all(r["interpolated"] and r["category_id"] == 1 and r["file_name"].startswith("images/val/seq_a/")
               for r in added)
    np.testing.assert_allclose(next(r for r in added if r["image_id"] == 103)["bbox"], walker(3), atol=0.01)
    bad = [Frame(image_id=1, file_name="images/val/seq_c/frame_a.jpg", labelled=True, source=None)]
    with pytest.raises(DataError, match="frame_a.jpg: frame name is not a number.*fill_gaps.enabled: false"):
        fill_records([], bad)


def _records(numbers, per_frame_boxes):
    return [{"image_id": t, "bbox": [float(v) for v in b[:4]], "score": float(b[4])}
            for t, frame in zip(numbers, per_frame_boxes) for b in frame]


def test_a_person_found_with_low_scores_keeps_one_box_per_frame():
    """Review probe 7: 0.9 boxes on frames 0 and 6, 0.25 boxes at the same place on frames 1-5.
    The interpolated 0.72 boxes replace the weak ones: one person, one box per frame, and a person
    the detector kept below the written threshold (0.2) is not lost."""
    numbers = list(range(7))
    for score in (0.25, 0.1):
        boxes = frames_of([[walker(0, speed=0.0) + [0.9 if t in (0, 6) else score]] for t in numbers])
        added = fill_gaps(numbers, boxes)
        assert [len(a) for a in added] == [0, 1, 1, 1, 1, 1, 0]
        filled = [{"image_id": t, "bbox": [float(v) for v in b[:4]], "score": float(b[4]), "interpolated": True}
                  for t, frame in zip(numbers, added) for b in frame]
        merged = merge_filled(_records(numbers, boxes), filled)
        per_frame = {t: sorted(r["score"] for r in merged if r["image_id"] == t) for t in numbers}
        assert per_frame == {0: [pytest.approx(0.9)], 1: [pytest.approx(0.72)], 2: [pytest.approx(0.72)], 3: [pytest.approx(0.72)],
                             4: [pytest.approx(0.72)], 5: [pytest.approx(0.72)], 6: [pytest.approx(0.9)]}


def test_an_added_box_is_dropped_where_a_stronger_box_is_the_same_person():
    numbers = list(range(7))
    per_frame = [[walker(t, speed=0.0) + [0.9]] if t in (0, 1, 5, 6) else [] for t in numbers]
    per_frame[3] = [[28.0, 50.0, 40.0, 120.0, 0.95]]  # 8 px off the interpolated position (IoU 0.67), stronger
    added = fill_gaps(numbers, frames_of(per_frame), GapFill(iou=0.9))
    assert [len(a) for a in added] == [0, 0, 1, 0, 1, 0, 0]
    per_frame[3][0][4] = 0.1  # the same box, weaker than the 0.72 fill: the fill goes in and replaces it
    added = fill_gaps(numbers, frames_of(per_frame), GapFill(iou=0.9))
    assert [len(a) for a in added] == [0, 0, 1, 1, 1, 0, 0]
    filled = [{"image_id": t, "bbox": [float(v) for v in b[:4]], "score": float(b[4])}
              for t, frame in zip(numbers, added) for b in frame]
    merged = merge_filled(_records(numbers, frames_of(per_frame)), filled)
    assert sorted(r["score"] for r in merged if r["image_id"] == 3) == [pytest.approx(0.72)]
    added = fill_gaps(numbers, frames_of(per_frame), GapFill(iou=0.9, suppress_iou=1.01))  # guard off
    assert [len(a) for a in added] == [0, 0, 1, 1, 1, 0, 0]
