"""End to end with the real tools: dvc repro and snakemake on the tiny preset agree (the same data,
frames, every inference cell's metrics and the tables), DVC skips unchanged stages, a param change
re-runs only its stage, MLflow records one run per execution, and an interrupted training resumes
under Snakemake from its persisted last.pt."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from diffpose.config import load_params
from diffpose.sweep import cells
from diffpose.workflow import persist_marker, rules_from_dvc
from tests.pipeline_copy import make_copy, run, tool_env
from tests.test_dvc_deps import subcommands

pytestmark = pytest.mark.slow

TARGET_STAGES = ["synth", "frames"]
# Columns of the tables that differ between two runs of the same DAG: MLflow run ids, the git
# commit of each copy, and speeds.
RUN_COLUMNS = {"evaluate_run_id", "infer_run_id", "git_commit", "person_clips_per_second", "clips_per_second"}


def _digest_tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _runs_by_stage(uri: str) -> dict[str, int]:
    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(search_all_experiments=True)
    if runs.empty:
        return {}
    return runs["tags.stage"].value_counts().to_dict()


def _expected_runs(root: Path) -> dict[str, int]:
    """One MLflow run per `diffpose <subcommand>` of every stage's command (an inference cell:
    infer, then evaluate twice), tagged with the subcommand's stage name."""
    return dict(Counter(sub.replace("-", "_") for spec in rules_from_dvc(root) for sub in subcommands(spec.cmd)))


def _metrics(path: Path) -> dict:
    """A cell's metrics without the provenance block (run id and git commit differ between copies)."""
    metrics = json.loads(path.read_text())
    metrics.pop("run", None)
    return metrics


def _table(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return [{k: v for k, v in row.items() if k not in RUN_COLUMNS} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def dvc_copy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The whole tiny DAG through `dvc repro`, tracked in its own MLflow store."""
    root = make_copy(tmp_path_factory.mktemp("dvc_repo"))
    uri = f"sqlite:///{tmp_path_factory.mktemp('dvc_mlflow') / 'mlflow.db'}"
    run(["dvc", "repro"], root, tool_env(uri))
    return root, uri


def test_dvc_repro_writes_outputs_and_tracks_each_stage(dvc_copy: tuple[Path, str]) -> None:
    root, uri = dvc_copy
    assert list((root / "data/synth/videos/val").glob("*.mp4"))
    assert list((root / "data/synth/annotations/train").glob("*.json"))
    assert list((root / "data/frames/images/train").glob("*/000000.jpg"))
    assert (root / "dvc.lock").exists()
    for cell in cells(load_params(root / "params.yaml")):
        assert (root / cell.metrics).is_file() and (root / cell.metrics_degraded).is_file(), cell.stage
    expected = _expected_runs(root)
    assert expected["synth"] == expected["frames"] == 1 and expected["evaluate"] == 2 * expected["infer"]
    assert _runs_by_stage(uri) == expected


def test_snakemake_runs_the_same_dag_with_the_same_outputs(
    dvc_copy: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    dvc_root, _ = dvc_copy
    root = make_copy(tmp_path_factory.mktemp("smk_repo"))
    uri = f"sqlite:///{tmp_path_factory.mktemp('smk_mlflow') / 'mlflow.db'}"
    env = tool_env(uri)
    run(["snakemake", "--cores", "2"], root, env)
    assert _digest_tree(root / "data/synth/annotations") == _digest_tree(dvc_root / "data/synth/annotations")
    frames_dvc = _digest_tree(dvc_root / "data/frames/images")
    frames_smk = _digest_tree(root / "data/frames/images")
    assert len(frames_smk) > 0 and frames_smk == frames_dvc
    # every cell diffpose.sweep lists: the same PoseTrack mAP (and every other figure) from both tools
    listed = cells(load_params(root / "params.yaml"))
    assert {c.family for c in listed} == {"infer", "infer_detected", "sweep"}
    for cell in listed:
        smk, dvc = _metrics(root / cell.metrics), _metrics(dvc_root / cell.metrics)
        assert smk["Total"] == dvc["Total"], cell.stage
        assert smk == dvc, cell.stage
        assert _metrics(root / cell.metrics_degraded) == _metrics(dvc_root / cell.metrics_degraded), cell.stage
    # and the same tables, when dvc.yaml has the tables stage
    if any(spec.stage == "tables" for spec in rules_from_dvc(root)):
        names = sorted(p.name for p in (dvc_root / "results/tables").glob("*.csv"))
        assert names and names == sorted(p.name for p in (root / "results/tables").glob("*.csv"))
        for name in names:
            assert _table(root / "results/tables" / name) == _table(dvc_root / "results/tables" / name), name
    again = run(["snakemake", "--cores", "2"], root, env)
    assert "Nothing to be done" in again.stdout + again.stderr
    assert _runs_by_stage(uri) == _expected_runs(root)


def test_second_repro_is_a_noop_and_param_change_reruns_only_frames(dvc_copy: tuple[Path, str]) -> None:
    root, uri = dvc_copy
    env = tool_env(uri)
    before = _runs_by_stage(uri)
    again = run(["dvc", "repro"], root, env)
    assert "Running stage" not in again.stdout, again.stdout
    assert _runs_by_stage(uri) == before

    params = yaml.safe_load((root / "params.yaml").read_text())
    quality = params["frames"]["jpeg_quality"]
    params["frames"]["jpeg_quality"] = changed_quality = 80 if quality != 80 else 90
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = run(["dvc", "repro", *TARGET_STAGES], root, env)
    assert "Running stage 'frames'" in changed.stdout
    assert "Running stage 'synth'" not in changed.stdout
    assert _runs_by_stage(uri) == {**before, "frames": 2}

    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.stage = 'frames'")
    assert sorted(runs["params.frames.jpeg_quality"]) == sorted([str(quality), str(changed_quality)])
    assert (runs["metrics.frames"] > 0).all()
    assert runs["tags.git_commit"].str.fullmatch(r"[0-9a-f]{40}(-dirty)?").all()


def test_a_training_interrupted_under_snakemake_resumes_from_last_pt(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the process group) after epoch 1 of 2: Snakemake removes the job's outputs
    but not last.pt (a persist output: a marker stands for it, diffpose/workflow.py), and the next
    `snakemake` resumes the training from it instead of starting over."""
    # two epochs of ~1 s each (batch 2): time to interrupt between them
    root = make_copy(tmp_path / "repo", {"train": {"epochs": 2, "batch_size": 2}})
    env = dict(tool_env(), DIFFPOSE_TRACKING="off")
    out = root / "models" / "diffpose" / "seed0"
    target = ["snakemake", "--cores", "2", str((out / "model.pt").relative_to(root))]
    run(["snakemake", "--cores", "2", persist_marker("data/frames")], root, env)  # data first, untimed
    # SIG_DFL for SIGINT: a background job (CI, nohup) inherits it ignored; a session of its own so
    # the signal reaches snakemake and its jobs as Ctrl-C would
    proc = subprocess.Popen(target, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        # the epoch line follows the save of last.pt: wait for the line in the job's log (tee'd by
        # the rule), so the interrupt comes after epoch 1 is both saved and reported
        job_log = root / "logs" / "snakemake" / "train__diffpose_0.log"
        deadline = time.monotonic() + 300

        def epoch_one_reported() -> bool:
            return job_log.exists() and "epoch 1/2" in job_log.read_text(errors="replace")

        while not epoch_one_reported() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert epoch_one_reported() and (out / "last.pt").exists(), "no epoch 1 within 300 s"
        os.killpg(proc.pid, signal.SIGINT)
        log, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0, f"the training finished before it could be interrupted:\n{log[-3000:]}"
    assert "epoch 1/2" in log and "epoch 2/2" not in log, log[-3000:]
    assert not (out / "model.pt").exists()  # Snakemake removed the interrupted job's outputs ...
    assert (out / "last.pt").exists()  # ... but not the resume state

    resumed = run(target, root, env)
    text = resumed.stdout + resumed.stderr
    assert f"resuming diffpose from {(out / 'last.pt').relative_to(root)} after epoch 1" in text, text[-3000:]
    assert "epoch 2/2" in text and "epoch 1/2" not in text
    assert json.loads((out / "metrics.json").read_text())["resumed_after_epoch"] == 1
    assert (out / "model.pt").exists() and (out / "last.pt").exists()
    assert (root / persist_marker("models/diffpose/seed0/last.pt")).exists()
    dry = run([*target[:3], "-n", *target[3:]], root, env)
    assert "Nothing to be done" in dry.stdout + dry.stderr
