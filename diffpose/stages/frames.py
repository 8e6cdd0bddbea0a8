"""Stage ``frames``: videos -> ``images/{split}/<seq>/%06d.jpg`` (see diffpose.data.frames)."""

from __future__ import annotations

import argparse
import time

from diffpose.data.frames import extract_all
from diffpose.errors import DataError
from diffpose.tracking import stage_run

SHOW = 3  # failed videos described in the error line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--videos", required=True, help="folder of videos: <split>/<seq>.mp4 or <seq>.mp4")
    parser.add_argument("--out", required=True, help="output root; frames go to OUT/images/...")
    parser.add_argument("--jpeg-quality", type=int, default=95, help="JPEG quality 1-100 (default 95)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes; 0 = one per core (default: frames.workers of --params, else 0)")
    parser.add_argument("--params", default=None,
                        help="params file to read frames.workers from (default params.yaml when it exists)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(videos: str, out: str, *, jpeg_quality: int = 95, workers: int = 0, progress: bool = True) -> dict:
    """Extract all videos; returns the metrics; raises DataError at the end if any video failed."""
    if not 1 <= jpeg_quality <= 100:
        raise DataError(f"--jpeg-quality must be 1-100, got {jpeg_quality}")
    params = {"frames": {"jpeg_quality": jpeg_quality, "workers": workers}, "videos": videos, "out": out}
    with stage_run("frames", params) as tracker:
        start = time.perf_counter()
        results = extract_all(videos, out, jpeg_quality=jpeg_quality, workers=workers, progress=progress)
        seconds = time.perf_counter() - start
        new = [r for r in results if not r.skipped and not r.error]
        failed = [r for r in results if r.error]
        metrics = {
            "videos": len(results),
            "videos_extracted": len(new),
            "videos_skipped": sum(r.skipped for r in results),
            "videos_failed": len(failed),
            "frames": sum(r.frames for r in results if not r.error),
            "frames_extracted": sum(r.frames for r in new),
            "seconds": seconds,
            "frames_per_second": sum(r.frames for r in new) / seconds if seconds > 0 else 0.0,
        }
        tracker.log_metrics(metrics)
        if failed:
            shown = "; ".join(r.error for r in failed[:SHOW])
            more = f"; and {len(failed) - SHOW} more" if len(failed) > SHOW else ""
            raise DataError(f"{len(failed)} of {len(results)} videos failed: {shown}{more}; the others were extracted")
    return metrics


def _workers(args: argparse.Namespace) -> int:
    """--workers, else the params file's frames.workers (an execution knob: not in the stage's
    command, so changing it re-runs nothing), else 0."""
    if args.workers is not None:
        return args.workers
    from pathlib import Path

    from diffpose.config import DEFAULT_PARAMS, load_params

    path = args.params or DEFAULT_PARAMS
    if args.params is None and not Path(path).is_file():
        return 0
    return int(load_params(path).get("frames", {}).get("workers", 0))


def main(args: argparse.Namespace) -> int:
    metrics = run(args.videos, args.out, jpeg_quality=args.jpeg_quality, workers=_workers(args),
                  progress=not args.no_progress)
    print(
        f"frames: {metrics['frames']} frames from {metrics['videos']} videos "
        f"({metrics['videos_extracted']} extracted, {metrics['videos_skipped']} already complete) "
        f"in {metrics['seconds']:.1f} s"
    )
    return 0
