"""Shared test set-up: real-data fixtures from ../shared/fixtures and an isolated MLflow store.

The fixtures folder lives beside the checkout (``$DIFFPOSE_SHARED/fixtures``, default
``../shared/fixtures``) and is never copied into the repository. Locally, tests that need it skip
with the path in the reason when it is absent. Under CI (``CI`` set to true/1/yes) a missing folder
fails the run before any test runs, with one line naming it: a green CI run must not mean "73 tests
quietly skipped".
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DIFFPOSE_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures"
# fixture name -> the folder it hands out
FIXTURE_DIRS = {"fixtures_dir": FIXTURES, "posetrack18_dir": FIXTURES / "posetrack18", "videos_dir": FIXTURES / "videos"}

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def _missing_message(paths: list[Path]) -> str:
    folders = ", ".join(str(p) for p in paths)
    return (f"real-data fixture folder {folders} not found (../shared/fixtures beside the checkout; "
            f"set DIFFPOSE_SHARED)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under CI, stop before running anything when a selected test needs a missing fixture folder."""
    if not in_ci():
        return
    needed = {name for item in items for name in getattr(item, "fixturenames", ()) if name in FIXTURE_DIRS}
    missing = sorted({FIXTURE_DIRS[name] for name in needed if not FIXTURE_DIRS[name].exists()})
    if missing:
        raise pytest.UsageError(f"CI=true: {_missing_message(missing)}")


def _require(path: Path) -> Path:
    if not path.exists():
        if in_ci():  # normally caught at collection; this covers a folder that went missing since
            pytest.fail(f"CI=true: {_missing_message([path])}", pytrace=False)
        pytest.skip(_missing_message([path]))
    return path


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """../shared/fixtures; skips (locally) or fails (CI) with a clear reason when it is absent."""
    return _require(FIXTURE_DIRS["fixtures_dir"])


@pytest.fixture(scope="session")
def posetrack18_dir() -> Path:
    return _require(FIXTURE_DIRS["posetrack18_dir"])


@pytest.fixture(scope="session")
def videos_dir() -> Path:
    return _require(FIXTURE_DIRS["videos_dir"])


@pytest.fixture(autouse=True)
def _isolated_mlflow(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Every test logs to a throwaway SQLite store, never to the checkout's mlflow.db.

    A test that calls ``mlflow.set_tracking_uri`` (to read its runs back) sets a process-wide URI that
    wins over MLFLOW_TRACKING_URI; it is cleared afterwards, or a later test would read another store
    than the one diffpose.tracking writes to (it follows the environment variable)."""
    store = tmp_path_factory.getbasetemp() / "mlflow" / "mlflow.db"
    store.parent.mkdir(parents=True, exist_ok=True)
    if "MLFLOW_TRACKING_URI" not in os.environ or os.environ.get("DIFFPOSE_TEST_KEEP_URI") != "1":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    yield
    if "mlflow" in sys.modules:
        from mlflow.tracking._tracking_service import utils

        utils._tracking_uri = None  # what set_tracking_uri sets (the env var is restored by monkeypatch)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small models run fastest on one thread (and do not fight other processes for both cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
