"""PoseTrack18 ground truth for one synthetic sequence.

THE labelling rule for occluded joints (as PoseTrack does it): every joint of an annotated person
that lies inside the frame is labelled at its true position with visibility 1, whether it is seen,
hidden behind another person or an occluder, self-occluded or blurred; joints outside the frame are
(0, 0, 0); ears are always (0, 0, 0) (never labelled in PoseTrack18). A person gets no annotation
in a frame when fewer than ``MIN_IN_FRAME`` labelled joints are inside it or fewer than
``MIN_SEEN`` are actually seen (almost out of frame or almost fully occluded). Such a person is
then covered by an ignore region instead, as PoseTrack covers people it does not annotate: the
bounding box of their visible pixels (when at least ``MIN_IGNORED_PIXELS``), cut to stay off the
annotated people's boxes, so a detection or pose of them is neither rewarded nor penalised.

Extra per-annotation fields (the official evaluator ignores them): ``degraded`` (the frame is
blurred or defocused for this person, or at least ``OCCLUDED_FRACTION`` of their in-frame joints
are hidden by someone or something else), ``occluded_joints`` (how many labelled joints are hidden
by another person or an occluder) and ``occluded_by`` (track ids of the annotated people hiding them).
"""

from __future__ import annotations

import numpy as np

from diffpose.data.keypoints import KEYPOINT_NAMES, LABELLED_IN_POSETRACK18, NUM_KEYPOINTS, SKELETON_1BASED

MIN_IN_FRAME = 4
MIN_SEEN = 3
MIN_IGNORED_PIXELS = 40  # fewer visible pixels than this: too little of a person to detect or pose
OCCLUDED_FRACTION = 0.3
BOX_MARGIN = 0.15  # person box = joint extent enlarged by 15% per side, as measured on PoseTrack18 GT


def image_id(vid: str, frame: int) -> int:
    """PoseTrack18's image id: int("1" + 6-digit video number + 4-digit frame index)."""
    return int(f"1{vid}{frame:04d}")


def categories() -> list[dict]:
    return [
        {
            "supercategory": "person",
            "id": 1,
            "name": "person",
            "keypoints": list(KEYPOINT_NAMES),
            "skeleton": [list(pair) for pair in SKELETON_1BASED],
        }
    ]


def in_frame(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """(..., 2) pixels -> (...) bool: inside [0, width-1] x [0, height-1]."""
    return (
        (points[..., 0] >= 0)
        & (points[..., 0] <= width - 1)
        & (points[..., 1] >= 0)
        & (points[..., 1] <= height - 1)
    )


def labelled_mask(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """(17, 2) -> (17,) bool: which joints the rule labels (inside the frame, not an ear)."""
    return in_frame(points, width, height) & LABELLED_IN_POSETRACK18


def person_box(points: np.ndarray, labelled: np.ndarray, width: int, height: int) -> list[float]:
    """[x, y, w, h] around the labelled joints plus ``BOX_MARGIN`` per side, clipped to the frame."""
    p = points[labelled]
    lo, hi = p.min(0), p.max(0)
    pad = BOX_MARGIN * (hi - lo)
    lo = np.maximum(lo - pad, 0.0)
    hi = np.minimum(hi + pad, [width - 1, height - 1])
    return [round(float(v), 2) for v in (lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1])]


def person_annotation(
    *,
    points: np.ndarray,
    labelled: np.ndarray,
    head_box: tuple[float, float, float, float],
    image: int,
    track_id: int,
    width: int,
    height: int,
    degraded: bool,
    occluded_joints: int,
    occluded_by: list[int],
) -> dict:
    """One PoseTrack18 annotation; ``points`` (17, 2) frame pixels, ``head_box`` (x0, y0, x1, y1)."""
    kps: list[float] = []
    for j in range(NUM_KEYPOINTS):
        if labelled[j]:
            kps += [round(float(points[j, 0]), 2), round(float(points[j, 1]), 2), 1]
        else:
            kps += [0, 0, 0]
    x0, y0, x1, y1 = head_box
    return {
        "bbox_head": [round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
        "keypoints": kps,
        "track_id": track_id,
        "image_id": image,
        "bbox": person_box(points, labelled, width, height),
        "scores": [],
        "category_id": 1,
        "id": image * 100 + track_id,
        "iscrowd": False,
        "num_keypoints": int(labelled.sum()),
        "degraded": bool(degraded),
        "occluded_joints": int(occluded_joints),
        "occluded_by": sorted(int(o) for o in occluded_by),
    }


def image_entry(
    *,
    vid: str,
    split: str,
    seq: str,
    frame: int,
    nframes: int,
    labelled: bool,
    width: int,
    height: int,
    ignore: list[np.ndarray],
) -> dict:
    """One ``images`` entry; ``ignore``: polygons (K, 2) in frame pixels."""
    iid = image_id(vid, frame)
    return {
        "is_labeled": bool(labelled),
        "file_name": f"images/{split}/{seq}/{frame:06d}.jpg",
        "nframes": nframes,
        "frame_id": iid,
        "vid_id": vid,
        "ignore_regions_y": [[round(float(v), 1) for v in poly[:, 1]] for poly in ignore],
        "ignore_regions_x": [[round(float(v), 1) for v in poly[:, 0]] for poly in ignore],
        "id": iid,
        "width": width,
        "height": height,
    }


def labelled_frames(
    rng: np.random.Generator, split: str, nframes: int, *, dense: int, every: int
) -> np.ndarray:
    """(nframes,) bool. train: one dense segment of ``dense`` frames; val: every ``every``-th frame."""
    out = np.zeros(nframes, bool)
    if split == "train":
        dense = min(dense, nframes)
        start = int(rng.integers(0, nframes - dense + 1))
        out[start : start + dense] = True
    else:
        out[::every] = True
    return out


def cut_boxes(
    box: tuple[float, float, float, float], keep_out: list[tuple[float, float]]
) -> list[np.ndarray]:
    """Split the rectangle ``box`` (x0, y0, x1, y1) into rectangles that avoid the x-intervals in
    ``keep_out``; returns polygons (4, 2). Used to keep ignore regions off annotated people."""
    x0, y0, x1, y1 = box
    pieces = [(x0, x1)]
    for a, b in keep_out:
        nxt = []
        for lo, hi in pieces:
            if b <= lo or a >= hi:
                nxt.append((lo, hi))
                continue
            if a > lo:
                nxt.append((lo, a))
            if b < hi:
                nxt.append((b, hi))
        pieces = nxt
    return [np.array([[lo, y0], [hi, y0], [hi, y1], [lo, y1]]) for lo, hi in pieces if hi - lo >= 4]
