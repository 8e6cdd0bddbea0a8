"""Snakemake rules from dvc.yaml: one rule per DVC stage with the same command, inputs and outputs;
the cores a stage keeps busy become the rule's threads."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import yaml

from diffpose.workflow import persist_marker, rules_from_dvc
from tests.pipeline_copy import REPO, make_copy, run, tool_env


def _lookup(params: dict, dotted: str):
    value = params
    for part in dotted.split("."):
        value = value[part]
    return value


def _text(value) -> str:
    """How dvc.yaml's ${...} renders a value in a string (booleans lower case, as YAML writes them)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _resolve(value, params: dict, item: dict | None):
    """dvc.yaml's ${...} templating, resolved here by hand (the oracle does not use DVC's resolver):
    ``${key}`` of foreach, ``${item.<axis>}`` of matrix, any other ``${a.b}`` from params."""
    if isinstance(value, list):
        return [_resolve(v, params, item) for v in value]

    def sub(m: re.Match) -> str:
        name = m.group(1)
        if name == "key" and item is not None and "key" in item:
            return _text(item["key"])
        if name.startswith("item.") and item is not None:
            return _text(item[name.removeprefix("item.")])
        return _text(_lookup(params, name))

    return re.sub(r"\$\{([^}]+)\}", sub, value)


def _matrix(stage: dict, params: dict) -> list[tuple[str, dict]]:
    """(name suffix, item) of every combination of a ``matrix`` stage, in DVC's order: the axes'
    product, a dict axis iterating its keys, the suffix the values joined by ``-`` (str(): True)."""
    axes = {}
    for axis, spec in stage["matrix"].items():
        values = _lookup(params, re.fullmatch(r"\$\{(.+)\}", spec).group(1)) if isinstance(spec, str) else spec
        axes[axis] = list(values)
    return [("-".join(str(v) for v in combo), dict(zip(axes, combo))) for combo in itertools.product(*axes.values())]


def _paths(entries: list) -> list[str]:
    """``outs``/``metrics`` entries: a path, or {path: options}."""
    return [e if isinstance(e, str) else next(iter(e)) for e in entries]


def _stages_from_dvc_yaml(root: Path) -> dict[str, dict]:
    """Stage name -> cmd, deps, outs, params keys, read from dvc.yaml and params.yaml."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    stages = {}
    for name, stage in yaml.safe_load((root / "dvc.yaml").read_text())["stages"].items():
        if "foreach" in stage:
            items = _lookup(params, re.fullmatch(r"\$\{(.+)\}", stage["foreach"]).group(1))
            bodies = [(f"{name}@{key}", stage["do"], {"key": key}) for key in items]
        elif "matrix" in stage:
            bodies = [(f"{name}@{suffix}", stage, item) for suffix, item in _matrix(stage, params)]
        else:
            bodies = [(name, stage, None)]
        for full, body, item in bodies:
            stages[full] = {
                "cmd": _resolve(body["cmd"], params, item),
                "deps": _resolve(body.get("deps", []), params, item),
                "outs": _resolve(_paths(body.get("outs", [])) + _paths(body.get("metrics", [])), params, item),
                "params": _resolve(body.get("params", []), params, item),
                "persist": _resolve([next(iter(e)) for e in body.get("outs", [])
                                     if isinstance(e, dict) and next(iter(e.values())).get("persist")], params, item),
            }
    return stages


def _tracked_files(folder: str) -> set[str]:
    out = subprocess.run(["git", "ls-files", "-z", "--", folder], cwd=REPO, capture_output=True, check=True)
    return {f for f in out.stdout.decode().split("\0") if f and "__pycache__" not in f}


def test_one_rule_per_dvc_stage_with_the_same_cmd_deps_and_outs():
    want = _stages_from_dvc_yaml(REPO)
    specs = rules_from_dvc(REPO)
    assert [s.stage for s in specs] == list(want)  # one rule per stage, in dvc.yaml's order
    assert len({s.name for s in specs}) == len(specs)
    assert all(re.fullmatch(r"[A-Za-z_]\w*", s.name) for s in specs)
    all_outs = [o for stage in want.values() for o in stage["outs"]]
    persisted = {o for stage in want.values() for o in stage["persist"]}

    def linked(out: str) -> str:  # a persist output is never a rule's: its marker stands for it
        return persist_marker(out) if out in persisted else out

    def under(path: str, folder: str) -> bool:
        return PurePosixPath(path).is_relative_to(PurePosixPath(folder))

    for spec in specs:
        stage = want[spec.stage]
        assert spec.cmd == stage["cmd"], spec.stage
        outs = [o for o in stage["outs"] if o not in persisted]
        assert list(spec.outputs) == outs + [persist_marker(o) for o in stage["outs"] if o in persisted], spec.stage
        assert spec.directories == {o for o in outs if PurePosixPath(o).suffix == ""}, spec.stage
        inputs = set(spec.inputs)
        explained = set()
        for dep in stage["deps"]:
            producer = [o for o in all_outs if under(dep, o)]
            inside = [linked(o) for o in all_outs if under(o, dep) and o != dep]
            if producer:  # another stage's output, or inside one: the rule depends on that output
                assert linked(producer[0]) in inputs, (spec.stage, dep)
                explained.add(linked(producer[0]))
            elif inside:  # a folder other stages write into (results/sweep): each of those outputs
                assert set(inside) <= inputs, (spec.stage, dep, set(inside) - inputs)
                explained |= set(inside)
            elif (REPO / dep).is_dir():  # a source folder: each file of it, so an edit re-runs the rule
                files = _tracked_files(dep)
                assert files and files <= inputs, (spec.stage, dep, files - inputs)
                explained |= {i for i in inputs if under(i, dep)}
            else:
                assert dep in inputs, (spec.stage, dep)
                explained.add(dep)
        assert inputs == explained, (spec.stage, inputs - explained)  # nothing the stage does not depend on
        tracked = json.loads(spec.params)
        assert sorted(tracked) == sorted(stage["params"]), spec.stage
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        assert all(tracked[k] == _lookup(params, k) for k in tracked), spec.stage


def _params_copy(tmp_path: Path, **changes) -> Path:
    """dvc.yaml and params.yaml (with ``changes``: dotted key -> value) in a DVC repo of their own."""
    from dvc.repo import Repo

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        _lookup(params, ".".join(parents))[last] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    Repo.init(str(tmp_path), no_scm=True)
    return tmp_path


def test_rule_cores_come_from_the_stages_meta_and_follow_params(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    cores = {spec.stage: spec.cores for spec in rules_from_dvc(REPO)}
    assert cores["train_detector"] == params["detect"]["train"]["threads"]
    assert cores["frames"] == params["frames"]["workers"]  # 0 = all cores
    assert cores["train@diffpose-0"] == cores["train@baseline-0"] == 2  # dvc.yaml: meta.cores 2
    assert cores["infer@diffpose-0"] == cores["detect"] == 1  # no meta: one core
    threads, workers = params["detect"]["train"]["threads"] + 1, params["frames"]["workers"] + 3
    changed = rules_from_dvc(_params_copy(tmp_path, **{"detect.train.threads": threads, "frames.workers": workers}))
    cores = {spec.stage: spec.cores for spec in changed}
    assert (cores["train_detector"], cores["frames"]) == (threads, workers)


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

    assert threads(4) == {"frames": "4", "train__diffpose_0": "2", "train__baseline_0": "2", "train_detector": "3"}
    assert threads(2) == {"frames": "2", "train__diffpose_0": "2", "train__baseline_0": "2", "train_detector": "2"}
    assert threads(1) == {}  # one core: every rule runs on it (Snakemake prints no threads line then)
