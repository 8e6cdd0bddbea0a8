"""Stage ``infer``: a checkpoint + person boxes -> PoseTrack18 prediction files, one per sequence.

    diffpose infer --checkpoint models/diffpose/model.pt --annotations data/synth/annotations/val \
        --images data/frames --out results/predictions/diffpose --boxes gt

``--steps``, ``--ensemble`` and ``--flip-test`` override ``infer.*`` (the sweep cells of dvc.yaml
call the stage with other values); ``--boxes FILE`` takes the detect stage's COCO results instead of
GT, every box as written (the detect stage already kept those scoring >= ``detect.score_threshold``,
the one box-score threshold). ``--record FILE`` writes the cell's settings, speed and provenance
(MLflow run id, git commit, data version) as JSON: the tables and the report read it.

With ``infer.processes`` N > 1 (an execution knob: the predictions do not depend on it),
``diffpose infer`` started outside torchrun becomes ``torchrun --standalone --nproc_per_node=N``
running the same command, as ``diffpose train`` does: each process predicts
a share of the batches (on its own GPU when there are GPUs), rank 0 gathers them and alone writes
the prediction files, the record and the MLflow run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from diffpose.config import DEFAULT_PARAMS, load_params, section
from diffpose.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="model checkpoint (models/<name>/model.pt)")
    parser.add_argument("--annotations", required=True, help="PoseTrack18 sequence file or folder (frames to predict)")
    parser.add_argument("--images", default="data/frames", help="image root of the annotations' file_names")
    parser.add_argument("--out", required=True, help="output folder: one <sequence>.json per sequence")
    parser.add_argument("--boxes", default="gt",
                        help="'gt' (default) or a detection file (COCO results, every box used as written)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default infer.steps)")
    parser.add_argument("--ensemble", type=int, default=None, help="noise starts averaged (default infer.ensemble)")
    parser.add_argument("--flip-test", nargs="?", const=True, default=None, type=_boolean, metavar="{true,false}",
                        help="also predict mirrored crops and average (default infer.flip_test)")
    parser.add_argument("--no-flip-test", dest="flip_test", action="store_false", help="same as --flip-test false")
    parser.add_argument("--record", metavar="FILE",
                        help="write the settings, speed, MLflow run id, git commit and data version here (JSON)")
    parser.add_argument("--params", default=DEFAULT_PARAMS, help="params file (default params.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _boolean(text: str) -> bool:
    """``true``/``false`` (any case, as DVC writes a boolean into a command)."""
    if text.lower() in {"true", "1", "yes"}:
        return True
    if text.lower() in {"false", "0", "no"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def infer_settings(params: dict[str, Any], source: str = DEFAULT_PARAMS, **overrides: Any) -> dict[str, Any]:
    """``infer`` params with the non-None command-line overrides applied and checked."""
    settings = dict(section(params, "infer", source))
    settings.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("steps", "ensemble", "batch_size"):
        if int(settings[key]) < 1:
            raise ConfigError(f"infer.{key} must be >= 1, got {settings[key]}")
    return settings


def check_checkpoint(checkpoint: str | Path) -> Path:
    """``checkpoint`` as a Path; DataError naming it when it does not exist."""
    from diffpose.errors import DataError

    path = Path(checkpoint)
    if not path.exists():
        raise DataError(f"{path}: checkpoint not found (train first: diffpose train --model NAME --out DIR)")
    return path


def load_model(checkpoint: str | Path, device: str = "auto", local_rank: int = 0):
    """(model on its device: this process's GPU under torchrun, checkpoint payload); errors name the file."""
    from diffpose.models.checkpoint import load_checkpoint
    from diffpose.training.distributed import pick_device

    path = check_checkpoint(checkpoint)
    dev = pick_device(device, local_rank)
    model, payload = load_checkpoint(path, map_location=dev)
    return model.to(dev).eval(), payload


def geometry(payload: dict, params: dict | None) -> tuple[float, int]:
    """(box_enlarge, frame_stride) used in training (recorded in the checkpoint), else params."""
    recorded = ((payload.get("params") or {}).get("data")) or (params or {}).get("data") or {}
    return float(recorded.get("box_enlarge", 1.25)), int(recorded.get("frame_stride", 1))


def run(*, checkpoint: str, annotations: str, images: str, out: str, settings: dict[str, Any],
        params: dict[str, Any] | None = None, progress: bool = True, model=None, payload=None,
        record_path: str | None = None) -> dict[str, Any]:
    """Predict every person box of every sequence and write the files; returns the metrics.
    ``model``/``payload`` may be given directly (tests); otherwise loaded from ``checkpoint``.
    ``record_path``: also write the settings, metrics and provenance there (JSON).
    Under torchrun every process predicts its share; rank 0 alone writes and returns the metrics,
    the other ranks return None."""
    from diffpose.training import distributed

    ctx = distributed.setup(settings.get("device", "auto"))
    try:
        return _run(checkpoint=checkpoint, annotations=annotations, images=images, out=out, settings=settings,
                    params=params, progress=progress, model=model, payload=payload, record_path=record_path, ctx=ctx)
    finally:
        distributed.teardown(ctx)


def _run(*, checkpoint: str, annotations: str, images: str, out: str, settings: dict[str, Any],
         params: dict[str, Any] | None, progress: bool, model, payload, record_path: str | None,
         ctx) -> dict[str, Any] | None:
    from diffpose.data.clips import ClipDataset, load_sequences
    from diffpose.data.codec import HeatmapCodec
    from diffpose.inference.boxes import detection_samples, gt_samples
    from diffpose.inference.predictor import predict_dataset
    from diffpose.inference.writer import write_predictions
    from diffpose.io import write_json
    from diffpose.provenance import provenance
    from diffpose.tracking import stage_run

    if int(settings.get("threads", 0)) > 0:
        import torch

        torch.set_num_threads(int(settings["threads"]))
    if model is None:
        model, payload = load_model(checkpoint, settings.get("device", "auto"), ctx.local_rank)
    payload = payload or {}
    cfg = model.cfg
    box_enlarge, frame_stride = geometry(payload, params)
    sequences = load_sequences(annotations)
    boxes = settings.get("boxes", "gt")
    if boxes == "gt":
        samples = gt_samples(sequences)
    else:
        samples = detection_samples(boxes, sequences, score_threshold=0.0)  # thresholded by the detect stage
    seqs = [s for s, _ in sequences]
    dataset = ClipDataset(seqs, samples, images, input_size=tuple(cfg.input_size), num_frames=cfg.num_frames,
                          frame_stride=frame_stride, box_enlarge=box_enlarge,
                          cache_mb=256)
    codec = HeatmapCodec(input_size=tuple(cfg.input_size), heatmap_size=tuple(cfg.heatmap_size), sigma=cfg.sigma)
    record = {"infer": settings, "checkpoint": str(checkpoint), "annotations": annotations,
              "model_config": cfg.to_dict() if hasattr(cfg, "to_dict") else {}}
    name = (payload.get("extra") or {}).get("model_name", Path(checkpoint).parent.name)
    flip_test = bool(settings.get("flip_test", False))
    with stage_run("infer", record, tags={"model": str(name)}, enabled=ctx.is_main) as tracker:
        preds = predict_dataset(model, dataset, codec, batch_size=int(settings["batch_size"]),
                                steps=int(settings["steps"]), ensemble=int(settings["ensemble"]),
                                seed=int(settings.get("seed", 0)), workers=int(settings.get("workers", 0)),
                                progress=progress, flip_test=flip_test, eta=float(settings.get("ddim_eta", 1.0)),
                                combine_rule=str(settings.get("ensemble_combine", "mean_heatmap")),
                                desc=f"infer {name} (steps {settings['steps']}, K {settings['ensemble']})", ctx=ctx)
        if preds is None:  # a rank other than 0: its share went to rank 0, which writes everything
            return None
        out_dir = Path(out)
        written = write_predictions(out_dir, seqs, samples, preds.keypoints, preds.scores)
        keep = {p.name for p in written}
        for stale in out_dir.glob("*.json"):
            if stale.name not in keep:
                stale.unlink()
        metrics = {"person_clips": len(samples), "sequences": len(seqs), "seconds": round(preds.seconds, 3),
                   "person_clips_per_second": round(preds.clips_per_second, 2),
                   "steps": int(settings["steps"]), "ensemble": int(settings["ensemble"]),
                   "flip_test": flip_test, "world_size": ctx.world_size}
        tracker.log_metrics(metrics)
        if record_path is not None:
            train_seed = ((payload.get("params") or {}).get("train") or {}).get("seed")
            write_json(record_path, {
                "model": str(name), "seed": train_seed, "boxes": "gt" if boxes == "gt" else "detected",
                "box_file": None if boxes == "gt" else str(boxes),
                "ddim_eta": float(settings.get("ddim_eta", 1.0)),
                "ensemble_combine": str(settings.get("ensemble_combine", "mean_heatmap")),
                "sample_seed": int(settings.get("seed", 0)), **metrics,
                "checkpoint": str(checkpoint), **provenance(tracker.run_id, annotations)}, indent=2)
    return metrics


def main(args: argparse.Namespace) -> int:
    from diffpose.training.distributed import relaunch

    params = load_params(args.params)
    settings = infer_settings(params, args.params, steps=args.steps, ensemble=args.ensemble, flip_test=args.flip_test)
    settings["boxes"] = args.boxes  # a command-line choice, not a param (recorded with the run's settings)
    check_checkpoint(args.checkpoint)  # before any process starts: one line, not one per process
    code = relaunch(args.command_line, int(settings.get("processes", 1)), "infer.processes")
    if code is not None:  # the launch of N processes has run
        return code
    metrics = run(checkpoint=args.checkpoint, annotations=args.annotations, images=args.images, out=args.out,
                  settings=settings, params=params, progress=not args.no_progress, record_path=args.record)
    if metrics is None:  # a torchrun rank other than 0
        return 0
    print(f"infer: {metrics['person_clips']} person clips in {metrics['sequences']} sequences, "
          f"{metrics['person_clips_per_second']} clips/s (steps {metrics['steps']}, ensemble {metrics['ensemble']}"
          f"{', flip test' if metrics['flip_test'] else ''}) "
          f"-> {args.out}", file=sys.stdout)
    return 0
