"""Detection speed: each backend's frames/s against a baseline measured in the same run.

    python benchmarks/bench_detect.py [VIDEO] [--frames N] [--checkpoint models/detector/detector.pt]

- hog: diffpose's HogDetector (2x upscale, raw windows + our NMS) against OpenCV's own
  ``detectMultiScale`` on the same upscaled frames with its built-in grouping (the bare baseline);
- synthetic: the CenterNet at batch 16 against batch 1 (random weights unless a checkpoint is
  given: speed does not depend on them), on 320 x 240 frames (the demo preset's size), 1 thread.
Frames come from vtest.avi (OpenCV's sample). On a shared machine the figures are indicative.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from diffpose.detect.centernet import CenterNet, CenterNetDetector
from diffpose.detect.hog import HogDetector

DEFAULT_VIDEO = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "videos" / "vtest.avi"


def read_frames(video: Path, n: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(video))
    frames = []
    while len(frames) < n:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    if not frames:
        raise SystemExit(f"{video}: no frames decoded")
    return frames


def rate(fn, frames: list[np.ndarray]) -> float:
    start = time.perf_counter()
    fn(frames)
    return len(frames) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video", nargs="?", type=Path, default=DEFAULT_VIDEO)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--checkpoint", help="a train-detector checkpoint (default: random weights)")
    args = ap.parse_args()
    frames = read_frames(args.video, args.frames)

    hog = HogDetector(resize=2.0)
    bare = cv2.HOGDescriptor()
    bare.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def opencv_grouped(batch):
        for f in batch:
            bare.detectMultiScale(cv2.resize(f, None, fx=2, fy=2), winStride=(8, 8), padding=(8, 8), scale=1.05)

    base = rate(opencv_grouped, frames)
    ours = rate(hog.detect, frames)
    h, w = frames[0].shape[:2]
    print(f"hog {w}x{h} x2: diffpose {ours:.2f} frames/s, bare OpenCV (built-in grouping) {base:.2f} frames/s "
          f"({ours / base:.2f}x)")

    torch.set_num_threads(1)
    small = [cv2.resize(f, (320, 240), interpolation=cv2.INTER_AREA) for f in frames] * 4
    if args.checkpoint:
        det = CenterNetDetector.from_checkpoint(args.checkpoint, threads=1)
    else:
        det = CenterNetDetector(CenterNet(), input_scale=0.5)
    det.detect(small[:2])  # warm-up
    one = rate(lambda b: [det.detect([f]) for f in b], small)
    batched = rate(lambda b: [det.detect(b[i:i + 16]) for i in range(0, len(b), 16)], small)
    print(f"synthetic (CenterNet) 320x240, 1 thread: batch 16 {batched:.1f} frames/s, batch 1 {one:.1f} frames/s "
          f"({batched / one:.2f}x)")


if __name__ == "__main__":
    main()
