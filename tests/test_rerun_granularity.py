"""Re-run granularity of the DAG with the real tools on the tiny profile: a change re-runs exactly
the stages it concerns, and nothing else.

- a value added to a sweep list: only its new cells (and the tables after them), a value removed:
  no cell (the tables drop its rows);
- a model's entry under `models`: that model's trainings and its cells, not the other model's;
- a detect.* key: detect and the cells on detected boxes;
- an execution knob (infer.threads): nothing; a second `dvc repro`: nothing.

One scratch copy runs `dvc repro` once. Most checks read `dvc status --json` after editing
params.yaml (then put it back): it names the stages whose own inputs changed; what DVC would run is
those and every stage downstream of them in `dvc dag` (a downstream stage re-runs when the upstream
outputs it reads change). One change is then reproduced for real, and the stages `dvc repro` runs
are exactly those. Expected cell names come from diffpose.sweep.cells, as the tables find them.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from diffpose.models.config import resolve_model_config
from diffpose.sweep import cells
from tests.pipeline_copy import make_copy, run, tool_env

pytestmark = pytest.mark.slow

# Stages after the cells, downstream of all of them: any re-run cell re-runs these too.
LATER = ("tables", "report")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = make_copy(tmp_path_factory.mktemp("rerun"))
    env = dict(tool_env(), DIFFPOSE_TRACKING="off")  # MLflow: tests/test_pipeline.py
    run(["dvc", "repro"], root, env)
    return root, env


def _params(root: Path) -> dict:
    return yaml.safe_load((root / "params.yaml").read_text())


@contextmanager
def _edited(root: Path, edit: Callable[[dict], None]) -> Iterator[dict]:
    """params.yaml with ``edit`` applied, put back afterwards; yields the edited params."""
    path = root / "params.yaml"
    original = path.read_text()
    params = copy.deepcopy(yaml.safe_load(original))
    edit(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        yield params
    finally:
        path.write_text(original)


def _status(root: Path, env: dict[str, str]) -> set[str]:
    """Stages whose own inputs (params, deps, command, outputs) differ from dvc.lock."""
    return set(json.loads(run(["dvc", "status", "--json"], root, env).stdout or "{}"))


def _dag(root: Path, env: dict[str, str]) -> tuple[set[str], dict[str, set[str]]]:
    """(stage names, stage -> the stages that read its outputs), from `dvc dag --dot`."""
    out = run(["dvc", "dag", "--dot"], root, env).stdout
    nodes = set(re.findall(r'^"([^"]+)";$', out, re.M))
    edges: dict[str, set[str]] = {n: set() for n in nodes}
    for a, b in re.findall(r'^"([^"]+)" -> "([^"]+)";$', out, re.M):
        edges[a].add(b)
    return nodes, edges


def _would_run(root: Path, env: dict[str, str]) -> tuple[set[str], set[str]]:
    """(stages `dvc status` reports, those and every stage downstream of them)."""
    changed = _status(root, env)
    _, edges = _dag(root, env)
    marked, todo = set(changed), list(changed)
    while todo:
        for child in edges[todo.pop()] - marked:
            marked.add(child)
            todo.append(child)
    return changed, marked


def _later(root: Path, env: dict[str, str]) -> set[str]:
    nodes, _ = _dag(root, env)
    return {s for s in LATER if s in nodes}


def _ran(output: str) -> set[str]:
    return set(re.findall(r"^Running stage '([^']+)':", output, re.M))


def _cell_stages(params: dict, **match) -> set[str]:
    return {c.stage for c in cells(params) if all(getattr(c, k) == v for k, v in match.items())}


def test_a_second_repro_runs_nothing(repo):
    root, env = repo
    assert _status(root, env) == set()
    again = run(["dvc", "repro"], root, env)
    assert _ran(again.stdout) == set(), again.stdout


def test_a_new_sweep_value_marks_only_its_new_cells(repo):
    root, env = repo
    before = _cell_stages(_params(root))
    steps = _params(root)["sweep"]["steps"]

    def add(params: dict) -> None:
        params["sweep"]["steps"] = [*steps, 2 * max(steps) + 1]

    with _edited(root, add) as params:
        new = _cell_stages(params) - before
        changed, marked = _would_run(root, env)
        later = _later(root, env)
    assert new and all(s.startswith("sweep@") for s in new)
    assert new <= changed
    assert marked == new | later


def test_a_removed_sweep_value_leaves_the_other_cells_alone(repo):
    root, env = repo
    steps = _params(root)["sweep"]["steps"]
    assert len(steps) > 1, "the tiny profile sweeps at least two step counts"
    with _edited(root, lambda p: p["sweep"].update(steps=steps[:1])) as params:
        changed, marked = _would_run(root, env)
        later = _later(root, env)
        assert _cell_stages(params)  # cells are left, and none of them re-runs
    # only the stages after the cells, nothing before them; the tables track the sweep lists, so
    # the rows of the removed value go (its folder stays on disk: their folder deps do not change)
    assert marked == later and changed <= later
    assert "tables" not in later or "tables" in changed


def test_a_model_entry_marks_its_trainings_and_cells_only(repo):
    root, env = repo
    sigma = resolve_model_config(_params(root)["models"]["diffpose"]).sigma
    with _edited(root, lambda p: p["models"]["diffpose"].update(sigma=sigma + 0.5)) as params:
        changed, marked = _would_run(root, env)
        later = _later(root, env)
        seeds = params["train"]["seeds"]
        cells_diffpose = _cell_stages(params, model="diffpose")
    trainings = {f"train@diffpose-{s}" for s in seeds}
    assert trainings <= changed and changed <= trainings | later
    assert marked == trainings | cells_diffpose | later
    assert not {s for s in marked if "baseline" in s}


def test_a_detect_key_marks_detect_and_the_detected_box_cells(repo):
    root, env = repo
    threshold = _params(root)["detect"]["score_threshold"]
    with _edited(root, lambda p: p["detect"].update(score_threshold=round(threshold + 0.1, 3))) as params:
        changed, marked = _would_run(root, env)
        later = _later(root, env)
        detected = _cell_stages(params, family="infer_detected")
    assert changed == {"detect"}
    assert detected and marked == {"detect"} | detected | later


def test_an_execution_knob_marks_nothing(repo):
    root, env = repo
    threads = _params(root)["infer"]["threads"]
    with _edited(root, lambda p: p["infer"].update(threads=threads + 1)):
        assert _would_run(root, env) == (set(), set())


def test_repro_after_a_model_change_runs_exactly_the_marked_stages(repo):
    """The real run (last: it leaves the copy on the edited params): `dvc repro` runs the model's
    training, its cells and the stages after them, and then a second `dvc repro` runs nothing."""
    root, env = repo
    params = _params(root)
    params["models"]["diffpose"]["sigma"] = resolve_model_config(params["models"]["diffpose"]).sigma + 0.5
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _, marked = _would_run(root, env)
    ran = _ran(run(["dvc", "repro"], root, env).stdout)
    assert ran == marked
    assert {f"train@diffpose-{s}" for s in params["train"]["seeds"]} <= ran
    assert _cell_stages(params, model="diffpose") <= ran
    assert not {s for s in ran if "baseline" in s} and not {"synth", "frames", "train_detector", "detect"} & ran
    assert _ran(run(["dvc", "repro"], root, env).stdout) == set()
