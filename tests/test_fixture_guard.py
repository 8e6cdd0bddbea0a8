"""tests/conftest.py: a missing ../shared/fixtures folder skips locally and fails a CI run on one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import in_ci

REPO = Path(__file__).resolve().parents[1]

USES_FIXTURE = """
def test_needs_real_data(posetrack18_dir):
    assert posetrack18_dir.is_dir()


def test_needs_nothing():
    pass
"""


def _pytest(tmp_path: Path, ci: str | None, shared: Path) -> subprocess.CompletedProcess:
    """Run a two-test file with the suite's conftest as a plugin, in a pytest of its own."""
    (tmp_path / "test_uses_fixture.py").write_text(USES_FIXTURE)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if k not in {"CI", "PYTEST_ADDOPTS"}}
    env["DIFFPOSE_SHARED"] = str(shared)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the installed plugins are not needed here: 0.3 s instead of 3 s
    if ci is not None:
        env["CI"] = ci
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "tests.conftest", "-c",
           str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), "-rs", str(tmp_path / "test_uses_fixture.py")]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("value,ci", [("true", True), ("True", True), ("1", True), ("yes", True),
                                      ("false", False), ("0", False), ("", False)])
def test_what_counts_as_ci(monkeypatch, value, ci):
    monkeypatch.setenv("CI", value)
    assert in_ci() is ci


def test_ci_fails_the_run_on_one_line_naming_the_missing_folder(tmp_path):
    shared = tmp_path / "empty_shared"
    shared.mkdir()
    proc = _pytest(tmp_path, "true", shared)
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert str(shared / "fixtures" / "posetrack18") in lines[0] and "not found" in lines[0]
    assert "passed" not in proc.stdout  # nothing ran, not even the test that needs no fixture


def test_locally_the_test_skips_with_the_folder_in_the_reason(tmp_path):
    shared = tmp_path / "empty_shared"
    shared.mkdir()
    proc = _pytest(tmp_path, None, shared)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed, 1 skipped" in proc.stdout
    assert f"{shared / 'fixtures' / 'posetrack18'} not found" in proc.stdout


def test_ci_runs_normally_when_the_folder_is_there(tmp_path):
    shared = tmp_path / "shared"
    (shared / "fixtures" / "posetrack18").mkdir(parents=True)
    proc = _pytest(tmp_path, "true", shared)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout
