"""`infer.processes` > 1: `diffpose infer` launches itself under torchrun, each process predicts
whole batches (r, r+N, ...), rank 0 gathers and writes; the sampler noise is seeded per clip, so
1 and N processes, and any batch size, write byte-identical predictions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from diffpose.inference.predictor import clip_seed, shard_batches
from tests.pipeline_copy import REPO, make_copy, run, tool_env

BIN = Path(sys.executable).parent
ENV = dict(os.environ, OMP_NUM_THREADS="1", DIFFPOSE_TRACKING="off")

# torchrun runs this instead of `diffpose`: rank 1 gets a checkpoint that does not exist
RANK_1_FAILS = """\
import os, sys
from diffpose.cli import main
argv = sys.argv[1:]
if os.environ.get("RANK") == "1":
    argv[argv.index("--checkpoint") + 1] = "missing/model.pt"
sys.exit(main(argv))
"""

# diffpose.training.distributed.relaunch as the stages call it, its workers running the script
# given first instead of `python -m diffpose`
LAUNCH_THROUGH_WRAPPER = """\
import sys
from diffpose.training import distributed
script, command = sys.argv[1], sys.argv[2:]
distributed.torchrun_argv = lambda command, n: [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                f"--nproc_per_node={n}", script, *command]
sys.exit(distributed.relaunch(command, 2, "infer.processes"))
"""


def test_the_shards_are_whole_batches_taking_turns():
    assert [i for i, _ in shard_batches(10, 3, 0, 2)] == [0, 2] and [i for i, _ in shard_batches(10, 3, 1, 2)] == [1, 3]
    assert shard_batches(10, 3, 1, 2) == [(1, [3, 4, 5]), (3, [9])]
    shares = [clip for rank in range(3) for _, clips in shard_batches(10, 3, rank, 3) for clip in clips]
    assert sorted(shares) == list(range(10))
    assert shard_batches(10, 3) == [(i, list(range(3 * i, min(3 * i + 3, 10)))) for i in range(4)]
    assert len({clip_seed(s, i) for s in range(3) for i in range(1000)}) == 3000


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """(synthetic tiny benchmark made by the CLI, a random-init tiny DiffPose checkpoint)."""
    import torch

    from diffpose.models.checkpoint import save_checkpoint
    from diffpose.models.config import resolve_model_config
    from diffpose.models.factory import build_model

    root = tmp_path_factory.mktemp("synth")
    for cmd in (["synth", "--preset", "tiny", "--out", str(root), "--workers", "1", "--no-progress"],
                ["frames", "--videos", str(root / "videos"), "--out", str(root), "--workers", "1", "--no-progress"]):
        subprocess.run([str(BIN / "diffpose"), *cmd], check=True, env=ENV, capture_output=True, timeout=120)
    torch.manual_seed(0)
    checkpoint = root / "model" / "model.pt"
    save_checkpoint(checkpoint, build_model(resolve_model_config({"preset": "tiny"})))
    return root, checkpoint


def _params(path: Path, **infer) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["infer"].update({"steps": 2, "ensemble": 2, "flip_test": True, "batch_size": 4, "threads": 1,
                            "device": "cpu", "workers": 0, **infer})
    path.write_text(yaml.safe_dump(params))
    return path


def _infer(data: Path, checkpoint: Path | str, out: Path, params: Path) -> list[str]:
    return ["infer", "--checkpoint", str(checkpoint), "--annotations", str(data / "annotations" / "val"),
            "--images", str(data), "--out", str(out / "predictions"), "--record", str(out / "infer.json"),
            "--params", str(params), "--no-progress"]


def _diffpose(args: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "diffpose"), *args], capture_output=True, text=True, env=ENV, timeout=timeout)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.json"))}


def _largest_difference(a: dict[str, bytes], b: dict[str, bytes]) -> float:
    """Largest difference of a keypoint value (x, y or score) between two sets of prediction files
    of the same people."""
    assert a.keys() == b.keys()
    largest = 0.0
    for name in a:
        people_a, people_b = json.loads(a[name])["annotations"], json.loads(b[name])["annotations"]
        assert len(people_a) == len(people_b)
        for pa, pb in zip(people_a, people_b):
            largest = max(largest, *(abs(x - y) for x, y in zip(pa["keypoints"], pb["keypoints"])))
    return largest


@pytest.mark.slow  # one torchrun launch of two gloo processes (~15 s)
def test_two_processes_write_the_same_predictions_as_one(tiny, tmp_path):
    data, checkpoint = tiny
    outs = {}
    for processes in (1, 2):
        out = tmp_path / f"p{processes}"
        proc = _diffpose(_infer(data, checkpoint, out, _params(tmp_path / f"p{processes}.yaml", processes=processes)))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert ("infer.processes is 2" in proc.stderr) == (processes == 2)
        record = json.loads((out / "infer.json").read_text())
        assert record["world_size"] == processes
        outs[processes] = (_files(out / "predictions"), record)
    (one, first), (two, second) = outs[1], outs[2]
    assert len(one) > 1 and one == two
    assert first["person_clips"] == second["person_clips"] > 2 * 4   # more than one batch per process
    assert proc.stdout.count("infer: ") == 1                         # rank 0 alone reports

    # the batch a clip falls in does not matter either: its noise comes from its own generator (a
    # shared one would move every pose by pixels); what remains is the float rounding of batched
    # kernels, a thousandth of a pixel in the written files
    for batch_size in (3, 64):
        out = tmp_path / f"b{batch_size}"
        proc = _diffpose(_infer(data, checkpoint, out, _params(tmp_path / f"b{batch_size}.yaml", batch_size=batch_size)))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert _largest_difference(_files(out / "predictions"), one) <= 0.002, f"batch size {batch_size}"

    # the check has teeth: the sampler noise moves these predictions
    other = tmp_path / "seed1"
    proc = _diffpose(_infer(data, checkpoint, other, _params(tmp_path / "seed1.yaml", seed=1)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _largest_difference(_files(other / "predictions"), one) > 1.0


def test_a_missing_checkpoint_is_one_line_before_any_process_starts(tiny, tmp_path):
    data, _ = tiny
    proc = _diffpose(_infer(data, tmp_path / "none" / "model.pt", tmp_path / "out",
                            _params(tmp_path / "p.yaml", processes=2)), timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("diffpose infer: error: ") and "checkpoint not found" in lines[0]
    assert "torchrun" not in proc.stderr and not (tmp_path / "out").exists()


@pytest.mark.slow  # one torchrun launch of two gloo processes
def test_a_failing_rank_ends_the_launch_with_its_error(tiny, tmp_path):
    """Rank 1 cannot load its checkpoint while rank 0 waits for its share: the launcher stops
    rank 0 and exits 1 (no hang) with one line after rank 1's own one-line error (no torchrun
    report, no traceback), and nothing is written."""
    data, checkpoint = tiny
    (tmp_path / "rank_1_fails.py").write_text(RANK_1_FAILS)
    (tmp_path / "launch.py").write_text(LAUNCH_THROUGH_WRAPPER)
    out = tmp_path / "out"
    command = _infer(data, checkpoint, out, _params(tmp_path / "p.yaml"))
    proc = subprocess.run([sys.executable, str(tmp_path / "launch.py"), str(tmp_path / "rank_1_fails.py"), *command],
                          capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[1:] == ["diffpose infer: error: missing/model.pt: checkpoint not found "
                         "(train first: diffpose train --model NAME --out DIR)",
                         "diffpose infer: process 1 of 2 failed (exit code 2); the others were stopped"], proc.stderr
    assert "infer.processes is 2" in lines[0]
    assert not (out / "predictions").exists() and not (out / "infer.json").exists()


@pytest.mark.slow  # dvc repro of synth, frames, a one-epoch training and an infer cell, then the cell again
def test_dvc_repro_of_an_infer_cell_runs_two_processes_with_the_same_metrics(tmp_path):
    """`dvc repro infer@diffpose-0` with infer.processes 2: the cell's unchanged command launches
    two gloo ranks (world size 2 in its record); forced again with 1 process it writes the same
    predictions and metrics (provenance aside), and the lock's command names no torchrun."""
    root = make_copy(tmp_path / "repo", overrides={"train": {"epochs": 1},
                                                   "infer": {"processes": 2, "threads": 1, "batch_size": 8}})
    env = dict(tool_env(), DIFFPOSE_TRACKING="off", OMP_NUM_THREADS="1")
    cell = root / "results" / "infer" / "diffpose" / "seed0"
    out = run(["dvc", "repro", "infer@diffpose-0"], root, env, timeout=900)
    assert "infer.processes is 2" in out.stderr + out.stdout
    two = (_files(cell / "predictions"), json.loads((cell / "metrics.json").read_text()),
           json.loads((cell / "infer.json").read_text()))
    assert two[2]["world_size"] == 2 and two[2]["person_clips"] > 2 * 8
    lock = (root / "dvc.lock").read_text()
    assert "torchrun" not in lock and "torch.distributed.run" not in lock

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["infer"]["processes"] = 1
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert json.loads(run(["dvc", "status", "--json", "infer@diffpose-0"], root, env).stdout or "{}") == {}
    out = run(["dvc", "repro", "--force", "--single-item", "infer@diffpose-0"], root, env, timeout=900)
    assert "infer.processes is" not in out.stderr + out.stdout
    one = (_files(cell / "predictions"), json.loads((cell / "metrics.json").read_text()),
           json.loads((cell / "infer.json").read_text()))
    assert one[2]["world_size"] == 1
    assert one[0] == two[0]
    provenance = ("run",)  # git_commit gains -dirty with the edited params.yaml
    assert {k: v for k, v in one[1].items() if k not in provenance} == {k: v for k, v in two[1].items()
                                                                     if k not in provenance}
