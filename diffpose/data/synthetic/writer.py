"""Write the benchmark: ``videos/{split}/<seq>.mp4`` and ``annotations/{split}/<seq>.json``.

Each file is written atomically (temporary name, then rename). A video is checked after writing:
it must open with ``cv2.VideoCapture`` and announce the number of frames its annotation file says.
Sequences are independent, so they are generated one process per worker; a run finishes by deleting
files left in those folders by earlier runs (other presets, stale temporaries), so the output
folder always holds exactly one benchmark.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import as_completed
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from diffpose.data.synthetic.presets import Preset, get_preset
from diffpose.data.synthetic.sequence import SPLITS, SequenceSpec, generate_sequence
from diffpose.errors import DataError
from diffpose.io import atomic_path, write_json
from diffpose.pool import worker_pool

log = logging.getLogger(__name__)
FOURCC = "mp4v"


@dataclass(frozen=True)
class SequenceStats:
    split: str
    name: str
    frames: int
    labelled_frames: int
    instances: int
    degraded: int
    people: int
    video_bytes: int
    seconds: float


def video_path(out: Path, split: str, name: str) -> Path:
    return out / "videos" / split / f"{name}.mp4"


def annotation_path(out: Path, split: str, name: str) -> Path:
    return out / "annotations" / split / f"{name}.json"


def write_video(path: Path, frames: list[np.ndarray], fps: float) -> None:
    """Encode ``frames`` ((H, W, 3) uint8 BGR) as mp4 atomically and check the result decodes."""
    h, w = frames[0].shape[:2]
    with atomic_path(path) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*FOURCC), fps, (w, h))
        if not writer.isOpened():
            raise DataError(f"{path}: cannot open an '{FOURCC}' video writer (OpenCV built without it?)")
        try:
            for frame in frames:
                writer.write(frame)
        finally:
            writer.release()
        cap = cv2.VideoCapture(str(tmp))
        try:
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else -1
            size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        finally:
            cap.release()
        if count != len(frames) or size != (w, h):
            raise DataError(
                f"{path}: written video announces {count} frames of {size}, expected "
                f"{len(frames)} of {(w, h)}"
            )


def write_sequence(spec: SequenceSpec, out: str | os.PathLike) -> SequenceStats:
    """Generate one sequence and write its video and annotation file."""
    cv2.setNumThreads(1)
    start = time.perf_counter()
    out = Path(out)
    frames, gt = generate_sequence(spec)
    vpath = video_path(out, spec.split, spec.name)
    write_video(vpath, frames, spec.preset.fps)
    write_json(annotation_path(out, spec.split, spec.name), gt)
    anns = gt["annotations"]
    return SequenceStats(
        split=spec.split,
        name=spec.name,
        frames=len(frames),
        labelled_frames=sum(bool(im["is_labeled"]) for im in gt["images"]),
        instances=len(anns),
        degraded=sum(a["degraded"] for a in anns),
        people=len({a["track_id"] for a in anns}),
        video_bytes=vpath.stat().st_size,
        seconds=time.perf_counter() - start,
    )


def specs_for(preset: Preset, seed: int) -> list[SequenceSpec]:
    counts = {"train": preset.train_sequences, "val": preset.val_sequences}
    return [SequenceSpec(split, i, seed, preset) for split in SPLITS for i in range(counts[split])]


def remove_stale(out: Path, specs: list[SequenceSpec]) -> list[Path]:
    """Delete files under ``out/videos`` and ``out/annotations`` that this run did not write."""
    keep = {video_path(out, s.split, s.name) for s in specs} | {
        annotation_path(out, s.split, s.name) for s in specs
    }
    removed = []
    for sub in ("videos", "annotations"):
        root = out / sub
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*"), reverse=True):
            if path.is_file() and path not in keep:
                path.unlink()
                removed.append(path)
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    return removed


def generate(
    out: str | os.PathLike,
    *,
    preset: str | Preset = "demo",
    seed: int = 0,
    workers: int = 0,
    progress: bool = True,
) -> list[SequenceStats]:
    """Write the whole benchmark under ``out``; one process per worker (0 = one per core)."""
    from diffpose.progress import progress_bar

    if seed < 0:
        raise DataError(f"--seed must be >= 0, got {seed}")
    preset = get_preset(preset) if isinstance(preset, str) else preset
    out = Path(out)
    specs = specs_for(preset, seed)
    workers = max(1, min(workers or os.cpu_count() or 1, len(specs)))
    results: list[SequenceStats] = []
    bar = progress_bar(len(specs), f"synth {preset.name}", "seq", enabled=progress)
    if workers == 1:
        for spec in specs:
            results.append(write_sequence(spec, out))
            bar.update(1)
    else:
        with worker_pool(workers) as pool:  # Ctrl-C / SIGTERM stop it at once
            futures = [pool.submit(write_sequence, spec, out) for spec in specs]
            for fut in as_completed(futures):
                results.append(fut.result())
                bar.update(1)
    bar.close()
    for path in remove_stale(out, specs):
        log.info("removed %s (not part of this benchmark)", path)
    order = {(s.split, s.name): i for i, s in enumerate(specs)}
    return sorted(results, key=lambda r: order[(r.split, r.name)])
