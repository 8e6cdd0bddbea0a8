"""Tracked runs side by side: which params differ between them, and their metrics.

``compare(uri, experiments=..., stage=..., metrics=...)`` reads the runs of an MLflow store with
``mlflow.search_runs`` and returns one row per run: its id, name, stage, DVC experiment name and
git revision (the tags :mod:`diffpose.tracking` sets), start time and status, then the params that
differ between runs of the same stage (params every such run shares are hidden), then the metrics.

Params are judged within a stage: two stages log different params under the same key (``out``),
so across stages nearly everything "differs". A param some runs of a stage have and others lack
counts as differing (a key added to params.yaml between two runs).

MLflow and pandas are imported by the functions that need them, not by this module.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import math
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from diffpose.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

# tags set by diffpose.tracking.Tracker._start
EXPERIMENT_TAG = "dvc_exp_name"
STAGE_TAG = "stage"
COMMIT_TAG = "git_commit"
RUN_NAME_TAG = "mlflow.runName"
INFO_COLUMNS = ("run", "name", "stage", "experiment", "commit", "start", "status")
_GLOB = set("*?[")
_SHOWN_NAMES = 10  # names listed in an error line


@dataclass
class Comparison:
    table: pd.DataFrame
    uri: str
    params: list[str] = field(default_factory=list)  # param columns shown (they differ)
    hidden: list[str] = field(default_factory=list)  # params constant within each stage
    metrics: list[str] = field(default_factory=list)


def describe_query(experiments: Sequence[str] = (), stage: str | None = None) -> str:
    """``runs of DVC experiment 'a' or 'b' and stage 'evaluate'`` (for messages)."""
    parts = []
    if experiments:
        parts.append("DVC experiment " + " or ".join(repr(e) for e in experiments))
    if stage:
        parts.append(f"stage {stage!r}")
    return "runs" + (" of " + " and ".join(parts) if parts else "")


def _quote(value: str, what: str) -> str:
    for quote in ("'", '"'):
        if quote not in value:
            return f"{quote}{value}{quote}"
    raise DataError(f"{what} {value!r}: a name holding both quote characters cannot be searched")


def _condition(tag: str, pattern: str, what: str) -> str:
    """An MLflow filter on ``tags.<tag>``: equality, or for a glob (``*`` ``?`` ``[...]``) LIKE on
    the text before its first wildcard, refined by :func:`_glob_filter` afterwards."""
    first = next((i for i, c in enumerate(pattern) if c in _GLOB), None)
    if first is not None:
        return f"tags.`{tag}` LIKE {_quote(pattern[:first] + '%', what)}"
    return f"tags.`{tag}` = {_quote(pattern, what)}"


def filter_strings(experiments: Sequence[str] = (), stage: str | None = None) -> list[str]:
    """One MLflow filter string per experiment pattern (all runs: one empty filter)."""
    stage_cond = [_condition(STAGE_TAG, stage, "stage")] if stage else []
    if not experiments:
        return [" and ".join(stage_cond)]
    return [" and ".join([_condition(EXPERIMENT_TAG, e, "experiment"), *stage_cond]) for e in experiments]


def check_store(uri: str) -> None:
    """Raise DataError (one line) when ``uri`` names no readable MLflow store, before MLflow runs:
    MLflow would otherwise create an empty store at a mistyped path, turn a foreign SQLite file into
    a store, or retry a dead server for minutes."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        from diffpose.tracking import _sqlite_path

        path = _sqlite_path(uri)
        if path is None or not str(path):
            return  # in-memory: nothing to check
        if not path.is_file():
            raise DataError(f"no MLflow store at {path} (nothing tracked there yet; "
                            "--tracking-uri or MLFLOW_TRACKING_URI names another store)")
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
                tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.Error as err:
            raise DataError(f"{path}: cannot read the MLflow store ({err})") from None
        if not {"runs", "tags", "alembic_version"} <= tables:
            raise DataError(f"{path}: not an MLflow store (no runs/tags/alembic_version tables)")
    elif parsed.scheme in {"http", "https"}:
        from diffpose.tracking import _probe_server

        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
        try:
            _probe_server(uri)
        except OSError as err:
            raise DataError(f"MLflow tracking server {uri} is not reachable ({err})") from None
    elif parsed.scheme in {"", "file"}:
        folder = Path(parsed.path if parsed.scheme == "file" else uri)
        if not folder.is_dir():
            raise DataError(f"no MLflow store at {folder} (not a folder)")


@contextlib.contextmanager
def _using_uri(uri: str) -> Iterator[None]:
    """``mlflow.search_runs`` reads the process-wide tracking URI: set it for the block and put the
    previous one back (MLflow's setter also rewrites MLFLOW_TRACKING_URI in the environment)."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    before_env = os.environ.get("MLFLOW_TRACKING_URI")
    before = utils._tracking_uri
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
        if before_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before_env


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}"


def search_runs(uri: str, experiments: Sequence[str] = (), stage: str | None = None) -> pd.DataFrame:
    """MLflow's run frame (``run_id``, ``status``, ``start_time``, ``params.*``, ``metrics.*``,
    ``tags.*``) of the active runs in every MLflow experiment of the store matching the filters."""
    import pandas as pd

    check_store(uri)
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import mlflow

    frames = []
    with _using_uri(uri):
        for query in filter_strings(experiments, stage):
            try:
                frames.append(mlflow.search_runs(search_all_experiments=True, filter_string=query))
            except Exception as err:  # noqa: BLE001 - any store failure is one line for the user
                raise DataError(f"cannot read the MLflow store {uri} ({_one_line(err)})") from None
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=["run_id", "status", "start_time"])
    runs = pd.concat(frames, ignore_index=True).drop_duplicates("run_id", ignore_index=True)
    return _glob_filter(_glob_filter(runs, EXPERIMENT_TAG, experiments), STAGE_TAG, [stage] if stage else [])


def _glob_filter(runs: pd.DataFrame, tag: str, patterns: Sequence[str]) -> pd.DataFrame:
    if not patterns or not any(_GLOB & set(p) for p in patterns):
        return runs
    values = runs.get(f"tags.{tag}")
    if values is None:
        return runs.iloc[0:0]
    keep = values.map(lambda v: isinstance(v, str) and any(fnmatch.fnmatchcase(v, p) for p in patterns))
    return runs[keep.astype(bool)].reset_index(drop=True)


def _tag(runs: pd.DataFrame, name: str) -> pd.Series:
    import pandas as pd

    column = f"tags.{name}"
    return runs[column] if column in runs else pd.Series([None] * len(runs), index=runs.index, dtype=object)


def _differs(values: pd.Series, groups: pd.Series) -> bool:
    """True when, within some group, the values (a missing value counting as one) are not all equal."""
    return bool(values.groupby(groups.fillna("\0none"), dropna=False).nunique(dropna=False).gt(1).any())


def select_metrics(available: Sequence[str], patterns: Sequence[str], runs: int) -> list[str]:
    """All metric names (sorted), or those matching ``patterns`` (names or globs, in their order)."""
    if not patterns:
        return sorted(available)
    chosen: list[str] = []
    for pattern in patterns:
        hits = sorted(n for n in available if fnmatch.fnmatchcase(n, pattern))
        if not hits:
            names = sorted(available)
            listed = ", ".join(names[:_SHOWN_NAMES]) + (", ..." if len(names) > _SHOWN_NAMES else "")
            raise DataError(f"no metric matches {pattern!r} in the {runs} runs found "
                            f"(their metrics: {listed or 'none'})")
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


def _local_time(value: object) -> object:
    import pandas as pd

    if pd.isna(value):
        return None
    return pd.Timestamp(value).to_pydatetime().astimezone()


def compare_table(runs: pd.DataFrame, metrics: Sequence[str] = ()) -> Comparison:
    """The comparison of MLflow's run frame ``runs`` (see :func:`search_runs`), oldest run first.

    Column names are the bare param and metric keys; a key that is both (or that equals an info
    column) keeps MLflow's ``params.`` / ``metrics.`` prefix."""
    import pandas as pd

    runs = runs.sort_values("start_time", kind="stable").reset_index(drop=True)
    table = pd.DataFrame({
        "run": runs["run_id"],
        "name": _tag(runs, RUN_NAME_TAG),
        "stage": _tag(runs, STAGE_TAG),
        "experiment": _tag(runs, EXPERIMENT_TAG),
        "commit": _tag(runs, COMMIT_TAG),
        "start": runs["start_time"].map(_local_time).astype(object),  # None for a missing time
        "status": runs["status"],
    })
    param_cols = sorted(c for c in runs.columns if c.startswith("params."))
    shown = [c for c in param_cols if _differs(runs[c], table["stage"])]
    available = [c[len("metrics."):] for c in runs.columns if c.startswith("metrics.") and runs[c].notna().any()]
    chosen = select_metrics(available, metrics, len(runs))
    params = [c[len("params."):] for c in shown]
    clash = set(INFO_COLUMNS) | (set(params) & set(chosen))
    for key in params:
        table[f"params.{key}" if key in clash else key] = runs[f"params.{key}"].to_numpy()
    for key in chosen:
        table[f"metrics.{key}" if key in clash else key] = runs[f"metrics.{key}"].astype(float).to_numpy()
    hidden = [c[len("params."):] for c in param_cols if c not in shown and runs[c].notna().any()]
    return Comparison(table=table, uri="", params=params, hidden=hidden, metrics=chosen)


def compare(
    uri: str, *, experiments: Sequence[str] = (), stage: str | None = None, metrics: Sequence[str] = ()
) -> Comparison:
    """Search ``uri`` and build the comparison; no matching run raises DataError naming the search
    and, to catch a typo, the experiment names and stages the store does hold."""
    runs = search_runs(uri, experiments, stage)
    if runs.empty:
        raise DataError(f"no {describe_query(experiments, stage)} in the MLflow store {uri}{_known(uri, runs)}")
    result = compare_table(runs, metrics)
    result.uri = uri
    return result


def _known(uri: str, found: pd.DataFrame) -> str:
    everything = search_runs(uri)
    if everything.empty:
        return " (it holds no runs)"
    parts = []
    for tag, label in ((EXPERIMENT_TAG, "DVC experiments"), (STAGE_TAG, "stages")):
        names = sorted({v for v in _tag(everything, tag) if isinstance(v, str)})
        if names:
            listed = ", ".join(names[:_SHOWN_NAMES]) + (", ..." if len(names) > _SHOWN_NAMES else "")
            parts.append(f"{label}: {listed}")
    return f" ({len(everything)} runs in all; " + "; ".join(parts or ["none tagged"]) + ")"


def _short_commit(value: object) -> object:
    if not isinstance(value, str) or value == "unknown":
        return value
    sha, dirty, _ = value.partition("-dirty")
    return sha[:10] + ("-dirty" if dirty else "")


def _number(value: float) -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.4g}"


def format_table(table: pd.DataFrame) -> str:
    """The table as text, one line per run however wide: short run ids and commits, local start
    times to the second, metrics to 4 significant digits (one decimal from 100 on)."""
    shown = table.copy()
    shown["run"] = shown["run"].str[:8]
    shown["commit"] = shown["commit"].map(_short_commit)
    shown["start"] = shown["start"].map(lambda t: t.strftime("%Y-%m-%d %H:%M:%S") if t is not None else None)
    for column in shown.columns:
        if shown[column].dtype != float:  # a missing text prints as "None" or "NaN", not as na_rep
            shown[column] = shown[column].astype(object).where(shown[column].notna(), "-")
    return shown.to_string(index=False, na_rep="-", float_format=_number)


def write_csv(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """The table as CSV, written atomically: full run ids and commits, ISO start times with the
    UTC offset, every digit of the metrics, empty cells where a run lacks a value."""
    from diffpose.io import atomic_open

    out = table.copy()
    out["start"] = out["start"].map(lambda t: t.isoformat(timespec="milliseconds") if t is not None else None)
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        out.to_csv(fh, index=False)
