"""Trainer: exact resume after kill -9, NaN stop keeping the last good checkpoint, torchrun DDP,
MLflow run and outputs. Everything on a tiny dataset and a tiny model, on the CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from diffpose.models.checkpoint import load_checkpoint
from diffpose.stages import train as train_stage
from diffpose.training.schedule import lr_at
from diffpose.training.trainer import TrainingDiverged
from tests.test_clips import make_tiny_dataset

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY_MODEL = {"preset": "tiny"}  # the model engineer's smallest preset


def write_params(path: Path, **train_overrides) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"] = {"tiny": dict(TINY_MODEL)}
    params["data"]["workers"] = 0
    params["train"].update({"epochs": 3, "batch_size": 4, "lr": 1e-3, "warmup_epochs": 0.5, "threads": 1,
                            "device": "cpu"})
    params["train"].update(train_overrides)
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    return make_tiny_dataset(tmp_path_factory.mktemp("data"), sequences=3, frames=8)


def _cmd(params: Path, out: Path, data: tuple[Path, Path]) -> list[str]:
    ann, root = data
    return [str(BIN / "diffpose"), "train", "--model", "tiny", "--out", str(out), "--params", str(params),
            "--annotations", str(ann), "--images", str(root), "--no-progress"]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    model, _ = load_checkpoint(path)
    return model.state_dict()


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # three `diffpose train` subprocesses
def test_kill_9_then_rerun_gives_the_uninterrupted_weights(data, tmp_path):
    params = write_params(tmp_path / "params.yaml", epochs=6)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    straight = tmp_path / "straight"
    subprocess.run(_cmd(params, straight, data), check=True, env=env, capture_output=True, timeout=120)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(params, killed, data), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while not (killed / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "model.pt").exists()
    _, payload = load_checkpoint(killed / "last.pt")
    assert payload["extra"]["epoch"] < 5

    resumed = subprocess.run(_cmd(params, killed, data), env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming tiny" in resumed.stderr
    assert _same(_weights(straight / "model.pt"), _weights(killed / "model.pt"))
    metrics = json.loads((killed / "metrics.json").read_text())
    assert metrics["resumed_after_epoch"] >= 1 and metrics["epochs"] == 6


def test_other_params_do_not_resume_and_rerun_is_idempotent(data, tmp_path):
    ann, root = data
    out = tmp_path / "out"
    p1 = write_params(tmp_path / "p1.yaml", epochs=2)
    first = train_stage.run(model="tiny", out=str(out), params_path=str(p1), annotations=str(ann), images=str(root),
                            progress=False)
    assert first["resumed_after_epoch"] == 0 and (out / "mlflow_run_id.txt").read_text().strip() == first["mlflow_run_id"]
    before = _weights(out / "model.pt")
    again = train_stage.run(model="tiny", out=str(out), params_path=str(p1), annotations=str(ann), images=str(root),
                            progress=False)
    assert again["resumed_after_epoch"] == 2  # nothing left to train
    assert _same(before, _weights(out / "model.pt"))
    p2 = write_params(tmp_path / "p2.yaml", epochs=2, lr=2e-3)
    other = train_stage.run(model="tiny", out=str(out), params_path=str(p2), annotations=str(ann), images=str(root),
                            progress=False)
    assert other["resumed_after_epoch"] == 0
    assert not _same(before, _weights(out / "model.pt"))


def test_the_training_fingerprint_covers_what_training_reads_and_not_inference_code():
    from diffpose.training import trainer

    root = Path(trainer.__file__).resolve().parents[1]
    covered = {f.relative_to(root).as_posix() for f in trainer.training_source_files()}
    assert {"data/keypoints.py", "data/posetrack.py", "data/clips.py", "diffusion/gaussian.py",
            "models/diffpose.py", "training/trainer.py"} <= covered
    assert all((root / rel).is_file() for rel in covered)
    assert not covered & {"diffusion/ensemble.py", "inference/predictor.py", "stages/infer.py"}


def test_changed_training_code_does_not_resume_a_finished_run(data, tmp_path, monkeypatch):
    """DVC re-runs `train` when its code changed; the persisted last.pt of the old code must then
    not be taken as a finished run."""
    from diffpose.training import trainer

    ann, root = data
    out = tmp_path / "out"
    params = write_params(tmp_path / "p.yaml", epochs=1)
    first = train_stage.run(model="tiny", out=str(out), params_path=str(params), annotations=str(ann),
                            images=str(root), progress=False)
    assert first["resumed_after_epoch"] == 0
    real = trainer.code_version()
    assert len(real) == 64 and real == trainer.code_version()
    monkeypatch.setattr(trainer, "code_version", lambda: "edited" + real)
    again = train_stage.run(model="tiny", out=str(out), params_path=str(params), annotations=str(ann),
                            images=str(root), progress=False)
    assert again["resumed_after_epoch"] == 0 and again["train_seconds_this_run"] > 0


def test_mlflow_run_has_params_metrics_artifact_and_data_version(data, tmp_path):
    import mlflow

    ann, root = data
    out = tmp_path / "out"
    params = write_params(tmp_path / "p.yaml", epochs=2)
    result = train_stage.run(model="tiny", out=str(out), params_path=str(params), annotations=str(ann),
                             images=str(root), progress=False)
    run = mlflow.get_run(result["mlflow_run_id"])
    assert run.data.params["train.epochs"] == "2" and run.data.params["model_name"] == "tiny"
    assert len(run.data.tags["data_version"]) == 64 and run.data.tags["git_commit"]
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in history] == [1, 2]
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)]
    assert "model.pt" in artifacts


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data, tmp_path):
    from diffpose.models.factory import build_model

    ann, root = data
    out = tmp_path / "out"
    params = write_params(tmp_path / "p.yaml", epochs=3)
    calls = {"n": 0}

    def poisoned(cfg):
        model = build_model(cfg)
        loss = model.loss

        def bad_loss(*args, **kwargs):
            calls["n"] += 1
            value = loss(*args, **kwargs)
            return value * float("nan") if calls["n"] > 8 else value  # 6 steps per epoch: NaN in epoch 2

        model.loss = bad_loss
        return model

    model_cfg, train_cfg, data_cfg = train_stage.configs(yaml.safe_load(params.read_text()), "tiny")
    from diffpose.training.trainer import train

    with pytest.raises(TrainingDiverged) as err:
        train(model_cfg=model_cfg, train_cfg=train_cfg, data_cfg=data_cfg, annotations=str(ann), image_root=str(root),
              out_dir=str(out), name="tiny", progress=False, build=poisoned)
    message = str(err.value)
    assert "\n" not in message and "epoch 2 step 3" in message and "last.pt is kept" in message
    model, payload = load_checkpoint(out / "last.pt")
    assert payload["extra"]["epoch"] == 0
    assert all(torch.isfinite(p).all() for p in model.state_dict().values() if p.is_floating_point())
    assert not (out / "model.pt").exists()


@pytest.mark.slow  # a `diffpose train` subprocess
def test_huge_lr_fails_on_one_line_through_the_cli(data, tmp_path):
    params = write_params(tmp_path / "p.yaml", epochs=2, lr=1e30, grad_clip=0.0, warmup_epochs=0.0)
    proc = subprocess.run(_cmd(params, tmp_path / "out", data), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("diffpose train: error: loss became"), proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow  # torchrun with two training processes
def test_torchrun_two_processes_stay_in_sync(data, tmp_path):
    params = write_params(tmp_path / "p.yaml", epochs=2)
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "--no-python", *_cmd(params, out, data)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["ranks_in_sync"] is True
    assert proc.stdout.count("train: tiny:") == 1  # only rank 0 reports
    assert (out / "model.pt").exists()


def test_schedules():
    kw = dict(base_lr=1.0, total_steps=100, warmup_steps=10)
    assert lr_at(0, **kw) == pytest.approx(0.1) and lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(10, **kw) == pytest.approx(1.0) and lr_at(100, **kw) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(55, **kw) == pytest.approx(0.5)
    step = dict(base_lr=1.0, total_steps=100, kind="step", milestones=(30, 60), gamma=0.1)
    assert [lr_at(s, **step) for s in (29, 30, 59, 60)] == pytest.approx([1.0, 0.1, 0.1, 0.01])
