"""Stage ``train_detector``: train the ``synthetic`` backend's CenterNet on a split's labelled frames.

Writes a self-describing checkpoint (model arguments, input scale, training params and history)
that ``diffpose detect --backend synthetic`` loads; tracked in MLflow (loss curve, time).
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import asdict, fields
from typing import Any

from diffpose.config import check_options, load_params, section
from diffpose.detect.train import TrainConfig, train_and_save
from diffpose.errors import ConfigError
from diffpose.io import write_json
from diffpose.tracking import stage_run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--annotations", required=True, help="training split's PoseTrack annotation folder")
    parser.add_argument("--images", required=True, help="image root of the annotations' file names")
    parser.add_argument("--out", required=True, help="checkpoint to write (e.g. models/detector/detector.pt)")
    parser.add_argument("--metrics", help="training summary JSON to write")
    parser.add_argument("--params", help="params file; its detect.train section is used (default: built-in)")
    parser.add_argument("--max-steps", type=int, help="override detect.train.max_steps")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def resolve_config(params_file: str | None, **overrides: Any) -> TrainConfig:
    check_options({f"--{k.replace('_', '-')}": (f"detect.train.{k}", v) for k, v in overrides.items()})
    values: dict[str, Any] = asdict(TrainConfig())
    if params_file:
        values.update(copy.deepcopy(section(load_params(params_file), "detect", params_file).get("train") or {}))
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{params_file}: detect.train.{unknown[0]}: unknown key (allowed: {', '.join(sorted(known))})")
    return TrainConfig(**values)


def run(*, annotations: str, images: str, out: str, config: TrainConfig, metrics_out: str | None = None,
        progress: bool = True) -> dict:
    with stage_run("train_detector", {"detect": {"train": asdict(config)}, "annotations": annotations,
                                      "images": images}) as tracker:
        history = train_and_save(annotations, images, out, config, progress=progress,
                                 on_log=lambda step, m: tracker.log_metrics(m, step=step))
        summary = {k: v for k, v in history.items() if k != "stopped_by"}
        tracker.log_metrics({"final_loss": history["loss_last"], "train_seconds": history["seconds"],
                             "steps": history["steps"]})
        tracker.set_tags({"stopped_by": history["stopped_by"]})
        if metrics_out:
            write_json(metrics_out, {**summary, "stopped_by": history["stopped_by"]}, indent=2)
    return history


def main(args: argparse.Namespace) -> int:
    config = resolve_config(args.params, max_steps=args.max_steps)
    h = run(annotations=args.annotations, images=args.images, out=args.out, config=config, metrics_out=args.metrics,
            progress=not args.no_progress)
    print(f"train_detector: {h['steps']} steps on {h['frames']} frames ({h['people']} people) in {h['seconds']:.0f} s, "
          f"loss {h['loss_first']:.3f} -> {h['loss_last']:.3f} -> {args.out}")
    return 0
