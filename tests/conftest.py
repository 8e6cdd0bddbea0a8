"""Shared test set-up: real-data fixtures from ../shared/fixtures and an isolated MLflow store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DIFFPOSE_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures"

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real-data fixture {path} not found (../shared/fixtures beside the checkout; set DIFFPOSE_SHARED)")
    return path


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """../shared/fixtures; tests that need it skip with a clear reason when it is absent."""
    return _require(FIXTURES)


@pytest.fixture(scope="session")
def posetrack18_dir() -> Path:
    return _require(FIXTURES / "posetrack18")


@pytest.fixture(scope="session")
def videos_dir() -> Path:
    return _require(FIXTURES / "videos")


@pytest.fixture(autouse=True)
def _isolated_mlflow(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test logs to a throwaway SQLite store, never to the checkout's mlflow.db."""
    store = tmp_path_factory.getbasetemp() / "mlflow" / "mlflow.db"
    store.parent.mkdir(parents=True, exist_ok=True)
    if "MLFLOW_TRACKING_URI" not in os.environ or os.environ.get("DIFFPOSE_TEST_KEEP_URI") != "1":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small models run fastest on one thread (and do not fight other processes for both cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

