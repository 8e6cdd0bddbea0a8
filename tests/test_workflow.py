"""Snakemake rules from dvc.yaml: the cores a stage keeps busy become the rule's threads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from diffpose.workflow import rules_from_dvc
from tests.pipeline_copy import REPO, make_copy, run, tool_env


def test_rule_cores_come_from_the_stages_meta_and_follow_params():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    cores = {spec.stage: spec.cores for spec in rules_from_dvc(REPO)}
    assert cores["train_detector"] == params["detect"]["train"]["threads"] == 2
    assert cores["frames"] == params["frames"]["workers"] == 0  # 0 = all cores
    assert cores["train@diffpose"] == cores["train@baseline"] == 2
    assert cores["evaluate@diffpose"] == cores["detect"] == 1  # no meta: one core


def _dvc_repo(root: Path, meta: object) -> Path:
    from dvc.repo import Repo

    Repo.init(str(root), no_scm=True)
    stage = {"cmd": "echo hi > out.txt", "outs": ["out.txt"], "meta": meta}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"hello": stage}}))
    return root


@pytest.mark.parametrize("bad", [-1, 1.5, "two", True])
def test_bad_meta_cores_is_named(tmp_path, bad):
    with pytest.raises(ValueError, match=r"stage hello: meta.cores must be a whole number >= 0"):
        rules_from_dvc(_dvc_repo(tmp_path, {"cores": bad}))


def test_other_meta_is_left_alone(tmp_path):
    (spec,) = rules_from_dvc(_dvc_repo(tmp_path, {"owner": "someone"}))
    assert spec.cores == 1


@pytest.mark.slow
def test_snakemake_schedules_the_declared_threads(tmp_path):
    """A dry run shows each rule's threads (from params through dvc.yaml's meta), scaled down to
    --cores as Snakemake does."""
    root = make_copy(tmp_path, {"frames": {"workers": 0}, "detect": {"train": {"threads": 3}}})

    def threads(cores: int) -> dict[str, str]:
        out = run(["snakemake", "-n", "--forceall", "--cores", str(cores)], root, tool_env()).stdout
        found, rule = {}, None
        for line in out.splitlines():
            if m := re.match(r"rule (\w+):", line.strip()):
                rule = m.group(1)
            elif (m := re.match(r"threads: (\d+)", line.strip())) and rule:
                found[rule] = m.group(1)
        return found

    assert threads(4) == {"frames": "4", "train__diffpose": "2", "train__baseline": "2", "train_detector": "3"}
    assert threads(2) == {"frames": "2", "train__diffpose": "2", "train__baseline": "2", "train_detector": "2"}
    assert threads(1) == {}  # one core: every rule runs on it (Snakemake prints no threads line then)
