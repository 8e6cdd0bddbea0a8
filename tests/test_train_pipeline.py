"""train -> infer -> evaluate through `dvc repro` on the tiny preset: outputs, metrics, and a
changed `infer.steps` re-running only infer and evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.pipeline_copy import make_copy, run, tool_env

STAGES = ["evaluate@diffpose", "evaluate@baseline", "evaluate_detected@diffpose"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> tuple[Path, dict]:
    root = make_copy(tmp_path_factory.mktemp("repo"))
    env = dict(tool_env(), DIFFPOSE_TRACKING="off")  # MLflow is covered by test_train and test_pipeline
    run(["dvc", "repro", *STAGES], root, env)
    return root, env


def test_repro_trains_both_models_and_evaluates_them(repo):
    root, _ = repo
    for name in ("diffpose", "baseline"):
        assert (root / "models" / name / "model.pt").exists()
        train = json.loads((root / "models" / name / "metrics.json").read_text())
        assert train["model"] == name and train["epochs"] == 1
        assert (root / "models" / name / "last.pt").exists()
        preds = sorted(p.name for p in (root / "results" / "predictions" / name).glob("*.json"))
        gts = sorted(p.name for p in (root / "data" / "synth" / "annotations" / "val").glob("*.json"))
        assert preds == gts
        metrics = json.loads((root / "results" / "metrics" / f"{name}.json").read_text())
        assert "Total" in json.dumps(metrics)
        assert (root / "results" / "metrics" / f"{name}_degraded.json").exists()


def test_repro_detects_people_and_evaluates_on_detected_boxes(repo):
    root, _ = repo
    detections = json.loads((root / "results" / "detect" / "val_detections.json").read_text())
    assert isinstance(detections, list)  # a 100-step tiny detector may find (almost) nobody
    assert all({"image_id", "file_name", "bbox", "score", "category_id"} <= set(d) for d in detections)
    box_ap = json.loads((root / "results" / "detect" / "val_box_ap.json").read_text())["box_ap"]
    assert box_ap["gt_persons"] > 0 and 0.0 <= box_ap["AP50"] <= 1.0
    preds = sorted(p.name for p in (root / "results" / "predictions_detected" / "diffpose").glob("*.json"))
    gts = sorted(p.name for p in (root / "data" / "synth" / "annotations" / "val").glob("*.json"))
    assert preds == gts
    metrics = json.loads((root / "results" / "metrics" / "diffpose_detected.json").read_text())
    assert set(metrics) >= {"Head", "Total", "per_joint", "coco"}


def test_changing_infer_steps_reruns_only_infer_and_evaluate(repo):
    root, env = repo
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["infer"]["steps"] = 2
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(["dvc", "repro", *STAGES], root, env).stdout
    assert "Running stage 'infer@diffpose'" in out and "Running stage 'evaluate@diffpose'" in out
    assert "Running stage 'train@diffpose'" not in out and "Running stage 'train@baseline'" not in out
