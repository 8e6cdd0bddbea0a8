"""The PoseTrack mAP, computed exactly as the official evaluator (poseval) does, vectorised.

Every number in the paper's tables comes from poseval's ``evaluateAP``. This module reproduces it
to floating-point precision (checked against poseval's own outputs on the real fixtures) without
depending on it, and runs the whole val set in well under a second instead of tens of seconds.

Algorithm (poseval's, see ../shared/docs/posetrack-eval.md):

1. Sequences are paired by file name (a missing prediction file is an error); frames are paired by
   position in the file (the counts must match). Only GT frames with at least one annotated person
   are evaluated; the paired prediction frame goes with them. People without any keypoint are
   dropped. A keypoint is absent only when x == 0, y == 0 and v == 0; there is no score threshold.
   The 17 PoseTrack18 keypoints are reduced to the 15 PoseTrack joints (ears dropped).
2. Ignore regions: every GT and predicted point *strictly inside* an ignore polygon of its frame is
   deleted (GEOS/shapely ``Polygon.contains`` semantics: even-odd crossing rule, points on an edge
   or vertex are not inside, degenerate polygons contain nothing); a person left without points is
   deleted.
3. Head size of a GT person = 0.6 x the diagonal of its head box; a predicted joint is correct when
   its distance to the GT joint / head size <= 0.5.
4. Per frame, pck(p, g) = correct joints of p on g / annotated joints of g. Each prediction keeps
   only its best GT (the first GT wins a tie); each GT then takes the remaining prediction with the
   highest pck (the first prediction in file order wins a tie), unless that pck is 0. A prediction
   not taken is a false positive (it does not fall back to its second-best GT).
5. Each prediction contributes (joint score, correct?) for every joint it has (always incorrect
   when unmatched). Joint scores are the per-person ``scores`` list; if missing or empty every
   joint scores -9999. nGT_j counts annotated GT joints of type j.
6. AP per joint over all frames of all sequences: VOC "all points" AP (monotone precision envelope,
   area at recall change points), x100. No predictions: AP 0; nGT_j = 0 with predictions: NaN.
7. Table: Head = mean(head_top, head_bottom (poseval's "neck"), nose); Shou, Elb, Wri, Hip, Knee,
   Ankl = mean of left and right (NaN if either is NaN, as poseval); Total = NaN-skipping mean of
   the 15 joint APs.

**Protocols** (``protocol=``). ``"poseval"`` (default) is the algorithm above, what the official
evaluator does on any PoseTrack18/21 file and what the paper family reports on PoseTrack21 too.
``"posetrack21"`` is the PoseTrack21 kit's pose mAP (``PosemAP``): the evaluated frames are the GT
frames whose ``is_labeled`` is true (a frame without the flag: one with a person annotation), and a
keypoint, GT or predicted, is present only where x > 0 and y > 0 (its third value is ignored);
a joint with no GT but with predictions scores AP 0 instead of NaN (the kit divides by max(nGT,
1)). Everything else (ignore regions, head size, assignment, AP, table) is shared. Frames of a
prediction file are paired with the GT frames by image id when the file holds exactly the GT's
image ids (then their order does not matter), else by position.

**Tie rule.** poseval sorts detections with numpy's unstable ``argsort`` and then reverses the
order, so equal scores that mix true and false positives give an order that depends on the numpy
build. Here detections are concatenated in poseval's order (sequences by sorted file name, frames
in file order, people in file order) and sorted by descending score with a *stable* sort, so among
tied scores the earlier detection ranks first. Inputs without mixed ties (all real detector
outputs in practice, and every exactness case) give identical numbers either way.

Shapes: F evaluated frames, G GT people, P predicted people, J = 15 joints.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import time
from dataclasses import dataclass, field
from itertools import chain
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from diffpose.data import keypoints as kp
from diffpose.data.posetrack import MISSING_SCORE, describe_annotation, load_sequence, zero_size_head_boxes
from diffpose.errors import DataError

LOG = logging.getLogger(__name__)

J = len(kp.POSETRACK15_NAMES)
PCKH_THRESHOLD = 0.5
HEAD_SIZE_FACTOR = 0.6
MIN_SCORE = MISSING_SCORE  # poseval's joint score when a prediction has none
TABLE_COLUMNS: tuple[str, ...] = (*kp.TABLE_GROUPS, "Total")
SUBSETS = ("all", "degraded")
PROTOCOLS = ("poseval", "posetrack21")
_PT15 = kp.POSETRACK15_TO_COCO17
_PT15_VALUES = (3 * _PT15[:, None] + np.arange(3)).ravel()  # their x, y, v among the 51 numbers
_GROUP_INDEX = {g: [kp.POSETRACK15_NAMES.index(n) for n in names] for g, names in kp.TABLE_GROUPS.items()}


# --------------------------------------------------------------------------------------------
# loading


@dataclass(frozen=True)
class SequencePair:
    """One GT sequence and its predictions, both as validated PoseTrack18 dicts."""

    name: str
    gt_path: Path
    pred_path: Path
    gt: dict
    pred: dict


def load_pairs(gt_dir: str | os.PathLike, pred_dir: str | os.PathLike) -> list[SequencePair]:
    """Load every ``*.json`` of ``gt_dir`` and the file of the same name in ``pred_dir``.

    Either folder may hold PoseTrack18/21 or PoseTrack17 files. Errors (missing prediction file,
    frame-count mismatch, malformed JSON, bad values) are DataErrors naming file and frame.
    """
    with _gc_paused():
        return list(iter_pairs(gt_dir, pred_dir))


def iter_pairs(gt_dir: str | os.PathLike, pred_dir: str | os.PathLike) -> Iterator[SequencePair]:
    """:func:`load_pairs` one sequence at a time (the folders are checked at once).

    :func:`prepare` keeps only the arrays of each pair, so fed from here it never holds all the
    parsed files at once; that is also 1.5x faster, because each file's millions of Python objects
    are still in the CPU caches when their numbers are read and when they are freed.
    """
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    for folder, what in ((gt_dir, "ground-truth"), (pred_dir, "prediction")):
        if not folder.is_dir():
            raise DataError(f"{folder}: {what} folder not found")
    gt_files = sorted(p for p in gt_dir.glob("*.json") if p.is_file())
    if not gt_files:
        raise DataError(f"{gt_dir}: no ground-truth .json sequence files")
    return _pairs(gt_files, pred_dir)


def _pairs(gt_files: list[Path], pred_dir: Path) -> Iterator[SequencePair]:
    for gt_path in _Progress(gt_files, "loading"):
        pred_path = pred_dir / gt_path.name
        if not pred_path.is_file():
            raise DataError(
                f"{pred_path}: prediction file missing for ground-truth sequence {gt_path} (every GT sequence "
                f"needs a prediction file of the same name with every frame)"
            )
        with _gc_paused():
            gt = load_sequence(gt_path, kind="gt")
            pred = load_sequence(pred_path, kind="pred")
        _check_frames(gt_path, gt, pred_path, pred)
        yield SequencePair(gt_path.stem, gt_path, pred_path, gt, pred)


@contextlib.contextmanager
def _gc_paused():
    """No cyclic garbage collection while JSON files become millions of Python objects: every
    collection would walk all the containers made so far (a third of the loading time), and
    parsed JSON holds no reference cycles to collect. Pausing it around a whole loop over
    sequences, not file by file, also spares the collections that each re-enabling triggers."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _Progress:
    """Iterate over ``items``; a progress bar appears only once the loop has run for
    ``after`` seconds (a whole val set loads in well under that, and tqdm costs an import)."""

    def __init__(self, items: list, desc: str, after: float = 2.0) -> None:
        self.items, self.desc, self.after = items, desc, after

    def __iter__(self):
        start, bar = time.perf_counter(), None
        try:
            for i, item in enumerate(self.items):
                if bar is None and time.perf_counter() - start > self.after:
                    from tqdm import tqdm

                    bar = tqdm(total=len(self.items), initial=i, desc=f"evaluate: {self.desc}", unit="seq",
                               leave=False, disable=None)
                yield item
                if bar is not None:
                    bar.update()
        finally:
            if bar is not None:
                bar.close()


def _check_frames(gt_path: Path, gt: dict, pred_path: Path, pred: dict) -> None:
    n_gt, n_pred = len(gt["images"]), len(pred["images"])
    if n_gt != n_pred:
        if n_pred < n_gt:
            im = gt["images"][n_pred]
            detail = f"ground-truth frame #{n_pred} ({im['file_name']}) and later have no prediction frame"
        else:
            im = pred["images"][n_gt]
            detail = f"prediction frame #{n_gt} ({im['file_name']}) and later have no ground-truth frame"
        raise DataError(
            f"{pred_path}: {n_pred} frames but the ground truth {gt_path} has {n_gt}: {detail} (frames are "
            f"paired by position; write every frame of the sequence, in order)"
        )
    pred_images = pred["images"]
    if same_image_ids(gt, pred):  # paired by id: compare each frame with the GT frame of its id
        by_id = {im["id"]: im for im in pred_images}
        pred_images = [by_id[im["id"]] for im in gt["images"]]
    for i, (a, b) in enumerate(zip(gt["images"], pred_images)):
        if a["file_name"] != b["file_name"] and os.path.basename(a["file_name"]) != os.path.basename(b["file_name"]):
            LOG.warning(
                "%s: frame #%d is %s but the ground-truth frame at that position is %s (frames are paired by "
                "position)", pred_path, i, b["file_name"], a["file_name"],
            )
            break


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")


def evaluated_frames(gt: dict, subset: str = "all", protocol: str = "poseval") -> list[int]:
    """Positions of the frames that count.

    ``protocol="poseval"``: GT frames with at least one person annotation (a box-only person
    counts: poseval keeps its frame, where any prediction is then a false positive).
    ``"posetrack21"``: GT frames whose ``is_labeled`` is true (without the flag: as poseval).
    ``subset="degraded"`` keeps only those where at least one GT person carries
    ``"degraded": true`` (the synthetic benchmark's flag); every person of such a frame, degraded
    or not, is evaluated, so the subset is an ordinary PoseTrack evaluation on fewer frames.
    """
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
    _check_protocol(protocol)
    anns = gt.get("annotations", [])
    with_people = {a["image_id"] for a in anns}
    if protocol == "poseval":
        frames = [i for i, im in enumerate(gt["images"]) if im["id"] in with_people]
    else:
        frames = [i for i, im in enumerate(gt["images"]) if im.get("is_labeled", im["id"] in with_people)]
    if subset == "degraded":
        degraded = {a["image_id"] for a in anns if a.get("degraded") is True}
        frames = [i for i in frames if gt["images"][i]["id"] in degraded]
    return frames


# --------------------------------------------------------------------------------------------
# arrays


@dataclass
class People:
    """People of many frames, flattened. frame (N,), xy (N, J, 2), has (N, J); GT: head (N,);
    predictions: score (N, J)."""

    frame: np.ndarray
    xy: np.ndarray
    has: np.ndarray
    head: np.ndarray | None = None
    score: np.ndarray | None = None

    def take(self, idx: np.ndarray) -> People:
        return People(
            self.frame[idx], self.xy[idx], self.has[idx],
            None if self.head is None else self.head[idx],
            None if self.score is None else self.score[idx],
        )


@dataclass
class Polygons:
    """Ignore polygons: frame (R,), vertex start (R,) and count (R,) into x, y (V,)."""

    frame: np.ndarray
    start: np.ndarray
    count: np.ndarray
    x: np.ndarray
    y: np.ndarray


@dataclass
class EvalData:
    """Everything the assignment needs, for F evaluated frames of S sequences."""

    names: list[str]
    frame_seq: np.ndarray  # (F,) sequence index of each evaluated frame
    gt: People
    pred: People
    polygons: Polygons
    protocol: str = "poseval"


_NO_BOX = (math.nan,) * 4  # a GT person without points needs no head box


def _people(anns: list[dict], frame: list[int], *, is_gt: bool, protocol: str = "poseval") -> People:
    """The people of one sequence from their annotations (in file order) and evaluated-frame
    indices, ordered by frame, then file order. A keypoint is present unless it is (0, 0, 0)
    (``protocol="poseval"``) or where x > 0 and y > 0 (``"posetrack21"``)."""
    n = len(anns)
    if n == 0:
        return People(
            np.zeros(0, np.int64), np.zeros((0, J, 2)), np.zeros((0, J), bool),
            np.zeros(0) if is_gt else None, None if is_gt else np.zeros((0, J)),
        )
    frames = np.array(frame, dtype=np.int64)
    # files usually list people frame by frame: then there is nothing to reorder
    order = slice(None) if (frames[1:] >= frames[:-1]).all() else np.argsort(frames, kind="stable")
    values = chain.from_iterable([a["keypoints"] for a in anns])  # validated: 51 numbers each
    kps = np.fromiter(values, np.float64, n * kp.NUM_KEYPOINTS * 3).reshape(n, kp.NUM_KEYPOINTS * 3)
    kps = kps[order][:, _PT15_VALUES].reshape(n, J, 3)
    if protocol == "posetrack21":
        has = (kps[..., 0] > 0) & (kps[..., 1] > 0)
    else:
        has = ~((kps[..., 0] == 0) & (kps[..., 1] == 0) & (kps[..., 2] == 0))
    head = score = None
    if is_gt:
        values = chain.from_iterable([a.get("bbox_head", _NO_BOX) for a in anns])
        boxes = np.fromiter(values, np.float64, 4 * n).reshape(n, 4)[order]
        # poseval converts x, y, w, h to x1, y1, x2 = x1 + w, y2 = y1 + h, then takes x2 - x1.
        dx = (boxes[:, 0] + boxes[:, 2]) - boxes[:, 0]
        dy = (boxes[:, 1] + boxes[:, 3]) - boxes[:, 1]
        head = HEAD_SIZE_FACTOR * np.sqrt(dx * dx + dy * dy)
    else:
        score = np.full((n, J), MIN_SCORE)
        rows = [i for i, a in enumerate(anns) if a.get("scores")]
        if rows:
            values = chain.from_iterable([anns[i]["scores"] for i in rows])  # validated: 17 numbers each
            score[rows] = np.fromiter(values, np.float64, len(rows) * kp.NUM_KEYPOINTS).reshape(-1, kp.NUM_KEYPOINTS)[:, _PT15]
        score = score[order]
    return People(frames[order], np.ascontiguousarray(kps[..., :2]), has, head, score)


def prepare(pairs: Iterable[SequencePair], subset: str = "all", protocol: str = "poseval") -> EvalData:
    """Flatten the evaluated frames of all sequences into arrays (sequences in the given order).

    ``pairs`` may be :func:`iter_pairs`: only each sequence's arrays are kept."""
    _check_protocol(protocol)
    names: list[str] = []
    parts: list[EvalData] = []
    n_frames = 0
    zero_heads: list[str] = []  # one description per GT person whose head size is 0
    with _gc_paused():  # covers the parsing too when pairs come from iter_pairs
        for s, pair in enumerate(pairs):
            names.append(pair.name)
            parts.append(_sequence_data(pair.gt, pair.pred, s, n_frames, subset, protocol))
            n_frames += len(parts[-1].frame_seq)
            gt = parts[-1].gt
            if not (gt.head[gt.has.any(axis=1)] > 0).all():  # NaN: no head box, only on people without points
                zero_heads += [describe_annotation(pair.gt_path, pair.gt, i) for i in zero_size_head_boxes(pair.gt)]
    if zero_heads:
        more = f" (and {len(zero_heads) - 1} more such person(s))" if len(zero_heads) > 1 else ""
        LOG.warning(
            "%s: 'bbox_head' has zero size%s: every joint of that person counts as unmatched (head-normalised "
            "distance with a head size of 0); the official evaluator scores it the same way, so the mAP "
            "includes it", zero_heads[0], more,
        )
    if not parts:
        nothing = {"images": [], "annotations": []}
        parts.append(_sequence_data(nothing, nothing, 0, 0, subset, protocol))
    counts = np.concatenate([p.polygons.count for p in parts])
    polygons = Polygons(
        np.concatenate([p.polygons.frame for p in parts]),
        np.cumsum(counts) - counts,
        counts,
        np.concatenate([p.polygons.x for p in parts]),
        np.concatenate([p.polygons.y for p in parts]),
    )
    return EvalData(
        names,
        np.concatenate([p.frame_seq for p in parts]),
        _concat_people([p.gt for p in parts]),
        _concat_people([p.pred for p in parts]),
        polygons,
        protocol,
    )


def _sequence_data(gt: dict, pred: dict, s: int, offset: int, subset: str, protocol: str = "poseval") -> EvalData:
    """The arrays of sequence number ``s``, its evaluated frames numbered from ``offset`` on
    (``names`` is left empty)."""
    positions = evaluated_frames(gt, subset, protocol)
    gt_index = {gt["images"][p]["id"]: offset + f for f, p in enumerate(positions)}
    people = []
    for obj, is_gt in ((gt, True), (pred, False)):
        index = gt_index
        if not is_gt and not same_image_ids(gt, pred):  # pair by position
            index = {obj["images"][p]["id"]: offset + f for f, p in enumerate(positions)}
        kept = [a for a in obj.get("annotations", []) if a["image_id"] in index]
        people.append(_people(kept, [index[a["image_id"]] for a in kept], is_gt=is_gt, protocol=protocol))
    poly_frame: list[int] = []
    poly_x: list[list] = []
    poly_y: list[list] = []
    for f, pos in enumerate(positions):
        im = gt["images"][pos]
        for px, py in zip(im.get("ignore_regions_x") or [], im.get("ignore_regions_y") or []):
            if len(px):
                poly_frame.append(offset + f)
                poly_x.append(px)
                poly_y.append(py)
    counts = np.fromiter(map(len, poly_x), np.int64, len(poly_x))
    n_vertices = int(counts.sum())
    polygons = Polygons(
        np.array(poly_frame, dtype=np.int64),
        np.cumsum(counts) - counts,
        counts,
        np.fromiter(chain.from_iterable(poly_x), np.float64, n_vertices),
        np.fromiter(chain.from_iterable(poly_y), np.float64, n_vertices),
    )
    return EvalData([], np.full(len(positions), s, np.int64), people[0], people[1], polygons, protocol)


def same_image_ids(gt: dict, pred: dict) -> bool:
    """The prediction file holds exactly the GT's image ids (ids are unique within a file):
    its frames pair with the GT's by id, in any order; otherwise by position."""
    gt_ids = [im["id"] for im in gt["images"]]
    pred_ids = [im["id"] for im in pred["images"]]
    return gt_ids == pred_ids or set(gt_ids) == set(pred_ids)


def _concat_people(parts: list[People]) -> People:
    first = parts[0]
    return People(
        np.concatenate([p.frame for p in parts]),
        np.concatenate([p.xy for p in parts]),
        np.concatenate([p.has for p in parts]),
        None if first.head is None else np.concatenate([p.head for p in parts]),
        None if first.score is None else np.concatenate([p.score for p in parts]),
    )


# --------------------------------------------------------------------------------------------
# geometry


def cross_pairs(a_group: np.ndarray, b_group: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """All index pairs (i, j) with ``a_group[i] == b_group[j]``, in i-major, j-ascending order.

    ``b_group`` must be sorted (non-decreasing); ``a_group`` need not be.
    """
    b_count = np.bincount(b_group, minlength=n_groups)
    b_start = np.cumsum(b_count) - b_count
    per_a = b_count[a_group]
    total = int(per_a.sum())
    ia = np.repeat(np.arange(len(a_group)), per_a)
    within = np.arange(total) - np.repeat(np.cumsum(per_a) - per_a, per_a)
    jb = np.repeat(b_start[a_group], per_a) + within
    return ia, jb


def _orientation(ax, ay, bx, by, px, py) -> np.ndarray:
    """Sign of the cross product (b - a) x (p - a): +1 p left of a->b, -1 right, 0 collinear.

    Computed in float64; results whose magnitude is within rounding error of 0 are recomputed
    exactly with rationals (GEOS uses an exact predicate too)."""
    u = (bx - ax) * (py - ay)
    v = (by - ay) * (px - ax)
    det = u - v
    sign = np.sign(det)
    # small integers (pixel-grid polygons and points) make every step exact: no doubt there
    small_ints = np.ones(len(det), dtype=bool)
    for c in (ax, ay, bx, by, px, py):
        small_ints &= (np.abs(c) < 2.0**24) & (c == np.round(c))
    doubtful = np.flatnonzero(~small_ints & (np.abs(det) <= 1e-12 * (np.abs(u) + np.abs(v))))
    if len(doubtful):
        from fractions import Fraction  # rarely needed: not imported up front

        for k in doubtful:
            fa_x, fa_y, fb_x, fb_y, fp_x, fp_y = (Fraction(float(c[k])) for c in (ax, ay, bx, by, px, py))
            exact = (fb_x - fa_x) * (fp_y - fa_y) - (fb_y - fa_y) * (fp_x - fa_x)
            sign[k] = (exact > 0) - (exact < 0)
    return sign


def points_in_polygons(
    x: np.ndarray, y: np.ndarray, frame: np.ndarray, polygons: Polygons, n_frames: int
) -> np.ndarray:
    """(N,) bool: point strictly inside at least one ignore polygon of its own frame.

    Even-odd ray-crossing rule with exact boundary handling, as GEOS's ``RayCrossingCounter``
    (what shapely's ``Polygon.contains`` uses): a point on an edge or a vertex is not inside.
    Every point meets the polygons of its frame through their bounding boxes first (one pass per
    polygon slot, see :func:`_pairs_in_boxes`); only the pairs inside a box go to the per-edge test.
    """
    inside = np.zeros(len(x), dtype=bool)
    if len(x) == 0 or len(polygons.frame) == 0:
        return inside
    poly_order = np.argsort(polygons.frame, kind="stable")
    pf = polygons.frame[poly_order]
    start, count = polygons.start[poly_order], polygons.count[poly_order]
    xmin = np.minimum.reduceat(polygons.x, polygons.start)[poly_order]
    xmax = np.maximum.reduceat(polygons.x, polygons.start)[poly_order]
    ymin = np.minimum.reduceat(polygons.y, polygons.start)[poly_order]
    ymax = np.maximum.reduceat(polygons.y, polygons.start)[poly_order]
    ip, jr = _pairs_in_boxes(x, y, frame, pf, (xmin, xmax, ymin, ymax), n_frames)
    if len(ip) == 0:
        return inside
    # expand each (point, polygon) pair to the polygon's edges: vertex k -> next vertex (closed ring)
    n_edges = count[jr]
    seg_start = np.cumsum(n_edges) - n_edges
    within = np.arange(int(n_edges.sum())) - np.repeat(seg_start, n_edges)
    k1 = np.repeat(start[jr], n_edges) + within
    k2 = np.where(within + 1 == np.repeat(n_edges, n_edges), k1 - within, k1 + 1)
    px, py = np.repeat(x[ip], n_edges), np.repeat(y[ip], n_edges)
    ax, ay, bx, by = polygons.x[k1], polygons.y[k1], polygons.x[k2], polygons.y[k2]

    considered = ~((ax < px) & (bx < px))  # segments wholly left of the point never matter
    at_vertex = considered & (px == bx) & (py == by)
    horizontal = considered & (ay == py) & (by == py)
    on_horizontal = horizontal & (px >= np.minimum(ax, bx)) & (px <= np.maximum(ax, bx))
    straddles = considered & ~at_vertex & ~horizontal & (((ay > py) & (by <= py)) | ((by > py) & (ay <= py)))
    s = np.flatnonzero(straddles)
    orient = _orientation(ax[s], ay[s], bx[s], by[s], px[s], py[s])
    orient = np.where(by[s] < ay[s], -orient, orient)  # make the segment effectively upward
    crossing = np.zeros(len(px), dtype=np.int64)
    crossing[s] = orient > 0
    boundary = (at_vertex | on_horizontal).astype(np.int64)
    boundary[s] |= orient == 0
    n_cross = np.add.reduceat(crossing, seg_start)
    n_boundary = np.add.reduceat(boundary, seg_start)
    strictly = (n_cross % 2 == 1) & (n_boundary == 0)
    inside[ip[strictly]] = True
    return inside


def _pairs_in_boxes(
    x: np.ndarray, y: np.ndarray, frame: np.ndarray, box_frame: np.ndarray, boxes: tuple, n_frames: int
) -> tuple[np.ndarray, np.ndarray]:
    """(point, box) index pairs of the same frame with the point strictly inside the box.

    ``box_frame`` is sorted; ``boxes`` = (xmin, xmax, ymin, ymax). Pass k pairs every point with
    the k-th box of its frame, among the points whose frame has more than k boxes, so no array
    of all the (point, box) pairs of a frame is ever built.
    """
    xmin, xmax, ymin, ymax = boxes
    per_frame = np.bincount(box_frame, minlength=n_frames)
    first = np.cumsum(per_frame) - per_frame
    n_boxes = per_frame[frame]
    points = np.flatnonzero(n_boxes > 0)
    px, py, n_boxes, b = x[points], y[points], n_boxes[points], first[frame[points]]
    found_p, found_b = [], []
    k = 0
    while len(points):
        hit = (px > xmin[b]) & (px < xmax[b]) & (py > ymin[b]) & (py < ymax[b])
        found_p.append(points[hit])
        found_b.append(b[hit])
        k += 1
        b = b + 1
        more = n_boxes > k
        if not more.all():  # drop the points whose frame has no k-th box
            points, px, py, n_boxes, b = points[more], px[more], py[more], n_boxes[more], b[more]
    if not found_p:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(found_p), np.concatenate(found_b)


def apply_ignore_regions(data: EvalData) -> EvalData:
    """Delete GT and predicted points strictly inside an ignore polygon of their frame, then every
    person left without points (and people that had none to begin with)."""
    n_frames = len(data.frame_seq)
    out = []
    for people in (data.gt, data.pred):
        points = np.flatnonzero(people.has)  # into the (N * J) flattened joints
        xy = people.xy.reshape(-1, 2)[points]
        hit = points_in_polygons(xy[:, 0], xy[:, 1], people.frame[points // J], data.polygons, n_frames)
        has = people.has.copy()
        has.reshape(-1)[points[hit]] = False
        kept = People(people.frame, people.xy, has, people.head, people.score)
        out.append(kept.take(np.flatnonzero(has.any(axis=1))))
    return EvalData(data.names, data.frame_seq, out[0], out[1], data.polygons, data.protocol)


# --------------------------------------------------------------------------------------------
# assignment and AP


@dataclass
class Detections:
    """Per-joint detections in poseval's concatenation order: joint (D,), score (D,), label (D,),
    frame (D,); n_gt (F, J) annotated GT joints per frame."""

    joint: np.ndarray
    score: np.ndarray
    label: np.ndarray
    frame: np.ndarray
    n_gt: np.ndarray


def _first_per_group(group: np.ndarray, *tie_keys: np.ndarray) -> np.ndarray:
    """Index of the first element of each group after sorting by ``tie_keys`` (most significant
    first) within it."""
    order = np.lexsort((*reversed(tie_keys), group))
    g = group[order]
    first = np.ones(len(g), dtype=bool)
    first[1:] = g[1:] != g[:-1]
    return order[first]


def assign(gt: People, pred: People, n_frames: int) -> Detections:
    """poseval's ``assignGTmulti`` for all frames at once (people already cleaned of ignored
    points and empty people). Returns the labelled per-joint detections."""
    P = len(pred.frame)
    n_gt = np.zeros((n_frames, J), dtype=np.int64)
    np.add.at(n_gt, gt.frame, gt.has.astype(np.int64))
    matched_gt = np.full(P, -1, dtype=np.int64)
    correct = np.zeros((P, J), dtype=bool)
    if P and len(gt.frame):
        ip, jg = cross_pairs(pred.frame, gt.frame, n_frames)  # every (prediction, GT) of a frame
        diff = pred.xy[ip] - gt.xy[jg]
        with np.errstate(divide="ignore", invalid="ignore"):
            dist = np.sqrt(diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1]) / gt.head[jg, None]
        match = pred.has[ip] & gt.has[jg] & (dist <= PCKH_THRESHOLD)
        pck = match.sum(axis=1) / gt.has.sum(axis=1)[jg]
        # each prediction keeps its best GT (first GT on ties) ...
        best = _first_per_group(ip, -pck, jg)
        best = best[pck[best] > 0]
        # ... and each GT takes the best of the predictions that kept it (first prediction on ties)
        chosen = best[_first_per_group(jg[best], -pck[best], ip[best])]
        matched_gt[ip[chosen]] = jg[chosen]
        correct[ip[chosen]] = match[chosen]
    rows, joints = np.nonzero(pred.has)  # row-major: frame order, then people, then joints
    return Detections(
        joint=joints,
        score=pred.score[rows, joints],
        label=correct[rows, joints],
        frame=pred.frame[rows],
        n_gt=n_gt,
    )


def _descending(scores: np.ndarray) -> np.ndarray:
    """Indices that sort ``scores`` descending, earlier first among equal scores (a stable sort;
    numpy's default sort is several times faster and gives the same order when no two scores tie)."""
    order = np.argsort(-scores)
    ranked = scores[order]
    if (ranked[1:] == ranked[:-1]).any():
        order = np.argsort(-scores, kind="stable")
    return order


def voc_ap(scores: np.ndarray, labels: np.ndarray, n_gt: float, *, no_gt_nan: bool = True) -> tuple[float, float, float]:
    """(AP, precision at the last detection, recall at the last detection), all x100.

    Detections are ranked by descending score, stable (earlier first on ties). No detections:
    (0, 0, 0); n_gt == 0 with detections: NaN AP and recall, as poseval, or with
    ``no_gt_nan=False`` recall over max(n_gt, 1), so AP 0 (the PoseTrack21 kit).
    """
    if len(scores) == 0:
        return 0.0, 0.0, 0.0
    if n_gt == 0 and not no_gt_nan:
        n_gt = 1.0
    order = _descending(scores)
    tp = np.cumsum(labels[order], dtype=np.float64)
    precision = tp / np.arange(1, len(tp) + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = tp / float(n_gt)
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    ap = float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))
    return ap * 100.0, float(precision[-1]) * 100.0, float(recall[-1]) * 100.0


@dataclass
class PoseTrackResult:
    """AP, precision and recall (at the last detection) per joint (J,), in percent."""

    ap: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    per_sequence: dict[str, PoseTrackResult] = field(default_factory=dict)

    def table(self) -> dict[str, float]:
        """The paper's columns: Head ... Ankl (poseval's plain means) and Total (NaN-skipping)."""
        out = {g: float(np.mean(self.ap[idx])) for g, idx in _GROUP_INDEX.items()}
        finite = self.ap[~np.isnan(self.ap)]
        out["Total"] = float(finite.mean()) if len(finite) else math.nan
        return out

    def metrics(self) -> dict[str, Any]:
        """``{"Head": .., ..., "Total": .., "per_joint": {name: AP}}`` in percent, full precision
        (NaN where poseval has NaN)."""
        return {**self.table(), "per_joint": dict(zip(kp.POSETRACK15_NAMES, map(float, self.ap)))}


def average_precision(det: Detections, frames: np.ndarray | None = None, protocol: str = "poseval") -> PoseTrackResult:
    """Per-joint AP over the given frame mask (all frames when None)."""
    ap, pre, rec = np.zeros(J), np.zeros(J), np.zeros(J)
    kept = np.arange(len(det.joint)) if frames is None else np.flatnonzero(frames[det.frame])
    n_gt = det.n_gt.sum(axis=0) if frames is None else det.n_gt[frames].sum(axis=0)
    by_joint = kept[np.argsort(det.joint[kept], kind="stable")]  # detection order within a joint
    bounds = np.searchsorted(det.joint[by_joint], np.arange(J + 1))
    for j in range(J):
        sel = by_joint[bounds[j] : bounds[j + 1]]
        ap[j], pre[j], rec[j] = voc_ap(det.score[sel], det.label[sel], float(n_gt[j]), no_gt_nan=protocol == "poseval")
    return PoseTrackResult(ap, pre, rec)


def evaluate_data(data: EvalData, *, per_sequence: bool = False) -> PoseTrackResult:
    """Run steps 2-7 on prepared arrays."""
    clean = apply_ignore_regions(data)
    det = assign(clean.gt, clean.pred, len(data.frame_seq))
    result = average_precision(det, protocol=data.protocol)
    if per_sequence:
        for s, name in enumerate(data.names):
            result.per_sequence[name] = average_precision(det, data.frame_seq == s, data.protocol)
    return result


def evaluate_pairs(pairs: Iterable[SequencePair], *, subset: str = "all", per_sequence: bool = False,
                   protocol: str = "poseval") -> PoseTrackResult:
    return evaluate_data(prepare(pairs, subset, protocol), per_sequence=per_sequence)


def evaluate_folders(
    gt_dir: str | os.PathLike, pred_dir: str | os.PathLike, *, subset: str = "all", protocol: str = "poseval"
) -> dict[str, Any]:
    """PoseTrack mAP of the predictions in ``pred_dir`` against the GT in ``gt_dir``.

    Returns ``{"Head", "Shou", "Elb", "Wri", "Hip", "Knee", "Ankl", "Total": percent,
    "per_joint": {POSETRACK15_NAMES[j]: percent}}`` (NaN where poseval gives NaN; see
    :func:`diffpose.evaluation.tables.write_metrics` for the JSON writer).
    """
    return evaluate_pairs(iter_pairs(gt_dir, pred_dir), subset=subset, protocol=protocol).metrics()
