"""MLflow tracking against a real SQLite store, a real server on 127.0.0.1, and a dead address."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from diffpose.tracking import project_root, redact, stage_run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_records_params_metrics_tags_and_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    uri = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("DVC_EXP_NAME", "exp-one")
    with stage_run("unit", {"sec": {"a": 1, "dataset_token": "s3cr3t"}}) as run:
        run.log_metrics({"loss": 0.5}, step=1)
        run.log_metrics({"loss": 0.25}, step=2)
    with pytest.raises(RuntimeError):
        with stage_run("unit", {"sec": {"a": 2}}):
            raise RuntimeError("boom")
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(search_all_experiments=True).sort_values("start_time")
    assert list(runs["status"]) == ["FINISHED", "FAILED"]
    first = runs.iloc[0]
    assert first["params.sec.a"] == "1" and first["metrics.loss"] == 0.25
    assert first["params.sec.dataset_token"] == "<redacted>"
    assert first["tags.stage"] == "unit" and first["tags.dvc_exp_name"] == "exp-one"
    history = mlflow.MlflowClient().get_metric_history(first["run_id"], "loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.25)]


def test_unreachable_server_warns_once_and_the_stage_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    out = tmp_path / "out.txt"
    with stage_run("unit", {"a": 1}) as run:
        run.log_metrics({"m": 1.0})
        out.write_text("written")
    assert out.read_text() == "written"
    err = capsys.readouterr().err
    assert err.count("warning: MLflow tracking at http://127.0.0.1:") == 1
    assert "outputs are still written" in err and "Traceback" not in err


def test_project_root_maps_queued_experiment_copies_to_the_repo(tmp_path: Path) -> None:
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    assert project_root(inner) == tmp_path
    copy = tmp_path / ".dvc" / "tmp" / "exps" / "tmpabc123" / "sub"
    copy.mkdir(parents=True)
    assert project_root(copy) == tmp_path


def test_redact_hides_credentials_only() -> None:
    flat = {"download.token": "x", "download.PASSWORD": "y", "train.lr": 0.1, "api_key": "z"}
    assert redact(flat) == {"download.token": "<redacted>", "download.PASSWORD": "<redacted>",
                            "train.lr": 0.1, "api_key": "<redacted>"}


@pytest.mark.slow
def test_stage_logs_to_a_real_mlflow_server(tmp_path: Path, videos_dir: Path) -> None:
    """`diffpose frames` against `mlflow server` on 127.0.0.1: the run lands on the server."""
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(
        [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 's.db'}", "--artifacts-destination", str(tmp_path / "a")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
    )
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not start within 90 s")
        videos = tmp_path / "videos" / "val"
        videos.mkdir(parents=True)
        shutil.copy(videos_dir / "bikes.mp4", videos / "000001_mpii_test.mp4")
        uri = f"http://127.0.0.1:{port}"
        proc = subprocess.run(
            [sys.executable, "-m", "diffpose", "frames", "--videos", str(videos.parent), "--out",
             str(tmp_path / "frames"), "--no-progress"],
            env={**os.environ, "MLFLOW_TRACKING_URI": uri}, capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        import mlflow

        mlflow.set_tracking_uri(uri)
        runs = mlflow.search_runs(search_all_experiments=True)
        assert list(runs["tags.stage"]) == ["frames"]
        cap = cv2.VideoCapture(str(videos_dir / "bikes.mp4"))  # count the frames independently
        decodable = 0
        while cap.grab():
            decodable += 1
        cap.release()
        assert decodable > 0 and runs.iloc[0]["metrics.frames"] == decodable
        assert runs.iloc[0]["run_id"] in proc.stderr  # the run id is printed where a person looks
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
