"""MLflow tracking: one thin wrapper that never costs a stage its outputs.

Every stage execution is one MLflow run tagged with the stage name, the git commit and, inside
``dvc exp run``, the experiment name. The store is ``$MLFLOW_TRACKING_URI`` or, by default, a
SQLite file at the project root addressed by an absolute path: DVC runs queued experiments in
temporary copies under ``.dvc/tmp/exps``, and a relative URI would put their runs in the copy.

If the store cannot be reached, the first failure is reported on one line and tracking is switched
off for the rest of the stage; the stage itself carries on. ``DIFFPOSE_TRACKING=off`` disables
tracking altogether (useful for quick experiments, never needed in tests).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from diffpose.config import flatten

EXPERIMENT_ENV = "DIFFPOSE_EXPERIMENT"
DEFAULT_EXPERIMENT = "diffpose"
_SECRET_KEY = re.compile(r"token|password|secret|api[_-]?key", re.IGNORECASE)
_EXP_COPY = re.compile(r"^(.*?)/\.dvc/tmp/exps/")


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The folder holding dvc.yaml (or .dvc/), seen from ``start``; the original repo when
    ``start`` lies inside a DVC queued-experiment copy."""
    here = Path(start or os.getcwd()).resolve()
    match = _EXP_COPY.match(here.as_posix() + "/")
    if match:
        return Path(match.group(1))
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").exists() or (folder / ".dvc").is_dir():
            return folder
    return here


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{project_root() / 'mlflow.db'}"


def git_commit(cwd: str | os.PathLike | None = None) -> str | None:
    """HEAD's commit, with ``-dirty`` when tracked files differ from it; None outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head


def redact(params: dict[str, Any]) -> dict[str, Any]:
    """Drop anything that looks like a credential before it can reach a log or the store."""
    return {k: ("<redacted>" if _SECRET_KEY.search(k) else v) for k, v in params.items()}


def tracking_enabled() -> bool:
    return os.environ.get("DIFFPOSE_TRACKING", "on").lower() not in {"0", "off", "false", "no"}


class Tracker:
    """Logs to one MLflow run; every call is a no-op once tracking is off or has failed."""

    def __init__(self, stage: str, enabled: bool = True) -> None:
        self.stage = stage
        self.enabled = enabled and tracking_enabled()
        self.run_id: str | None = None
        self.uri = tracking_uri() if self.enabled else None
        self._mlflow: Any = None

    # -- internal -------------------------------------------------------------------------
    def _guard(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if not self.enabled:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - any store failure must not kill the stage
            self.enabled = False
            msg = " ".join(str(err).split())[:300]
            print(
                f"diffpose {self.stage}: warning: MLflow tracking at {self.uri} failed while {what} "
                f"({type(err).__name__}: {msg}); outputs are still written, this run is not tracked",
                file=sys.stderr,
            )
            return None

    def _start(self, params: dict[str, Any], tags: dict[str, str]) -> None:
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
        import logging

        import mlflow

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        self._mlflow = mlflow
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_experiment(os.environ.get(EXPERIMENT_ENV, DEFAULT_EXPERIMENT))
        exp_name = os.environ.get("DVC_EXP_NAME")
        run = mlflow.start_run(run_name=f"{self.stage}" + (f"@{exp_name}" if exp_name else ""))
        self.run_id = run.info.run_id
        all_tags = {"stage": self.stage, "git_commit": git_commit() or "unknown"}
        if exp_name:
            all_tags["dvc_exp_name"] = exp_name
        all_tags.update(tags)
        mlflow.set_tags(all_tags)
        self._log_params(params)

    def _log_params(self, params: dict[str, Any]) -> None:
        flat = redact(flatten(params))
        items = [(k, str(v)[:6000]) for k, v in flat.items()]
        for i in range(0, len(items), 100):
            self._mlflow.log_params(dict(items[i : i + 100]))

    # -- public ---------------------------------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        self._guard("logging params", self._log_params, params)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        clean = {k: float(v) for k, v in flatten(metrics).items() if isinstance(v, (int, float))}
        self._guard("logging metrics", lambda: self._mlflow.log_metrics(clean, step=step))

    def set_tags(self, tags: dict[str, str]) -> None:
        self._guard("setting tags", lambda: self._mlflow.set_tags(tags))

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self._guard("uploading an artifact", lambda: self._mlflow.log_artifact(str(path), artifact_path))


@contextlib.contextmanager
def stage_run(
    stage: str,
    params: dict[str, Any] | None = None,
    *,
    tags: dict[str, str] | None = None,
    enabled: bool = True,
) -> Iterator[Tracker]:
    """Track one stage execution: ``with stage_run("frames", params) as run: run.log_metrics(...)``.

    The run ends FINISHED when the block completes and FAILED when it raises (the exception
    propagates). The run id is printed to stderr so a person can find it.
    """
    tracker = Tracker(stage, enabled=enabled)
    tracker._guard("starting a run", tracker._start, params or {}, tags or {})
    if tracker.run_id:
        print(f"diffpose {stage}: MLflow run {tracker.run_id} at {tracker.uri}", file=sys.stderr)
    status = "FAILED"
    try:
        yield tracker
        status = "FINISHED"
    finally:
        if tracker.run_id:
            tracker._guard("ending the run", lambda: tracker._mlflow.end_run(status=status))
