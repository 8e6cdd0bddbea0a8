"""``diffpose validate PATH [PATH...]``: check PoseTrack17/18/21 sequence files.

Folders are expanded to their ``*.json`` files. Each file prints ``OK`` with its format and size,
or one error line naming the file, frame/annotation and field; the exit status is 1 if any file
is bad. A ground-truth person with a zero-size head box is reported as an error too: the official
evaluator accepts the file, but scores every joint of that person as a miss.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from diffpose.data import posetrack
from diffpose.errors import DataError
from diffpose.io import read_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="sequence files or folders of them")
    parser.add_argument(
        "--kind", choices=posetrack.KINDS, default="gt",
        help="gt: annotation files (default); pred: prediction files (minimal images, per-joint scores)",
    )


def check_file(path: Path, *, kind: str = "gt") -> str:
    """Validate one file; return a one-line summary, raise DataError when it is invalid."""
    obj = read_json(path, allow_nan=True)
    fmt = posetrack.detect_format(obj, path)
    if fmt == "17":
        posetrack.validate_posetrack17(obj, path, kind=kind)
        obj = posetrack.posetrack17_to_18(obj)
    posetrack.validate_posetrack18(obj, path, kind=kind)
    zero = posetrack.zero_size_head_boxes(obj) if kind == "gt" else []
    if zero:
        more = f" (and {len(zero) - 1} more such person(s))" if len(zero) > 1 else ""
        raise DataError(
            f"{posetrack.describe_annotation(path, obj, zero[0])}: 'bbox_head' has zero size{more}: every joint "
            f"of that person would count as unmatched (the head size normalises the PCKh distance)"
        )
    return f"PoseTrack{fmt}, {len(obj['images'])} frames, {len(obj.get('annotations', []))} people"


def run(paths: list[str | Path], *, kind: str = "gt") -> tuple[int, list[str]]:
    """Validate every file; return (number of bad files, printed lines)."""
    files = posetrack.sequence_files(paths)
    if not files:
        raise DataError(f"{', '.join(map(str, paths))}: no .json sequence files found")
    bad, lines = 0, []
    for path in files:
        try:
            lines.append(f"OK {path} ({check_file(path, kind=kind)})")
        except DataError as err:
            bad += 1
            lines.append(f"ERROR {err}")
    return bad, lines


def main(args: argparse.Namespace) -> int:
    bad, lines = run(args.paths, kind=args.kind)
    for line in lines:
        print(line, file=sys.stderr if line.startswith("ERROR") else sys.stdout)
    total = len(lines)
    print(f"{total - bad}/{total} files valid", file=sys.stderr if bad else sys.stdout)
    return 1 if bad else 0
