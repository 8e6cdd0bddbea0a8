"""Resume under torchrun: rank 0 decides and every process follows, whatever the others see on
disk; the last two resume points are kept and a damaged last.pt falls back to last.prev.pt."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from diffpose.models.checkpoint import read_payload

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# torchrun runs this instead of `diffpose`: the processes other than rank 0 get their own --out,
# as on nodes without a shared disk, so what they would find there differs from rank 0's folder
PER_RANK_OUT = """\
import os, sys
from diffpose.cli import main
argv = sys.argv[1:]
if os.environ.get("RANK", "0") != "0":
    argv[argv.index("--out") + 1] = os.environ["OTHER_RANKS_OUT"]
sys.exit(main(argv))
"""


def _params(path: Path, **train) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"] = {"tiny": {"preset": "tiny"}}
    params["data"]["workers"] = 0
    params["train"].update({"epochs": 2, "batch_size": 4, "lr": 1e-3, "warmup_epochs": 0.5, "threads": 1,
                            "device": "cpu", "amp": False, **train})
    path.write_text(yaml.safe_dump(params))
    return path


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return read_payload(path)["state_dict"]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """The tiny synthetic benchmark, made by the CLI as the pipeline makes it."""
    root = tmp_path_factory.mktemp("synth")
    env = dict(os.environ, DIFFPOSE_TRACKING="off")
    for cmd in (["synth", "--preset", "tiny", "--out", str(root), "--workers", "1", "--no-progress"],
                ["frames", "--videos", str(root / "videos"), "--out", str(root), "--workers", "1", "--no-progress"]):
        subprocess.run([str(BIN / "diffpose"), *cmd], check=True, env=env, capture_output=True, timeout=120)
    return root


def _train_cmd(params: Path, out: Path, data: Path) -> list[str]:
    return ["train", "--model", "tiny", "--out", str(out), "--params", str(params),
            "--annotations", str(data / "annotations" / "train"), "--images", str(data), "--no-progress"]


def test_a_damaged_last_pt_falls_back_to_last_prev_pt(synth, tmp_path):
    from diffpose.stages import train as train_stage

    params = _params(tmp_path / "p.yaml", epochs=3)
    run = lambda out: train_stage.run(model="tiny", out=str(out), params_path=str(params),  # noqa: E731
                                      annotations=str(synth / "annotations" / "train"), images=str(synth),
                                      progress=False)
    straight = tmp_path / "straight"
    run(straight)
    assert read_payload(straight / "last.pt")["extra"]["epoch"] == 2
    assert read_payload(straight / "last.prev.pt")["extra"]["epoch"] == 1     # the two last epochs are kept

    damaged = tmp_path / "damaged"
    damaged.mkdir()
    shutil.copy(straight / "last.prev.pt", damaged / "last.prev.pt")         # after epoch 2
    (damaged / "last.pt").write_bytes((straight / "last.pt").read_bytes()[:1000])  # a torn file
    result = run(damaged)
    assert result["resumed_after_epoch"] == 2
    assert _same(_weights(straight / "model.pt"), _weights(damaged / "model.pt"))
    assert read_payload(damaged / "last.pt")["extra"]["epoch"] == 2
    assert read_payload(damaged / "last.prev.pt")["extra"]["epoch"] == 1     # the torn file did not take its place


@pytest.mark.slow  # two torchrun launches of two gloo processes each (~30 s)
@pytest.mark.parametrize("other_ranks_see", ["a finished last.pt"])
def test_every_rank_follows_rank_0s_resume_decision(synth, tmp_path, other_ranks_see):
    params = _params(tmp_path / "p.yaml", epochs=2)
    wrapper = tmp_path / "per_rank_out.py"
    wrapper.write_text(PER_RANK_OUT)
    env = dict(os.environ, OMP_NUM_THREADS="1", DIFFPOSE_TRACKING="off")

    def torchrun(out: Path, other: Path) -> subprocess.CompletedProcess:
        cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", str(wrapper),
               *_train_cmd(params, out, synth)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=150,
                              env={**env, "OTHER_RANKS_OUT": str(other)})

    straight = tmp_path / "straight"
    proc = torchrun(straight, tmp_path / "unused")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "unused").exists()                             # only rank 0 writes

    # rank 0 finds the checkpoint after epoch 1; rank 1 finds one of a finished run in its folder
    # (per-rank decisions: rank 1 would train no epoch and rank 0 one, and the run would hang)
    resumed, other = tmp_path / "resumed", tmp_path / "other"
    resumed.mkdir(), other.mkdir()
    shutil.copy(straight / "last.prev.pt", resumed / "last.pt")
    shutil.copy(straight / "last.pt", other / "last.pt")
    before = (other / "last.pt").read_bytes()
    proc = torchrun(resumed, other)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("resuming tiny") == 1 and "after epoch 1" in proc.stderr
    metrics = json.loads((resumed / "metrics.json").read_text())
    assert metrics["resumed_after_epoch"] == 1 and metrics["world_size"] == 2 and metrics["ranks_in_sync"] is True
    assert _same(_weights(straight / "model.pt"), _weights(resumed / "model.pt"))   # as if never interrupted
    assert sorted(p.name for p in other.iterdir()) == ["last.pt"] and (other / "last.pt").read_bytes() == before


# a training launched by torchrun with validation (the stage's --val-annotations is the lead's to add)
TRAIN_WITH_VALIDATION = """\
import sys, yaml
from diffpose.stages.train import configs
from diffpose.training.trainer import train
params_file, train_dir, images, out, val_dir = sys.argv[1:]
model_cfg, train_cfg, data_cfg = configs(yaml.safe_load(open(params_file)), "base")
train(model_cfg=model_cfg, train_cfg=train_cfg, data_cfg=data_cfg, annotations=train_dir, image_root=images,
      out_dir=out, name="base", progress=False, val_annotations=val_dir, val_settings={"batch_size": 4})
"""


@pytest.mark.slow  # one torchrun launch of two gloo processes (~20 s)
def test_validation_shared_out_over_two_processes_scores_every_person(synth, tmp_path):
    """Each process predicts every other batch; rank 0 gathers them in order and scores the lot:
    the Total mAP is the one a single process computes on the saved weights. A DiffPose model, so
    the sampler's noise is in play: it is seeded per batch, and the split cannot change it."""
    from diffpose.models.checkpoint import load_checkpoint
    from diffpose.training.distributed import DistContext
    from diffpose.training.validation import ValidationConfig, Validator

    params = yaml.safe_load(_params(tmp_path / "p.yaml", epochs=1, val_every=1).read_text())
    params["models"] = {"base": {"preset": "tiny", "arch": "diffpose"}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    script = tmp_path / "train_with_validation.py"
    script.write_text(TRAIN_WITH_VALIDATION)
    val, out = synth / "annotations" / "val", tmp_path / "out"
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", str(script), str(tmp_path / "p.yaml"),
           str(synth / "annotations" / "train"), str(synth), str(out), str(val)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150,
                          env=dict(os.environ, OMP_NUM_THREADS="1", DIFFPOSE_TRACKING="off"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["best_epoch"] == 1 and (out / "best.pt").exists()

    model, _ = load_checkpoint(out / "model.pt")
    alone = Validator(ValidationConfig(annotations=str(val), images=str(synth), every=1, batch_size=4), model.cfg,
                      box_enlarge=1.25, frame_stride=1, cache_mb=64, ctx=DistContext())
    assert len(alone.samples) > 2
    assert alone(model)["Total"] == pytest.approx(metrics["val_mAP"], abs=1e-9)
