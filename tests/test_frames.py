"""Frame extraction on the real videos in ../shared/fixtures/videos."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from diffpose.cli import main as cli
from diffpose.data.frames import extract_all, find_videos


def _count_frames(video: Path) -> tuple[int, tuple[int, int]]:
    cap = cv2.VideoCapture(str(video))
    n, shape = 0, None
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        shape = frame.shape[:2]
        n += 1
    cap.release()
    return n, shape


@pytest.fixture
def video_tree(videos_dir: Path, tmp_path: Path) -> Path:
    root = tmp_path / "videos"
    (root / "val").mkdir(parents=True)
    shutil.copy(videos_dir / "bikes.mp4", root / "val" / "000001_mpii_test.mp4")
    (root / "train").mkdir()
    shutil.copy(videos_dir / "bikes.mp4", root / "train" / "000002_mpii_train.mp4")
    return root


def test_extracts_every_frame_in_posetrack_layout(video_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "frames"
    results = extract_all(video_tree, out, jpeg_quality=90, workers=2, progress=False)
    assert [r.error for r in results] == [None, None]
    expected, (h, w) = _count_frames(video_tree / "val" / "000001_mpii_test.mp4")
    for split, seq in (("val", "000001_mpii_test"), ("train", "000002_mpii_train")):
        frames = sorted((out / "images" / split / seq).glob("*.jpg"))
        assert len(frames) == expected
        assert frames[0].name == "000000.jpg" and frames[-1].name == f"{expected - 1:06d}.jpg"
        img = cv2.imread(str(frames[-1]))
        assert img is not None and img.shape[:2] == (h, w)
    # Decoded content, not just files: frame 100 matches the video's frame 100 up to JPEG loss.
    cap = cv2.VideoCapture(str(video_tree / "val" / "000001_mpii_test.mp4"))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 100)
    ok, ref = cap.read()
    assert ok
    got = cv2.imread(str(out / "images" / "val" / "000001_mpii_test" / "000100.jpg"))
    assert abs(got.astype(float) - ref.astype(float)).mean() < 4.0


def test_second_run_skips_complete_sequences_and_settings_change_redoes(video_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "frames"
    extract_all(video_tree, out, workers=1, progress=False)
    again = extract_all(video_tree, out, workers=1, progress=False)
    assert all(r.skipped for r in again)
    # A deleted frame makes its sequence incomplete: only that one is redone.
    (out / "images" / "val" / "000001_mpii_test" / "000010.jpg").unlink()
    third = extract_all(video_tree, out, workers=1, progress=False)
    assert {r.job.seq: r.skipped for r in third} == {"000001_mpii_test": False, "000002_mpii_train": True}
    assert (out / "images" / "val" / "000001_mpii_test" / "000010.jpg").exists()
    changed = extract_all(video_tree, out, jpeg_quality=50, workers=1, progress=False)
    assert not any(r.skipped for r in changed)


def test_removed_video_removes_its_frames(video_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "frames"
    extract_all(video_tree, out, workers=1, progress=False)
    (video_tree / "train" / "000002_mpii_train.mp4").unlink()
    extract_all(video_tree, out, workers=1, progress=False)
    assert not (out / "images" / "train" / "000002_mpii_train").exists()
    assert (out / "images" / "val" / "000001_mpii_test" / "000000.jpg").exists()


def test_corrupt_video_is_named_others_extracted_exit_nonzero(
    video_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = video_tree / "val" / "000003_mpii_test.mp4"
    bad.write_bytes((video_tree / "val" / "000001_mpii_test.mp4").read_bytes()[:20000])
    (video_tree / "val" / "000004_mpii_test.mp4").write_bytes(b"this is not a video")
    out = tmp_path / "frames"
    code = cli(["frames", "--videos", str(video_tree), "--out", str(out), "--workers", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "000003_mpii_test.mp4" in err and "000004_mpii_test.mp4" in err
    assert "Traceback" not in err
    assert len(list((out / "images" / "val" / "000001_mpii_test").glob("*.jpg"))) > 200
    assert len(list((out / "images" / "train" / "000002_mpii_train").glob("*.jpg"))) > 200


def test_kill_9_leaves_no_partial_frame_and_rerun_completes(videos_dir: Path, tmp_path: Path) -> None:
    videos = tmp_path / "videos" / "val"
    videos.mkdir(parents=True)
    shutil.copy(videos_dir / "vtest.avi", videos / "000005_mpii_test.avi")
    out = tmp_path / "frames"
    seq_dir = out / "images" / "val" / "000005_mpii_test"
    cmd = [sys.executable, "-m", "diffpose", "frames", "--videos", str(videos.parent), "--out", str(out),
           "--workers", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**__import__("os").environ, "DIFFPOSE_TRACKING": "off"})
    deadline = time.time() + 60
    while time.time() < deadline and len(list(seq_dir.glob("0*.jpg"))) < 50:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = sorted(p for p in seq_dir.glob("*.jpg") if not p.name.startswith("."))  # final names only
    assert 50 <= len(partial) < 795, "the kill should land mid-video"
    for frame in partial:  # every file under a final name is a whole JPEG
        assert cv2.imread(str(frame)) is not None, frame
    assert not (out / ".done" / "val" / "000005_mpii_test.json").exists()
    results = extract_all(videos.parent, out, workers=1, progress=False)
    assert not results[0].skipped and results[0].error is None
    assert len(list(seq_dir.glob("0*.jpg"))) == _count_frames(videos / "000005_mpii_test.avi")[0]
    assert not list(seq_dir.glob(".*"))


def test_find_videos_rejects_deep_layout(tmp_path: Path) -> None:
    from diffpose.errors import DataError

    deep = tmp_path / "v" / "a" / "b"
    deep.mkdir(parents=True)
    (deep / "x.mp4").write_bytes(b"")
    with pytest.raises(DataError, match="expected videos as"):
        find_videos(tmp_path / "v")
