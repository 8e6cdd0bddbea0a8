"""diffpose/sweep.py lists the inference cells exactly as DVC expands dvc.yaml's matrices: the
same stage names, and each cell's files among its stage's outputs (the tables and the report find
results through it, never by globbing results/)."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest
import yaml

from diffpose.config import load_params
from diffpose.errors import ConfigError
from diffpose.sweep import FAMILIES, cells
from diffpose.workflow import rules_from_dvc
from tests.pipeline_copy import REPO


def _stages(root: Path) -> dict[str, set[str]]:
    return {spec.stage: set(spec.outputs) for spec in rules_from_dvc(root)}


def _check(root: Path, params: dict) -> None:
    stages = _stages(root)
    cell_stages = {name for name in stages if name.split("@")[0] in FAMILIES}
    listed = cells(params)
    assert {c.stage for c in listed} == cell_stages and len(listed) == len(cell_stages)
    for c in listed:
        assert {str(c.predictions), str(c.record), str(c.metrics), str(c.metrics_degraded)} == stages[c.stage], c


def test_cells_match_the_stages_dvc_resolves_for_params_yaml():
    _check(REPO, load_params(REPO / "params.yaml"))


def test_cells_follow_seeds_and_sweep_lists(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"]["seeds"] = [0, 7]
    params["sweep"].update(steps=[3], ensemble=[1, 2], flip_test=[True, False])
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text("")
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    _check(tmp_path, params)
    listed = cells(params)
    assert len([c for c in listed if c.family == "sweep"]) == 2 * 1 * 2 * 2
    assert {c.seed for c in listed} == {0, 7}
    assert cells(params)[0].folder == Path("results/infer/diffpose/seed0")


def test_a_swept_model_must_exist():
    params = load_params(REPO / "params.yaml")
    bad = copy.deepcopy(params)
    bad["sweep"]["models"] = ["nosuchmodel"]
    with pytest.raises(ConfigError, match="sweep.models: 'nosuchmodel' is not a model"):
        cells(bad)
