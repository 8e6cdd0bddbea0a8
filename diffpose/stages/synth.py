"""Stage ``synth``: write the synthetic PoseTrack18 benchmark (see diffpose.data.synthetic)."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from diffpose.data.synthetic import PRESETS, generate
from diffpose.data.synthetic.preview import contact_sheet
from diffpose.errors import ConfigError
from diffpose.tracking import stage_run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        required=True,
        help="output root: OUT/videos/{train,val}/<seq>.mp4 and OUT/annotations/{train,val}/<seq>.json",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="demo",
        help="tiny: seconds, for tests; demo: the CPU demo (default)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--workers", type=int, default=0, help="processes; 0 = one per core (default)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(out: str, *, preset: str = "demo", seed: int = 0, workers: int = 0, progress: bool = True) -> dict:
    """Generate the benchmark under ``out`` and return its metrics (logged to MLflow with a contact
    sheet of the first val sequence)."""
    if preset not in PRESETS:
        raise ConfigError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    if seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {seed}")
    params = {"synth": {"preset": preset, "seed": seed}, "out": out}
    with stage_run("synth", params) as tracker:
        start = time.perf_counter()
        stats = generate(out, preset=preset, seed=seed, workers=workers, progress=progress)
        seconds = time.perf_counter() - start
        metrics: dict[str, float] = {"seconds": seconds}
        for split in ("train", "val"):
            part = [s for s in stats if s.split == split]
            instances = sum(s.instances for s in part)
            metrics.update(
                {
                    f"{split}_sequences": len(part),
                    f"{split}_frames": sum(s.frames for s in part),
                    f"{split}_labelled_frames": sum(s.labelled_frames for s in part),
                    f"{split}_instances": instances,
                    f"{split}_degraded_fraction": sum(s.degraded for s in part) / instances
                    if instances
                    else 0.0,
                    f"{split}_tracks": sum(s.people for s in part),
                }
            )
        metrics["video_megabytes"] = sum(s.video_bytes for s in stats) / 1e6
        tracker.log_metrics(metrics)
        first = next(s for s in stats if s.split == "val")
        with tempfile.TemporaryDirectory() as tmp:
            sheet = contact_sheet(
                Path(out) / "videos/val" / f"{first.name}.mp4",
                Path(out) / "annotations/val" / f"{first.name}.json",
                Path(tmp) / "preview.png",
            )
            tracker.log_artifact(sheet)
    return metrics


def main(args: argparse.Namespace) -> int:
    m = run(args.out, preset=args.preset, seed=args.seed, workers=args.workers, progress=not args.no_progress)
    print(
        f"synth: {m['train_sequences'] + m['val_sequences']} videos, "
        f"{m['train_frames'] + m['val_frames']} frames, train {m['train_instances']} / val {m['val_instances']} "
        f"labelled person instances ({100 * m['val_degraded_fraction']:.0f}% of val degraded), "
        f"{m['video_megabytes']:.1f} MB of video in {m['seconds']:.1f} s -> {args.out}"
    )
    return 0
