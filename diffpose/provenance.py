"""Where a result came from: the MLflow run that logged it, the code's git commit and the data
version (a hash of the annotation files). Every inference cell and every metrics file carries
these three, so a row of a table can be traced back (diffpose tables, diffpose report)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any


def data_version(files: list[str | os.PathLike]) -> str:
    """sha256 over annotation files (names and contents, in sorted order)."""
    digest = hashlib.sha256()
    for path in sorted(Path(f) for f in files):
        digest.update(path.name.encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def annotations_version(annotations: str | os.PathLike) -> str:
    """:func:`data_version` of the sequence files of an annotation file or folder."""
    from diffpose.data.posetrack import sequence_files

    return data_version(sequence_files(annotations))


def provenance(run_id: str | None, annotations: str | os.PathLike) -> dict[str, Any]:
    """``{"mlflow_run_id", "git_commit", "data_version"}`` for a result computed on ``annotations``."""
    from diffpose.tracking import git_commit

    return {"mlflow_run_id": run_id, "git_commit": git_commit(), "data_version": annotations_version(annotations)}
