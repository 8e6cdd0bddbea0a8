"""`train.processes` > 1: the DAG's unchanged `diffpose train` command launches itself under torchrun
(gloo processes on the CPU here), and changing the number of processes re-runs nothing."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from diffpose import cli
from diffpose.training import distributed
from tests.pipeline_copy import REPO, make_copy, run, tool_env


def test_the_torchrun_command_repeats_the_stage_command(tmp_path, monkeypatch):
    """`diffpose train` with train.processes 4 hands its own command line to the relauncher."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"]["processes"] = 4
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    launched = []
    monkeypatch.setattr(distributed, "relaunch", lambda command, n, knob: launched.append((command, n, knob)) or 0)
    assert cli.main(["train", "--model", "diffpose", "--out", "models/diffpose/seed3", "--params", str(tmp_path / "p.yaml"),
                     "--annotations", "a", "--images", "i", "--seed", "3", "--val-annotations", "v",
                     "--no-progress"]) == 0
    [(command, processes, knob)] = launched
    assert processes == 4 and knob == "train.processes"
    argv = distributed.torchrun_argv(command, processes)
    assert argv[:6] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m"]
    assert argv[6:9] == ["diffpose", "train", "--model"]
    assert argv[argv.index("--seed") + 1] == "3" and argv[argv.index("--val-annotations") + 1] == "v"
    assert "--no-progress" in argv and argv[argv.index("--out") + 1] == "models/diffpose/seed3"


@pytest.mark.slow
def test_dvc_repro_launches_two_training_processes(tmp_path):
    """`dvc repro train@diffpose-0` with train.processes 2: two gloo ranks train in step (world size 2
    in metrics.json, parameters equal across ranks), the stage command in dvc.lock is the plain one,
    and setting train.processes back to 1 leaves the stage up to date."""
    root = make_copy(tmp_path / "repo", overrides={"train": {"processes": 2, "epochs": 1}})
    env = dict(tool_env(), DIFFPOSE_TRACKING="off")
    out = run(["dvc", "repro", "train@diffpose-0"], root, env, timeout=900)
    assert "train.processes is 2" in out.stderr + out.stdout
    metrics = json.loads((root / "models" / "diffpose" / "seed0" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["ranks_in_sync"] is True
    lock = (root / "dvc.lock").read_text()
    assert "torchrun" not in lock and "torch.distributed.run" not in lock

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["processes"] = 1
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = run(["dvc", "status", "--json", "train@diffpose-0"], root, env).stdout
    assert json.loads(status) == {}
