"""Bad inputs of the 2026-11 sweep (../shared/docs/bad-input-sweep-2026-11.md): each gives one
line and exit 2 (or, for a zero-size head box, the official score and one warning), loses nothing
already done and leaves no partial file under a final name."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from diffpose.cli import main as cli
from diffpose.data import posetrack
from diffpose.errors import ConfigError, DataError
from diffpose.evaluation import posetrack_map as pm
from diffpose.stages import validate

SEQ = "003418_mpii_test"


@pytest.fixture(autouse=True)
def _no_tracking(monkeypatch):
    monkeypatch.setenv("DIFFPOSE_TRACKING", "off")


def _case_a(posetrack18_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    shutil.copytree(posetrack18_dir / "poseval_gt" / "posetrack18_format", gt)
    shutil.copytree(posetrack18_dir / "poseval_cases" / "case_a_gt_exact" / "pred", pred)
    for p in (*gt.iterdir(), *pred.iterdir()):
        p.chmod(0o644)
    return gt, pred


def _edit(path: Path, change) -> dict:
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))
    return obj


def _labelled(obj: dict) -> int:
    """Position of the first annotation with points."""
    return next(i for i, a in enumerate(obj["annotations"]) if any(a["keypoints"]))


# ---------------------------------------------------------------------------------------------
# E26, V12, V09, E36, D08: geometry


def test_zero_size_head_box_keeps_the_official_score_with_one_warning(posetrack18_dir, tmp_path, caplog):
    gt, pred = _case_a(posetrack18_dir, tmp_path)
    assert pm.evaluate_folders(gt, pred)["Total"] == pytest.approx(100.0)
    state = {}

    def zero(obj):
        i = state["i"] = _labelled(obj)
        obj["annotations"][i]["bbox_head"][2:] = [0, 0]
        state["ann"] = obj["annotations"][i]

    _edit(gt / f"{SEQ}.json", zero)
    with caplog.at_level(logging.WARNING):
        total = pm.evaluate_folders(gt, pred)["Total"]
    assert total < 100.0  # that person's joints are all unmatched, as the official tool scores them
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    ann = state["ann"]
    for text in (f"{SEQ}.json", f"annotation #{state['i']}", f"image {ann['image_id']}", f"track {ann['track_id']}",
                 "zero size", "official"):
        assert text in warnings[0]

    bad, lines = validate.run([gt])
    assert bad == 1
    assert [line for line in lines if line.startswith("ERROR")] == [
        next(line for line in lines if f"{SEQ}.json" in line)]
    assert "zero size" in lines[[f"{SEQ}.json" in line for line in lines].index(True)]


def test_no_warning_on_valid_files(posetrack18_dir, tmp_path, caplog):
    gt, pred = _case_a(posetrack18_dir, tmp_path)
    with caplog.at_level(logging.WARNING):
        pm.evaluate_folders(gt, pred)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert validate.run([gt])[0] == 0


@pytest.mark.parametrize("key", ["bbox_head", "bbox"])
def test_negative_box_is_refused(posetrack18_dir, tmp_path, key, capsys):
    gt, pred = _case_a(posetrack18_dir, tmp_path)
    state = {}

    def negative(obj):
        i = state["i"] = _labelled(obj)
        box = obj["annotations"][i][key]
        box[2], box[3] = -box[2], -box[3]  # same diagonal: the head size alone would not notice

    _edit(gt / f"{SEQ}.json", negative)
    with pytest.raises(DataError, match=rf"annotation #{state['i']} .*'{key}' \[x, y, w, h\] must have a width"):
        posetrack.load_sequence(gt / f"{SEQ}.json")
    assert cli(["validate", str(gt)]) == 1
    capsys.readouterr()
    assert cli(["evaluate", "--gt", str(gt), "--pred", str(pred), "--no-track"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("diffpose evaluate: error: ") and f"{SEQ}.json" in err[0]


@pytest.mark.parametrize(("width", "height"), [(-192, 480), (640, 0), (True, 480)])
def test_bad_image_size_is_refused(posetrack18_dir, tmp_path, width, height):
    gt, _ = _case_a(posetrack18_dir, tmp_path)

    def size(obj):
        obj["images"][0].update(width=width, height=height)

    _edit(gt / f"{SEQ}.json", size)
    with pytest.raises(DataError, match=r"frame #0 .*'(width|height)' must be a positive number of pixels"):
        posetrack.load_sequence(gt / f"{SEQ}.json")


@pytest.mark.parametrize("kind", ["pred", "gt"])
@pytest.mark.parametrize("value", [True, False])
def test_boolean_coordinate_is_refused(posetrack18_dir, tmp_path, kind, value):
    """GT files hold booleans of their own (is_labeled); a keypoint must not be one."""
    gt, pred = _case_a(posetrack18_dir, tmp_path)
    path = (gt if kind == "gt" else pred) / f"{SEQ}.json"
    state = {}

    def boolean(obj):
        i = state["i"] = _labelled(obj)
        obj["annotations"][i]["keypoints"][0] = value

    _edit(path, boolean)
    with pytest.raises(DataError, match=rf"annotation #{state['i']} .*'keypoints'\[0\] \(nose.x\) must be a finite number, got {value}"):
        posetrack.load_sequence(path, kind=kind)
    with pytest.raises(DataError, match="nose.x"):
        validate.check_file(path, kind=kind)


def test_booleans_elsewhere_are_still_accepted(posetrack18_dir, tmp_path):
    gt, _ = _case_a(posetrack18_dir, tmp_path)
    _edit(gt / f"{SEQ}.json", lambda o: [im.update(is_labeled=True, extra_flag=False) for im in o["images"]])
    assert posetrack.load_sequence(gt / f"{SEQ}.json")["images"][0]["extra_flag"] is False


@pytest.mark.parametrize("bbox", [[10, 10, -40, -60], [10, 10, 40, True], "nan"])
def test_precomputed_bad_box_is_refused(tmp_path, bbox):
    from diffpose.detect.frames import Frame
    from diffpose.detect.precomputed import read_boxes

    name = f"images/val/{SEQ}/000000.jpg"
    path = tmp_path / "boxes.json"
    box_text = "[10, 10, NaN, 20]" if bbox == "nan" else json.dumps(bbox)
    path.write_text(f'[{{"image_name": "{name}", "bbox": {box_text}, "score": 0.9, "category_id": 1}}]')
    frames = [Frame(image_id=10034180000, file_name=name, labelled=True, source=tmp_path / name)]
    with pytest.raises(DataError, match=str(path)):
        read_boxes(path, frames)


# ---------------------------------------------------------------------------------------------
# F05, F08, F19: a partly decodable video


def _truncated_copy(src: Path, dst: Path, fraction: float = 0.4) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])


def test_partly_decodable_video_fails_and_is_retried(videos_dir, tmp_path, capsys):
    import cv2

    videos, out = tmp_path / "videos", tmp_path / "out"
    videos.mkdir()
    shutil.copy(videos_dir / "bikes.mp4", videos / "good.mp4")
    _truncated_copy(videos_dir / "vtest.avi", videos / "short.avi")
    announced = int(cv2.VideoCapture(str(videos / "short.avi")).get(cv2.CAP_PROP_FRAME_COUNT))
    for attempt in range(2):
        rc = cli(["frames", "--videos", str(videos), "--out", str(out), "--workers", "1", "--no-progress"])
        captured = capsys.readouterr()
        assert rc == 2, attempt
        err = captured.err.strip().splitlines()
        assert len(err) == 1, err
        assert err[0].startswith("diffpose frames: error: 1 of 2 videos failed: ")
        assert "short.avi: only " in err[0] and f"of the {announced} frames" in err[0]
        decoded = int(err[0].split("only ")[1].split()[0])
        assert 0 < decoded < announced
        assert not (out / ".done" / "_" / "short.json").exists()  # not marked complete: retried next time
        assert (out / ".done" / "_" / "good.json").exists()  # the good video is extracted (then skipped)
        assert len(list((out / "images" / "good").glob("*.jpg"))) == json.loads(
            (out / ".done" / "_" / "good.json").read_text())["frames"]


# ---------------------------------------------------------------------------------------------
# G01, G03, G09: the worker pools stop with their parent


def _frames_command(videos_dir: Path, tmp_path: Path, copies: int = 8) -> list[str]:
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(copies):
        (videos / f"v{i}.avi").symlink_to(videos_dir / "vtest.avi")
    return [sys.executable, "-m", "diffpose", "frames", "--videos", str(videos), "--out", str(tmp_path / "out"),
            "--workers", "2", "--no-progress"]


def _workers_of(proc: subprocess.Popen, timeout: float = 60.0) -> list:
    """The pool workers once both have started decoding (they write JPEGs)."""
    psutil = pytest.importorskip("psutil")
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = [p for p in parent.children(recursive=True) if "resource_tracker" not in " ".join(p.cmdline())]
        if len(kids) >= 2 and any((Path(proc.args[proc.args.index("--out") + 1]) / "images").rglob("*.jpg")):
            time.sleep(1.0)
            return parent.children(recursive=True)
        time.sleep(0.1)
    raise AssertionError("the pool workers did not start")


def _gone(procs: list, timeout: float) -> bool:
    psutil = pytest.importorskip("psutil")
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return not alive


@pytest.mark.parametrize("how", ["sigint-group", "sigterm-parent", "sigkill-parent"])
def test_frames_pool_stops_with_its_parent(videos_dir, tmp_path, how):
    env = {**os.environ, "DIFFPOSE_TRACKING": "off"}
    cmd = _frames_command(videos_dir, tmp_path)
    # SIG_DFL for SIGINT: a background job (CI, nohup) inherits it ignored, and Python keeps it so
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        children = _workers_of(proc)
        sent = time.monotonic()
        if how == "sigint-group":
            os.killpg(proc.pid, signal.SIGINT)
        elif how == "sigterm-parent":
            proc.send_signal(signal.SIGTERM)
        else:
            proc.kill()
        # communicate() returns only when every holder of the pipes (workers, tracker) is gone
        _, err = proc.communicate(timeout=15)
        elapsed = time.monotonic() - sent
        assert elapsed < 5.0, elapsed
        assert _gone(children, timeout=3.0)
        if how == "sigint-group":
            assert proc.returncode == 130 and b"interrupted" in err
        elif how == "sigterm-parent":
            assert proc.returncode != 0
        done = list((tmp_path / "out" / ".done").rglob("*.json"))
        assert len(done) < 8  # stopped early, not after working through the queue
        for jpg in (tmp_path / "out" / "images").rglob("[0-9]*.jpg"):  # hidden temporaries are swept next run
            assert jpg.read_bytes().endswith(b"\xff\xd9"), jpg  # a whole JPEG under every final name
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_worker_initializer_exits_when_the_parent_is_gone():
    from diffpose import pool

    code = ("import os, sys, time; from diffpose import pool; pool.PARENT_POLL_SECONDS = 0.1; "
            "pool._init_worker(os.getppid()); time.sleep(30)")
    # a middle process starts the worker and is killed; the worker must not outlive it
    middle = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', {code!r}]); "
                              f"print(p.pid, flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    worker_pid = int(middle.stdout.readline())
    time.sleep(1.0)
    middle.kill()
    middle.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(worker_pid, 0)
        except ProcessLookupError:
            break
        try:  # a zombie of ours? (it is re-parented, so not ours: just wait)
            with open(f"/proc/{worker_pid}/stat") as fh:
                if fh.read().split(")")[1].split()[0] == "Z":
                    break
        except OSError:
            break
        time.sleep(0.1)
    else:
        os.kill(worker_pid, signal.SIGKILL)
        raise AssertionError("the worker outlived its parent")
    assert pool.PARENT_POLL_SECONDS > 0


# ---------------------------------------------------------------------------------------------
# I12, Y16, I10b: checkpoints


def test_absurd_model_size_is_one_config_error():
    from diffpose.models.config import ModelConfig
    from diffpose.models.factory import build_model

    cfg = ModelConfig.preset("demo_diffpose")
    assert cfg.backbone == "conv"
    huge = cfg.replace(conv_widths=(1_000_000,) * len(cfg.conv_widths))
    with pytest.raises(ConfigError, match=r"model config \(.*conv_widths=.*parameters, more than the limit"):
        build_model(huge)
    build_model(cfg)  # a normal size still builds


def test_nan_weights_give_one_line_and_write_nothing(tmp_path):
    import torch

    from diffpose.inference.predictor import check_finite_weights
    from diffpose.inference.writer import write_predictions

    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    check_finite_weights(model)
    with torch.no_grad():
        model[0].weight.fill_(float("nan"))
    with pytest.raises(DataError, match=r"0\.weight holds 4 NaN/inf value\(s\) of 4"):
        check_finite_weights(model)
    out = tmp_path / "preds"
    with pytest.raises(DataError, match="NaN or infinite"):
        write_predictions(out, [], [], np.full((1, 17, 2), np.nan), np.zeros((1, 17)))
    assert not out.exists()
