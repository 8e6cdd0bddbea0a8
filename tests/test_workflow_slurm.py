"""Resources for cluster executors: a stage's ``meta.resources`` in dvc.yaml becomes its rules'
resources (every matrix cell), a profile's set-resources still wins, and the Slurm profile
(workflow/profiles/slurm) gives every training rule of params.yaml a GPU and no other rule one.
tests/test_slurm.py runs the profile on a real one-node Slurm."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

from diffpose.workflow import rules_from_dvc
from tests.pipeline_copy import REPO, make_copy, run, tool_env

PROFILE = REPO / "workflow" / "profiles" / "slurm" / "config.yaml"
# rules the profile sizes ahead of their stage in dvc.yaml (the contract's report stage)
PLANNED_RULES = {"report"}


def _dvc_repo(root: Path, meta: object, params: dict | None = None) -> Path:
    from dvc.repo import Repo

    Repo.init(str(root), no_scm=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params or {"models": ["a", "b"], "gpus": 2}))
    stage = {"matrix": {"model": "${models}"}, "cmd": "echo ${item.model} > out-${item.model}.txt",
             "outs": ["out-${item.model}.txt"], "meta": meta}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"hello": stage}}))
    return root


def test_meta_resources_become_the_resources_of_every_matrix_cell(tmp_path):
    meta = {"cores": 2, "resources": {"gpu": "${gpus}", "mem_mb": 1500, "slurm_partition": "gpu"}}
    specs = rules_from_dvc(_dvc_repo(tmp_path, meta))
    assert [s.name for s in specs] == ["hello__a", "hello__b"]
    for spec in specs:
        assert dict(spec.resources) == {"gpu": 2, "mem_mb": 1500, "slurm_partition": "gpu"}  # ${gpus}: params
        assert spec.cores == 2


def test_no_meta_resources_means_no_rule_resources(tmp_path):
    (spec, _) = rules_from_dvc(_dvc_repo(tmp_path, {"cores": 1}))
    assert spec.resources == ()


@pytest.mark.parametrize("resources, named", [
    ([1], r"meta.resources must be a mapping"),
    ({"threads": 2}, r"meta.resources: 'threads' is not a resource name"),
    ({"_cores": 2}, r"meta.resources: '_cores' is not a resource name"),
    ({"mem-mb": 2}, r"meta.resources: 'mem-mb' is not a resource name"),
    ({"gpu": -1}, r"meta.resources.gpu must be a whole number >= 0 or a string"),
    ({"gpu": 1.5}, r"meta.resources.gpu must be"),
    ({"gpu": True}, r"meta.resources.gpu must be"),
])
def test_bad_meta_resources_are_named(tmp_path, resources, named):
    with pytest.raises(ValueError, match=rf"stage hello@a: {named}"):
        rules_from_dvc(_dvc_repo(tmp_path, {"resources": resources}))


def _dry_run_resources(root: Path, *args: str) -> dict[str, str]:
    """rule name -> the ``resources:`` line of ``snakemake -n --forceall`` (Snakemake's own view)."""
    snakemake = str(Path(sys.executable).parent / "snakemake")
    out = run([snakemake, "-n", "--forceall", *args], root, tool_env()).stdout
    found, rule = {}, None
    for line in out.splitlines():
        if m := re.match(r"rule (\w+):", line.strip()):
            rule = m.group(1)
        elif line.strip().startswith("resources:") and rule:
            found[rule] = line.strip().removeprefix("resources:").strip()
    return found


def test_meta_resources_reach_snakemake_and_a_profile_set_resources_wins(tmp_path):
    root = _dvc_repo(tmp_path, {"resources": {"gpu": 1, "mem_mb": 1500}})
    (root / "Snakefile").write_text(
        f'include: "{REPO / "workflow/rules/dvc_stages.smk"}"\n\n'
        "rule all:\n    default_target: True\n    input: [o for spec in DVC_RULES for o in spec.outputs]\n")
    seen = _dry_run_resources(root, "--cores", "1", "--set-resources", "hello__b:mem_mb=2500")
    assert "gpu=1" in seen["hello__a"] and "mem_mb=1500" in seen["hello__a"]
    assert "gpu=1" in seen["hello__b"] and "mem_mb=2500" in seen["hello__b"]


def _profile() -> dict:
    return yaml.safe_load(PROFILE.read_text())


def test_the_profile_gives_every_training_rule_of_params_a_gpu_and_no_other_rule_one():
    profile, specs = _profile(), rules_from_dvc(REPO)
    per_rule, defaults = profile["set-resources"], profile["default-resources"]
    assert profile["executor"] == "slurm"
    assert "gpu" not in defaults and "gres" not in defaults
    for spec in specs:
        asked = {**dict(spec.resources), **per_rule.get(spec.name, {})}  # meta.resources < set-resources
        if spec.name.startswith("train__"):
            assert asked.get("gpu", 0) >= 1, (
                f"{spec.name} (stage {spec.stage}) gets no GPU: give the stage meta.resources.gpu in dvc.yaml "
                f"or the rule set-resources in {PROFILE}")
        else:
            assert not asked.get("gpu") and not asked.get("gres"), (
                f"{spec.name} runs on CPU, the profile asks a GPU")
    unknown = set(per_rule) - {spec.name for spec in specs} - PLANNED_RULES
    assert not unknown, f"set-resources names rules the DAG does not have (a typo?): {sorted(unknown)}"


def test_the_profile_sizes_every_job_and_covers_the_stages_threads():
    profile, specs = _profile(), rules_from_dvc(REPO)
    defaults = profile["default-resources"]
    for where, values in [("default-resources", defaults), *profile["set-resources"].items()]:
        for key in ("mem_mb", "runtime"):
            value = values.get(key, defaults[key])
            assert isinstance(value, int) and value > 0, (
                f"{where}: {key} must be a whole number > 0, got {value!r}")
    # --cores caps every rule's threads: a lower value would squeeze a stage's meta.cores
    assert profile["cores"] >= max(spec.cores for spec in specs)


@pytest.mark.slow
def test_the_profile_resources_reach_the_generated_rules(tmp_path):
    """The profile (less its executor, which needs the plugin) on a copy of the repository: Snakemake
    gives each rule the profile's memory, runtime and GPU."""
    root = make_copy(tmp_path / "repo")
    profile = _profile()
    profile.pop("executor")
    (tmp_path / "profile").mkdir()
    (tmp_path / "profile" / "config.yaml").write_text(yaml.safe_dump(profile))
    seen = _dry_run_resources(root, "--profile", str(tmp_path / "profile"))
    defaults, per_rule = profile["default-resources"], profile["set-resources"]
    seen.pop("all", None)  # the Snakefile's target rule runs nothing
    specs = {spec.name: spec for spec in rules_from_dvc(root)}
    assert set(seen) == set(specs)
    for rule, line in seen.items():
        want = {**defaults, **dict(specs[rule].resources), **per_rule.get(rule, {})}
        assert f"mem_mb={want['mem_mb']}," in line and f"runtime={want['runtime']}" in line, (rule, line)
        assert ("gpu=" in line) == bool(want.get("gpu")), (rule, line)

