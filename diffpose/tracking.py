"""MLflow tracking: every stage execution is one MLflow run, at a cost well under a second.

Every stage execution is one MLflow run tagged with the stage name, the git commit and, inside
``dvc exp run``, the experiment name. The store is ``$MLFLOW_TRACKING_URI`` or, by default, a
SQLite file at the project root addressed by an absolute path: DVC runs queued experiments in
temporary copies under ``.dvc/tmp/exps``, and a relative URI would put their runs in the copy.
Artifacts of the default store go to ``<project root>/mlartifacts/<experiment>``, fixed when the
experiment is created, for the same reason.

Speed. Importing MLflow and opening its SQLAlchemy store costs 2-5 s per process, more than many
stages take. For a SQLite store whose schema revision this module knows (``KNOWN_SCHEMAS``,
checked against the installed MLflow by the tests), runs are written with the standard library's
``sqlite3`` into MLflow's own tables, exactly the rows MLflow writes (``mlflow ui``,
``mlflow.search_runs`` and ``MlflowClient`` read them as their own). Any other store (a server, an
unknown schema, a store that does not exist yet) goes through ``MlflowClient``.

Truthful status. A run ends FINISHED when the stage completes, FAILED when it raises, KILLED on
Ctrl-C or SIGTERM (a Slurm time limit, ``scancel``); a store failure mid-stage ends the run FAILED
when the store can still be reached. If the store cannot be reached, the first failure is
reported on one line and tracking is switched off for the rest of the stage; the stage itself
carries on. ``DIFFPOSE_TRACKING=off`` disables tracking altogether.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EXPERIMENT_ENV = "DIFFPOSE_EXPERIMENT"
DEFAULT_EXPERIMENT = "diffpose"
# MLflow schema revisions (alembic_version) whose runs/params/metrics/tags tables this module
# writes directly; tests/test_tracking.py fails when the installed MLflow creates another one.
KNOWN_SCHEMAS = frozenset({"dc11669786a5"})
_SECRET_KEY = re.compile(r"token|password|secret|api[_-]?key", re.IGNORECASE)
_EXP_COPY = re.compile(r"^(.*?)/\.dvc/tmp/exps/")
_MAX_PARAM = 6000


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


# What decides results: a change here makes the commit tag ``-dirty``. Metrics files and dvc.lock
# are rewritten by every ``dvc repro`` and must not (they would mark every later stage dirty).
_CODE_PATHS = ("diffpose", "pyproject.toml", "params.yaml", "dvc.yaml", "Snakefile", "workflow")


def git_commit(cwd: str | os.PathLike | None = None) -> str | None:
    """HEAD's commit, with ``-dirty`` when the code or params differ from it; None outside git."""
    import subprocess

    try:
        head, top = subprocess.run(
            ["git", "rev-parse", "HEAD", "--show-toplevel"], cwd=cwd, capture_output=True, text=True, timeout=10,
            check=True,
        ).stdout.split("\n")[:2]
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *_CODE_PATHS], cwd=top,
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head


def redact(params: dict[str, Any]) -> dict[str, Any]:
    """Drop anything that looks like a credential before it can reach a log or the store."""
    return {k: ("<redacted>" if _SECRET_KEY.search(k) else v) for k, v in params.items()}


def tracking_enabled() -> bool:
    return os.environ.get("DIFFPOSE_TRACKING", "on").lower() not in {"0", "off", "false", "no"}


def _now_ms() -> int:
    return int(time.time() * 1000)


def _metric_value(value: float) -> tuple[float, int]:
    """MLflow's storage of a metric: NaN as 0 with is_nan, +-inf as the largest double."""
    if math.isnan(value):
        return 0.0, 1
    if math.isinf(value):
        return math.copysign(sys.float_info.max, value), 0
    return value, 0


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):])


class SqliteStore:
    """Writes runs straight into an existing MLflow SQLite store of a known schema revision."""

    def __init__(self, path: Path, artifact_root: Path) -> None:
        self.path = path
        self.artifact_root = artifact_root
        self._db = sqlite3.connect(str(path), timeout=60, isolation_level=None)
        self._db.execute("PRAGMA foreign_keys = ON")

    @classmethod
    def open(cls, uri: str, artifact_root: Path) -> SqliteStore | None:
        """The store behind ``uri`` when it is a SQLite file of a known schema, else None."""
        path = _sqlite_path(uri)
        if path is None or not path.is_file():
            return None
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)) as db:
                revisions = {row[0] for row in db.execute("SELECT version_num FROM alembic_version")}
        except sqlite3.Error:
            return None
        if not revisions or not revisions <= KNOWN_SCHEMAS:
            return None
        return cls(path, artifact_root)

    def _write(self, sql: str, rows: list[tuple] | tuple) -> None:
        with self._db:  # one transaction
            if isinstance(rows, list):
                self._db.executemany(sql, rows)
            else:
                self._db.execute(sql, rows)

    def experiment(self, name: str) -> tuple[int, str]:
        """(id, artifact location) of the active experiment ``name``, created when missing."""
        for _ in range(5):
            row = self._db.execute(
                "SELECT experiment_id, artifact_location, lifecycle_stage FROM experiments "
                "WHERE name = ? AND workspace = 'default'", (name,)
            ).fetchone()
            if row:
                if row[2] != "active":
                    raise RuntimeError(f"experiment {name!r} is deleted (restore it or set {EXPERIMENT_ENV})")
                return int(row[0]), row[1]
            now = _now_ms()
            location = str(self.artifact_root / name)
            try:
                with self._db:
                    self._db.execute("BEGIN IMMEDIATE")
                    next_id = self._db.execute("SELECT COALESCE(MAX(experiment_id), 0) + 1 FROM experiments").fetchone()[0]
                    self._db.execute(
                        "INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage, "
                        "creation_time, last_update_time, workspace) VALUES (?, ?, ?, 'active', ?, ?, 'default')",
                        (next_id, name, location, now, now),
                    )
            except sqlite3.IntegrityError:
                continue  # another process created it first: read it again
        raise RuntimeError(f"could not create experiment {name!r}")

    def create_run(self, experiment: str, run_name: str, tags: dict[str, str]) -> str:
        import uuid

        exp_id, location = self.experiment(experiment)
        run_id = uuid.uuid4().hex
        artifact_uri = f"{location.rstrip('/')}/{run_id}/artifacts"
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, "
                "status, start_time, end_time, source_version, lifecycle_stage, artifact_uri, "
                "experiment_id, deleted_time) VALUES (?, ?, 'UNKNOWN', '', '', ?, 'RUNNING', ?, NULL, '', "
                "'active', ?, ?, NULL)",
                (run_id, run_name, tags.get("mlflow.user", "unknown"), _now_ms(), artifact_uri, exp_id),
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO tags (key, value, run_uuid) VALUES (?, ?, ?)",
                [(k, v, run_id) for k, v in tags.items()],
            )
        return run_id

    def log_params(self, run_id: str, params: dict[str, str]) -> None:
        self._write("INSERT OR REPLACE INTO params (key, value, run_uuid) VALUES (?, ?, ?)",
                    [(k, v, run_id) for k, v in params.items()])

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self._write("INSERT OR REPLACE INTO tags (key, value, run_uuid) VALUES (?, ?, ?)",
                    [(k, v, run_id) for k, v in tags.items()])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        now = _now_ms()
        rows = [(k, *_metric_value(v), now, step) for k, v in metrics.items()]
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT OR IGNORE INTO metrics (key, value, is_nan, timestamp, step, run_uuid) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(*row, run_id) for row in rows],
            )
            for key, value, is_nan, ts, st in rows:
                # latest_metrics keeps the most recent value by (step, timestamp, value), as MLflow does
                self._db.execute(
                    "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key, run_uuid) DO UPDATE SET "
                    "value = excluded.value, timestamp = excluded.timestamp, step = excluded.step, "
                    "is_nan = excluded.is_nan WHERE (excluded.step, excluded.timestamp, excluded.value) "
                    "> (latest_metrics.step, latest_metrics.timestamp, latest_metrics.value)",
                    (key, value, ts, st, is_nan, run_id),
                )

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None) -> None:
        import shutil
        from urllib.parse import urlparse

        row = self._db.execute("SELECT artifact_uri FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
        uri = row[0]
        if "://" in uri and not uri.startswith("file://"):
            raise RuntimeError(f"artifact location {uri} is not a local folder")
        folder = Path(urlparse(uri).path if uri.startswith("file://") else uri) / (artifact_path or "")
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{path.name}.tmp"
        shutil.copyfile(path, tmp)
        os.replace(tmp, folder / path.name)

    def end_run(self, run_id: str, status: str) -> None:
        self._write("UPDATE runs SET status = ?, end_time = ? WHERE run_uuid = ?", (status, _now_ms(), run_id))


class ClientStore:
    """The same calls through ``mlflow.MlflowClient``: servers, other databases, a new store."""

    def __init__(self, uri: str, artifact_root: Path | None) -> None:
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
        _probe_server(uri)
        import logging

        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        self._entities = (Metric, Param, RunTag)
        self.client = MlflowClient(uri)
        self.artifact_root = artifact_root

    def create_run(self, experiment: str, run_name: str, tags: dict[str, str]) -> str:
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            location = str(self.artifact_root / experiment) if self.artifact_root else None
            try:
                exp_id = self.client.create_experiment(experiment, artifact_location=location)
            except Exception:  # noqa: BLE001 - created by a concurrent stage meanwhile
                exp = self.client.get_experiment_by_name(experiment)
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        else:
            exp_id = exp.experiment_id
        run = self.client.create_run(exp_id, run_name=run_name, tags=tags)
        return run.info.run_id

    def log_params(self, run_id: str, params: dict[str, str]) -> None:
        items = [self._entities[1](k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.client.log_batch(run_id, tags=[self._entities[2](k, v) for k, v in tags.items()])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        now = _now_ms()
        self.client.log_batch(run_id, metrics=[self._entities[0](k, v, now, step) for k, v in metrics.items()])

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def end_run(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status=status)


def _probe_server(uri: str) -> None:
    """Fail in a few seconds, not after minutes of retries, when a tracking server is not there."""
    import socket
    from urllib.parse import urlparse

    parsed = urlparse(uri)
    if parsed.scheme not in {"http", "https"} or not parsed.hostname:
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    with socket.create_connection((parsed.hostname, port), timeout=5):
        pass


def open_store(uri: str) -> SqliteStore | ClientStore:
    """The fastest writer for ``uri``: direct SQLite when the schema is known, MlflowClient else.

    A SQLite store keeps its artifacts in ``mlartifacts/`` beside the database file (the project
    root for the default store); a server decides for itself."""
    db = _sqlite_path(uri)
    if db is None:
        return ClientStore(uri, None)
    artifact_root = db.parent / "mlartifacts"
    return SqliteStore.open(uri, artifact_root) or ClientStore(uri, artifact_root)


class StageTerminated(SystemExit):
    """SIGTERM turned into an exception, so the run can end KILLED and outputs stay atomic."""


class Tracker:
    """Logs to one MLflow run; every call is a no-op once tracking is off or has failed."""

    def __init__(self, stage: str, enabled: bool = True) -> None:
        self.stage = stage
        self.enabled = enabled and tracking_enabled()
        self.run_id: str | None = None
        self.uri = tracking_uri() if self.enabled else None
        self._store: SqliteStore | ClientStore | None = None

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
            if self.run_id and self._store is not None:
                # a run that stopped being logged must not look complete later
                with contextlib.suppress(Exception):
                    self._store.end_run(self.run_id, "FAILED")
            return None

    def _start(self, params: dict[str, Any], tags: dict[str, str]) -> None:
        import getpass

        self._store = open_store(self.uri)
        exp_name = os.environ.get("DVC_EXP_NAME")
        run_name = self.stage + (f"@{exp_name}" if exp_name else "")
        try:
            user = getpass.getuser()
        except Exception:  # noqa: BLE001 - no user name in some containers
            user = "unknown"
        commit = git_commit() or "unknown"
        all_tags = {
            "mlflow.runName": run_name,
            "mlflow.user": user,
            "mlflow.source.name": f"diffpose {self.stage}",
            "mlflow.source.type": "LOCAL",
            "stage": self.stage,
            "git_commit": commit,
        }
        if commit != "unknown":
            all_tags["mlflow.source.git.commit"] = commit.removesuffix("-dirty")
        if exp_name:
            all_tags["dvc_exp_name"] = exp_name
        all_tags.update({k: str(v) for k, v in tags.items()})
        self.run_id = self._store.create_run(os.environ.get(EXPERIMENT_ENV, DEFAULT_EXPERIMENT), run_name, all_tags)
        self._log_params(params)

    def _log_params(self, params: dict[str, Any]) -> None:
        from diffpose.config import flatten

        flat = redact(flatten(params))
        self._store.log_params(self.run_id, {k: str(v)[:_MAX_PARAM] for k, v in flat.items()})

    def _ready(self) -> bool:
        return self.enabled and self.run_id is not None and self._store is not None

    # -- public ---------------------------------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        if self._ready():
            self._guard("logging params", self._log_params, params)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from diffpose.config import flatten

        clean = {k: float(v) for k, v in flatten(metrics).items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self._ready() and clean:
            self._guard("logging metrics", self._store.log_metrics, self.run_id, clean, int(step or 0))

    def set_tags(self, tags: dict[str, str]) -> None:
        if self._ready():
            self._guard("setting tags", self._store.set_tags, self.run_id, {k: str(v) for k, v in tags.items()})

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        if self._ready():
            self._guard("uploading an artifact", self._store.log_artifact, self.run_id, Path(path), artifact_path)

    def end(self, status: str) -> None:
        if self._ready():
            self._guard("ending the run", self._store.end_run, self.run_id, status)


@contextlib.contextmanager
def _sigterm_as_exception() -> Iterator[None]:
    """Within the block, SIGTERM raises StageTerminated in this process (not in forked workers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):
        yield  # somebody else (torchrun, a test harness) handles SIGTERM already
        return

    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != owner:  # a forked worker: die as the default action would
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise StageTerminated(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def stage_run(
    stage: str,
    params: dict[str, Any] | None = None,
    *,
    tags: dict[str, str] | None = None,
    enabled: bool = True,
) -> Iterator[Tracker]:
    """Track one stage execution: ``with stage_run("frames", params) as run: run.log_metrics(...)``.

    The run ends FINISHED when the block completes, KILLED on Ctrl-C or SIGTERM, FAILED when it
    raises anything else (the exception propagates; SIGTERM becomes ``StageTerminated``, a
    ``SystemExit`` with code 143). The run id is printed to stderr so a person can find it.
    """
    tracker = Tracker(stage, enabled=enabled)
    tracker._guard("starting a run", tracker._start, params or {}, tags or {})
    if tracker.run_id:
        print(f"diffpose {stage}: MLflow run {tracker.run_id} at {tracker.uri}", file=sys.stderr)
    status = "FAILED"
    try:
        with _sigterm_as_exception():
            yield tracker
        status = "FINISHED"
    except (KeyboardInterrupt, StageTerminated):
        status = "KILLED"
        raise
    finally:
        tracker.end(status)
