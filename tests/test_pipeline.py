"""End to end with the real tools: dvc repro and snakemake on the tiny preset agree, DVC skips
unchanged stages, a param change re-runs only its stage, MLflow records one run per execution."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from diffpose.workflow import persist_marker
from tests.pipeline_copy import make_copy, run, tool_env

pytestmark = pytest.mark.slow

TARGET_STAGES = ["synth", "frames"]


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


@pytest.fixture(scope="module")
def dvc_copy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = make_copy(tmp_path_factory.mktemp("dvc_repo"))
    uri = f"sqlite:///{tmp_path_factory.mktemp('dvc_mlflow') / 'mlflow.db'}"
    run(["dvc", "repro", *TARGET_STAGES], root, tool_env(uri))
    return root, uri


def test_dvc_repro_writes_outputs_and_tracks_each_stage(dvc_copy: tuple[Path, str]) -> None:
    root, uri = dvc_copy
    assert list((root / "data/synth/videos/val").glob("*.mp4"))
    assert list((root / "data/synth/annotations/train").glob("*.json"))
    assert list((root / "data/frames/images/train").glob("*/000000.jpg"))
    assert (root / "dvc.lock").exists()
    assert _runs_by_stage(uri) == {"synth": 1, "frames": 1}


def test_snakemake_runs_the_same_dag_with_the_same_outputs(
    dvc_copy: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    dvc_root, _ = dvc_copy
    root = make_copy(tmp_path_factory.mktemp("smk_repo"))
    uri = f"sqlite:///{tmp_path_factory.mktemp('smk_mlflow') / 'mlflow.db'}"
    env = tool_env(uri)
    # data/frames is a persist output: Snakemake's target for it is its marker file
    target = persist_marker("data/frames")
    run(["snakemake", "--cores", "2", target], root, env)
    assert _digest_tree(root / "data/synth/annotations") == _digest_tree(dvc_root / "data/synth/annotations")
    frames_dvc = _digest_tree(dvc_root / "data/frames/images")
    frames_smk = _digest_tree(root / "data/frames/images")
    assert len(frames_smk) > 0 and frames_smk == frames_dvc
    again = run(["snakemake", "--cores", "2", target], root, env)
    assert "Nothing to be done" in again.stdout + again.stderr
    assert _runs_by_stage(uri) == {"synth": 1, "frames": 1}


def test_second_repro_is_a_noop_and_param_change_reruns_only_frames(dvc_copy: tuple[Path, str]) -> None:
    root, uri = dvc_copy
    env = tool_env(uri)
    again = run(["dvc", "repro", *TARGET_STAGES], root, env)
    assert "Running stage" not in again.stdout, again.stdout
    assert _runs_by_stage(uri) == {"synth": 1, "frames": 1}

    params = yaml.safe_load((root / "params.yaml").read_text())
    quality = params["frames"]["jpeg_quality"]
    params["frames"]["jpeg_quality"] = changed_quality = 80 if quality != 80 else 90
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = run(["dvc", "repro", *TARGET_STAGES], root, env)
    assert "Running stage 'frames'" in changed.stdout
    assert "Running stage 'synth'" not in changed.stdout
    assert _runs_by_stage(uri) == {"synth": 1, "frames": 2}

    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.stage = 'frames'")
    assert sorted(runs["params.frames.jpeg_quality"]) == sorted([str(quality), str(changed_quality)])
    assert (runs["metrics.frames"] > 0).all()
    assert runs["tags.git_commit"].str.fullmatch(r"[0-9a-f]{40}(-dirty)?").all()
