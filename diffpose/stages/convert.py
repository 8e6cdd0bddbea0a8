"""``diffpose convert --to {17,18} SRC DST``: convert sequence files between PoseTrack formats.

SRC is a file or a folder of ``*.json`` files (either format, auto-detected and validated;
PoseTrack21 files are PoseTrack18 files with more fields, which ``--to 18`` keeps);
DST is the output file, or a folder that receives files of the same names. Outputs are written
atomically. Image ids are never renumbered; PoseTrack17 files get poseval's ids from their frame
paths. ``--to 17`` keeps each frame's ``is_labeled`` flag but has no field for ``person_id`` or a
person's body box (a PoseTrack21 box-only person becomes a person without points).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from diffpose.data import posetrack
from diffpose.errors import DataError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", choices=posetrack.FORMATS, required=True, help="target format")
    parser.add_argument("--kind", choices=posetrack.KINDS, default="gt", help="gt (default) or pred files")
    parser.add_argument("src", help="sequence file or folder")
    parser.add_argument("dst", help="output file, or folder for a folder SRC")


def run(src: str | Path, dst: str | Path, *, to: str, kind: str = "gt") -> list[Path]:
    """Convert ``src`` (file or folder) into ``dst``; return the written paths."""
    src, dst = Path(src), Path(dst)
    if src.is_dir():
        files = posetrack.sequence_files(src)
        if not files:
            raise DataError(f"{src}: no .json sequence files found")
        if dst.exists() and not dst.is_dir():
            raise DataError(f"{dst}: SRC is a folder, so DST must be a folder, but it is a file")
        targets = [dst / f.name for f in files]
    elif src.exists():
        files = [src]
        targets = [dst / src.name if dst.is_dir() else dst]
    else:
        raise DataError(f"{src}: no such file or folder")
    for f, t in zip(files, targets):
        if f.resolve() == t.resolve():
            raise DataError(f"{t}: refusing to overwrite the source file")
    for f, t in zip(files, targets):
        posetrack.write_sequence(t, posetrack.load_sequence(f, kind=kind), fmt=to)
    return targets


def main(args: argparse.Namespace) -> int:
    written = run(args.src, args.dst, to=args.to, kind=args.kind)
    print(f"wrote {len(written)} PoseTrack{args.to} file(s) to {Path(args.dst)}")
    return 0
