"""The direct SQLite writer of MLflow runs: same rows MLflow reads as its own, truthful end states."""

from __future__ import annotations

import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diffpose import tracking
from diffpose.tracking import KNOWN_SCHEMAS, SqliteStore, stage_run


@pytest.fixture(scope="module")
def _template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store created once by the installed MLflow itself (schema and default experiment)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("store") / "template.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def new_store(_template: Path):
    def make(path: Path) -> str:
        shutil.copyfile(_template, path)
        return f"sqlite:///{path}"

    return make


def test_installed_mlflow_creates_a_schema_this_module_knows(tmp_path: Path, new_store) -> None:
    uri = new_store(tmp_path / "m.db")
    with sqlite3.connect(tmp_path / "m.db") as db:
        revisions = {r[0] for r in db.execute("SELECT version_num FROM alembic_version")}
    # if this fails, MLflow changed its schema: check the runs/params/metrics/latest_metrics/tags
    # tables against SqliteStore and add the revision to KNOWN_SCHEMAS
    assert revisions <= KNOWN_SCHEMAS, revisions
    assert isinstance(tracking.open_store(uri), SqliteStore)


def test_direct_runs_read_back_through_mlflow(tmp_path: Path, new_store, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    uri = new_store(tmp_path / "m.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("DVC_EXP_NAME", "exp-two")
    artifact = tmp_path / "metrics.json"
    artifact.write_text('{"Total": 1}\n')
    with stage_run("unit", {"train": {"lr": 0.003, "api_token": "hide"}}, tags={"model": "diffpose"}) as run:
        assert isinstance(run._store, SqliteStore)
        run.log_metrics({"loss": 0.5, "lr": 0.1}, step=1)
        run.log_metrics({"loss": 0.25, "lr": 0.05}, step=2)
        run.log_metrics({"nan_metric": float("nan"), "big": float("inf")})
        run.set_tags({"note": "x"})
        run.log_artifact(artifact)
    client = MlflowClient(uri)
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED" and got.info.end_time >= got.info.start_time
    assert got.info.run_name == "unit@exp-two"
    assert got.data.params == {"train.lr": "0.003", "train.api_token": "<redacted>"}
    assert got.data.metrics["loss"] == 0.25 and got.data.metrics["lr"] == 0.05
    assert math.isnan(got.data.metrics["nan_metric"]) and got.data.metrics["big"] == sys.float_info.max
    assert {"stage": "unit", "model": "diffpose", "note": "x", "dvc_exp_name": "exp-two"}.items() <= got.data.tags.items()
    assert got.data.tags["mlflow.runName"] == "unit@exp-two" and "git_commit" in got.data.tags
    assert [(m.step, m.value) for m in client.get_metric_history(run.run_id, "loss")] == [(1, 0.5), (2, 0.25)]
    assert [a.path for a in client.list_artifacts(run.run_id)] == ["metrics.json"]
    experiment = client.get_experiment(got.info.experiment_id)
    assert experiment.name == "diffpose"
    assert Path(experiment.artifact_location) == tmp_path / "mlartifacts" / "diffpose"
    runs = client.search_runs([experiment.experiment_id], "tags.stage = 'unit'")
    assert [r.info.run_id for r in runs] == [run.run_id]


def test_a_new_store_is_created_by_mlflow_then_written_directly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with stage_run("first", {"a": 1}) as first:
        assert isinstance(first._store, tracking.ClientStore)
    with stage_run("second", {"a": 2}) as second:
        assert isinstance(second._store, SqliteStore)
    runs = {r.info.run_name: r for r in MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name("diffpose").experiment_id])}
    assert {k: (r.info.status, r.data.params["a"]) for k, r in runs.items()} == {
        "first": ("FINISHED", "1"), "second": ("FINISHED", "2")}


def test_unknown_schema_is_not_written_directly(tmp_path: Path, new_store) -> None:
    uri = new_store(tmp_path / "m.db")
    with sqlite3.connect(tmp_path / "m.db") as db:
        db.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    assert SqliteStore.open(uri, tmp_path) is None


def test_a_store_failure_mid_stage_ends_the_run_failed(tmp_path: Path, new_store, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    from mlflow.tracking import MlflowClient

    uri = new_store(tmp_path / "m.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with stage_run("unit", {}) as run:
        def broken(*args, **kwargs):
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(run._store, "log_metrics", broken)
        run.log_metrics({"loss": 1.0})
        run.log_metrics({"loss": 2.0})  # tracking is off now: no second warning
    err = capsys.readouterr().err
    assert err.count("warning: MLflow tracking") == 1 and "disk I/O error" in err
    assert MlflowClient(uri).get_run(run.run_id).info.status == "FAILED"


def _stage_in_subprocess(tmp_path: Path, uri: str) -> subprocess.Popen:
    script = tmp_path / "stage.py"
    script.write_text(
        "import sys, time\n"
        "from diffpose.tracking import stage_run\n"
        "with stage_run('sleepy', {'a': 1}) as run:\n"
        "    print(run.run_id, flush=True)\n"
        "    time.sleep(60)\n"
    )
    # a background job (CI, nohup) inherits SIGINT ignored, and Python then keeps it ignored:
    # give the child the default disposition, as a terminal's foreground job has
    return subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "MLFLOW_TRACKING_URI": uri}, cwd=tmp_path,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


# SIGTERM (Slurm, scancel) exits 143 through StageTerminated; Ctrl-C ends Python by the signal itself
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, -signal.SIGINT)])
def test_a_terminated_or_interrupted_stage_ends_killed(tmp_path: Path, new_store, sig: int, code: int) -> None:
    from mlflow.tracking import MlflowClient

    uri = new_store(tmp_path / "m.db")
    proc = _stage_in_subprocess(tmp_path, uri)
    run_id = proc.stdout.readline().strip()
    assert run_id, proc.stderr.read()
    assert MlflowClient(uri).get_run(run_id).info.status == "RUNNING"
    started = time.monotonic()
    proc.send_signal(sig)
    proc.wait(timeout=30)
    assert time.monotonic() - started < 10
    assert proc.returncode == code
    assert MlflowClient(uri).get_run(run_id).info.status == "KILLED"


def test_commit_tag_is_dirty_for_code_not_for_rewritten_metrics(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "diffpose").mkdir()
    (tmp_path / "diffpose" / "a.py").write_text("x = 1\n")
    (tmp_path / "metrics.json").write_text("{}\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
    clean = tracking.git_commit(tmp_path)
    assert clean and len(clean) == 40
    (tmp_path / "metrics.json").write_text('{"Total": 1}\n')  # what dvc repro rewrites
    assert tracking.git_commit(tmp_path) == clean
    (tmp_path / "diffpose" / "a.py").write_text("x = 2\n")
    assert tracking.git_commit(tmp_path / "diffpose") == clean + "-dirty"
