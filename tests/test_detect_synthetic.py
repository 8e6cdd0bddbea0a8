"""The synthetic benchmark's detector: target codec, training on the tiny preset, checkpoints, stage."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from diffpose.data.frames import extract_all
from diffpose.detect.box_ap import box_ap, recall_at
from diffpose.detect.centernet import (
    STRIDE, CenterNet, CenterNetConfig, CenterNetDetector, decode, load_checkpoint, save_checkpoint,
)
from diffpose.detect.frames import read_split
from diffpose.detect.run import detect_frames
from diffpose.detect.train import (
    Sample, TrainConfig, detector_loss, giou_loss, load_samples, make_batch, make_targets, resolve_precision,
    train_detector,
)
from diffpose.errors import ConfigError, DataError
from diffpose.stages import synth


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    with pytest.MonkeyPatch.context() as mp:  # module scope: the per-test MLflow store is not set yet
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        synth.run(str(root / "synth"), preset="tiny", seed=0, workers=1, progress=False)
    extract_all(root / "synth" / "videos", root / "frames", workers=1, progress=False)
    return root


def test_targets_decode_back_to_the_boxes():
    boxes = np.array([[10.0, 12.0, 20.0, 44.0], [50.3, 8.7, 13.0, 30.0]])
    sample = Sample(image=np.zeros((64, 96, 3), np.uint8), boxes=boxes, ignore_boxes=np.zeros((0, 4)),
                    regions=[np.array([[70.0, 40.0], [95.0, 40.0], [95.0, 63.0], [70.0, 63.0]])])
    t = make_targets(sample, (16, 24), flip=False)
    assert t["centre"].sum() == 2 and t["heat"].max() == 1.0
    assert t["weight"][12, 20] == 0 and t["weight"][0, 0] == 1  # inside the ignore polygon / background
    out = {"heat": torch.from_numpy(np.where(t["centre"] > 0, 10.0, -10.0)[None, None]).float(),
           "size": torch.from_numpy(t["size"][None]), "offset": torch.from_numpy(t["offset"][None])}
    got = decode(out, max_detections=5)[0]
    got = got[got[:, 4] > 0.5]  # the flat background yields top-k peaks of score ~0
    assert len(got) == 2
    got = got[np.argsort(got[:, 0])]
    np.testing.assert_allclose(got[:, :4], boxes, atol=1e-3)
    flipped = make_targets(sample, (16, 24), flip=True)
    assert flipped["centre"].sum() == 2
    assert flipped["weight"][12, 2] == 0 and flipped["weight"][12, 20] == 1  # the polygon moved to the left


def test_giou_loss_and_its_place_in_the_detector_loss():
    box = torch.tensor([[0.0, 0.0, 2.0, 4.0]])
    assert giou_loss(box, box).item() == pytest.approx(0.0, abs=1e-6)
    half = giou_loss(box, torch.tensor([[1.0, 0.0, 3.0, 4.0]])).item()  # IoU 1/3, hull = union
    assert half == pytest.approx(2 / 3, abs=1e-5)
    apart = giou_loss(box, torch.tensor([[3.0, 0.0, 5.0, 4.0]])).item()  # IoU 0, hull 20 vs union 16
    assert apart == pytest.approx(1.2, abs=1e-5)

    sample = Sample(image=np.full((64, 96, 3), 128, np.uint8), boxes=np.array([[10.0, 12.0, 20.0, 44.0]]),
                    ignore_boxes=np.zeros((0, 4)), regions=[])
    x, targets = make_batch([sample], np.random.default_rng(0), torch.device("cpu"), augmented=False)
    perfect = {"heat": torch.where(targets["heat"][:, None] == 1, 9.0, -9.0), "size": targets["size"].clone(),
               "offset": targets["offset"].clone()}
    wrong = {**perfect, "size": (targets["size"] + 0.5).requires_grad_()}
    assert detector_loss(perfect, targets, giou_weight=2.0)["giou"].item() == pytest.approx(0.0, abs=1e-5)
    plain, with_giou = detector_loss(wrong, targets), detector_loss(wrong, targets, giou_weight=2.0)
    assert "giou" not in plain and with_giou["giou"].item() > 0.1
    assert with_giou["total"].item() == pytest.approx(plain["total"].item() + 2 * with_giou["giou"].item(), rel=1e-5)
    with_giou["total"].backward()
    assert wrong["size"].grad.abs().sum() > 0


def test_conv_heads_round_trip_and_old_checkpoints_still_load(tmp_path):
    model = CenterNet(CenterNetConfig(width=8, head_conv=8)).eval()
    assert isinstance(model.heads["size"], torch.nn.Sequential)
    assert model.heads["heat"][-1].bias.item() == pytest.approx(-2.19)
    path = tmp_path / "conv.pt"
    save_checkpoint(path, model, input_scale=1.0)
    reloaded, state = load_checkpoint(path)
    assert state["model_args"] == {"width": 8, "head_conv": 8}
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x)["size"], model(x)["size"])
    old = torch.load(path, weights_only=True)  # a checkpoint from before head_conv existed
    plain = CenterNet(CenterNetConfig(width=8))
    old.update(model_args={"width": 8}, state_dict=plain.state_dict())
    torch.save(old, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt")[0].config.head_conv == 0


def constant_box_recall(samples, truth_frames, truth, scale):
    """Trivial baseline: every frame gets the mean training box, placed at the image centre."""
    mean_w, mean_h = np.concatenate([s.boxes for s in samples])[:, 2:].mean(axis=0) / scale
    dets = []
    for frame in truth_frames:
        h, w = samples[0].image.shape[:2]
        cx, cy = w / scale / 2, h / scale / 2
        dets.append({"image_id": frame.image_id, "bbox": [cx - mean_w / 2, cy - mean_h / 2, mean_w, mean_h], "score": 1})
    return recall_at(dets, truth)


def test_training_on_tiny_learns_to_find_people(tiny, tmp_path):
    config = TrainConfig(max_steps=100, batch_size=8, lr=3e-3, input_scale=0.5, seed=0, augment=False)
    annotations = tiny / "synth" / "annotations" / "train"
    samples = load_samples(annotations, tiny / "frames", input_scale=config.input_scale, progress=False)
    model, history = train_detector(samples, config, progress=False, log_every=20)
    assert history["steps"] == 100 and history["stopped_by"] == "max_steps"
    assert history["loss_last"] < 0.3 * history["loss_first"], history
    frames, truth = read_split(annotations)
    detector = CenterNetDetector(model, input_scale=config.input_scale)
    run = detect_frames(detector, frames, tiny / "frames", score_threshold=0.2, progress=False)
    found, total = recall_at(run.records, truth)
    base, _ = constant_box_recall(samples, frames, truth, config.input_scale)
    print(f"\ntiny train recall@0.5: detector {found}/{total}, constant-box baseline {base}/{total}; {history}")
    assert found / total >= 0.75 and found >= base + 0.3 * total

    path = tmp_path / "det.pt"
    save_checkpoint(path, model, input_scale=config.input_scale, extra={"history": history})
    reloaded = CenterNetDetector.from_checkpoint(path)
    image = samples[0].image
    a, b = detector.detect([image]), reloaded.detect([image])
    np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-4)
    _, state = load_checkpoint(path)
    assert state["history"]["steps"] == 100 and state["input_scale"] == 0.5


def test_precision_choice(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) is None
    assert resolve_precision("bf16", cpu) is torch.bfloat16
    with pytest.raises(ConfigError, match="precision: .fp16. is not one of auto, bf16, fp32"):
        resolve_precision("fp16", cpu)
    import diffpose.detect.train as train_module

    monkeypatch.setattr(train_module, "_native_cpu_bf16", lambda: False)
    assert resolve_precision("auto", cpu) is None  # emulated bf16 would be slower than fp32
    monkeypatch.setattr(train_module, "_native_cpu_bf16", lambda: True)
    assert resolve_precision("auto", cpu) is torch.bfloat16


def _short_run(samples, **changes):
    config = TrainConfig(max_steps=6, batch_size=4, input_scale=0.5, seed=3, **changes)
    model, history = train_detector(samples, config, progress=False, log_every=3)
    return {k: v.clone() for k, v in model.state_dict().items()}, history


def test_training_is_seeded_through_the_prefetching_loader(tiny):
    """Batches are made in a background thread one step ahead; the same seed must still give the
    same weights, and bf16 autocast must train (finite loss, different rounding from fp32)."""
    samples = load_samples(tiny / "synth" / "annotations" / "train", tiny / "frames", input_scale=0.5, progress=False)
    a, ha = _short_run(samples, precision="fp32", channels_last=True)
    b, _ = _short_run(samples, precision="fp32", channels_last=False)
    c, hc = _short_run(samples, precision="bf16")
    assert ha["precision"] == "fp32" and hc["precision"] == "bf16"
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)  # memory layout changes no result
    assert np.isfinite(hc["loss_last"])
    assert any(not torch.allclose(a[k].float(), c[k].float()) for k in a if a[k].is_floating_point())


def test_non_finite_detector_loss_stops_with_one_line(tiny, monkeypatch):
    import diffpose.detect.train as train_module

    samples = load_samples(tiny / "synth" / "annotations" / "train", tiny / "frames", input_scale=0.5, progress=False)
    real = train_module.detector_loss

    def poisoned(out, targets, **kw):
        parts = real(out, targets, **kw)
        parts["total"] = parts["total"] * float("nan")
        return parts

    monkeypatch.setattr(train_module, "detector_loss", poisoned)
    with pytest.raises(DataError, match=r"detector training: loss is nan at step 1 .*lower detect.train.lr"):
        _short_run(samples, precision="fp32")


def test_bad_checkpoints_are_named(tmp_path):
    with pytest.raises(DataError, match="detector checkpoint not found .*train-detector"):
        CenterNetDetector.from_checkpoint(tmp_path / "none.pt")
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else"}, other)
    with pytest.raises(DataError, match="other.pt: not a diffpose-centernet/1 checkpoint"):
        CenterNetDetector.from_checkpoint(other)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junk")
    with pytest.raises(DataError, match="junk.pt: not a readable checkpoint"):
        load_checkpoint(junk)
    out = CenterNet()(torch.zeros(2, 3, 32, 48))  # the default network: one map set per stride-4 cell
    grid = (32 // STRIDE, 48 // STRIDE)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"heat": (2, 1, *grid), "size": (2, 2, *grid),
                                                            "offset": (2, 2, *grid)}


@pytest.mark.slow  # a train-detector and a detect subprocess
def test_train_detector_then_detect_commands(tiny, tmp_path):
    ckpt, dets, metrics = tmp_path / "m" / "detector.pt", tmp_path / "d" / "val.json", tmp_path / "d" / "ap.json"
    cmd = [sys.executable, "-m", "diffpose"]
    train = subprocess.run(cmd + ["train-detector", "--annotations", str(tiny / "synth/annotations/train"),
                                  "--images", str(tiny / "frames"), "--out", str(ckpt), "--max-steps", "20",
                                  "--metrics", str(tmp_path / "m" / "train.json"), "--no-progress"],
                           capture_output=True, text=True, timeout=120)
    assert train.returncode == 0, train.stderr
    assert "train_detector: 20 steps" in train.stdout
    detect = subprocess.run(cmd + ["detect", "--annotations", str(tiny / "synth/annotations/val"), "--images",
                                   str(tiny / "frames"), "--out", str(dets), "--metrics", str(metrics),
                                   "--backend", "synthetic", "--checkpoint", str(ckpt), "--frames", "all",
                                   "--no-progress"], capture_output=True, text=True, timeout=120)
    assert detect.returncode == 0, detect.stderr
    frames, truth = read_split(tiny / "synth/annotations/val", frames="all")
    m = json.loads(metrics.read_text())
    assert m["frames"] == len(frames) > len(truth)  # every frame, scored on the labelled ones
    assert m["box_ap"]["labelled_frames"] == len(truth)
    records = json.loads(dets.read_text())
    assert m["detections"] == len(records)
    assert m["box_ap_kept"] == box_ap(records, truth)  # the metric is the written boxes' AP
    assert all(r["score"] >= 0.2 and r["category_id"] == 1 for r in records)
    assert {r["image_id"] for r in records} <= {f.image_id for f in frames}


def test_detect_stage_fills_gaps_from_every_frame_and_writes_only_the_chosen(tiny, tmp_path):
    """With fill_gaps the stage detects on every frame (the frames between labelled ones link the
    tracks) but writes and scores the chosen frames only; --no-fill-gaps detects on those alone."""
    from diffpose.stages import detect

    ckpt = tmp_path / "detector.pt"
    save_checkpoint(ckpt, CenterNet(CenterNetConfig(head_conv=8)), input_scale=0.5)
    val = tiny / "synth" / "annotations" / "val"
    every, truth = read_split(val, frames="all")
    labelled = {f.image_id for f in every if f.labelled}
    assert len(every) > len(labelled) == len(truth)
    for fill, detected in ((True, len(every)), (False, len(labelled))):
        params = detect.resolve_params(None, checkpoint=str(ckpt), fill_gaps=fill, score_threshold=0.0)
        params["fill_gaps"]["min_score"] = 0.0  # an untrained network: link whatever it finds
        out = tmp_path / f"fill_{fill}.json"
        m = detect.run(annotations=str(val), images=str(tiny / "frames"), out=str(out), params=params, progress=False)
        records = json.loads(out.read_text())
        assert m["frames_detected"] == detected and m["frames"] == len(labelled)
        assert {r["image_id"] for r in records} <= labelled
        assert ("fill_gaps" in m) is fill
        scored = {k: v for k, v in truth.items() if k in labelled}
        assert m["box_ap_kept"] == m["box_ap"] == box_ap(records, scored)  # threshold 0: every box written
        if fill:
            assert m["fill_gaps"]["boxes_added"] == sum(1 for r in records if r.get("interpolated"))
            own = [r for r in records if not r.get("interpolated")]
            assert m["fill_gaps"]["box_ap_per_frame"] == box_ap(own, scored)  # the detector's boxes alone
        else:
            assert not any(r.get("interpolated") for r in records)
