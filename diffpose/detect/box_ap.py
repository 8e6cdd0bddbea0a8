"""Box AP of person detections against a split's PoseTrack18 ground truth (pycocotools).

Scored on labelled frames only. PoseTrack marks unlabelled people in two ways, and both are
given to COCOeval as ``iscrowd`` regions, so a detection on them is neither a true nor a false
positive and missing them costs nothing:
- ignore polygons (``ignore_regions_x/y``): as their bounding box; COCOeval ignores a detection
  whose area lies mostly inside it (intersection over the detection's area >= the IoU threshold);
- annotated people with no labelled keypoint.
A detection that overlaps a labelled person is always matched to the person first.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable

import numpy as np

from diffpose.detect.base import iou_matrix
from diffpose.detect.frames import FrameTruth


def _ground_truth(truth: dict[int, FrameTruth]) -> dict:
    images, annotations = [], []
    for image_id, frame in sorted(truth.items()):
        images.append({"id": image_id})
        crowd = [(box, bool(ig)) for box, ig in zip(frame.boxes.tolist(), frame.ignore)]
        for polygon in frame.regions:
            x0, y0 = polygon.min(axis=0)
            x1, y1 = polygon.max(axis=0)
            if x1 > x0 and y1 > y0:
                crowd.append(([float(x0), float(y0), float(x1 - x0), float(y1 - y0)], True))
        for box, is_crowd in crowd:
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "bbox": box,
                "area": box[2] * box[3], "iscrowd": int(is_crowd),
            })
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}


def recall_at(detections: Iterable[dict], truth: dict[int, FrameTruth], iou: float = 0.5) -> tuple[int, int]:
    """(matched, total) labelled people covered by some detection with IoU >= ``iou``
    (any score, no one-to-one matching): how many people a pose estimator could reach."""
    by_image: dict[int, list[list[float]]] = {}
    for det in detections:
        by_image.setdefault(int(det["image_id"]), []).append(det["bbox"])
    matched = total = 0
    for image_id, frame in truth.items():
        people = frame.boxes[~frame.ignore]
        total += len(people)
        dets = by_image.get(image_id)
        if len(people) and dets:
            matched += int((iou_matrix(people, np.asarray(dets)).max(axis=1) >= iou).sum())
    return matched, total


def box_ap(detections: list[dict], truth: dict[int, FrameTruth]) -> dict[str, float | int]:
    """COCO box AP (IoU .50:.95), AP50, AP75, AR@100 and recall@0.5 on the labelled frames.

    ``detections``: COCO results (``image_id``, ``bbox`` x, y, w, h, ``score``); those on frames
    without labels are left out. With no labelled person the AP keys are absent.
    """
    scored = [d for d in detections if int(d["image_id"]) in truth]
    matched, total = recall_at(scored, truth)
    metrics: dict[str, float | int] = {
        "labelled_frames": len(truth), "gt_persons": total, "detections_scored": len(scored),
    }
    if total == 0:
        return metrics
    metrics["recall50"] = matched / total
    if not scored:
        metrics.update({"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "AR100": 0.0})
        return metrics
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = _ground_truth(truth)
        gt.createIndex()
        dt = gt.loadRes([
            {"image_id": int(d["image_id"]), "category_id": 1, "bbox": [float(v) for v in d["bbox"]],
             "score": float(d["score"])}
            for d in scored
        ])
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.catIds = [1]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [max(float(s), 0.0) for s in ev.stats]  # -1 = undefined (no GT in a size range)
    metrics.update({"AP": stats[0], "AP50": stats[1], "AP75": stats[2], "AR100": stats[8]})
    return metrics
