"""``diffpose predict`` on real footage (vtest.avi) with a tiny random-init checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from diffpose.data import keypoints as kp
from diffpose.data.posetrack import load_sequence
from diffpose.stages import predict

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    import torch

    from diffpose.models.checkpoint import save_checkpoint
    from diffpose.models.config import resolve_model_config
    from diffpose.models.factory import build_model
    from tests.test_train import TINY_MODEL

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, build_model(resolve_model_config(dict(TINY_MODEL))))
    return path


def _frame_count(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def test_predict_with_a_boxes_file_writes_predictions_and_overlay(videos_dir, checkpoint, tmp_path):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([
        {"image_id": f, "bbox": [380, 150, 60, 140], "score": 0.9, "category_id": 1} for f in range(5)
    ] + [{"image_id": 2, "bbox": [100, 100, 50, 120], "score": 0.05, "category_id": 1}]))
    result = predict.run(video=str(videos_dir / "vtest.avi"), checkpoint=str(checkpoint), out=str(tmp_path / "out"),
                         boxes=str(boxes), max_frames=5, progress=False, draw_threshold=0.0)
    assert result["frames"] == 5 and result["people"] == 5
    assert _frame_count(Path(result["overlay"])) == 5
    pred = load_sequence(result["predictions"], kind="pred")
    assert len(pred["images"]) == 5 and len(pred["annotations"]) == 5
    for ann in pred["annotations"]:
        xy = [ann["keypoints"][3 * j : 3 * j + 2] for j in range(kp.NUM_KEYPOINTS)]
        # predictions land inside the enlarged box (the inverse affine maps the crop back onto it)
        assert all(380 - 60 <= x <= 440 + 60 and 150 - 40 <= y <= 290 + 40 for x, y in xy)
    # the overlay differs from the raw frame where the skeleton was drawn
    raw = cv2.VideoCapture(str(videos_dir / "vtest.avi")).read()[1]
    drawn = cv2.VideoCapture(result["overlay"]).read()[1]
    assert drawn.shape == raw.shape
    assert abs(drawn[150:290, 380:440].astype(int) - raw[150:290, 380:440]).mean() > 5


def test_predict_cli_with_hog_detector(videos_dir, checkpoint, tmp_path):
    proc = subprocess.run([str(BIN / "diffpose"), "predict", str(videos_dir / "vtest.avi"), "--checkpoint",
                           str(checkpoint), "--detector", "hog", "--max-frames", "3", "--out", str(tmp_path),
                           "--no-progress"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert _frame_count(tmp_path / "vtest_overlay.mp4") == 3
    pred = load_sequence(tmp_path / "vtest.json", kind="pred")
    assert len(pred["images"]) == 3 and pred["annotations"], "HOG finds the vtest.avi walkers"


def test_unreadable_video_is_a_one_line_error(checkpoint, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    proc = subprocess.run([str(BIN / "diffpose"), "predict", str(bad), "--checkpoint", str(checkpoint),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "bad.mp4" in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def detector_checkpoint(tmp_path_factory) -> Path:
    """An untrained CenterNet in the train_detector stage's checkpoint format (what it finds does
    not matter here: the command must run end to end)."""
    import torch

    from diffpose.detect.centernet import CenterNet, CenterNetConfig, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("detector") / "detector.pt"
    save_checkpoint(path, CenterNet(CenterNetConfig(width=8)).eval(), input_scale=0.5)
    return path


def _params(path: Path, backend: str = "synthetic", **options) -> Path:
    """The repository's params.yaml with ``options`` set in detect.<backend>."""
    import yaml

    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    params["detect"][backend].update(options)
    path.write_text(yaml.safe_dump(params))
    return path


def _predict(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "diffpose"), "predict", *args, "--max-frames", "2", "--no-progress"],
                          capture_output=True, text=True, timeout=180, cwd=cwd)


def test_predict_with_the_synthetic_detector(videos_dir, checkpoint, detector_checkpoint, tmp_path):
    video = str(videos_dir / "vtest.avi")
    proc = _predict(video, "--checkpoint", str(checkpoint), "--detector", "synthetic", "--detector-checkpoint",
                    str(detector_checkpoint), "--score-threshold", "0", "--out", str(tmp_path / "a"))
    assert proc.returncode == 0, proc.stderr
    assert len(load_sequence(tmp_path / "a" / "vtest.json", kind="pred")["images"]) == 2
    # the checkpoint from --params (detect.synthetic.checkpoint), with that section's other options
    params = _params(tmp_path / "params.yaml", checkpoint=str(detector_checkpoint), max_detections=5, flip_test=False)
    proc = _predict(video, "--checkpoint", str(checkpoint), "--detector", "synthetic", "--params", str(params),
                    "--out", str(tmp_path / "b"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "b" / "vtest_overlay.mp4").exists()


def test_predict_detector_errors_are_one_line(videos_dir, checkpoint, tmp_path):
    video = str(videos_dir / "vtest.avi")
    cases = [  # (arguments, what the one line says)
        (["--detector", "synthetic"], "models/detector/detector.pt: detector checkpoint not found"),  # no default file
        (["--detector", "synthetic", "--detector-checkpoint", str(tmp_path / "none.pt")], "none.pt: detector checkpoint"),
        (["--detector", "hog", "--detector-checkpoint", "d.pt"], "--detector-checkpoint is the synthetic detector's"),
        (["--detector", "precomputed"], "give the boxes file with --boxes"),
        (["--detector", "yolo"], "--detector must be one of"),
    ]
    for extra, message in cases:
        proc = _predict(video, "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"), *extra, cwd=tmp_path)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (extra, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr, (extra, proc.stderr)
    params = _params(tmp_path / "bad.yaml", backend="hog", winstride=8)
    proc = _predict(video, "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"), "--params", str(params))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "winstride" in proc.stderr, proc.stderr


def test_make_detector_names_missing_and_unknown_options():
    from diffpose.detect.backends import make_detector
    from diffpose.errors import ConfigError

    with pytest.raises(ConfigError, match=r"detect.synthetic: missing option checkpoint \(the options are: checkpoint,"):
        make_detector("synthetic", {})
    with pytest.raises(ConfigError, match=r"detect.synthetic: unknown options colour, size; missing option checkpoint"):
        make_detector("synthetic", {"size": 3, "colour": "red"})
