"""COCO keypoint AP (OKS) through pycocotools, reported beside the PoseTrack mAP.

This is a *different* metric from the PoseTrack mAP: OKS similarity with per-keypoint sigmas
(``keypoints.OKS_SIGMAS``) scaled by the person's area, no head-size normalisation, no ignore
regions, COCO's matching and 101-point interpolated AP averaged over OKS thresholds 0.50:0.95.
Its keys (``coco_AP``, ``coco_AP50``, ...) live in a separate ``coco`` object of the metrics file.

Conventions: the same frames as the PoseTrack evaluation (GT frames with people); all 17
keypoints, a GT keypoint counts when v > 0 (ears are never labelled); GT ``area`` = bbox w x h
(PoseTrack18 has no ``area``; without ``bbox`` the keypoints' extent is used); a prediction's score
is its ``score`` when present, else the mean of its positive joint ``scores``, else 1.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np

from diffpose.data import keypoints as kp
from diffpose.evaluation.posetrack_map import SequencePair, evaluated_frames, same_image_ids

COCO_KEYS = ("coco_AP", "coco_AP50", "coco_AP75", "coco_AP_M", "coco_AP_L",
             "coco_AR", "coco_AR50", "coco_AR75", "coco_AR_M", "coco_AR_L")


def _gt_box(a: dict) -> list[float]:
    if "bbox" in a:
        return [float(v) for v in a["bbox"]]
    pts = np.array(a["keypoints"], dtype=np.float64).reshape(-1, 3)
    pts = pts[pts[:, 2] > 0]
    if len(pts) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    x0, y0 = pts[:, :2].min(axis=0)
    x1, y1 = pts[:, :2].max(axis=0)
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def _pred_score(a: dict) -> float:
    if a.get("score") is not None:
        return float(a["score"])
    scores = [s for s in a.get("scores") or [] if s > 0]
    return float(np.mean(scores)) if scores else 1.0


def build_coco(pairs: list[SequencePair], subset: str = "all") -> tuple[dict, list[dict]]:
    """(COCO GT dataset dict, COCO results list) with image ids renumbered 1..F across sequences."""
    images, gts, dets = [], [], []
    for pair in pairs:
        positions = evaluated_frames(pair.gt, subset)
        by_id = same_image_ids(pair.gt, pair.pred)  # else paired by position
        gt_ids, pred_ids = {}, {}
        for p in positions:
            image_id = len(images) + 1
            im = pair.gt["images"][p]
            images.append({"id": image_id, "file_name": im["file_name"],
                           "width": im.get("width", 0), "height": im.get("height", 0)})
            gt_ids[im["id"]] = image_id
            pred_ids[im["id"] if by_id else pair.pred["images"][p]["id"]] = image_id
        for a in pair.gt.get("annotations", []):
            if a["image_id"] not in gt_ids:
                continue
            box = _gt_box(a)
            vis = np.array(a["keypoints"], dtype=np.float64).reshape(-1, 3)[:, 2]
            gts.append({
                "id": len(gts) + 1, "image_id": gt_ids[a["image_id"]], "category_id": 1,
                "keypoints": [float(v) for v in a["keypoints"]], "num_keypoints": int((vis > 0).sum()),
                "bbox": box, "area": box[2] * box[3], "iscrowd": 0,
            })
        for a in pair.pred.get("annotations", []):
            if a["image_id"] not in pred_ids:
                continue
            dets.append({
                "image_id": pred_ids[a["image_id"]], "category_id": 1,
                "keypoints": [float(v) for v in a["keypoints"]], "score": _pred_score(a),
            })
    dataset = {"images": images, "annotations": gts,
               "categories": [{"id": 1, "name": "person", "keypoints": list(kp.KEYPOINT_NAMES),
                               "skeleton": [list(p) for p in kp.SKELETON_1BASED]}]}
    return dataset, dets


def coco_keypoint_ap(pairs: list[SequencePair], *, subset: str = "all") -> dict[str, float]:
    """COCO keypoint AP/AR in percent under the keys of ``COCO_KEYS``. pycocotools' -1 ("no GT
    person in this area range") becomes NaN (null in JSON) rather than a misleading -100."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dataset, dets = build_coco(pairs, subset)
    if not dets or not dataset["annotations"]:
        return {k: 0.0 for k in COCO_KEYS}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(kp.OKS_SIGMAS, dtype=np.float64)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: (float(v) * 100.0 if v >= 0 else float("nan")) for k, v in zip(COCO_KEYS, ev.stats)}
