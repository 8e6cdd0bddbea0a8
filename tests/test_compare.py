"""``diffpose compare`` on real MLflow SQLite stores: runs logged through diffpose.tracking, read
back through mlflow.search_runs; and end to end on two real `dvc exp run` experiments."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from diffpose.cli import main as cli
from diffpose.errors import DataError
from diffpose.report.compare import compare, format_table
from diffpose.tracking import git_commit, stage_run
from tests.pipeline_copy import make_copy, run, tool_env

# (DVC experiment or None for a plain `dvc repro`, stage, params, metrics), in start order
RUNS = [
    (None, "synth", {"synth": {"preset": "tiny", "seed": 0}, "out": "data/synth"}, {"seconds": 1.5, "val_frames": 32}),
    ("alpha", "synth", {"synth": {"preset": "tiny", "seed": 1}, "out": "data/synth"}, {"seconds": 1.25, "val_frames": 32}),
    ("alpha", "evaluate", {"metric": "both", "subset": "all"}, {"Total": 45.25, "Head": 50.0, "coco": {"AP": 40.0, "AP50": 70.0}}),
    ("beta", "synth", {"synth": {"preset": "tiny", "seed": 2}, "out": "data/synth"}, {"seconds": 1.0, "val_frames": 32}),
    ("beta", "evaluate", {"metric": "both", "subset": "all"}, {"Total": 47.5, "Head": 52.0, "coco": {"AP": 41.0, "AP50": 71.0}}),
    ("al_pha", "evaluate", {"metric": "both", "subset": "all", "extra": 1}, {"Total": 30.0, "Head": 31.0}),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[str]]:
    """A store created by the installed MLflow, holding RUNS written by diffpose.tracking."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("compare") / "mlflow.db"
    uri = f"sqlite:///{path}"
    MlflowClient(uri).search_experiments()  # MLflow creates the schema; stage_run then writes directly
    ids = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        for exp, stage, params, metrics in RUNS:
            if exp:
                mp.setenv("DVC_EXP_NAME", exp)
            else:
                mp.delenv("DVC_EXP_NAME", raising=False)
            with stage_run(stage, params) as tracker:
                tracker.log_metrics(metrics)
            ids.append(tracker.run_id)
            time.sleep(0.005)  # distinct start times (milliseconds): a defined row order
    assert all(ids)
    return uri, ids


def test_rows_show_tags_and_only_the_params_that_differ(store) -> None:
    uri, ids = store
    result = compare(uri, stage="synth")
    table = result.table
    assert list(table["run"]) == [ids[0], ids[1], ids[3]]
    assert pd.isna(table["experiment"][0]) and list(table["experiment"][1:]) == ["alpha", "beta"]
    assert list(table["name"]) == ["synth", "synth@alpha", "synth@beta"]
    assert set(table["commit"]) == {git_commit() or "unknown"}
    assert set(table["status"]) == {"FINISHED"}
    assert result.params == ["synth.seed"] and list(table["synth.seed"]) == ["0", "1", "2"]
    assert sorted(result.hidden) == ["out", "synth.preset"]
    assert "synth.preset" not in table and "out" not in table
    assert list(table.columns[:7]) == ["run", "name", "stage", "experiment", "commit", "start", "status"]
    assert list(table["seconds"]) == [1.5, 1.25, 1.0]


def test_params_are_compared_within_a_stage(store) -> None:
    """Across stages every key would differ; within evaluate only `extra` (one run lacks it) does."""
    uri, _ = store
    result = compare(uri)
    assert result.params == ["extra", "synth.seed"]
    assert {"metric", "subset", "out", "synth.preset"} <= set(result.hidden)
    assert list(result.table["extra"].fillna("missing")) == ["missing"] * 5 + ["1"]


def test_metric_names_and_globs_select_columns_in_the_order_asked(store) -> None:
    uri, _ = store
    table = compare(uri, stage="evaluate", metrics=["Total", "coco.*"]).table
    assert list(table.columns[7:]) == ["extra", "Total", "coco.AP", "coco.AP50"]
    assert list(table["Total"]) == [45.25, 47.5, 30.0]
    assert table["coco.AP"].isna().tolist() == [False, False, True]
    with pytest.raises(DataError, match=r"no metric matches 'Totl' in the 3 runs found \(their metrics: .*Total"):
        compare(uri, stage="evaluate", metrics=["Totl"])


def test_experiment_filter_by_name_and_glob(store) -> None:
    uri, ids = store
    assert list(compare(uri, experiments=["alpha"]).table["run"]) == [ids[1], ids[2]]
    both = compare(uri, experiments=["alpha", "beta"], stage="evaluate").table
    assert list(both["experiment"]) == ["alpha", "beta"]
    # LIKE 'al_%' also matches "alpha"; the glob keeps the literal underscore only
    assert list(compare(uri, experiments=["al_*"]).table["experiment"]) == ["al_pha"]
    assert list(compare(uri, experiments=["al*"]).table["run"]) == [ids[1], ids[2], ids[5]]


def test_cli_prints_the_table_and_writes_the_csv(store, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    uri, ids = store
    out = tmp_path / "sub" / "runs.csv"
    assert cli(["compare", "--tracking-uri", uri, "--stage", "synth", "--metric", "seconds", "--csv", str(out)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 4 and lines[0].split() == [
        "run", "name", "stage", "experiment", "commit", "start", "status", "synth.seed", "seconds"]
    first = lines[1].split()
    assert first[0] == ids[0][:8] and first[3] == "-" and first[-2:] == ["0", "1.5"]
    assert f"3 runs from {uri}" in captured.err
    csv = pd.read_csv(out, dtype={"synth.seed": str})
    assert list(csv["run"]) == [ids[0], ids[1], ids[3]] and list(csv["synth.seed"]) == ["0", "1", "2"]
    assert list(csv["seconds"]) == [1.5, 1.25, 1.0] and pd.isna(csv["experiment"][0])
    assert pd.Timestamp(csv["start"][0]).tzinfo is not None
    assert sorted(p.name for p in out.parent.iterdir()) == ["runs.csv"]  # no temporary file left


def test_no_matching_run_is_one_line_naming_the_search(store, capsys: pytest.CaptureFixture) -> None:
    uri, _ = store
    assert cli(["compare", "--tracking-uri", uri, "--experiment", "nope", "--stage", "evaluate"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith(f"diffpose compare: error: no runs of DVC experiment 'nope' and stage 'evaluate' "
                          f"in the MLflow store {uri} (6 runs in all; DVC experiments: al_pha, alpha, beta;")


def test_default_store_is_the_project_root_mlflow_db(store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    uri, _ = store
    shutil.copyfile(uri[len("sqlite:///"):], tmp_path / "mlflow.db")
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert cli(["compare", "--experiment", "beta"]) == 0
    captured = capsys.readouterr()
    assert f"2 runs from sqlite:///{tmp_path / 'mlflow.db'}" in captured.err
    assert "MLFLOW_TRACKING_URI" not in os.environ  # reading a store leaves the process as it was


def test_unreachable_stores_are_one_line_and_nothing_is_created(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "none.db"
    assert cli(["compare", "--tracking-uri", str(missing)]) == 2
    assert f"no MLflow store at {missing}" in capsys.readouterr().err
    assert not missing.exists()  # MLflow would have created an empty store there
    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE t (x)")
    before = foreign.read_bytes()
    assert cli(["compare", "--tracking-uri", f"sqlite:///{foreign}"]) == 2
    assert "not an MLflow store" in capsys.readouterr().err and foreign.read_bytes() == before
    with socket_free_port() as port:
        start = time.monotonic()
        assert cli(["compare", "--tracking-uri", f"http://127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "is not reachable" in err and time.monotonic() - start < 10


class socket_free_port:
    """A local port nothing listens on (bound, not listening, for the block)."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return self.sock.getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def test_display_formats() -> None:
    from diffpose.report.compare import compare_table

    start = pd.Timestamp("2024-05-01 10:00:00", tz="UTC")
    runs = pd.DataFrame({
        "run_id": ["0123456789abcdef0123456789abcdef"], "status": ["FAILED"], "start_time": [start],
        "tags.git_commit": ["a" * 40 + "-dirty"], "metrics.n": [12345.0], "metrics.x": [0.000123456],
        "metrics.m": [45.678], "params.stage": ["p"],
    })
    text = format_table(compare_table(runs).table)
    header, row = text.splitlines()
    assert header.split() == ["run", "name", "stage", "experiment", "commit", "start", "status", "m", "n", "x"]
    assert row.split()[:5] == ["01234567", "-", "-", "-", "aaaaaaaaaa-dirty"]
    assert row.split()[-4:] == ["FAILED", "45.68", "12345", "0.0001235"]


def test_the_command_module_does_not_import_mlflow_or_pandas() -> None:
    code = ("import sys, diffpose.cli, diffpose.stages.compare, diffpose.report.compare; "
            "print(sorted(m for m in ('mlflow', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_two_dvc_experiments_compared_end_to_end(tmp_path: Path) -> None:
    """`dvc exp run -S` in the workspace and a queued one: both land in the copy's own mlflow.db,
    tagged with their names and the baseline commit, and compare shows the seed that differs."""
    (tmp_path / "repo").mkdir()
    repo = make_copy(tmp_path / "repo")
    env = tool_env()
    env.pop("MLFLOW_TRACKING_URI", None)  # the default store: <repo>/mlflow.db
    run(["dvc", "exp", "run", "-S", "synth.seed=1", "-n", "seed-one", "synth"], repo, env, timeout=300)
    run(["dvc", "exp", "run", "--queue", "-S", "synth.seed=2", "-n", "seed-two", "synth"], repo, env)
    run(["dvc", "exp", "run", "--run-all"], repo, env, timeout=300)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()
    proc = run(["diffpose", "compare", "--stage", "synth", "--experiment", "seed-one", "seed-two",
                "--metric", "val_*", "--csv", "runs.csv"], repo, env, timeout=120)
    assert "synth.seed" in proc.stdout.splitlines()[0]
    table = pd.read_csv(repo / "runs.csv", dtype=str)
    assert sorted(zip(table["experiment"], table["synth.seed"])) == [("seed-one", "1"), ("seed-two", "2")]
    assert set(table["status"]) == {"FINISHED"} and set(table["stage"]) == {"synth"}
    # params.yaml differs from HEAD while an experiment runs: the baseline commit, marked dirty
    assert set(table["commit"]) == {f"{head}-dirty"}
    assert "val_frames" in table and "seconds" not in table
    assert not list((repo / ".dvc" / "tmp" / "exps").glob("**/mlflow.db"))
