"""``diffpose register``: point the pipeline at a PoseTrack copy you already have.

    diffpose register --dataset {posetrack17,posetrack18,posetrack21} --root DIR
                      [--out data/registered/<dataset>.json] [--splits train val]
                      [--annotations DIR] [--images DIR]

Checks the layout (annotation folders per split, the frames they name), validates every sequence
file, detects the label version, counts sequences, frames, labelled frames and people per split
and records the annotations' sha256 (the pipeline's data version) in a small JSON file. Nothing is
copied. A bad layout gives one line naming the path and the problem, and exit status 2. See
:mod:`diffpose.data.register`.

With ``--params FILE`` (the real-data DVC stages, workflow/realdata/dvc.yaml) the copy is the entry
``datasets.DATASET`` of that params file: ``root``, and optionally ``splits``, ``annotations``,
``images`` (options given on the command line win).
"""

from __future__ import annotations

import argparse
import time

from diffpose.data import download as dl
from diffpose.data import register as reg
from diffpose.errors import DataError
from diffpose.io import check_writable, write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, choices=reg.DATASETS, help="which release the copy holds")
    parser.add_argument("--root",
                        help="the copy's root folder (images/ and the annotations); required without --params")
    parser.add_argument("--out", help="the record to write (default data/registered/<dataset>.json)")
    parser.add_argument("--splits", nargs="+", metavar="SPLIT",
                        help="split folders that must be there (default: train val)")
    parser.add_argument("--annotations", metavar="DIR",
                        help="folder holding the <split>/ folders of sequence files, absolute or under --root "
                             "(default: annotations/, posetrack_data/annotations/ or, PoseTrack21, posetrack_data/)")
    parser.add_argument("--images", metavar="DIR",
                        help="folder the frames' images/... names resolve in, absolute or under --root "
                             "(default: <root>/images)")
    parser.add_argument("--params", metavar="FILE",
                        help="take the copy from the entry datasets.DATASET of this params file "
                             "(workflow/realdata/params.yaml: root, splits, annotations, images)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-track", action="store_true", help="do not log this run to MLflow")


PARAMS_KEYS = ("root", "splits", "annotations", "images")


def _from_params(args: argparse.Namespace) -> None:
    """Fill the options the command line left out from the params file's entry (see the docstring)."""
    raw = dl.read_pipeline_params(args.params)
    entry = dl.pipeline_entry(raw, args.params, "datasets", args.dataset, PARAMS_KEYS)
    splits = entry.get("splits")
    if splits is not None and (not isinstance(splits, list) or not all(isinstance(x, str) for x in splits)):
        raise DataError(f"{args.params}: datasets.{args.dataset}.splits must be a list of split names, got {splits!r}")
    for key in PARAMS_KEYS:
        if getattr(args, key) is None and entry.get(key) is not None:
            setattr(args, key, entry[key] if key == "splits" else str(entry[key]))


def main(args: argparse.Namespace) -> int:
    if args.params:
        _from_params(args)
    if args.root is None:
        raise DataError("give --root (the copy's folder), or --params FILE with datasets.<dataset>.root")
    args.splits = list(args.splits or reg.DEFAULT_SPLITS)
    out = args.out or f"data/registered/{args.dataset}.json"
    check_writable(out, "file")
    kwargs = {"splits": tuple(args.splits), "annotations": args.annotations, "images": args.images,
              "progress": not args.no_progress}
    if args.no_track:
        record = reg.register(args.dataset, args.root, **kwargs)
    else:
        from diffpose.tracking import stage_run

        params = {"dataset": args.dataset, "root": args.root, "splits": list(args.splits)}
        with stage_run("register", params) as tracker:
            start = time.perf_counter()
            record = reg.register(args.dataset, args.root, **kwargs)
            tracker.log_metrics({f"{split}.{key}": value for split, counts in record["splits"].items()
                                 for key, value in counts.items() if isinstance(value, int)})
            tracker.log_metrics({"seconds": time.perf_counter() - start})
            tracker.set_tags({f"data_version.{split}": c["annotations_version"] for split, c in record["splits"].items()})
    write_json(out, record, indent=2)
    print("\n".join(reg.summary_lines(record)))
    print(f"record written to {out}")
    return 0
