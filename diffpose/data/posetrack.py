"""PoseTrack annotation files: read, validate, convert and write.

Two on-disk formats exist, both one JSON file per video sequence:

* **PoseTrack18/21** (COCO-like): ``images`` (``id``, ``file_name``, ``vid_id``, ``frame_id``,
  ``nframes``, ``is_labeled``, ``ignore_regions_x``/``ignore_regions_y``: one list of x and one of
  y coordinates per polygon), ``annotations`` (``image_id``, ``track_id``, ``bbox`` and
  ``bbox_head`` as x, y, w, h, 17 COCO-order ``keypoints`` as x, y, v triplets, per-joint
  ``scores``), ``categories``. PoseTrack21 adds fields: on frames ``image_id`` (the same number as
  ``id``) and ``has_labeled_person`` (a person box on the frame, with or without keypoints, while
  ``is_labeled`` means annotated keypoints), on people ``person_id`` (an identity across videos,
  beside the per-video ``track_id``), and *box-only* people: a ``bbox`` (and head box) with all 17
  keypoints (0, 0, 0), also on frames that are not ``is_labeled``. Every extra field is allowed and
  kept. A frame without ``id`` takes its ``image_id`` (else its ``frame_id``); a person without
  ``track_id`` takes its ``person_id``; ids are never renumbered.
* **PoseTrack17** (``annolist``): one entry per frame with ``image[0].name``, ``annorect`` (people:
  ``track_id``, head box ``x1, y1, x2, y2``, ``annopoints[0].point`` = list of ``{id, x, y,
  is_visible, score}`` with the 15 PoseTrack joint ids) and ``ignore_regions`` (``point`` lists).
  Every value is wrapped in a one-element list, as poseval's converter writes it.

The rest of the project works on the PoseTrack18 dict: :func:`load_sequence` detects the format,
converts PoseTrack17 on the fly and validates. A keypoint is *absent* when x == 0, y == 0 and
v == 0 (poseval's rule), so a present PoseTrack17 point that sits exactly at (0, 0) with
``is_visible`` 0 cannot be represented in PoseTrack18 and is lost on conversion (as in poseval).

Validation errors are :class:`DataError` s on one line naming the file, the frame (position, id,
file name) or annotation (position, id), the field and what was expected. ``kind="pred"`` is the
relaxed schema of prediction files (images may carry only ``id`` and ``file_name``; ``scores``
are the joint confidences; no head box needed).
"""

from __future__ import annotations

import math
import os
import re
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np

from diffpose.data import keypoints as kp
from diffpose.errors import DataError
from diffpose.io import atomic_open, read_json

NUM_VALUES = 3 * kp.NUM_KEYPOINTS  # 51 numbers per person
KINDS = ("gt", "pred")
FORMATS = ("17", "18")
MISSING_SCORE = -9999.0  # poseval's score for a predicted joint without one

# The 15 PoseTrack joints: PoseTrack17 id -> index among the 17 COCO-order keypoints.
_PT15_TO_17 = [int(i) for i in kp.POSETRACK15_TO_COCO17]
_PT17_TO_15 = {c: p for p, c in enumerate(_PT15_TO_17)}  # COCO index -> PoseTrack17 id


# --------------------------------------------------------------------------------------------
# small helpers


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _describe(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _frame_where(source: Any, index: int, image: Any) -> str:
    if isinstance(image, dict):
        ident = image.get("id")
        name = image.get("file_name")
        bits = [f"id {ident}" if ident is not None else None, str(name) if name is not None else None]
        label = ", ".join(b for b in bits if b)
        return f"{source}: frame #{index}" + (f" ({label})" if label else "")
    return f"{source}: frame #{index}"


def _ann_where(source: Any, index: int, ann: Any, frames: dict | None = None) -> str:
    text = f"{source}: annotation #{index}"
    if isinstance(ann, dict):
        bits = []
        if ann.get("id") is not None:
            bits.append(f"id {ann['id']}")
        image_id = ann.get("image_id")
        if image_id is not None:
            name = frames.get(image_id) if frames and _is_int(image_id) else None
            bits.append(f"image {image_id}" + (f" {name}" if name else ""))
        if bits:
            text += f" ({', '.join(bits)})"
    return text


def _unwrap(value: Any) -> Any:
    """PoseTrack17 wraps scalars in one-element lists; accept both spellings."""
    if isinstance(value, list) and len(value) == 1:
        return value[0]
    return value


_NUMBER_TYPES = frozenset((int, float))


def _finite_numbers(values: Any, length: int | None = None) -> bool:
    """A list of finite JSON numbers (not booleans), of ``length`` items when given."""
    if not isinstance(values, list) or (length is not None and len(values) != length):
        return False
    return set(map(type, values)) <= _NUMBER_TYPES and all(map(math.isfinite, values))


def _all_finite_lists(lists: list, length: int | None = None) -> bool:
    """Every item is a list of finite JSON numbers (not booleans), of ``length`` items when given.

    The whole-file counterpart of :func:`_finite_numbers`: one pass over all the numbers at C
    speed. A NaN or infinity anywhere makes the sum non-finite; so does an overflowing sum of
    finite values, which only sends the file to the exact per-item check.
    """
    if not set(map(type, lists)) <= {list}:
        return False
    if length is not None and not set(map(len, lists)) <= {length}:
        return False
    return set(map(type, chain.from_iterable(lists))) <= _NUMBER_TYPES and _sum_finite(lists)


def _sizes_non_negative(boxes: list[list]) -> bool:
    """Every [x, y, w, h] box (already known to be 4 finite numbers) has w >= 0 and h >= 0."""
    return not boxes or (min(map(itemgetter(2), boxes)) >= 0 and min(map(itemgetter(3), boxes)) >= 0)


def _box_ok(box: Any) -> bool:
    """4 finite numbers [x, y, w, h] with w >= 0 and h >= 0."""
    return _finite_numbers(box, 4) and box[2] >= 0 and box[3] >= 0


def _positive_number(v: Any) -> bool:
    return _is_num(v) and math.isfinite(v) and v > 0


def _sum_finite(lists: list[list]) -> bool:
    """The numbers of all the lists add up to a finite value (so none is NaN or infinite); False
    also when an item is not a number or the sum overflows."""
    try:
        return math.isfinite(sum(map(sum, lists)))
    except (TypeError, OverflowError):
        return False


# --------------------------------------------------------------------------------------------
# format detection and validation


def detect_format(obj: Any, source: Any = "<data>") -> str:
    """"17" for an ``annolist`` file, "18" for a COCO-like one; DataError otherwise."""
    if isinstance(obj, dict) and "annolist" in obj:
        return "17"
    if isinstance(obj, dict) and "images" in obj:
        return "18"
    got = f"keys {sorted(obj)[:6]}" if isinstance(obj, dict) else type(obj).__name__
    raise DataError(
        f"{source}: not a PoseTrack sequence file: expected an object with 'images' and "
        f"'annotations' (PoseTrack18/21) or 'annolist' (PoseTrack17), got {got}"
    )


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


_OPTIONAL_IMAGE_KEYS = frozenset(
    ("frame_id", "image_id", "nframes", "is_labeled", "has_labeled_person", "vid_id", "ignore_regions_x",
     "ignore_regions_y", "width", "height")
)


def _validate_image(source: Any, i: int, im: Any, kind: str) -> None:
    if not isinstance(im, dict):
        raise DataError(f"{source}: frame #{i}: expected an object, got {type(im).__name__}")
    if type(im.get("id")) is int and type(im.get("file_name")) is str and im["file_name"] and not (
        _OPTIONAL_IMAGE_KEYS & im.keys()
    ):
        return
    where = _frame_where(source, i, im)
    if not _is_int(im.get("id")):
        raise DataError(f"{where}: 'id' must be an integer, got {_describe(im.get('id'))}")
    if not isinstance(im.get("file_name"), str) or not im["file_name"]:
        raise DataError(f"{where}: 'file_name' must be a non-empty string, got {_describe(im.get('file_name'))}")
    for key in ("frame_id", "image_id", "nframes"):
        if key in im and not _is_int(im[key]):
            raise DataError(f"{where}: '{key}' must be an integer, got {_describe(im[key])}")
    for key in ("is_labeled", "has_labeled_person"):
        if key in im and not isinstance(im[key], (bool, int)):
            raise DataError(f"{where}: '{key}' must be a boolean, got {_describe(im[key])}")
    if "vid_id" in im and not isinstance(im["vid_id"], (str, int)):
        raise DataError(f"{where}: 'vid_id' must be a string, got {_describe(im['vid_id'])}")
    for key in ("width", "height"):
        if key in im and not _positive_number(im[key]):
            raise DataError(f"{where}: '{key}' must be a positive number of pixels, got {_describe(im[key])}")
    has_x, has_y = "ignore_regions_x" in im, "ignore_regions_y" in im
    if has_x != has_y:
        raise DataError(f"{where}: 'ignore_regions_x' and 'ignore_regions_y' must come together")
    if has_x:
        rx, ry = im["ignore_regions_x"], im["ignore_regions_y"]
        if not isinstance(rx, list) or not isinstance(ry, list) or len(rx) != len(ry):
            raise DataError(
                f"{where}: 'ignore_regions_x' and 'ignore_regions_y' must be lists with one entry per "
                f"polygon and the same length, got {_describe(rx)} and {_describe(ry)}"
            )
        for r, (px, py) in enumerate(zip(rx, ry)):
            if not _finite_numbers(px) or not _finite_numbers(py, len(px) if isinstance(px, list) else None):
                raise DataError(
                    f"{where}: ignore region {r}: 'ignore_regions_x[{r}]' and 'ignore_regions_y[{r}]' must be "
                    f"lists of finite numbers of equal length"
                )


def _validate_keypoint_block(source: Any, anns: list, frames: dict, kind: str) -> None:
    """Check every annotation's 51 keypoint numbers (and scores) at once; locate the first bad one."""
    lengths_ok = [isinstance(a.get("keypoints"), list) and len(a["keypoints"]) == NUM_VALUES for a in anns]
    for i, ok in enumerate(lengths_ok):
        if not ok:
            a = anns[i]
            got = a.get("keypoints")
            what = f"{len(got)} numbers" if isinstance(got, list) else _describe(got)
            raise DataError(
                f"{_ann_where(source, i, a, frames)}: 'keypoints' must be {NUM_VALUES} numbers "
                f"({kp.NUM_KEYPOINTS} keypoints x (x, y, v)), got {what}"
            )
    if not _numeric_block_finite([a["keypoints"] for a in anns]):
        for i, a in enumerate(anns):
            for k, v in enumerate(a["keypoints"]):
                if not (_is_num(v) and np.isfinite(v)):
                    name = kp.KEYPOINT_NAMES[k // 3]
                    comp = "xyv"[k % 3]
                    raise DataError(
                        f"{_ann_where(source, i, a, frames)}: 'keypoints'[{k}] ({name}.{comp}) must be a "
                        f"finite number, got {_describe(v)}"
                    )


def _types_within(values: Any, types: set) -> bool:
    return set(map(type, values)) <= types


def _images_valid(images: list) -> bool:
    """True only if every frame passes :func:`_validate_image` and the ids are unique (whole-list
    checks; False means "look closer", not "invalid")."""
    if not _types_within(images, {dict}):
        return False
    ids = [im.get("id") for im in images]
    names = [im.get("file_name") for im in images]
    if not (_types_within(ids, {int}) and len(set(ids)) == len(ids) and _types_within(names, {str}) and all(names)):
        return False
    for key, types in (("frame_id", {int}), ("image_id", {int}), ("nframes", {int}), ("is_labeled", {bool, int}),
                       ("has_labeled_person", {bool, int}), ("vid_id", {str, int})):
        if not _types_within([im[key] for im in images if key in im], types):
            return False
    for key in ("width", "height"):
        sizes = [im[key] for im in images if key in im]
        if sizes and not (_all_finite_lists([sizes]) and min(sizes) > 0):
            return False
    if any(("ignore_regions_x" in im) != ("ignore_regions_y" in im) for im in images):
        return False
    with_x = [im for im in images if "ignore_regions_x" in im]
    rx = [im["ignore_regions_x"] for im in with_x]
    ry = [im["ignore_regions_y"] for im in with_x]
    if not (_types_within(rx, {list}) and _types_within(ry, {list}) and list(map(len, rx)) == list(map(len, ry))):
        return False
    px, py = list(chain.from_iterable(rx)), list(chain.from_iterable(ry))
    return _all_finite_lists(px) and _all_finite_lists(py) and list(map(len, px)) == list(map(len, py))


def _annotations_valid(anns: list, frame_ids: set) -> bool:
    """True only if every annotation passes :func:`_validate_annotation` and
    :func:`_validate_keypoint_block` (whole-list checks; False means "look closer")."""
    if not _types_within(anns, {dict}):
        return False
    image_ids = [a.get("image_id") for a in anns]
    if not (_types_within(image_ids, {int}) and frame_ids.issuperset(image_ids)):
        return False
    if not _types_within([a.get("track_id") for a in anns], {int}):
        return False
    if not _types_within([a["id"] for a in anns if "id" in a], {int}):
        return False
    if not _types_within([a["person_id"] for a in anns if "person_id" in a], {int}):
        return False
    for key in ("bbox", "bbox_head"):
        boxes = [a[key] for a in anns if key in a]
        if not (_all_finite_lists(boxes, 4) and _sizes_non_negative(boxes)):
            return False
    scores = [a.get("scores", []) for a in anns]
    if not (_types_within(scores, {list}) and _all_finite_lists([s for s in scores if s], kp.NUM_KEYPOINTS)):
        return False
    person = [a["score"] for a in anns if a.get("score") is not None]
    if not _all_finite_lists([person]):
        return False
    keypoints = [a.get("keypoints") for a in anns]
    if not (_types_within(keypoints, {list}) and set(map(len, keypoints)) <= {NUM_VALUES}):
        return False
    if not _types_within(chain.from_iterable(keypoints), _NUMBER_TYPES):  # no JSON true as a coordinate
        return False
    # All finite: what the numeric-array rule of _validate_keypoint_block accepts, without
    # building the array (the sum is only reached with numbers, booleans excluded).
    return _sum_finite(keypoints)


def _numeric_block_finite(rows: list[list]) -> bool:
    """The rule of :func:`_validate_keypoint_block`: the rows make a numeric array, all finite,
    with no boolean (JSON ``true`` is not a coordinate)."""
    if not rows:
        return True
    if not _types_within(chain.from_iterable(rows), _NUMBER_TYPES):
        return False
    try:
        block = np.array(rows)
    except (ValueError, TypeError):
        return False
    return block.dtype.kind in "fiub" and bool(np.isfinite(block.astype(np.float64, copy=False)).all())


def validate_posetrack18(obj: Any, source: Any = "<data>", *, kind: str = "gt") -> None:
    """Raise DataError (one line: file, frame/annotation, field, expectation) unless ``obj`` is a
    valid PoseTrack18/21 sequence. ``kind="pred"`` accepts prediction files (minimal images,
    no head boxes).

    Boxes must have w >= 0 and h >= 0 and image sizes must be positive. A zero-size head box is
    valid (the official evaluator accepts it and scores every joint of that person as a miss):
    :func:`zero_size_head_boxes` finds them for a warning.
    """
    _check_kind(kind)
    if not isinstance(obj, dict):
        raise DataError(f"{source}: expected a JSON object with 'images' and 'annotations', got {type(obj).__name__}")
    images = obj.get("images")
    if not isinstance(images, list):
        raise DataError(f"{source}: 'images' must be a list of frames, got {_describe(images)}")
    anns = obj.get("annotations", [] if kind == "pred" else None)
    if not isinstance(anns, list):
        raise DataError(f"{source}: 'annotations' must be a list of people, got {_describe(anns)}")
    # Whole-list checks accept a valid file at C speed; anything they do not vouch for goes
    # through the per-item checks, which find and name the first problem.
    if not (_images_valid(images) and _annotations_valid(anns, {im["id"] for im in images})):
        frames: dict[int, str] = {}
        for i, im in enumerate(images):
            _validate_image(source, i, im, kind)
            if im["id"] in frames:
                raise DataError(f"{_frame_where(source, i, im)}: duplicate image 'id' {im['id']}")
            frames[im["id"]] = im["file_name"]
        for i, a in enumerate(anns):
            if not isinstance(a, dict):
                raise DataError(f"{source}: annotation #{i}: expected an object, got {type(a).__name__}")
            _validate_annotation(source, i, a, frames, kind)
        _validate_keypoint_block(source, anns, frames, kind)
    if kind == "gt":
        for i, a in enumerate(anns):
            if "bbox_head" not in a and _has_points18(a["keypoints"]):
                frames = {im["id"]: im["file_name"] for im in images}
                raise DataError(
                    f"{_ann_where(source, i, a, frames)}: 'bbox_head' [x, y, w, h] is required on a labelled "
                    f"person (the head size normalises the PCKh distance; prediction files: validate with kind 'pred')"
                )


def zero_size_head_boxes(obj: dict) -> list[int]:
    """Positions of the annotations with keypoints whose head size is 0 (a ``bbox_head`` of zero
    width and height, or one too small to change x or y when added to them). The official
    evaluator divides by the head size, so every joint of such a person is unmatchable."""
    found = []
    for i, a in enumerate(obj.get("annotations", [])):
        box = a.get("bbox_head")
        if box is not None and _has_points18(a["keypoints"]):
            x, y, w, h = box
            dx, dy = (x + w) - x, (y + h) - y
            if dx * dx + dy * dy == 0:  # as the evaluator computes it (an underflow counts)
                found.append(i)
    return found


def describe_annotation(source: Any, obj: dict, i: int) -> str:
    """``source: annotation #i (id ..., image ... <file name>)`` plus its track id."""
    a = obj["annotations"][i]
    frames = {im["id"]: im["file_name"] for im in obj["images"]}
    where = _ann_where(source, i, a, frames)
    return where + (f" track {a['track_id']}" if "track_id" in a else "")


def _validate_annotation(source: Any, i: int, a: dict, frames: dict, kind: str) -> None:
    """Fast path: cheap checks first; the location text is only built for an error."""
    image_id, track_id = a.get("image_id"), a.get("track_id")
    scores = a.get("scores", [])
    if (
        type(image_id) is int
        and image_id in frames
        and type(track_id) is int
        and ("id" not in a or type(a["id"]) is int)
        and ("person_id" not in a or type(a["person_id"]) is int)
        and ("bbox" not in a or _box_ok(a["bbox"]))
        and ("bbox_head" not in a or _box_ok(a["bbox_head"]))
        and isinstance(scores, list)
        and (not scores or _finite_numbers(scores, kp.NUM_KEYPOINTS))
        and ("score" not in a or a["score"] is None or (_is_num(a["score"]) and math.isfinite(a["score"])))
    ):
        return
    where = _ann_where(source, i, a, frames)
    if not _is_int(image_id):
        raise DataError(f"{where}: 'image_id' must be an integer, got {_describe(image_id)}")
    if image_id not in frames:
        raise DataError(f"{where}: 'image_id' {image_id} is not the id of any frame in 'images'")
    if not _is_int(track_id):
        raise DataError(
            f"{where}: 'track_id' must be an integer, got {_describe(track_id)}"
            + (" (the official evaluator requires it on predictions)" if kind == "pred" else "")
        )
    for key in ("id", "person_id"):
        if key in a and not _is_int(a[key]):
            raise DataError(f"{where}: '{key}' must be an integer, got {_describe(a[key])}")
    for key in ("bbox", "bbox_head"):
        if key in a and not _finite_numbers(a[key], 4):
            raise DataError(f"{where}: '{key}' must be 4 finite numbers [x, y, w, h], got {_describe(a[key])}")
        if key in a and not _box_ok(a[key]):
            raise DataError(
                f"{where}: '{key}' [x, y, w, h] must have a width and height >= 0, got {_describe(a[key])}"
            )
    if not isinstance(scores, list) or (scores and not _finite_numbers(scores, kp.NUM_KEYPOINTS)):
        raise DataError(
            f"{where}: 'scores' must be empty or {kp.NUM_KEYPOINTS} finite numbers (one per keypoint), "
            f"got {_describe(scores)}"
        )
    raise DataError(f"{where}: 'score' must be a finite number, got {_describe(a['score'])}")


def _has_points18(values: list) -> bool:
    return any(not (values[k] == 0 and values[k + 1] == 0 and values[k + 2] == 0) for k in range(0, NUM_VALUES, 3))


def has_keypoints(ann: dict) -> bool:
    """The person has at least one annotated keypoint (one not (0, 0, 0), poseval's rule); False
    for a PoseTrack21 box-only person (a box, all keypoints zero)."""
    values = ann.get("keypoints")
    return isinstance(values, list) and len(values) == NUM_VALUES and _has_points18(values)


def unlabelled_frame_ids(obj: dict) -> set[int]:
    """Ids of the frames whose ``is_labeled`` flag is false (frames without the flag are not in
    it). PoseTrack21 puts box-only people on such frames: no pose is expected there."""
    return {im["id"] for im in obj["images"] if "is_labeled" in im and not im["is_labeled"]}


def _fill_ids(obj: Any) -> None:
    """PoseTrack21 spellings, in place, before validation: a frame without ``id`` takes its
    ``image_id`` (else ``frame_id``), a person without ``track_id`` its ``person_id``. Numbers are
    copied, never renumbered."""
    if not isinstance(obj, dict):
        return
    images, anns = obj.get("images"), obj.get("annotations")
    if isinstance(images, list) and not all(isinstance(im, dict) and "id" in im for im in images):
        for im in images:
            if isinstance(im, dict) and "id" not in im:
                for key in ("image_id", "frame_id"):
                    if key in im:
                        im["id"] = im[key]
                        break
    if isinstance(anns, list) and not all(isinstance(a, dict) and "track_id" in a for a in anns):
        for a in anns:
            if isinstance(a, dict) and "track_id" not in a and "person_id" in a:
                a["track_id"] = a["person_id"]


def validate_posetrack17(obj: Any, source: Any = "<data>", *, kind: str = "gt") -> None:
    """Raise DataError unless ``obj`` is a valid PoseTrack17 ``annolist`` sequence."""
    _check_kind(kind)
    if not isinstance(obj, dict) or not isinstance(obj.get("annolist"), list):
        raise DataError(f"{source}: 'annolist' must be a list of frames")
    for i, frame in enumerate(obj["annolist"]):
        if not isinstance(frame, dict):
            raise DataError(f"{source}: frame #{i}: expected an object, got {type(frame).__name__}")
        image = frame.get("image")
        name = _unwrap(image).get("name") if isinstance(_unwrap(image), dict) else None
        where = f"{source}: frame #{i}" + (f" ({name})" if name else "")
        if not isinstance(name, str) or not name:
            raise DataError(f"{where}: 'image' must be [{{\"name\": <file name>}}], got {_describe(image)}")
        regions = frame.get("ignore_regions", [])
        if not isinstance(regions, list):
            raise DataError(f"{where}: 'ignore_regions' must be a list of polygons, got {_describe(regions)}")
        for r, reg in enumerate(regions):
            pts = reg.get("point") if isinstance(reg, dict) else None
            if not isinstance(pts, list) or not all(
                isinstance(p, dict) and _is_finite(_unwrap(p.get("x"))) and _is_finite(_unwrap(p.get("y")))
                for p in pts
            ):
                raise DataError(f"{where}: ignore region {r}: 'point' must be a list of {{x: [num], y: [num]}}")
        rects = frame.get("annorect", [])
        if not isinstance(rects, list):
            raise DataError(f"{where}: 'annorect' must be a list of people, got {_describe(rects)}")
        for r, rect in enumerate(rects):
            _validate_rect17(f"{where}: person #{r}", rect, kind)


def _is_finite(v: Any) -> bool:
    return _is_num(v) and bool(np.isfinite(v))


def _points17(rect: dict) -> list:
    ap = rect.get("annopoints")
    if not ap:
        return []
    ap = ap[0] if isinstance(ap, list) else ap
    return ap.get("point", []) if isinstance(ap, dict) else None  # type: ignore[return-value]


def _validate_rect17(where: str, rect: Any, kind: str) -> None:
    if not isinstance(rect, dict):
        raise DataError(f"{where}: expected an object, got {type(rect).__name__}")
    track = _unwrap(rect.get("track_id"))
    if "track_id" in rect or kind == "pred":
        if not _is_int(track):
            raise DataError(f"{where}: 'track_id' must be [integer], got {_describe(rect.get('track_id'))}")
    points = _points17(rect)
    if not isinstance(points, list):
        raise DataError(f"{where}: 'annopoints' must be [{{\"point\": [...]}}], got {_describe(rect.get('annopoints'))}")
    seen = set()
    for p, pt in enumerate(points):
        if not isinstance(pt, dict):
            raise DataError(f"{where}: point #{p}: expected an object, got {type(pt).__name__}")
        pid = _unwrap(pt.get("id"))
        if not _is_int(pid) or not 0 <= pid < len(kp.POSETRACK15_NAMES):
            raise DataError(f"{where}: point #{p}: 'id' must be a joint id 0..14, got {_describe(pt.get('id'))}")
        if pid in seen:
            raise DataError(f"{where}: point #{p}: joint id {pid} ({kp.POSETRACK15_NAMES[pid]}) appears twice")
        seen.add(pid)
        for key in ("x", "y"):
            if not _is_finite(_unwrap(pt.get(key))):
                raise DataError(
                    f"{where}: point #{p} ({kp.POSETRACK15_NAMES[pid]}): '{key}' must be a finite number, "
                    f"got {_describe(pt.get(key))}"
                )
        for key in ("score", "is_visible"):
            if key in pt and not _is_finite(_unwrap(pt[key])):
                raise DataError(
                    f"{where}: point #{p} ({kp.POSETRACK15_NAMES[pid]}): '{key}' must be a finite number, "
                    f"got {_describe(pt[key])}"
                )
    box = [_unwrap(rect.get(k)) for k in ("x1", "y1", "x2", "y2")]
    if any(k in rect for k in ("x1", "y1", "x2", "y2")) or (kind == "gt" and points):
        if not all(_is_finite(v) for v in box):
            raise DataError(f"{where}: head box 'x1', 'y1', 'x2', 'y2' must be finite numbers, got {_describe(box)}")
    if "score" in rect and not _is_finite(_unwrap(rect["score"])):
        raise DataError(f"{where}: 'score' must be a finite number, got {_describe(rect['score'])}")


# --------------------------------------------------------------------------------------------
# conversion


def _annotations_by_image(obj: dict) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {im["id"]: [] for im in obj["images"]}
    for a in obj.get("annotations", []):
        out.setdefault(a["image_id"], []).append(a)
    return out


def _imgnum(file_name: str, fallback: int) -> int:
    stem = os.path.basename(file_name).split(".")[0].split("_")[0]
    return int(stem) + 1 if stem.isdigit() else fallback


def posetrack18_to_17(obj: dict) -> dict:
    """PoseTrack18/21 dict -> PoseTrack17 ``annolist`` dict, as poseval's converter writes it.

    The 17 keypoints become the 15 PoseTrack joints (ears dropped; absent = (0, 0, 0) skipped),
    ``bbox_head`` [x, y, w, h] becomes ``x1, y1, x2, y2``, ignore regions become ``point`` lists,
    per-joint ``scores`` become each point's ``score`` and the person ``score`` is kept when truthy.
    ``is_labeled`` is the frame's flag (whether it has people, as poseval writes it, when the frame
    has none). PoseTrack17 has no field for ``person_id`` or a person's body box: a box-only
    person becomes a person without points.
    """
    by_image = _annotations_by_image(obj)
    annolist = []
    for index, im in enumerate(obj["images"]):
        entry: dict[str, Any] = {"image": [{"name": im["file_name"]}], "imgnum": [_imgnum(im["file_name"], index + 1)]}
        regions_x, regions_y = im.get("ignore_regions_x"), im.get("ignore_regions_y")
        if regions_x:
            entry["ignore_regions"] = [
                {"point": [{"x": [x], "y": [y]} for x, y in zip(px, py)]} for px, py in zip(regions_x, regions_y)
            ]
        people = by_image.get(im["id"], [])
        entry["annorect"] = [_person18_to_17(a) for a in people]
        entry["is_labeled"] = [1 if im.get("is_labeled", bool(people)) else 0]
        annolist.append(entry)
    return {"annolist": annolist}


def _person18_to_17(a: dict) -> dict:
    values = a["keypoints"]
    scores = a.get("scores") or None
    points = []
    for c in range(kp.NUM_KEYPOINTS):
        if c not in _PT17_TO_15:
            continue
        x, y, v = values[3 * c : 3 * c + 3]
        if x == 0 and y == 0 and v == 0:
            continue
        point: dict[str, Any] = {"id": [_PT17_TO_15[c]], "x": [x], "y": [y]}
        if scores is not None:
            point["score"] = [scores[c]]
        point["is_visible"] = [v]
        points.append(point)
    rect: dict[str, Any] = {"track_id": [a["track_id"]], "annopoints": [{"point": points}]}
    if "bbox_head" in a:
        x, y, w, h = a["bbox_head"]
        rect.update(x1=[x], x2=[x + w], y1=[y], y2=[y + h])
    if a.get("score"):
        rect["score"] = [a["score"]]
    return rect


_SEQ_DIGITS = re.compile(r"^(\d+)")


_SEQ_TYPES = {"mpii": 1, "bonn": 2, "mpiinew": 3}  # poseval's posetrack18_fname2id


def _image_id17(file_name: str, index: int) -> int:
    """PoseTrack18 image id ``TVVVVVVFFFF`` as poseval's ``posetrack18_fname2id`` derives it from
    the path: T the source (1 mpii, 2 bonn, 3 mpiinew; 1 for another name), V the video number, F
    the frame number of the file name (``000012.jpg``, PoseTrack17's ``00000012.jpg`` or
    ``00000012_x.jpg``); ``index`` when the path has no such numbers."""
    seq = os.path.basename(os.path.dirname(file_name))
    frame = os.path.basename(file_name).split(".")[0].split("_")[0]
    m = _SEQ_DIGITS.match(seq)
    if m and frame.isdigit() and int(frame) < 10000 and int(m.group(1)) < 1000000:
        source = _SEQ_TYPES.get(seq.split("_")[1] if "_" in seq else "", 1)
        return source * 10**10 + int(m.group(1)) * 10**4 + int(frame)
    return index


def posetrack17_to_18(obj: dict) -> dict:
    """PoseTrack17 ``annolist`` dict -> PoseTrack18 dict.

    Points go to their COCO slot with ``v`` = ``is_visible`` (1 when absent), ears and missing
    joints are (0, 0, 0); per-point ``score`` fills ``scores`` (0 for missing joints, -9999 for a
    present point without a score, which is what poseval scores it; empty when no point has
    one); head box x1..y2 -> ``bbox_head`` [x, y, w, h]; ``bbox`` is derived from the
    points (poseval's rule: their extent enlarged 1.3x around the centre).
    """
    images, anns = [], []
    frames = obj["annolist"]
    ids = [_image_id17(_unwrap(f["image"])["name"], i) for i, f in enumerate(frames)]
    if len(set(ids)) != len(ids):
        ids = list(range(len(frames)))
    for index, (frame, image_id) in enumerate(zip(frames, ids)):
        name = _unwrap(frame["image"])["name"]
        seq = os.path.basename(os.path.dirname(name))
        rects = frame.get("annorect", []) or []
        labelled = _unwrap(frame.get("is_labeled", [1 if rects else 0]))
        image: dict[str, Any] = {
            "id": image_id,
            "file_name": name,
            "frame_id": image_id,
            "vid_id": seq.split("_")[0],
            "nframes": len(frames),
            "is_labeled": bool(labelled),
        }
        regions = frame.get("ignore_regions") or []
        if regions:
            image["ignore_regions_x"] = [[_unwrap(p["x"]) for p in r["point"]] for r in regions]
            image["ignore_regions_y"] = [[_unwrap(p["y"]) for p in r["point"]] for r in regions]
        images.append(image)
        for r, rect in enumerate(rects):
            person = _person17_to_18(rect)
            person["image_id"] = image_id
            person["id"] = image_id * 100 + r
            anns.append(person)
    return {
        "images": images,
        "annotations": anns,
        "categories": [
            {
                "supercategory": "person",
                "id": 1,
                "name": "person",
                "keypoints": list(kp.KEYPOINT_NAMES),
                "skeleton": [list(pair) for pair in kp.SKELETON_1BASED],
            }
        ],
    }


def _person17_to_18(rect: dict) -> dict:
    values = [0.0] * NUM_VALUES
    scores = [0.0] * kp.NUM_KEYPOINTS  # absent joints
    any_score = False
    xs, ys = [], []
    for pt in _points17(rect) or []:
        c = _PT15_TO_17[_unwrap(pt["id"])]
        x, y = _unwrap(pt["x"]), _unwrap(pt["y"])
        v = _unwrap(pt["is_visible"]) if "is_visible" in pt else 1
        values[3 * c : 3 * c + 3] = [x, y, v]
        xs.append(x)
        ys.append(y)
        if "score" in pt:
            scores[c] = _unwrap(pt["score"])
            any_score = True
        else:
            scores[c] = MISSING_SCORE
    person: dict[str, Any] = {
        "track_id": _unwrap(rect.get("track_id", 0)),
        "category_id": 1,
        "keypoints": values,
        "scores": scores if any_score else [],
        "num_keypoints": len(xs),
    }
    if all(k in rect for k in ("x1", "y1", "x2", "y2")):
        x1, y1, x2, y2 = (_unwrap(rect[k]) for k in ("x1", "y1", "x2", "y2"))
        person["bbox_head"] = [x1, y1, x2 - x1, y2 - y1]
    if xs:
        cx, cy = (max(xs) + min(xs)) / 2.0, (max(ys) + min(ys)) / 2.0
        ex, ey = (max(xs) - min(xs)) * 0.65, (max(ys) - min(ys)) * 0.65
        person["bbox"] = [cx - ex, cy - ey, 2 * ex, 2 * ey]
    if "score" in rect:
        person["score"] = _unwrap(rect["score"])
    return person


# --------------------------------------------------------------------------------------------
# files


def load_sequence(path: str | os.PathLike, *, kind: str = "gt") -> dict:
    """Read one sequence file in either format and return the validated PoseTrack18 dict.

    NaN/Infinity tokens are parsed so that the validator can name the frame and field that holds
    them (they are still rejected).

    Files are parsed with orjson when it is installed (it comes with DVC; 3 to 5 times faster than
    the standard library on these float-heavy files, and it reads every number to the same
    value). A file it declines (NaN or Infinity tokens, malformed JSON) or whose reading fails
    validation (orjson reads an integer beyond 64 bits as a float, so an id that large fails) is
    read again with the standard library, so errors are exactly those of
    :func:`diffpose.io.read_json` followed by validation.
    """
    path = Path(path)
    obj = _fast_json(path)
    if obj is not None:
        try:
            return _checked_sequence(obj, path, kind)
        except DataError:
            pass  # explained below, on the standard library's reading of the file
    return _checked_sequence(read_json(path, allow_nan=True), path, kind)


def _fast_json(path: Path) -> Any:
    """The file parsed by orjson, or None when orjson is absent or declines it."""
    try:
        import orjson
    except ImportError:
        return None
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None


def _checked_sequence(obj: Any, path: Path, kind: str) -> dict:
    fmt = detect_format(obj, path)
    if fmt == "18":
        _fill_ids(obj)
    if fmt == "17":
        validate_posetrack17(obj, path, kind=kind)
        obj = posetrack17_to_18(obj)
    validate_posetrack18(obj, path, kind=kind)
    return obj


def write_sequence(path: str | os.PathLike, obj: dict, fmt: str = "18") -> None:
    """Write a PoseTrack18 dict atomically, as PoseTrack18 (``fmt="18"``) or PoseTrack17 (``"17"``)."""
    import json

    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    out = posetrack18_to_17(obj) if fmt == "17" else obj
    with atomic_open(path, "w", encoding="utf-8") as fh:
        json.dump(out, fh, allow_nan=False, separators=(",", ":"))
        fh.write("\n")


def sequence_files(paths: list[str | os.PathLike] | str | os.PathLike) -> list[Path]:
    """Expand files and folders into the sorted list of ``*.json`` sequence files they name."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.glob("*.json") if q.is_file()))
        elif p.exists():
            out.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    return out
