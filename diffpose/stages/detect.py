"""Stage ``detect``: people boxes for every frame of a split, as a COCO results file, plus box AP.

Output: a JSON list of ``{image_id, file_name, category_id: 1, bbox: [x, y, w, h], score}``
(``image_id`` = the PoseTrack image id, ``file_name`` relative to the image root), sorted by
frame then score; the infer stage reads it instead of the ground-truth boxes. Box AP against the
split's labelled frames goes to ``--metrics`` (a DVC metric) and to MLflow, twice: ``box_ap`` by the
COCO protocol, over every box the detector returns (pycocotools keeps the best 100 per frame), and
``box_ap_kept`` over the boxes written, those scoring at least ``score_threshold`` (0.2 in the
DCPose protocol: the threshold belongs to the pose stage and truncates the precision-recall curve).

With ``fill_gaps.enabled`` the detector runs on every frame of each sequence and the boxes a track
skips for a few frames are interpolated (``diffpose.detect.temporal``; marked ``interpolated``);
``box_ap_per_frame`` then scores the detector's own boxes before filling. Off for the paper's
protocol (precomputed boxes as distributed).
"""

from __future__ import annotations

import argparse
import copy
import logging
from pathlib import Path
from typing import Any

from diffpose.config import check_options, load_params, section
from diffpose.detect.backends import make_detector
from diffpose.detect.box_ap import box_ap
from diffpose.detect.frames import FRAME_SETS, read_split
from diffpose.detect.run import detect_frames
from diffpose.detect.temporal import GapFill, fill_records, merge_filled
from diffpose.errors import ConfigError, DataError
from diffpose.io import write_json
from diffpose.tracking import stage_run

log = logging.getLogger(__name__)

# The ``detect`` section of params.yaml when no params file is given (same keys, same meaning).
DEFAULTS: dict[str, Any] = {
    "backend": "synthetic",
    "score_threshold": 0.2,
    "frames": "labelled",
    "batch_size": 16,
    "precomputed": {"boxes": None, "ignore_unmatched": False},
    "hog": {"resize": 2.0, "win_stride": 8, "pyramid_scale": 1.05, "hit_threshold": 0.0,
            "nms_iou": 0.3, "nms_inside": 0.6, "shrink_x": 0.75, "shrink_y": 0.9},
    "synthetic": {"checkpoint": "models/detector/detector.pt", "max_detections": 100, "nms_iou": 0.6, "device": "cpu",
                  "threads": 2, "flip_test": True},
    "torchvision": {"weights": None, "device": "cpu"},
    "fill_gaps": {"enabled": True, "min_score": 0.3, "iou": 0.3, "max_gap": 16, "score_factor": 0.8},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--annotations", required=True, help="the split's PoseTrack annotation folder (one JSON per sequence)")
    parser.add_argument("--images", required=True, help="image root: file names in the annotations are relative to it")
    parser.add_argument("--out", required=True, help="detections file to write (COCO results JSON)")
    parser.add_argument("--metrics", help="box AP metrics JSON to write (DVC metric)")
    parser.add_argument("--params", help="params file with a 'detect' section (default: built-in defaults)")
    parser.add_argument("--backend", help="override detect.backend (precomputed, hog, synthetic, torchvision)")
    parser.add_argument("--score-threshold", type=float, help="override detect.score_threshold")
    parser.add_argument("--frames", choices=FRAME_SETS, help="override detect.frames: labelled frames only, or all")
    parser.add_argument("--batch-size", type=int, help="override detect.batch_size")
    parser.add_argument("--boxes", help="override detect.precomputed.boxes (DCPose val_boxes.json or COCO results)")
    parser.add_argument("--checkpoint", help="override detect.synthetic.checkpoint")
    parser.add_argument("--fill-gaps", action=argparse.BooleanOptionalAction, default=None,
                        help="override detect.fill_gaps.enabled: interpolate boxes a track misses for a few frames")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def resolve_params(params_file: str | None, **overrides: Any) -> dict[str, Any]:
    """The detect section from ``params_file`` (or DEFAULTS) with command-line overrides."""
    check_options({"--backend": ("detect.backend", overrides.get("backend")),
                   "--score-threshold": ("detect.score_threshold", overrides.get("score_threshold")),
                   "--frames": ("detect.frames", overrides.get("frames")),
                   "--batch-size": ("detect.batch_size", overrides.get("batch_size"))})
    cfg = copy.deepcopy(section(load_params(params_file), "detect", params_file) if params_file else DEFAULTS)
    for key in ("backend", "score_threshold", "frames", "batch_size"):
        if overrides.get(key) is not None:
            cfg[key] = overrides[key]
    if overrides.get("boxes"):
        cfg.setdefault("precomputed", {})["boxes"] = overrides["boxes"]
    if overrides.get("checkpoint"):
        cfg.setdefault("synthetic", {})["checkpoint"] = overrides["checkpoint"]
    if overrides.get("fill_gaps") is not None:
        cfg.setdefault("fill_gaps", copy.deepcopy(DEFAULTS["fill_gaps"]))["enabled"] = overrides["fill_gaps"]
    if params_file and not (overrides.get("boxes") or overrides.get("checkpoint")):
        check_input(cfg, params_file)
    return cfg


# backend -> the key of the file it reads (hog reads nothing: OpenCV's people detector is built in)
BACKEND_FILES = {"synthetic": ("synthetic", "checkpoint"), "precomputed": ("precomputed", "boxes"),
                 "torchvision": ("torchvision", "weights")}


def check_input(cfg: dict[str, Any], source: str) -> None:
    """``detect.input`` is the file dvc.yaml makes the stage depend on (DVC cannot pick a dependency
    by ``detect.backend``); it must be the file the chosen backend reads, or a new checkpoint or boxes
    file would not re-run the stage (hog reads none: any existing file, e.g. its module, will do)."""
    if "input" not in cfg or cfg["backend"] not in BACKEND_FILES:
        return
    group, key = BACKEND_FILES[cfg["backend"]]
    wanted = (cfg.get(group) or {}).get(key)
    if wanted is not None and Path(str(cfg["input"])) != Path(str(wanted)):
        raise ConfigError(f"{source}: detect.input is {cfg['input']!r} but backend {cfg['backend']} reads "
                          f"detect.{group}.{key} = {wanted!r}: set detect.input to that file (the stage's dependency)")


def run(
    *,
    annotations: str,
    images: str,
    out: str,
    params: dict[str, Any],
    metrics_out: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Detect, write ``out`` (and ``metrics_out``), log to MLflow; return the metrics.

    Raises DataError after writing the outputs if any frame failed to decode (named).
    """
    backend = params["backend"]
    options = dict(params.get(backend) or {})
    threshold = float(params["score_threshold"])
    # every frame of the split resolves names and ids (a DCPose box file covers all of them);
    # detection runs on the chosen ones
    split_frames, truth = read_split(annotations, frames="all")
    frames = [f for f in split_frames if f.labelled or params["frames"] == "all"]
    if not frames:
        raise DataError(f"{annotations}: no {params['frames']} frames to detect on")
    fill = dict(params.get("fill_gaps") or {"enabled": False})
    fill_on = bool(fill.pop("enabled"))
    detected = split_frames if fill_on else frames  # filling needs the frames in between
    with stage_run("detect", {"detect": params, "annotations": annotations, "images": images}) as tracker:
        detector = make_detector(backend, options, split_frames)
        log.info("detect: %s on %d frames of %s (%s written%s)", backend, len(detected), annotations,
                 params["frames"], ", gaps filled" if fill_on else "")
        result = detect_frames(detector, detected, images, score_threshold=0.0,
                               batch_size=int(params["batch_size"]), progress=progress)
        failed = set(result.failed)
        records = result.records
        if fill_on:
            decoded = [f for f in detected if f.file_name not in failed]
            filled = fill_records(records, decoded, GapFill(**fill))
            order = {f.image_id: i for i, f in enumerate(frames)}
            chosen = set(order)
            per_frame = [r for r in records if r["image_id"] in chosen]
            merged = merge_filled(per_frame, [r for r in filled if r["image_id"] in chosen],
                                  GapFill(**fill).suppress_iou)
            records = sorted(merged, key=lambda r: (order[r["image_id"]], -r["score"]))
        kept = [r for r in records if r["score"] >= threshold]
        write_json(out, kept)
        # score the labelled frames that were detected on (an undecodable frame is not scored)
        done = {f.image_id for f in frames if f.file_name not in failed}
        scored_truth = {k: v for k, v in truth.items() if k in done}
        metrics: dict[str, Any] = {
            "backend": backend, "score_threshold": threshold, "frames": len(done),
            "frames_detected": result.frames, "frames_failed": len(result.failed), "detections": len(kept),
            "frames_per_second": round(result.frames_per_second, 3),
            "box_ap": box_ap(records, scored_truth),
            "box_ap_kept": box_ap(kept, scored_truth),
        }
        if fill_on:
            metrics["fill_gaps"] = {"boxes_added": sum(1 for r in records if r.get("interpolated")),
                                    "kept_added": sum(1 for r in kept if r.get("interpolated")),
                                    "box_ap_per_frame": box_ap(per_frame, scored_truth)}
        if metrics_out:
            write_json(metrics_out, metrics, indent=2)
        tracker.log_metrics({k: v for k, v in metrics.items() if k != "backend"})
        if metrics_out:
            tracker.log_artifact(metrics_out)
        if result.failed:
            shown = ", ".join(result.failed[:5]) + (f" and {len(result.failed) - 5} more" if len(result.failed) > 5 else "")
            raise DataError(
                f"{images}: {len(result.failed)} of {len(detected)} frames could not be decoded ({shown}); "
                f"they were skipped, the other detections are in {out}"
            )
    return metrics


def main(args: argparse.Namespace) -> int:
    params = resolve_params(
        args.params, backend=args.backend, score_threshold=args.score_threshold, frames=args.frames,
        batch_size=args.batch_size, boxes=args.boxes, checkpoint=args.checkpoint, fill_gaps=args.fill_gaps,
    )
    metrics = run(annotations=args.annotations, images=args.images, out=args.out, params=params,
                  metrics_out=args.metrics, progress=not args.no_progress)
    ap = metrics["box_ap"]
    kept = metrics["box_ap_kept"]
    summary = (f"AP {ap['AP']:.3f}, AP50 {ap['AP50']:.3f} (boxes >= {metrics['score_threshold']:g}: "
               f"{kept['AP50']:.3f}), " if "AP" in ap else "")
    print(
        f"detect: {metrics['detections']} boxes on {metrics['frames']} frames ({metrics['backend']}), "
        f"{summary}{metrics['frames_per_second']:.1f} frames/s -> {Path(args.out)}"
    )
    return 0
