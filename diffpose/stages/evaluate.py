"""``diffpose evaluate``: PoseTrack mAP (the official poseval algorithm) and COCO OKS AP.

    diffpose evaluate --gt GT_DIR --pred PRED_DIR [--out metrics.json] [--per-sequence DIR]
                      [--metric {posetrack,coco,both}] [--subset {all,degraded}]
                      [--protocol {poseval,posetrack21}]

``--protocol`` (params ``evaluate.protocol``) picks the PoseTrack mAP's frame and keypoint rules:
``poseval`` (default, the official evaluator's) or ``posetrack21`` (the PoseTrack21 kit's: frames
by ``is_labeled``, a keypoint present where x > 0 and y > 0); the metrics JSON names it as
``"protocol"`` when it is not the default (a file without it is poseval's, as every file written
before the option existed). Prints the paper's table and, with ``--out``, writes the metrics JSON (see
:mod:`diffpose.evaluation.tables`); ``--per-sequence DIR`` adds one ``<sequence>.json`` per GT
sequence (PoseTrack mAP only). The pipeline imports :func:`run` (or
:func:`diffpose.evaluation.posetrack_map.evaluate_folders` for the bare numbers).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any

from diffpose.evaluation import posetrack_map
from diffpose.evaluation.tables import format_table, write_metrics

LOG = logging.getLogger(__name__)
METRICS = ("posetrack", "coco", "both")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt", required=True, help="folder of ground-truth sequence files (PoseTrack17/18/21)")
    parser.add_argument("--pred", required=True, help="folder of prediction files, same names as the GT files")
    parser.add_argument("--out", help="write the metrics JSON here")
    parser.add_argument("--per-sequence", metavar="DIR", help="write one <sequence>.json of PoseTrack mAP per sequence")
    parser.add_argument("--metric", choices=METRICS, default="posetrack",
                        help="posetrack: PoseTrack mAP (default); coco: COCO OKS AP; both")
    parser.add_argument("--subset", choices=posetrack_map.SUBSETS, default="all",
                        help="degraded: only frames with a GT person flagged \"degraded\": true (synthetic benchmark)")
    parser.add_argument("--protocol", choices=posetrack_map.PROTOCOLS, default="poseval",
                        help="poseval: the official evaluator's rules (default); posetrack21: the PoseTrack21 "
                             "kit's (frames by is_labeled, a keypoint present where x > 0 and y > 0)")
    parser.add_argument("--no-track", action="store_true", help="do not log this run to MLflow")


def run(
    gt_dir: str | os.PathLike,
    pred_dir: str | os.PathLike,
    *,
    metric: str = "posetrack",
    subset: str = "all",
    out: str | os.PathLike | None = None,
    per_sequence_dir: str | os.PathLike | None = None,
    run_record: dict[str, Any] | None = None,
    protocol: str = "poseval",
) -> dict[str, Any]:
    """Evaluate ``pred_dir`` against ``gt_dir``; write the requested files; return the metrics.

    The returned dict has the table columns and ``per_joint`` (PoseTrack mAP, percent) when
    ``metric`` is posetrack/both, and ``coco`` (COCO keypoint AP, percent) when coco/both. ``run_record`` (MLflow run id, git
    commit, data version: :func:`diffpose.provenance.provenance`) is written into the file as ``run``.
    ``protocol`` (see :data:`diffpose.evaluation.posetrack_map.PROTOCOLS`) is returned and written
    as ``"protocol"`` unless it is the default ``poseval`` (the key set of a poseval file is
    unchanged).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if protocol not in posetrack_map.PROTOCOLS:
        raise ValueError(f"protocol must be one of {posetrack_map.PROTOCOLS}, got {protocol!r}")
    t0 = time.perf_counter()
    # The COCO AP needs the parsed files; the PoseTrack mAP alone streams them (faster, less memory).
    pairs = posetrack_map.load_pairs(gt_dir, pred_dir) if metric in ("coco", "both") else None
    metrics: dict[str, Any] = {}
    if metric in ("posetrack", "both"):
        data = posetrack_map.prepare(pairs if pairs is not None else posetrack_map.iter_pairs(gt_dir, pred_dir), subset,
                                     protocol)
        t_read = time.perf_counter() - t0
        result = posetrack_map.evaluate_data(data, per_sequence=per_sequence_dir is not None)
        metrics.update(result.metrics())
        LOG.info(
            "PoseTrack mAP: %d sequences, %d frames, %d GT / %d predicted people; read %.3f s, compute %.3f s",
            len(data.names), len(data.frame_seq), len(data.gt.frame), len(data.pred.frame), t_read,
            time.perf_counter() - t0 - t_read,
        )
        if per_sequence_dir is not None:
            for name, seq in result.per_sequence.items():
                write_metrics(Path(per_sequence_dir) / f"{name}.json", {**seq.metrics(), **_named(protocol)})
    if metric in ("coco", "both"):
        from diffpose.evaluation.coco_ap import coco_keypoint_ap

        metrics["coco"] = coco_keypoint_ap(pairs, subset=subset)
    metrics.update(_named(protocol))
    if out is not None:
        write_metrics(out, {**metrics, "run": run_record} if run_record else metrics)
    return metrics


def _named(protocol: str) -> dict[str, str]:
    """``{"protocol": ...}`` for the metrics files, empty for the default (poseval)."""
    return {} if protocol == "poseval" else {"protocol": protocol}


def main(args: argparse.Namespace) -> int:
    params = {"metric": args.metric, "subset": args.subset, "protocol": args.protocol, "gt": args.gt, "pred": args.pred}
    if args.no_track:
        metrics = run(args.gt, args.pred, metric=args.metric, subset=args.subset, out=args.out,
                      per_sequence_dir=args.per_sequence, protocol=args.protocol)
    else:
        from diffpose.provenance import provenance
        from diffpose.tracking import stage_run

        with stage_run("evaluate", params) as tracker:
            metrics = run(args.gt, args.pred, metric=args.metric, subset=args.subset, out=args.out,
                          per_sequence_dir=args.per_sequence, protocol=args.protocol,
                          run_record=provenance(tracker.run_id, args.gt) if args.out else None)
            tracker.log_metrics(metrics)
            if args.out:
                tracker.log_artifact(args.out)
    title = "PoseTrack mAP" if args.subset == "all" else f"PoseTrack mAP ({args.subset} frames)"
    if args.protocol != "poseval":
        title += f", {args.protocol} protocol"
    print(format_table(metrics, title=title))
    if args.out:
        print(f"metrics written to {args.out}")
    return 0
