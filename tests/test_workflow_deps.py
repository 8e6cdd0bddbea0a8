"""Snakemake rules for any DVC dependency (diffpose/workflow.py): a folder other stages write into,
a `dvc add`-ed folder, and `persist: true` outputs, which Snakemake must never delete, and whose
markers Snakemake gets for the outputs DVC wrote."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from diffpose.workflow import persist_marker, rules_from_dvc
from tests.pipeline_copy import REPO, run, tool_env

SNAKEFILE = """\
include: "workflow/rules/dvc_stages.smk"

rule all:
    default_target: True
    input:
        [out for spec in DVC_RULES for out in spec.outputs],
"""


# A Snakefile that first gives the persist outputs DVC wrote their markers, then defines the rules.
MARKING = """\
from diffpose.workflow import mark_persisted

mark_persisted(workflow.basedir)

""" + SNAKEFILE


def _repo(root: Path, stages: dict, snakefile: str = SNAKEFILE) -> Path:
    """A DVC repository (no git) with ``stages`` and the repository's rule generator."""
    from dvc.repo import Repo

    Repo.init(str(root), no_scm=True)
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    (root / "workflow" / "rules").mkdir(parents=True)
    shutil.copy(REPO / "workflow" / "rules" / "dvc_stages.smk", root / "workflow" / "rules")
    (root / "Snakefile").write_text(snakefile)
    return root


def _snakemake(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "--cores", "1", *args], cwd=root,
                          env=tool_env(), capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _specs(root: Path, monkeypatch) -> dict:
    monkeypatch.chdir(root)  # DVC names stages relative to the working directory
    return {spec.stage: spec for spec in rules_from_dvc(root)}


def test_a_stage_over_a_folder_other_stages_write_into_loads_and_runs(tmp_path, monkeypatch):
    root = _repo(tmp_path, {
        "score": {"foreach": ["a", "b"], "do": {"cmd": "mkdir -p results/metrics && echo ${item} > results/metrics/${item}.json",
                                                "outs": ["results/metrics/${item}.json"]}},
        "table": {"cmd": "cat results/metrics/*.json > table.txt", "deps": ["results/metrics"], "outs": ["table.txt"]},
    })
    specs = _specs(root, monkeypatch)
    assert specs["table"].inputs == ("results/metrics/a.json", "results/metrics/b.json")
    dry = _snakemake(root, "-n")
    assert "table" in dry.stdout
    _snakemake(root)
    assert (root / "table.txt").read_text().split() == ["a", "b"]


def test_a_dvc_added_folder_is_one_input(tmp_path, monkeypatch):
    from dvc.repo import Repo

    root = _repo(tmp_path, {
        "count": {"cmd": "ls data/images | wc -l > count.txt", "deps": ["data/images"], "outs": ["count.txt"]},
        "first": {"cmd": "cat data/images/sub/000.txt > first.txt", "deps": ["data/images/sub"], "outs": ["first.txt"]},
    })
    sub = root / "data" / "images" / "sub"
    sub.mkdir(parents=True)
    for i in range(1000):
        (root / "data" / "images" / f"{i:04d}.txt").write_text(str(i))
    (sub / "000.txt").write_text("first")
    with Repo(str(root)) as repo:
        repo.add(str(root / "data" / "images"))
    specs = _specs(root, monkeypatch)
    assert specs["count"].inputs == ("data/images.dvc",)
    assert specs["first"].inputs == ("data/images.dvc",)  # a path inside the added folder: the same .dvc file
    _snakemake(root, "-n")


def test_only_package_folders_are_expanded_to_their_files(tmp_path, monkeypatch):
    root = _repo(tmp_path, {"use": {"cmd": "touch used", "deps": ["pkg/sub", "data/raw"], "outs": ["used"]}})
    for folder in ("pkg/sub", "data/raw"):
        (root / folder).mkdir(parents=True)
        (root / folder / "a.py").write_text("")
    (root / "pkg" / "__init__.py").write_text("")
    specs = _specs(root, monkeypatch)
    assert specs["use"].inputs == ("pkg/sub/a.py", "data/raw")  # code: each file; data placed by hand: the folder


PERSIST_STAGES = {
    # a training that resumes: last.pt gains a line per run; the run fails when input.txt says so
    "train": {
        "cmd": "mkdir -p m && echo run >> m/last.pt && cp m/last.pt m/model.pt && ! grep -q fail input.txt",
        "deps": ["input.txt"],
        "outs": ["m/model.pt", {"m/last.pt": {"persist": True}}],
    },
    # a persisted folder another stage reads (data/frames)
    "frames": {"cmd": "mkdir -p frames && date +%s%N >> frames/log && cp input.txt frames/",
               "deps": ["input.txt"], "outs": [{"frames": {"persist": True, "cache": False}}]},
    "use": {"cmd": "cat frames/input.txt > used.txt", "deps": ["frames/input.txt"], "outs": ["used.txt"]},
}


def test_persist_outputs_are_not_rule_outputs_but_markers(tmp_path, monkeypatch):
    from snakemake.io import is_flagged

    root = _repo(tmp_path, PERSIST_STAGES)
    (root / "input.txt").write_text("one\n")
    specs = _specs(root, monkeypatch)
    train, frames, use = specs["train"], specs["frames"], specs["use"]
    assert "m/last.pt" not in train.outputs and "frames" not in frames.outputs
    assert list(train.outputs) == ["m/model.pt", persist_marker("m/last.pt")]
    assert list(frames.outputs) == [persist_marker("frames")] and not frames.directories
    assert all(is_flagged(o, "touch") for o in (train.outputs[1], frames.outputs[0]))
    assert use.inputs == (persist_marker("frames"),)  # a dependant waits for the marker


@pytest.mark.slow
def test_persist_outputs_survive_snakemake_reruns_and_failures(tmp_path, monkeypatch):
    root = _repo(tmp_path, PERSIST_STAGES)
    (root / "input.txt").write_text("one\n")
    _snakemake(root)
    assert (root / "m" / "last.pt").read_text() == "run\n"
    assert (root / "used.txt").read_text() == "one\n"
    (root / "input.txt").write_text("two\n")  # changed input: every rule re-runs
    _snakemake(root)
    assert (root / "m" / "last.pt").read_text() == "run\nrun\n"  # resumed, not started over
    assert len((root / "frames" / "log").read_text().split()) == 2  # the folder was kept, not deleted
    assert (root / "used.txt").read_text() == "two\n"
    (root / "input.txt").write_text("fail\n")
    failed = _snakemake(root, check=False)
    assert failed.returncode != 0
    assert (root / "m" / "last.pt").read_text() == "run\nrun\nrun\n"  # a failed job leaves the resume state
    assert not (root / "m" / "model.pt").exists()  # its ordinary outputs are removed, as before


def _dvc_clean(root: Path) -> bool:
    return "up to date" in run(["dvc", "status"], root, tool_env()).stdout


def _dry(root: Path) -> str:
    proc = _snakemake(root, "-n")
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_outputs_dvc_wrote_get_their_markers_and_touch_puts_snakemake_in_step(tmp_path):
    """After `dvc repro` Snakemake has nothing to do (the persist outputs get their markers, dated
    like the outputs); after `dvc checkout` (files restored with new times) it would re-run
    everything until `snakemake --touch`; a stage DVC would re-run gets no marker."""
    root = _repo(tmp_path, PERSIST_STAGES, snakefile=MARKING)
    (root / "input.txt").write_text("one\n")
    run(["dvc", "repro"], root, tool_env())
    assert not (root / "logs").exists()
    assert "Nothing to be done" in _dry(root)
    for out in ("m/last.pt", "frames"):
        marker, newest = root / persist_marker(out), max(
            p.stat().st_mtime for p in [root / out, *(root / out).rglob("*")])
        assert marker.stat().st_mtime == newest, out

    # as `dvc checkout` after `git checkout`: cached outputs restored, every file newer than before
    for out in ("m/model.pt", "m/last.pt", "used.txt"):
        (root / out).unlink()
    run(["dvc", "checkout"], root, tool_env())
    now = time.time()
    for path, age in (("used.txt", 300), ("m/model.pt", 200), ("input.txt", 100)):  # in any order
        os.utime(root / path, (now - age, now - age))
    assert "Nothing to be done" not in _dry(root)
    _snakemake(root, "--touch")
    assert "Nothing to be done" in _dry(root)
    assert (root / "m" / "last.pt").read_text() == "run\n"  # touched, never run again
    assert _dvc_clean(root)

    # a changed input: DVC would re-run train and frames, so their outputs get no marker
    for out in ("m/last.pt", "frames"):
        (root / persist_marker(out)).unlink()
    (root / "input.txt").write_text("two\n")
    dry = _dry(root)
    assert not (root / persist_marker("frames")).exists() and not (root / persist_marker("m/last.pt")).exists()
    assert "rule frames" in dry and "rule train" in dry
