"""``diffpose compare``: tracked runs side by side (not a pipeline stage; it only reads the store).

    diffpose compare [--experiment NAME ...] [--metric NAME ...] [--stage STAGE] [--csv FILE]
                     [--tracking-uri URI]

One row per MLflow run of the repository's store (``$MLFLOW_TRACKING_URI``, else ``mlflow.db`` at
the project root, the store every stage logs to): run id, name, stage, DVC experiment, git commit,
start time, status, the params that differ between runs of the same stage, and the metrics.
Names given to --experiment, --metric and --stage may be globs (``'Total*'``, ``'exp-*'``).
See :mod:`diffpose.report.compare`.
"""

from __future__ import annotations

import argparse
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", metavar="NAME", nargs="+", action="extend", default=[],
                        help="only runs of these DVC experiments (`dvc exp show` names; repeatable)")
    parser.add_argument("--metric", metavar="NAME", nargs="+", action="extend", default=[],
                        help="only these metric columns (default: all), e.g. Total 'coco.*'")
    parser.add_argument("--stage", help="only runs of this stage, e.g. evaluate, train, synth")
    parser.add_argument("--csv", metavar="FILE", help="also write the table as CSV (full run ids and commits)")
    parser.add_argument("--tracking-uri", metavar="URI",
                        help="the MLflow store (default: $MLFLOW_TRACKING_URI, else <project root>/mlflow.db); "
                             "a path ending in .db means that SQLite file")


def store_uri(value: str | None) -> str:
    """``--tracking-uri`` as MLflow reads it, or the store diffpose.tracking logs to."""
    from pathlib import Path

    from diffpose.tracking import tracking_uri

    if not value:
        return tracking_uri()
    if "://" not in value and value.endswith(".db"):
        return f"sqlite:///{Path(value).resolve()}"
    return value


def main(args: argparse.Namespace) -> int:
    from diffpose.report.compare import compare, format_table, write_csv

    result = compare(store_uri(args.tracking_uri), experiments=args.experiment, stage=args.stage,
                     metrics=args.metric)
    if args.csv:
        write_csv(result.table, args.csv)
    try:
        print(format_table(result.table), flush=True)
    except BrokenPipeError:  # `diffpose compare | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    hidden = f"; {len(result.hidden)} params constant within each stage, hidden" if result.hidden else ""
    written = f"; written to {args.csv}" if args.csv else ""
    print(f"diffpose compare: {len(result.table)} runs from {result.uri}{hidden}{written}", file=sys.stderr)
    return 0
