"""MLflow inside real queued DVC experiments: runs and artifacts land in the repository's store."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.pipeline_copy import run, tool_env

STAGE = '''\
import sys
from pathlib import Path
from diffpose.tracking import stage_run
Path("out.txt").write_text(sys.argv[1] + "\\n")
with stage_run("unit", {"value": sys.argv[1]}) as tracker:
    tracker.log_metrics({"value": float(sys.argv[1])})
    tracker.log_artifact("out.txt")
'''


@pytest.mark.slow
def test_queued_experiments_log_runs_and_artifacts_to_the_repository(tmp_path: Path) -> None:
    """The first experiment of a fresh store is created inside DVC's temporary copy
    (.dvc/tmp/exps/...); its artifact location must still be the repository's, or every later
    artifact of the experiment goes to a folder DVC deletes."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "stage.py").write_text(STAGE)
    (repo / "params.yaml").write_text("value: 1\n")
    (repo / "dvc.yaml").write_text(
        "stages:\n  unit:\n    cmd: python stage.py ${value}\n    deps: [stage.py]\n    params: [value]\n"
        "    outs: [out.txt]\n")
    (repo / ".gitignore").write_text("/mlflow.db\n/mlartifacts/\n")
    env = tool_env()
    env.pop("MLFLOW_TRACKING_URI", None)  # the default store: <repo>/mlflow.db
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    run(["dvc", "init", "-q"], repo, env)
    subprocess.run(git + ["add", "-A"], cwd=repo, check=True)
    subprocess.run(git + ["commit", "-qm", "init"], cwd=repo, check=True)
    for value in (2, 3):
        run(["dvc", "exp", "run", "--queue", "-S", f"value={value}"], repo, env)
    run(["dvc", "queue", "start", "-j", "1"], repo, env)  # returns at once; a worker runs the queue
    deadline = time.time() + 300
    while time.time() < deadline:
        status = run(["dvc", "queue", "status"], repo, env).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(2)
    assert "Failed" not in status, status
    with sqlite3.connect(repo / "mlflow.db") as db:
        rows = db.execute("SELECT r.status, r.artifact_uri, t.value FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                          "AND t.key = 'dvc_exp_name'").fetchall()
        locations = [row[0] for row in db.execute("SELECT artifact_location FROM experiments WHERE name = 'diffpose'")]
    assert len(rows) == 2 and {r[0] for r in rows} == {"FINISHED"}
    assert locations == [str(repo / "mlartifacts" / "diffpose")]
    for _, uri, _ in rows:
        assert uri.startswith(str(repo / "mlartifacts")) and ".dvc/tmp" not in uri
        assert sorted(p.read_text() for p in Path(uri).glob("out.txt")) in (["2\n"], ["3\n"])
