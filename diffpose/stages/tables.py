"""Stage ``tables``: the paper's per-joint table, the ablations and their plots, from the DAG's cells.

    diffpose tables --params params.yaml --out results/tables --plots results/plots [--no-progress]

Reads the inference cells that :func:`diffpose.sweep.cells` lists for the params (their infer.json,
metrics.json and metrics_degraded.json), the training metrics and history of every model and seed,
and the detect stage's box AP; writes the tables (csv, md, tex) and summary.json to ``--out``
(:mod:`diffpose.report.tables`) and the PNGs and the data files of dvc.yaml's ``plots:`` to
``--plots`` (:mod:`diffpose.report.plots`). Paths are relative to the current folder, the project
root under DVC and Snakemake.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from diffpose.config import DEFAULT_PARAMS, load_params


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default=DEFAULT_PARAMS, help="params file (default params.yaml)")
    parser.add_argument("--out", required=True, help="folder for the tables (csv, md, tex) and summary.json")
    parser.add_argument("--plots", required=True, help="folder for the PNGs and the plot data files (csv)")
    parser.add_argument("--no-progress", action="store_true", help="no progress lines")


def run(params: dict[str, Any], *, out: str | os.PathLike, plots: str | os.PathLike,
        root: str | os.PathLike = ".", progress: bool = True) -> dict[str, Any]:
    """Write the tables and the plots of the cells of validated ``params``; return the summary."""
    from diffpose.report.plots import write_plots
    from diffpose.report.tables import write_tables
    from diffpose.tracking import stage_run

    tracked = {"dataset": (params.get("dataset") or {}).get("name", "synthetic"),
               "models": list(params["models"]), "train": {"seeds": params["train"]["seeds"]},
               "infer": {k: params["infer"][k] for k in ("steps", "ensemble", "flip_test")},
               "sweep": params["sweep"], "out": str(out), "plots": str(plots)}
    with stage_run("tables", tracked) as tracker:
        tables, summary, _ = write_tables(params, out, root, progress=progress)
        write_plots(tables, params, plots, root)
        tracker.log_metrics({name: {key: value["mean"] for key, value in model["Total"].items()}
                             for name, model in summary["models"].items()})
        tracker.log_artifact(Path(out) / "summary.json")
    return summary


def main(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    summary = run(params, out=args.out, plots=args.plots, progress=not args.no_progress)
    for name, model in summary["models"].items():
        totals = ", ".join(f"{key} {value['mean']:.1f}" for key, value in model["Total"].items()
                           if value["mean"] is not None)
        print(f"tables: {name}: PoseTrack mAP {totals}")
    print(f"tables: written to {args.out}, plots to {args.plots}")
    return 0
