"""Training-clip loader speed (clips/s, the loader alone, no model): cache and workers against a
baseline measured in the same run (no frame cache, no worker processes).

    python benchmarks/bench_loader.py [--annotations data/synth/annotations/train] [--images data/frames]
                                      [--frames 3] [--size 128 96] [--batches 30]

Decoding JPEGs dominates; neighbouring samples share frames, so the per-worker LRU cache should
beat the baseline once the epoch revisits frames, and each worker process adds about one core.
"""

from __future__ import annotations

import argparse
import time

from diffpose.data.clips import ClipDataset, load_sequences, make_loader, training_samples
from diffpose.data.codec import HeatmapCodec
from diffpose.data.transforms import Augmentation


def measure(seqs, samples, images, *, size, frames, cache, workers, batch, batches) -> float:
    codec = HeatmapCodec(input_size=size, heatmap_size=(size[0] // 4, size[1] // 4), sigma=2.0)
    ds = ClipDataset([s for s, _ in seqs], samples, images, input_size=size, num_frames=frames, codec=codec,
                     train=True, augmentation=Augmentation(), cache_mb=cache)
    loader, sampler = make_loader(ds, batch_size=batch, shuffle=True, workers=workers, drop_last=True)
    n = 0
    started = None
    for epoch in range(100):
        sampler.set_epoch(epoch)
        for i, b in enumerate(loader):
            if started is None and i == 1:  # exclude worker start-up
                started = time.perf_counter()
            elif started is not None:
                n += b["frames"].shape[0]
            if n >= batches * batch:
                return n / (time.perf_counter() - started)
    return n / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--annotations", default="data/synth/annotations/train")
    ap.add_argument("--images", default="data/frames")
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--size", type=int, nargs=2, default=(128, 96), metavar=("H", "W"))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=30)
    args = ap.parse_args()
    seqs = load_sequences(args.annotations)
    samples = training_samples(seqs)
    print(f"{len(samples)} training clips, T={args.frames}, crop {args.size[0]}x{args.size[1]}")
    kw = dict(size=tuple(args.size), frames=args.frames, batch=args.batch, batches=args.batches)
    base = measure(seqs, samples, args.images, cache=0, workers=0, **kw)
    print(f"baseline (no cache, no workers): {base:8.1f} clips/s")
    for cache, workers in ((1024, 0), (1024, 1), (1024, 2)):  # MB per worker
        rate = measure(seqs, samples, args.images, cache=cache, workers=workers, **kw)
        print(f"cache {cache:5d} MB, workers {workers}:     {rate:8.1f} clips/s  ({rate / base:.2f}x)")


if __name__ == "__main__":
    main()
