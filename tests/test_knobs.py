"""Only what changes results is a tracked param.

Execution knobs (threads, workers, devices, inference batch sizes: diffpose/config.py
EXECUTION_KNOBS) decide where and how fast a stage runs, not what it writes. dvc.yaml lists each
stage's result keys one by one and no knob, so changing a knob re-runs nothing under DVC or
Snakemake, while every other key a stage reads is tracked (a new params key cannot go untracked).
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path, PurePosixPath

import pytest
import yaml

from diffpose.config import EXECUTION_KNOBS, params_schema
from tests.pipeline_copy import REPO, make_copy, run, tool_env

# What each dvc.yaml stage reads from params.yaml, from the stage's code (diffpose/stages/*):
# (subtrees read, subtrees inside them it does not read). `{key}`: the foreach item.
# - synth, frames, evaluate take only flags, all templated from their section;
# - train reads models.<name>, train and data (diffpose/stages/train.py configs());
# - infer reads infer, and data only as a fallback for a checkpoint that does not record its
#   geometry (every model.pt the pipeline writes records it, and model.pt is a dep);
# - detect reads detect except detect.train (its backend's options, threshold, frames, batch size,
#   fill_gaps); train_detector reads detect.train only (diffpose/stages/train_detector.py).
READS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "synth": (("synth",), ()),
    "frames": (("frames",), ()),
    "train": (("data", "train", "models.{key}"), ()),
    "infer": (("infer",), ()),
    "evaluate": (("evaluate",), ()),
    "train_detector": (("detect.train",), ()),
    "detect": (("detect",), ("detect.train",)),
    "infer_detected": (("infer",), ()),
    "evaluate_detected": (("evaluate",), ()),
}

# Knobs that still re-run a stage, and why (each is an expected failure below, strict: when the
# cause is fixed the test turns red until the entry is removed).
IN_COMMAND: dict[str, str] = {}  # none left: `diffpose frames` reads frames.workers from params.yaml


def _under(key: str, prefix: str) -> bool:
    """``train.lr`` is under ``train`` and under ``train.lr``; ``train.lrx`` is not under ``train.lr``."""
    return key == prefix or key.startswith(prefix + ".")


def _get(params: dict, dotted: str):
    value = params
    for part in dotted.split("."):
        value = value[part]
    return value


def _set(params: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    _get(params, ".".join(parents))[last] = value


def _leaves(tree, prefix: str = "") -> list[str]:
    """Dotted keys of the leaves of a params mapping (a list or null is a leaf)."""
    if not isinstance(tree, dict) or not tree:
        return [prefix]
    return [leaf for key, value in tree.items()
            for leaf in _leaves(value, f"{prefix}.{key}" if prefix else key)]


def _changed(value):
    """Another valid value of the same knob."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if value == "auto":
        return "cpu"
    return "auto"


def _dvc_stages(root: Path) -> dict[str, tuple[str, list[str]]]:
    """Stage address -> (dvc.yaml stage name, tracked params keys), resolved by DVC."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        out = {}
        for stage in repo.index.stages:  # stage.name: not relative to the working directory
            keys = [k for d in stage.deps if isinstance(d, ParamsDependency) for k in d.params]
            out[stage.name] = (stage.name.partition("@")[0], keys)
        return out


@pytest.fixture(scope="module")
def stages() -> dict[str, tuple[str, list[str]]]:
    return _dvc_stages(REPO)


def _knob_values(params: dict, knobs) -> dict:
    """params with each knob in ``knobs`` that params.yaml sets changed to another valid value."""
    changed = copy.deepcopy(params)
    for knob in knobs:
        try:
            _set(changed, knob, _changed(_get(params, knob)))
        except KeyError:  # an optional knob params.yaml leaves out (train.channels_last)
            continue
    return changed


# --- cheap checks on dvc.yaml -------------------------------------------------------------------


def test_knobs_are_params_keys():
    """A misspelt knob would leave the real key tracked and this list checking nothing."""
    assert len(set(EXECUTION_KNOBS)) == len(EXECUTION_KNOBS)
    schema = params_schema()
    for knob in EXECUTION_KNOBS:
        node = schema
        for part in knob.split("."):
            assert part in node.get("properties", {}), f"EXECUTION_KNOBS: {knob} is not a params.yaml key"
            node = node["properties"][part]
        assert node.get("type") != "object", f"EXECUTION_KNOBS: {knob} is a section, not a key"


def test_no_stage_tracks_a_knob(stages):
    """Neither the knob itself nor a section holding it (`train` would track train.threads)."""
    for name, (_, keys) in stages.items():
        for key in keys:
            held = [k for k in EXECUTION_KNOBS if _under(k, key) or _under(key, k)]
            assert not held, f"dvc.yaml: {name} tracks {key}, which holds the execution knob(s) {held}"


def test_every_key_a_stage_reads_is_tracked_or_a_knob(stages):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert set(READS) == {base for base, _ in stages.values()}, "READS: what every dvc.yaml stage reads"
    untracked, foreign = {}, {}
    for name, (base, keys) in stages.items():
        item = name.partition("@")[2]
        reads, skips = (tuple(p.format(key=item) for p in group) for group in READS[base])
        leaves = [leaf for p in reads for leaf in _leaves(_get(params, p), p)
                  if not any(_under(leaf, s) for s in skips)]
        missing = [leaf for leaf in leaves
                   if leaf not in EXECUTION_KNOBS and not any(_under(leaf, k) for k in keys)]
        if missing:
            untracked[name] = missing
        outside = [k for k in keys
                   if not any(_under(k, p) for p in reads) or any(_under(k, s) for s in skips)]
        if outside:
            foreign[name] = outside
    assert not untracked, f"params a stage reads, in neither dvc.yaml nor EXECUTION_KNOBS: {untracked}"
    assert not foreign, f"dvc.yaml tracks keys the stage does not read (fix dvc.yaml or READS): {foreign}"


def test_every_params_section_is_read_by_a_stage():
    """A new top-level section no stage reads would be tracked by nothing."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    read = {p.split(".")[0] for reads, _ in READS.values() for p in reads}
    assert set(params) <= read, f"params.yaml sections no stage reads: {sorted(set(params) - read)}"


@pytest.mark.parametrize(
    "knob",
    [pytest.param(k, marks=pytest.mark.xfail(reason=IN_COMMAND[k], strict=True)) if k in IN_COMMAND else k
     for k in EXECUTION_KNOBS],
)
def test_no_stage_command_templates_a_knob(knob):
    """DVC compares the resolved command too, and Snakemake gets it as a rule param."""
    text = (REPO / "dvc.yaml").read_text()
    cmds = []
    for stage in yaml.safe_load(text)["stages"].values():
        cmds.append(stage.get("do", stage)["cmd"])
    used = {m for cmd in cmds for m in re.findall(r"\$\{\s*([^}\s]+)\s*\}", cmd)}
    assert not any(_under(knob, u) or _under(u, knob) for u in used), f"a stage cmd templates {knob}"


# --- Snakemake: the rule params and command do not move with a knob -------------------------------


def _params_repo(root: Path, params: dict) -> Path:
    from dvc.repo import Repo

    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    Repo.init(str(root), no_scm=True)
    return root


def _rule_triggers(root: Path) -> dict[str, tuple[str, str]]:
    """Rule -> (cmd, params JSON): what Snakemake's params trigger compares between runs (its code
    trigger sees the fixed shell line of workflow/rules/dvc_stages.smk, inputs/outputs are paths)."""
    from diffpose.workflow import rules_from_dvc

    return {spec.name: (spec.cmd, spec.params) for spec in rules_from_dvc(root)}


def test_a_knob_changes_no_snakemake_rule_params_and_a_result_key_does(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    before = _rule_triggers(_params_repo(tmp_path / "before", params))
    knobs = [k for k in EXECUTION_KNOBS if k not in IN_COMMAND]
    after = _rule_triggers(_params_repo(tmp_path / "knobs", _knob_values(params, knobs)))
    assert after == before
    # the control: a result key moves exactly the rules of the stages that read it
    epochs = copy.deepcopy(params)
    epochs["train"]["epochs"] += 1
    moved = _rule_triggers(_params_repo(tmp_path / "epochs", epochs))
    assert {r for r in before if moved[r] != before[r]} == {"train__diffpose", "train__baseline"}


# --- DVC: dvc status after a knob change ------------------------------------------------------------


def _stand_in(root: Path, path: str) -> None:
    full = root / path
    if full.exists():
        return
    if PurePosixPath(path).suffix:
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_text("stand-in\n")
    else:
        full.mkdir(parents=True)
        (full / "stand-in.txt").write_text("stand-in\n")


def _dvc_status(root: Path, env: dict) -> dict:
    return json.loads(run(["dvc", "status", "--json"], root, env).stdout or "{}")


@pytest.fixture(scope="module")
def recorded_copy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A copy of the repo whose dvc.lock records every stage as up to date: stand-in files for the
    outputs the pipeline would write, then `dvc commit` (what `dvc repro` records at its end). The
    slow test below does the same with real outputs."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    root = make_copy(tmp_path_factory.mktemp("knobs_dvc"))
    env = tool_env()

    cwd = os.getcwd()
    os.chdir(root)
    try:
        with Repo(str(root)) as repo:
            stages = list(repo.index.stages)
            outs = [o.def_path for s in stages for o in s.outs]
            deps = [d.def_path for s in stages for d in s.deps if not isinstance(d, ParamsDependency)]
    finally:
        os.chdir(cwd)
    for path in outs + deps:
        _stand_in(root, path)
    run(["dvc", "commit", "--force", "--quiet"], root, env)
    assert _dvc_status(root, env) == {}
    return root, env


def _with_params(root: Path, params: dict):
    path = root / "params.yaml"
    original = path.read_text()
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return original


def _status_after(root: Path, env: dict, params: dict) -> dict:
    original = _with_params(root, params)
    try:
        return _dvc_status(root, env)
    finally:
        (root / "params.yaml").write_text(original)


def test_changing_every_knob_leaves_dvc_status_clean(recorded_copy):
    root, env = recorded_copy
    params = yaml.safe_load((root / "params.yaml").read_text())
    knobs = [k for k in EXECUTION_KNOBS if k not in IN_COMMAND]
    changed = _knob_values(params, knobs)
    assert changed != params
    assert _status_after(root, env, changed) == {}


def test_changing_a_result_key_is_seen_by_dvc_status(recorded_copy):
    """The control: the same check does see a tracked key (detect.train.lr: train_detector only)."""
    root, env = recorded_copy
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["detect"]["train"]["lr"] *= 2
    assert set(_status_after(root, env, params)) == {"train_detector"}


# --- the real tiny pipeline ---------------------------------------------------------------------------


@pytest.mark.slow
def test_knobs_rerun_nothing_after_a_real_run(tmp_path):
    """Snakemake runs the tiny DAG for real and `dvc commit` records the same outputs in dvc.lock;
    then changing every knob is 'Nothing to be done' for Snakemake and a clean `dvc status`, while
    train.epochs re-runs training in both."""
    root = make_copy(tmp_path / "repo")
    env = dict(tool_env(), DIFFPOSE_TRACKING="off")
    run(["snakemake", "--cores", "2"], root, env)
    run(["dvc", "commit", "--force", "--quiet"], root, env)
    # dvc commit rewrites the outputs it caches (new mtimes, in its own order); --touch puts the
    # mtimes back in DAG order, as after a `dvc checkout` (docs: workflow notes). It leaves the
    # params Snakemake recorded for each job as they were.
    run(["snakemake", "--touch", "--cores", "2"], root, env)
    assert _dvc_status(root, env) == {}
    params = yaml.safe_load((root / "params.yaml").read_text())

    def dry_run() -> str:
        proc = run(["snakemake", "-n", "--cores", "2"], root, env)
        return proc.stdout + proc.stderr

    assert "Nothing to be done" in dry_run()
    original = _with_params(root, _knob_values(params, [k for k in EXECUTION_KNOBS if k not in IN_COMMAND]))
    try:
        assert "Nothing to be done" in dry_run()
        assert _dvc_status(root, env) == {}
    finally:
        (root / "params.yaml").write_text(original)

    epochs = copy.deepcopy(params)
    epochs["train"]["epochs"] += 1
    _with_params(root, epochs)
    out = dry_run()
    assert "params have changed" in out and "train__diffpose" in out and "train__baseline" in out
    assert {"train@diffpose", "train@baseline"} <= set(_dvc_status(root, env))
