"""``diffpose report``: the run's results as one self-contained offline HTML page.

    diffpose report --params params.yaml --out results/report.html
                    [--tables results/tables] [--plots results/plots]
                    [--annotations VAL_DIR] [--images IMAGE_ROOT]   (default: params dataset.val, .images)
                    [--detections results/detect/val_detections.json] [--results .]
                    [--frames-per-sequence 3] [--width 480]

The tables and plots of ``diffpose tables``, and a few val frames of every sequence with the
predicted skeletons of the main DiffPose cell against the ground truth, the missed joints and the
detect stage's boxes (see :mod:`diffpose.report.html`). The page opens in a browser without a
network; the MLflow run of this stage logs it as an artifact.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from diffpose.config import DEFAULT_PARAMS, load_params
from diffpose.report.html import Inputs, Options, build_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default=DEFAULT_PARAMS, help="params file: the cells to draw (default params.yaml)")
    parser.add_argument("--out", required=True, help="the HTML file to write")
    parser.add_argument("--tables", default="results/tables", help="folder of the tables stage's CSV files")
    parser.add_argument("--plots", default="results/plots", help="folder of the tables stage's PNG plots")
    parser.add_argument("--annotations", help="ground-truth sequence files of the val split (default: params "
                        "dataset.val, else data/synth/annotations/val)")
    parser.add_argument("--images", help="image root the annotations' file names are relative to (default: params "
                        "dataset.images, else data/frames)")
    parser.add_argument("--detections", default="results/detect/val_detections.json",
                        help="the detect stage's boxes (COCO results JSON)")
    parser.add_argument("--results", default=".", help="folder the cells' results/... paths are relative to")
    parser.add_argument("--frames-per-sequence", type=int, default=Options.frames_per_sequence,
                        help="evenly spaced evaluated frames drawn per val sequence (default %(default)s)")
    parser.add_argument("--width", type=int, default=Options.width, help="thumbnail width in pixels (default %(default)s)")
    parser.add_argument("--no-track", action="store_true", help="do not log this run to MLflow")


def main(args: argparse.Namespace) -> int:
    options = Options(frames_per_sequence=args.frames_per_sequence, width=args.width)
    params = load_params(args.params)
    dataset = params.get("dataset") or {}
    inputs = Inputs(tables=Path(args.tables), plots=Path(args.plots),
                    annotations=Path(args.annotations or dataset.get("val", "data/synth/annotations/val")),
                    images=Path(args.images or dataset.get("images", "data/frames")),
                    detections=Path(args.detections), results_root=Path(args.results))
    settings = {"params": args.params, "out": args.out, "frames_per_sequence": options.frames_per_sequence,
                "width": options.width, **{k: str(v) for k, v in vars(inputs).items()}}
    if args.no_track:
        counts = build_report(params, inputs, args.out, options)
    else:
        from diffpose.tracking import stage_run

        with stage_run("report", settings) as tracker:
            counts = build_report(params, inputs, args.out, options)
            tracker.log_metrics(counts)
            tracker.log_artifact(args.out)
    print(f"report written to {args.out}: {counts['tables']} tables, {counts['plots']} plots, "
          f"{counts['frames']} frames, {counts['bytes'] / 1e6:.1f} MB")
    return 0
