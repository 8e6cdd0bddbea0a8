"""The same DAG on real PoseTrack18 files: the fixture in ../shared/fixtures/posetrack18 (real frames
of three val sequences, their real annotations and a real detections file) registered, then
`dvc repro tables report` with params `dataset` pointing at it and the precomputed boxes: a small
model trained on those sequences, inference on GT and on the detections, evaluation, tables.
Neither the synthetic benchmark nor its detector is built on the way."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from diffpose.sweep import cells
from tests.pipeline_copy import make_copy, run, tool_env

pytestmark = pytest.mark.slow  # a dvc repro of the real-data chain (about a minute)


@pytest.fixture(scope="module")
def real(posetrack18_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    fixture = posetrack18_dir.resolve()
    detections = fixture / "annotations" / "test_posetrack18_human_detections.json"
    overrides = {
        "dataset": {"name": "posetrack18", "train": str(fixture / "annotations" / "val"),
                    "val": str(fixture / "annotations" / "val"), "images": str(fixture)},
        "detect": {"backend": "precomputed", "input": str(detections),
                   "precomputed": {"boxes": str(detections), "ignore_unmatched": False},
                   "fill_gaps": {"enabled": False}},
        "sweep": {"models": ["diffpose"], "steps": [2], "ensemble": [1], "flip_test": [False]},
    }
    root = make_copy(tmp_path_factory.mktemp("real"), overrides=overrides)
    env = dict(tool_env(), DIFFPOSE_TRACKING="off")
    registered = run(["diffpose", "register", "--dataset", "posetrack18", "--root", str(fixture), "--splits", "val",
                      "--out", "data/registered/posetrack18.json", "--no-progress"], root, env)
    out = run(["dvc", "repro", "tables", "report"], root, env, timeout=1500).stdout
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage '")}
    return root, fixture, ran, registered


def _json(path: Path):
    return json.loads(path.read_text())


def test_register_records_the_copy_without_copying_it(real):
    root, fixture, _, _ = real
    record = _json(root / "data" / "registered" / "posetrack18.json")
    text = json.dumps(record)
    assert "posetrack18" in text and str(fixture) in text
    assert not (root / "data" / "registered" / "images").exists()


def test_the_real_chain_runs_without_the_synthetic_data_or_detector(real):
    root, _, ran, _ = real
    params = __import__("yaml").safe_load((root / "params.yaml").read_text())
    want = {"detect", "tables", "report"} | {f"train@{m}-0" for m in params["models"]}
    want |= {c.stage for c in cells(params)}
    assert ran == want, ran
    assert not (root / "data" / "synth").exists() and not (root / "models" / "detector" / "detector.pt").exists()


def test_predictions_keep_the_gt_image_ids_and_evaluate(real):
    root, fixture, _, _ = real
    for seq in sorted((fixture / "annotations" / "val").glob("*.json")):
        gt_ids = {img["id"] for img in _json(seq)["images"]}
        for family in ("infer", "infer_detected"):
            pred = _json(root / "results" / family / "diffpose" / "seed0" / "predictions" / seq.name)
            assert {img["id"] for img in pred["images"]} == gt_ids
            tracks = [(a["image_id"], a["track_id"]) for a in pred["annotations"]]
            assert len(tracks) == len(set(tracks))  # track ids unique within a frame
    for family in ("infer", "infer_detected"):
        metrics = _json(root / "results" / family / "diffpose" / "seed0" / "metrics.json")
        assert 0.0 <= metrics["Total"] <= 100.0 and metrics["run"]["data_version"]
    box = _json(root / "results" / "detect" / "val_box_ap.json")
    assert box["backend"] == "precomputed" and box["detections"] > 0


def test_the_tables_name_posetrack18_beside_the_papers_rows(real):
    root, _, _, _ = real
    table = pd.read_csv(root / "results" / "tables" / "per_joint.csv")
    own = table[table["source"] == "this run"]
    assert set(own["dataset"]) == {"PoseTrack2018 val"} and set(own["protocol"]) == {"poseval"}
    assert set(own["boxes"]) == {"gt", "detected"}
    assert "PoseTrack2018 val" in set(table.loc[table["source"] != "this run", "dataset"])
    assert (root / "results" / "report.html").stat().st_size > 10_000
