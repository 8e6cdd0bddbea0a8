"""A results tree as `dvc repro` leaves it, with numbers that can be checked by hand, for the tests of
the tables stage and of the README block (no training, no inference: a few small JSON files).

Every cell of ``cells(params)`` gets infer.json, metrics.json and metrics_degraded.json whose Total is
:func:`total` (a sum of one term per setting); the joint groups are Total + 0, 1, ... 6.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

from diffpose.report.tables import COLUMNS
from diffpose.sweep import Cell, cells

PARAMS: dict[str, Any] = {
    "synth": {"preset": "demo", "seed": 0},
    "models": {"diffpose": {"preset": "demo_diffpose"}, "baseline": {"preset": "demo_baseline"}},
    "train": {"seeds": [0]},
    "infer": {"steps": 1, "ensemble": 1, "flip_test": True},
    "sweep": {"models": ["diffpose"], "steps": [1, 2, 4], "ensemble": [1, 4], "flip_test": [False]},
}
MODEL_BASE = {"diffpose": 40.0, "baseline": 30.0}  # any other model: 35
SEED_OFFSET = {0: 0.0, 1: 2.0}  # two seeds: mean +1.0, sample std sqrt(2)
COMMIT = "0123456789abcdef0123456789abcdef01234567"
DATA_VERSION = "d" * 64
CLIPS_PER_SECOND = {0: 100.0, 1: 120.0}  # training speed per seed


def params(**changes: Any) -> dict[str, Any]:
    """PARAMS with top-level sections replaced by ``changes``."""
    out = copy.deepcopy(PARAMS)
    out.update(copy.deepcopy(changes))
    return out


def total(cell: Cell, frames: str) -> float:
    """model base + steps + K / 2, less 2 without flip test, 5 on detected boxes, 3 on the degraded
    subset, plus the seed's offset."""
    return (MODEL_BASE.get(cell.model, 35.0) + cell.steps + 0.5 * cell.ensemble
            - (0.0 if cell.flip_test else 2.0) - (0.0 if cell.boxes == "gt" else 5.0)
            - (0.0 if frames == "all" else 3.0) + SEED_OFFSET[cell.seed])


def run_id(*parts: Any) -> str:
    return hashlib.md5(" ".join(map(str, parts)).encode()).hexdigest()


def metrics(cell: Cell, frames: str) -> dict[str, Any]:
    value = total(cell, frames)
    joints = {c: value + i for i, c in enumerate(COLUMNS[:-1])}
    return {**joints, "Total": value, "per_joint": {},
            "run": {"mlflow_run_id": run_id("evaluate", cell.stage, frames), "git_commit": COMMIT,
                    "data_version": DATA_VERSION}}


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def write_cell(root: Path, cell: Cell) -> None:
    _write(root / cell.record, {
        "model": cell.model, "seed": cell.seed, "boxes": cell.boxes, "steps": cell.steps,
        "ensemble": cell.ensemble, "flip_test": cell.flip_test, "person_clips": 556, "seconds": 5.0,
        "person_clips_per_second": 556 / (5.0 * cell.steps * cell.ensemble),
        "mlflow_run_id": run_id("infer", cell.stage), "git_commit": COMMIT, "data_version": DATA_VERSION})
    _write(root / cell.metrics, metrics(cell, "all"))
    _write(root / cell.metrics_degraded, metrics(cell, "degraded"))


def write_training(root: Path, model: str, seed: int, history: bool = True) -> None:
    folder = root / "models" / model / f"seed{seed}"
    _write(folder / "metrics.json", {
        "model": model, "epochs": 3, "final_loss": 0.05, "train_seconds_this_run": 66.65,
        "clips_per_second": CLIPS_PER_SECOND[seed], "training_clips": 6665, "world_size": 1,
        "resumed_after_epoch": 0, "data_version": DATA_VERSION,
        "mlflow_run_id": run_id("train", model, seed)})
    if history:
        _write(folder / "history.json",
               [{"epoch": e, "loss": 0.1 / e, "lr": 3e-3 / e, "clips_per_second": 100.0} for e in (1, 2, 3)])


def write_detector(root: Path) -> None:
    ap = {"labelled_frames": 216, "gt_persons": 556, "recall50": 0.95, "AP": 0.39, "AP50": 0.867,
          "AP75": 0.28}
    _write(root / "results" / "detect" / "val_box_ap.json", {
        "backend": "synthetic", "score_threshold": 0.2, "frames": 216, "frames_detected": 864,
        "frames_per_second": 28.7, "box_ap": ap, "box_ap_kept": {**ap, "AP50": 0.84},
        "fill_gaps": {"boxes_added": 24, "kept_added": 24, "box_ap_per_frame": {**ap, "AP50": 0.857}}})
    _write(root / "results" / "detect" / "train_detector.json",
           {"seconds": 480.0, "steps": 1000, "precision": "fp32"})


def make_results(root: Path, params: dict[str, Any] = PARAMS, history: bool = True) -> list[Cell]:
    """Write every file the tables stage reads for ``params`` under ``root``; return the cells."""
    listed = cells(params)
    for cell in listed:
        write_cell(root, cell)
    for model in params["models"]:
        for seed in params["train"]["seeds"]:
            write_training(root, model, seed, history)
    write_detector(root)
    return listed
