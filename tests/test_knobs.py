"""Only what changes results is a tracked param.

Execution knobs (threads, workers, devices, inference batch sizes: diffpose/config.py
EXECUTION_KNOBS) decide where and how fast a stage runs, not what it writes. dvc.yaml lists each
stage's result keys one by one and no knob, so changing a knob re-runs nothing under DVC or
Snakemake, while every other key a stage reads is tracked (a new params key cannot go untracked)
or reaches the stage through its command (VIA_COMMAND: a matrix axis such as train.seeds and the
sweep lists, the data paths of `dataset`), which DVC and Snakemake compare as well.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
from pathlib import Path, PurePosixPath

import pytest
import yaml

from diffpose.config import EXECUTION_KNOBS, params_schema
from tests.pipeline_copy import REPO, make_copy, run, tool_env

# What each dvc.yaml stage reads from params.yaml, from the stage's code (diffpose/stages/*):
# (subtrees read, subtrees inside them it does not read). `{model}`, `{seed}`...: the stage's
# matrix item (train@diffpose-0: model diffpose, seed 0).
# - synth, frames take only flags, all templated from their section;
# - train reads models.<model>, train and data (diffpose/stages/train.py configs()), train.seeds
#   only as the default of --seed, which the command always passes (VIA_COMMAND);
# - the inference cells (infer, infer_detected, sweep) run `diffpose infer`, which reads infer
#   (and data only as a fallback for a checkpoint that does not record its geometry: every model.pt
#   the pipeline writes records it, and model.pt is a dep), then `diffpose evaluate`, whose flags
#   are templated from evaluate; a sweep cell's --steps, --ensemble and --flip-test override
#   infer.steps, infer.ensemble and infer.flip_test (OVERRIDDEN), so it does not read those;
# - detect reads detect except detect.train (its backend's options, threshold, frames, batch size,
#   fill_gaps); train_detector reads detect.train only (diffpose/stages/train_detector.py);
# - tables and report read the cells of diffpose.sweep.cells (models, train.seeds, the main setting
#   infer.steps/ensemble/flip_test, and for tables sweep), each model's config (models), and
#   synth.preset and dataset.name, which name the dataset (the tables also evaluate.protocol,
#   which names the mAP's rules). The tables track sweep: a removed sweep
#   value must re-run them, or its rows stay (its folder stays on disk, so their folder deps do not
#   change). The report draws main-setting cells only (cells() merely checks sweep.models there);
#   the sweep reaches it through the tables' files.
# The module docstring's rule has one more way in: VIA_COMMAND below.
READS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "synth": (("synth",), ()),
    "frames": (("frames",), ()),
    "train": (("data", "train", "models.{model}"), ()),
    "infer": (("infer", "evaluate"), ()),
    "sweep": (("infer", "evaluate"), ("infer.steps", "infer.ensemble", "infer.flip_test")),
    "train_detector": (("detect.train",), ()),
    "detect": (("detect",), ("detect.train",)),
    "infer_detected": (("infer", "evaluate"), ()),
    "tables": (("models", "train.seeds", "infer.steps", "infer.ensemble", "infer.flip_test", "sweep",
                "synth.preset", "dataset.name", "evaluate.protocol"), ()),
    "report": (("models", "train.seeds", "infer.steps", "infer.ensemble", "infer.flip_test",
                "synth.preset", "dataset.name"), ()),
}
# Stages in READS that dvc.yaml may not have (none now: tables and report are in it).
PENDING: set[str] = set()

# Keys whose value reaches a stage through its command (a matrix axis, rendered into the command
# and the output paths): DVC compares the resolved command, Snakemake gets it as a rule param, so
# a changed value re-runs the stage without tracking the key, and adding a value to a list adds
# stages without re-running the others (tests/test_rerun_granularity.py). Tracking one of them
# would re-run every cell of the family when one value is added. (The names of `models` are a
# matrix axis too, but a model's entry is read, and tracked, by its own training: models.<model>.)
# The data paths (params `dataset`) are flags of the commands and deps of the stages, the same way
# (the report reads them from params.yaml: its deps name them).
VIA_COMMAND: dict[str, tuple[str, ...]] = {
    "train": ("train.seeds", "dataset.train", "dataset.images"),
    "train_detector": ("dataset.train", "dataset.images"),
    "detect": ("dataset.val", "dataset.images"),
    "infer": ("train.seeds", "dataset.val", "dataset.images"),
    "infer_detected": ("train.seeds", "dataset.val", "dataset.images"),
    "sweep": ("sweep.models", "train.seeds", "sweep.steps", "sweep.ensemble", "sweep.flip_test",
              "dataset.val", "dataset.images"),
    "report": ("dataset.val", "dataset.images"),  # the frames it draws and their ground truth
}
# infer keys a stage's command overrides with a flag (so the stage does not read them): flag -> key
OVERRIDDEN: dict[str, dict[str, str]] = {
    "sweep": {"--steps": "infer.steps", "--ensemble": "infer.ensemble", "--flip-test": "infer.flip_test"},
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


def _dvc_yaml_stages(root: Path) -> dict[str, dict]:
    return yaml.safe_load((root / "dvc.yaml").read_text())["stages"]


def _templated(value) -> set[str]:
    """The ``${...}`` names in a string or list of strings (``item.model``, ``train.seeds``)."""
    values = value if isinstance(value, list) else [value]
    return {m for v in values if isinstance(v, str) for m in re.findall(r"\$\{\s*([^}\s]+)\s*\}", v)}


def _matrix_items(stage: dict, params: dict) -> dict[str, dict]:
    """Name suffix (as DVC renders it: values joined by '-') -> item, for a ``matrix`` stage."""
    axes = {axis: list(_get(params, next(iter(_templated(spec)))) if isinstance(spec, str) else spec)
            for axis, spec in stage["matrix"].items()}
    return {"-".join(map(str, combo)): dict(zip(axes, combo)) for combo in itertools.product(*axes.values())}


def _dvc_stages(root: Path) -> dict[str, tuple[str, list[str], dict]]:
    """Stage name -> (dvc.yaml stage name, tracked params keys, matrix item), resolved by DVC; the
    item comes from dvc.yaml's matrix and params.yaml (and must give DVC's names)."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    params = yaml.safe_load((root / "params.yaml").read_text())
    definitions = _dvc_yaml_stages(root)
    with Repo(str(root)) as repo:
        out = {}
        for stage in repo.index.stages:  # stage.name: not relative to the working directory
            keys = [k for d in stage.deps if isinstance(d, ParamsDependency) for k in d.params]
            base, _, suffix = stage.name.partition("@")
            item = _matrix_items(definitions[base], params)[suffix] if "matrix" in definitions[base] else {}
            out[stage.name] = (base, keys, item)
        return out


@pytest.fixture(scope="module")
def stages() -> dict[str, tuple[str, list[str], dict]]:
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
    for name, (_, keys, _) in stages.items():
        for key in keys:
            held = [k for k in EXECUTION_KNOBS if _under(k, key) or _under(key, k)]
            assert not held, f"dvc.yaml: {name} tracks {key}, which holds the execution knob(s) {held}"


def test_every_key_a_stage_reads_is_tracked_or_a_knob_or_in_the_command(stages):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    bases = {base for base, _, _ in stages.values()}
    assert bases <= set(READS), f"READS: what every dvc.yaml stage reads (missing: {sorted(bases - set(READS))})"
    assert set(READS) - bases <= PENDING, f"READS names stages dvc.yaml does not have: {sorted(set(READS) - bases - PENDING)}"
    untracked, foreign = {}, {}
    for name, (base, keys, item) in stages.items():
        reads, skips = (tuple(p.format(**item) for p in group) for group in READS[base])
        via = VIA_COMMAND.get(base, ())
        leaves = [leaf for p in reads for leaf in _leaves(_get(params, p), p)
                  if not any(_under(leaf, s) for s in skips)]
        missing = [leaf for leaf in leaves
                   if leaf not in EXECUTION_KNOBS and not any(_under(leaf, k) for k in (*keys, *via))]
        if missing:
            untracked[name] = missing
        outside = [k for k in keys
                   if not any(_under(k, p) for p in reads) or any(_under(k, s) for s in skips)]
        if outside:
            foreign[name] = outside
    assert not untracked, f"params a stage reads, in neither dvc.yaml, EXECUTION_KNOBS nor VIA_COMMAND: {untracked}"
    assert not foreign, f"dvc.yaml tracks keys the stage does not read (fix dvc.yaml or READS): {foreign}"


def test_keys_via_the_command_are_in_the_command_and_not_tracked(stages):
    """A VIA_COMMAND key is a ${...} of the stage's matrix, cmd or deps (DVC compares the dep paths
    with dvc.lock, Snakemake the input files with its records; else a change would go unseen),
    and no stage of that family tracks it or a section holding it (else adding a value to
    sweep.steps or train.seeds would re-run every cell instead of adding the new ones)."""
    definitions = _dvc_yaml_stages(REPO)
    for base, keys in VIA_COMMAND.items():
        if base not in definitions:
            continue
        stage = definitions[base]
        templated = (_templated(stage["cmd"]) | _templated(list(stage.get("matrix", {}).values()))
                     | _templated(stage.get("deps", [])))
        assert set(keys) <= templated, f"dvc.yaml: {base}: {sorted(set(keys) - templated)} not in its matrix, cmd or deps"
        for name, (family, tracked, _) in stages.items():
            if family == base:
                both = [k for k in tracked for v in keys if _under(v, k) or _under(k, v)]
                assert not both, f"dvc.yaml: {name} tracks {both}, whose values come with the command"
    for base, flags in OVERRIDDEN.items():
        words = definitions[base]["cmd"].split()
        for flag, key in flags.items():
            assert flag in words and words[words.index(flag) + 1].startswith("${item."), (base, flag)
            assert key in READS[base][1], f"READS: {base} does not read {key} (the command's {flag} overrides it)"


def test_every_params_section_is_read_by_a_stage(stages):
    """A new top-level section no stage reads or gets through its command would be tracked by nothing."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    bases = {base for base, _, _ in stages.values()}
    read = {p.split(".")[0] for base in bases for p in (*READS[base][0], *VIA_COMMAND.get(base, ()))}
    assert set(params) <= read, f"params.yaml sections no stage reads: {sorted(set(params) - read)}"


@pytest.mark.parametrize(
    "knob",
    [pytest.param(k, marks=pytest.mark.xfail(reason=IN_COMMAND[k], strict=True)) if k in IN_COMMAND else k
     for k in EXECUTION_KNOBS],
)
def test_no_stage_command_or_matrix_templates_a_knob(knob):
    """DVC compares the resolved command too, and Snakemake gets it as a rule param; a matrix over
    a knob would put it in the command and the stage names."""
    used = set()
    for stage in _dvc_yaml_stages(REPO).values():
        used |= _templated(stage.get("do", stage)["cmd"]) | _templated(list(stage.get("matrix", {}).values()))
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
    assert {r for r in before if moved[r] != before[r]} == {"train__diffpose_0", "train__baseline_0"}


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
    assert "params have changed" in out and "train__diffpose_0" in out and "train__baseline_0" in out
    assert {"train@diffpose-0", "train@baseline-0"} <= set(_dvc_status(root, env))
