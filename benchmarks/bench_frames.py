"""Frame extraction speed: `diffpose frames` against a bare cv2 decode + JPEG write of the same file.

    python benchmarks/bench_frames.py [VIDEO] [--copies N] [--workers W]

The baseline is the minimal loop (VideoCapture.read + imwrite, one process). The stage adds
atomic writes, content hashing for resumability and one process per core; with N copies of the
video and W workers it should reach ~W x the baseline's frames/s.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import cv2

from diffpose.data.frames import extract_all

DEFAULT_VIDEO = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "videos" / "bikes.mp4"


def bare_cv2(video: Path, out: Path, quality: int) -> int:
    out.mkdir(parents=True, exist_ok=True)
    cap = cv2.VideoCapture(str(video))
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        cv2.imwrite(str(out / f"{n:06d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
        n += 1
    cap.release()
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video", nargs="?", type=Path, default=DEFAULT_VIDEO)
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--quality", type=int, default=95)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        n = bare_cv2(args.video, tmp / "bare", args.quality)
        bare = time.perf_counter() - t0
        single = tmp / "single" / "videos"
        single.mkdir(parents=True)
        shutil.copy(args.video, single / f"000000_mpii_test{args.video.suffix}")
        t0 = time.perf_counter()
        extract_all(single, tmp / "single_out", jpeg_quality=args.quality, workers=1, progress=False)
        one = time.perf_counter() - t0
        many = tmp / "many" / "videos" / "val"
        many.mkdir(parents=True)
        for i in range(args.copies):
            shutil.copy(args.video, many / f"{i:06d}_mpii_test{args.video.suffix}")
        t0 = time.perf_counter()
        extract_all(many.parent, tmp / "many_out", jpeg_quality=args.quality, workers=args.workers, progress=False)
        par = time.perf_counter() - t0
        t0 = time.perf_counter()
        extract_all(many.parent, tmp / "many_out", jpeg_quality=args.quality, workers=args.workers, progress=False)
        noop = time.perf_counter() - t0
    h, w = cv2.VideoCapture(str(args.video)).read()[1].shape[:2]
    print(f"video: {args.video.name} ({w}x{h}, {n} frames), JPEG quality {args.quality}")
    print(f"bare cv2 decode+imwrite, 1 process : {n / bare:7.1f} frames/s")
    print(f"diffpose frames, 1 video, 1 worker : {n / one:7.1f} frames/s ({bare / one:.2f}x bare)")
    print(f"diffpose frames, {args.copies} videos, all cores: {n * args.copies / par:7.1f} frames/s ({(n * args.copies / par) / (n / bare):.2f}x bare)")
    print(f"re-run with everything complete   : {noop:7.2f} s for {args.copies} videos")


if __name__ == "__main__":
    main()
