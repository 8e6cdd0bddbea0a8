"""Self-describing checkpoints (diffpose.models.checkpoint)."""

from __future__ import annotations

import pytest
import torch

from diffpose.errors import DataError
from diffpose.models.checkpoint import load_checkpoint, save_checkpoint
from diffpose.models.config import ModelConfig
from diffpose.models.factory import build_model

TINY = ModelConfig.preset("tiny")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def trained_state(tmp_path):
    """A tiny DiffPose after two optimiser steps, saved with trainer-like extras."""
    torch.manual_seed(0)
    model = build_model(TINY)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    frames = torch.rand(2, 3, 3, 64, 48)
    target, weight = torch.rand(2, 17, 16, 12), torch.ones(2, 17)
    for _ in range(2):
        opt.zero_grad()
        model.loss(frames, target, weight).backward()
        opt.step()
    path = tmp_path / "model.pt"
    extra = {"optimizer": opt.state_dict(), "epoch": 4, "rng": torch.get_rng_state(),
             "history": [{"epoch": 1, "loss": 0.5}]}
    save_checkpoint(path, model, params={"models": {"tiny": {"preset": "tiny"}}, "train": {"lr": 1e-3}}, extra=extra)
    return model.eval(), opt, path, frames


def test_round_trip_rebuilds_the_model_alone(trained_state):
    model, opt, path, frames = trained_state
    loaded, payload = load_checkpoint(path)
    assert loaded.cfg == model.cfg and type(loaded) is type(model)
    loaded.eval()
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert torch.equal(loaded.predict(frames, steps=2, generator=g()), model.predict(frames, steps=2, generator=g()))
    assert payload["params"]["train"] == {"lr": 1e-3} and payload["arch"] == "diffpose"
    assert payload["model_config"] == TINY.to_dict()
    extra = payload["extra"]
    assert extra["epoch"] == 4 and extra["history"][0]["loss"] == 0.5
    fresh = torch.optim.Adam(loaded.parameters(), lr=1e-3)
    fresh.load_state_dict(extra["optimizer"])               # resumable optimiser state
    assert fresh.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    # plain weights_only loading works (no pickled classes inside)
    assert isinstance(torch.load(path, weights_only=True), dict)


def test_no_temporary_files_are_left(trained_state):
    _, _, path, _ = trained_state
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]


def test_expected_architecture(trained_state):
    _, _, path, _ = trained_state
    load_checkpoint(path, expect_arch="diffpose")
    with pytest.raises(DataError, match=r"model\.pt: checkpoint holds a 'diffpose' model, expected 'baseline'"):
        load_checkpoint(path, expect_arch="baseline")


def test_mismatching_weights_are_named(trained_state, tmp_path):
    _, _, path, _ = trained_state
    payload = torch.load(path, weights_only=True)
    payload["model_config"]["lmsfi"] = False                 # config says ablation, weights say LMSFI
    bad = tmp_path / "bad.pt"
    torch.save(payload, bad)
    with pytest.raises(DataError, match=r"bad\.pt: weights do not match .*unexpected key"):
        load_checkpoint(bad)
    payload = torch.load(path, weights_only=True)
    key = next(k for k in payload["state_dict"] if k.endswith("head.1.weight"))
    payload["state_dict"][key] = torch.zeros(3, 3)
    torch.save(payload, bad)
    with pytest.raises(DataError, match="shape mismatch"):
        load_checkpoint(bad)


def test_broken_files_get_one_line_errors(trained_state, tmp_path):
    _, _, path, _ = trained_state
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    text = tmp_path / "notes.pt"
    text.write_text("hello\n")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(2)}, other)
    future = tmp_path / "future.pt"
    payload = torch.load(path, weights_only=True)
    payload["version"] = 99
    torch.save(payload, future)
    bad_cfg = tmp_path / "badcfg.pt"
    payload["version"] = 1
    payload["model_config"]["heatmap_size"] = [3, 3]
    torch.save(payload, bad_cfg)
    cases = {truncated: "not a readable checkpoint", text: "not a readable checkpoint",
             other: "not a diffpose checkpoint", future: "version 99", bad_cfg: "stored model config is invalid",
             tmp_path / "missing.pt": "not found"}
    for file, message in cases.items():
        with pytest.raises(DataError) as err:
            load_checkpoint(file)
        assert str(file) in str(err.value) and message in str(err.value)
        assert "\n" not in str(err.value)


def test_baseline_round_trip(tmp_path):
    cfg = TINY.replace(arch="baseline", num_frames=1)
    model = build_model(cfg).eval()
    save_checkpoint(tmp_path / "b.pt", model)
    loaded, payload = load_checkpoint(tmp_path / "b.pt", expect_arch="baseline")
    frames = torch.rand(1, 1, 3, 64, 48)
    assert torch.equal(loaded.eval().predict(frames), model.predict(frames))
    assert payload["params"] == {} and payload["extra"] == {}
