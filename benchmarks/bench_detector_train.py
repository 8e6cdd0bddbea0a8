"""Detector training speed: ms per step of the train_detector loop, by numeric setting.

    python benchmarks/bench_detector_train.py [--steps 40] [--batch 16]

The baseline is the loop as it ran before bf16 and channels_last (fp32, NCHW tensors, 1 torch
thread), measured in the same run as the current default (``detect.train``: precision auto,
channels_last, 2 threads) and the steps between. Frames are 320 x 240 (the demo's size) with
four people-sized boxes each; speed does not depend on the pixels. ``auto`` resolves to bf16
only where the CPU has bf16 instructions (printed). Batches are made one step ahead in a thread
in every setting. On a shared machine the figures are indicative.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from diffpose.detect.train import Sample, TrainConfig, resolve_precision, train_detector


def samples(n: int, seed: int = 0) -> list[Sample]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        image = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
        x = rng.uniform(0, 260, 4)
        boxes = np.stack([x, np.full(4, 40.0), np.full(4, 50.0), np.full(4, 150.0)], axis=1)
        out.append(Sample(image=image, boxes=boxes, ignore_boxes=np.zeros((0, 4)), regions=[]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    data = samples(4 * args.batch)
    auto = resolve_precision("auto", torch.device("cpu"))
    print(f"torch {torch.__version__}; precision auto -> {'bf16' if auto else 'fp32'} on this CPU")
    settings = [
        ("baseline: fp32, NCHW, 1 thread", dict(precision="fp32", channels_last=False, threads=1)),
        ("fp32, channels_last, 1 thread", dict(precision="fp32", channels_last=True, threads=1)),
        ("auto, NCHW, 1 thread", dict(precision="auto", channels_last=False, threads=1)),
        ("auto, channels_last, 1 thread", dict(precision="auto", channels_last=True, threads=1)),
        ("auto, channels_last, 2 threads (default)", dict(precision="auto", channels_last=True, threads=2)),
    ]
    base = None
    for name, changes in settings:
        config = TrainConfig(max_steps=args.steps, batch_size=args.batch, **changes)
        train_detector(data, TrainConfig(max_steps=3, batch_size=args.batch, **changes), progress=False)  # warm-up
        _, history = train_detector(data, config, progress=False)
        ms = 1000 * history["seconds"] / history["steps"]
        base = base or ms
        print(f"{name:45s} {ms:7.0f} ms/step  {base / ms:4.2f}x  ({history['precision']})")


if __name__ == "__main__":
    main()
