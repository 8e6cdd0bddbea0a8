"""Result tables and metrics files for the evaluators.

The metrics JSON holds the paper's columns (``Head`` ... ``Total``) and ``per_joint`` in percent
at full precision, plus a separate ``coco`` object when the COCO keypoint AP was computed. NaN
(a joint without GT in a sequence, as poseval reports it) is written as ``null`` because JSON has
no NaN.
"""

from __future__ import annotations

import math
import os
from typing import Any

from diffpose.evaluation.posetrack_map import TABLE_COLUMNS
from diffpose.io import write_json


def json_safe(obj: Any) -> Any:
    """Replace NaN/inf floats by None, recursively (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_metrics(path: str | os.PathLike, metrics: dict[str, Any]) -> None:
    """Write a metrics dict atomically as indented JSON (NaN -> null)."""
    write_json(path, json_safe(metrics), indent=2)


def _cell(value: Any, width: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan".rjust(width)
    return f"{value:.1f}".rjust(width)


def format_table(metrics: dict[str, Any], title: str = "PoseTrack mAP") -> str:
    """The paper's table (Head, Shou, Elb, Wri, Hip, Knee, Ankl, Total) as aligned text."""
    lines = []
    if "Total" in metrics:
        width = 6
        lines.append(title)
        lines.append(" ".join(c.rjust(width) for c in TABLE_COLUMNS))
        lines.append(" ".join(_cell(metrics.get(c), width) for c in TABLE_COLUMNS))
    coco = metrics.get("coco")
    if coco:
        keys = list(coco)
        width = max(8, *(len(k) for k in keys))
        lines.append("COCO keypoint AP (OKS, pycocotools; not the PoseTrack mAP)")
        lines.append(" ".join(k.rjust(width) for k in keys))
        lines.append(" ".join(_cell(coco[k], width) for k in keys))
    return "\n".join(lines)
