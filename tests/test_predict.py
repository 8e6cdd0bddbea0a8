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
