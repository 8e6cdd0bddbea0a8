"""Property-based checks of the PoseTrack mAP on generated sequences (small example counts)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diffpose.data import keypoints as kp
from diffpose.data.posetrack import validate_posetrack18
from diffpose.evaluation import posetrack_map as pm

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
LABELLED = np.flatnonzero(kp.LABELLED_IN_POSETRACK18)


def make_gt(rng: np.random.Generator, n_frames: int, max_people: int, polygons: bool) -> dict:
    """People are 1000 px apart, so no prediction can be near two of them (no pck ties)."""
    images, anns = [], []
    for f in range(n_frames):
        image = {"id": 100 + f, "file_name": f"images/val/seq/{f:06d}.jpg"}
        if polygons:
            cx, cy = rng.uniform(0, 3000), rng.uniform(0, 400)
            image["ignore_regions_x"] = [[cx, cx + 300, cx + 150]]
            image["ignore_regions_y"] = [[cy, cy, cy + 250]]
        images.append(image)
        for p in range(int(rng.integers(1, max_people + 1))):
            kps = np.zeros((kp.NUM_KEYPOINTS, 3))
            kps[LABELLED, 0] = 1000 * p + rng.uniform(10, 400, len(LABELLED))
            kps[LABELLED, 1] = rng.uniform(10, 400, len(LABELLED))
            kps[LABELLED, 2] = 1
            if p > 0:  # the first person of every frame has all 15 joints, the others a random subset
                kps[rng.random(kp.NUM_KEYPOINTS) < 0.3] = 0
            anns.append({
                "id": len(anns), "image_id": image["id"], "track_id": p, "keypoints": kps.ravel().tolist(),
                "bbox_head": [1000 * p, 0.0, float(rng.uniform(20, 80)), float(rng.uniform(20, 80))], "scores": [],
            })
    obj = {"images": images, "annotations": anns}
    validate_posetrack18(obj, "generated")
    return obj


def make_pred(rng: np.random.Generator, gt: dict, noise: float) -> dict:
    """One noisy copy per GT person, some joints dropped, distinct joint scores (no ties)."""
    anns = []
    n = len(gt["annotations"])
    scores = rng.permutation(np.linspace(0.2, 1.0, n * kp.NUM_KEYPOINTS)).reshape(n, kp.NUM_KEYPOINTS)
    for i, a in enumerate(gt["annotations"]):
        kps = np.array(a["keypoints"]).reshape(-1, 3)
        present = ~(kps == 0).all(axis=1)
        kps[present, :2] += rng.normal(0, noise, (present.sum(), 2))
        kps[rng.random(kp.NUM_KEYPOINTS) < 0.15] = 0
        anns.append({"image_id": a["image_id"], "track_id": a["track_id"], "keypoints": kps.ravel().tolist(),
                     "scores": scores[i].tolist()})
    return {"images": [{"id": im["id"], "file_name": im["file_name"]} for im in gt["images"]], "annotations": anns}


def run(gt: dict, pred: dict) -> pm.PoseTrackResult:
    return pm.evaluate_pairs([pm.SequencePair("seq", Path("gt.json"), Path("pred.json"), gt, pred)])


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n_frames=st.integers(1, 4), max_people=st.integers(1, 4), polygons=st.booleans())
def test_ground_truth_as_prediction_scores_100(seed, n_frames, max_people, polygons):
    gt = make_gt(np.random.default_rng(seed), n_frames, max_people, polygons)
    result = run(gt, copy.deepcopy(gt))  # no scores at all: every joint scores -9999
    data = pm.apply_ignore_regions(pm.prepare([pm.SequencePair("s", Path("a"), Path("b"), gt, gt)]))
    annotated = data.gt.has.any(axis=0)
    assert np.all(result.ap[annotated] == 100.0)
    assert np.all(result.ap[~annotated] == 0.0)  # no GT, no prediction: poseval's 0
    # Total is the mean over the 15 joints: 100 where there is GT, poseval's 0 where there is none
    assert result.table()["Total"] == pytest.approx(100.0 * annotated.mean(), abs=1e-9)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n_frames=st.integers(1, 4), max_people=st.integers(2, 5))
def test_person_order_does_not_matter_without_ties(seed, n_frames, max_people):
    rng = np.random.default_rng(seed)
    gt = make_gt(rng, n_frames, max_people, polygons=True)
    pred = make_pred(rng, gt, noise=6.0)
    before = run(gt, pred)
    shuffled_gt, shuffled_pred = copy.deepcopy(gt), copy.deepcopy(pred)
    rng.shuffle(shuffled_gt["annotations"])
    rng.shuffle(shuffled_pred["annotations"])
    after = run(shuffled_gt, shuffled_pred)
    np.testing.assert_allclose(after.ap, before.ap, rtol=0, atol=1e-9, equal_nan=True)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n_frames=st.integers(1, 4), max_people=st.integers(1, 4),
       n_fp=st.integers(1, 3))
def test_low_score_false_positive_never_raises_ap(seed, n_frames, max_people, n_fp):
    rng = np.random.default_rng(seed)
    gt = make_gt(rng, n_frames, max_people, polygons=False)
    pred = make_pred(rng, gt, noise=8.0)
    before = run(gt, pred)
    lowest = min(min(a["scores"]) for a in pred["annotations"])
    worse = copy.deepcopy(pred)
    for _ in range(n_fp):
        im = worse["images"][int(rng.integers(len(worse["images"])))]
        kps = np.zeros((kp.NUM_KEYPOINTS, 3))
        kps[LABELLED, 0] = rng.uniform(20000, 21000, len(LABELLED))  # far from every GT person
        kps[LABELLED, 1] = rng.uniform(0, 400, len(LABELLED))
        kps[LABELLED, 2] = 1
        worse["annotations"].append({"image_id": im["id"], "track_id": 99, "keypoints": kps.ravel().tolist(),
                                     "scores": (lowest * rng.uniform(0.1, 0.9, kp.NUM_KEYPOINTS)).tolist()})
    after = run(gt, worse)
    assert np.all(after.ap <= before.ap + 1e-9)
    assert after.table()["Total"] <= before.table()["Total"] + 1e-9
