"""Every DVC stage depends on the code it runs.

Neither DVC nor Snakemake sees Python imports: a module a stage imports but dvc.yaml does not list
can be edited without either tool re-running the stage, and its results go stale. This test
derives, for every resolved stage, the ``diffpose`` source files its command executes (the module
each ``diffpose <subcommand>`` in the cmd runs, per diffpose/cli.py COMMANDS, then every
``diffpose.*`` import in it, module-level or inside a function, transitively, plus the
``__init__.py`` of each package on the way, which Python runs on import) and fails when the stage's
deps do not cover one of them (a listed folder covers the files inside it).

The pipelines in subfolders (workflow/realdata/dvc.yaml: download and register) have no stage until
their params file lists an entry, so their stages are read as written (the ``do`` body of a
foreach) and checked the same way.
"""

from __future__ import annotations

import ast
import posixpath
import shlex
import sys
from functools import cache
from pathlib import Path, PurePosixPath

import pytest
import yaml

from diffpose.cli import COMMANDS
from tests.pipeline_copy import REPO

PACKAGE = "diffpose"
# pipeline files besides the root dvc.yaml; their stages run from the repository root (wdir ../..)
OTHER_PIPELINES = ("workflow/realdata/dvc.yaml",)

# Modules a stage executes that are NOT required as deps, each because no edit to it can change a
# stage's outputs. The import walk still goes through them (whatever they import is required).
# When in doubt a module is a dep; io.py (writes every output file) and config.py (reads
# params.yaml: DEFAULT_PARAMS, validation) are deps for that reason.
NOT_RESULTS: dict[str, str] = {
    # The entry point: maps a subcommand to its stage module (the walk starts from that module, so
    # pointing a subcommand at another module changes what this test requires) and prints errors.
    # A dep on it would re-run every stage whenever a subcommand is added.
    "diffpose/cli.py": "dispatcher only",
    # __version__ and a docstring; only `diffpose --version` reads the version.
    "diffpose/__init__.py": "version string",
    # Exception classes: they decide the message of a failure, never the content of an output.
    "diffpose/errors.py": "exception types",
    # Progress bars and timed lines on stderr.
    "diffpose/progress.py": "stderr display",
    # MLflow runs in the tracking store (mlflow.db / a server), which is not a DVC output.
    "diffpose/tracking.py": "MLflow logging",
}


def _module_file(module: str) -> Path | None:
    """diffpose/a/b.py or diffpose/a/b/__init__.py for ``diffpose.a.b``; None if neither exists."""
    base = REPO.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _with_packages(module: str) -> list[str]:
    """``diffpose.a.b`` -> [diffpose, diffpose.a, diffpose.a.b]: importing runs each package's __init__."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _imported_modules(path: Path) -> set[str]:
    """Every ``diffpose.*`` module an ``import`` or ``from ... import`` anywhere in ``path`` names
    (module level, in functions, in try/if blocks), including ``from pkg import submodule``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    own = _module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from .x import y / from .. import y
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}


@cache
def import_closure(module: str) -> frozenset[str]:
    """Repo-relative paths of every diffpose source file importing ``module`` executes."""
    if _module_file(module) is None:
        raise AssertionError(f"{module}: no such module under {REPO}")
    seen: set[str] = set()
    todo = _with_packages(module)
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if path is None:  # `from diffpose.a import some_function`: an attribute, not a module
            continue
        rel = path.relative_to(REPO).as_posix()
        if rel in seen:
            continue
        seen.add(rel)
        for imported in _imported_modules(path):
            todo.extend(_with_packages(imported))
    return frozenset(seen)


def subcommands(cmd: str) -> list[str]:
    """The subcommand of every ``diffpose ...`` / ``python -m diffpose ...`` command in ``cmd``
    (commands chained with &&, ||, ; or |)."""
    lexer = shlex.shlex(cmd, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, current = [], []
    for token in lexer:
        if token in {"&&", "||", ";", "|", "&", "(", ")"}:
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    found = []
    for words in filter(None, commands):
        program = Path(words[0]).name
        if program == PACKAGE:
            args = words[1:]
        elif program.startswith("python") and words[1:3] == ["-m", PACKAGE]:
            args = words[3:]
        else:
            continue
        # as diffpose/cli.py: the first argument that names a subcommand (options may precede it)
        found.append(next(a for a in args if a in COMMANDS))
    return found


def _covered(path: str, deps: list[str]) -> bool:
    return any(PurePosixPath(path) == PurePosixPath(d) or PurePosixPath(path).is_relative_to(PurePosixPath(d))
               for d in deps)


@pytest.fixture(scope="module")
def stages(tmp_path_factory) -> dict[str, tuple[str, list[str]]]:
    """Stage address (train@diffpose, ...) -> (cmd, file deps), resolved by DVC itself."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        resolved = {}
        for stage in repo.index.stages:
            if not getattr(stage, "cmd", None):
                continue
            cmd = stage.cmd if isinstance(stage.cmd, str) else " && ".join(stage.cmd)
            deps = [d.def_path for d in stage.deps if not isinstance(d, ParamsDependency)]
            resolved[stage.name] = (cmd, deps)  # stage.name: not relative to the working directory
    assert resolved, "dvc.yaml has no stages"
    for rel in OTHER_PIPELINES:
        resolved.update(written_stages(rel))
    return resolved


def written_stages(rel: str) -> dict[str, tuple[str, list[str]]]:
    """``<file>:<stage>`` -> (cmd, deps) of a pipeline file as written: templated deps (``${...}``,
    data named by params) left out, the code deps are literal paths."""
    found = {}
    for name, body in yaml.safe_load((REPO / rel).read_text())["stages"].items():
        body = body.get("do", body)
        wdir = body.get("wdir", ".")
        assert posixpath.normpath(posixpath.join(posixpath.dirname(rel), wdir)) == ".", \
            f"{rel}:{name}: runs in {wdir}, not the repository root: its deps would not be repository paths"
        cmd = body["cmd"] if isinstance(body["cmd"], str) else " && ".join(body["cmd"])
        deps = [d for d in body.get("deps", []) if "${" not in d]
        found[f"{rel}:{name}"] = (cmd, deps)
    return found


def test_every_stage_runs_a_diffpose_command(stages):
    """Otherwise the coverage test below would check nothing for that stage."""
    for name, (cmd, _) in stages.items():
        assert subcommands(cmd), f"{name}: no `diffpose <subcommand>` in its cmd: {cmd}"


def test_stage_deps_cover_the_code_the_stage_imports(stages):
    gaps = {}
    for name, (cmd, deps) in stages.items():
        needed = set().union(*(import_closure(COMMANDS[sub][0]) for sub in subcommands(cmd)))
        missing = sorted(p for p in needed - set(NOT_RESULTS) if not _covered(p, deps))
        if missing:
            gaps[name] = missing
    report = "\n".join(f"  {name}: {', '.join(paths)}" for name, paths in gaps.items())
    assert not gaps, f"dvc.yaml deps miss modules the stages import (add them to the stage's deps):\n{report}"


def test_not_results_entries_exist():
    for rel in NOT_RESULTS:
        assert (REPO / rel).is_file(), f"NOT_RESULTS names {rel}, which does not exist"


# --- the derivation itself, on small made-up packages --------------------------------------------


def test_subcommands_of_chained_commands():
    assert subcommands("diffpose evaluate --gt a --out b && diffpose evaluate --subset degraded") == [
        "evaluate", "evaluate"]
    assert subcommands("diffpose -v train --model m") == ["train"]
    assert subcommands("python -m diffpose synth --out x;diffpose frames --videos v") == ["synth", "frames"]
    assert subcommands("echo hi > out.txt") == []


def test_closure_follows_function_level_and_from_imports_and_package_inits():
    closure = import_closure("diffpose.stages.evaluate")
    # the stage module and the package __init__ files Python runs to import it
    assert {"diffpose/stages/evaluate.py", "diffpose/stages/__init__.py", "diffpose/__init__.py"} <= closure
    # the module the stage imports, and what that imports in turn
    assert "diffpose/evaluation/posetrack_map.py" in closure
    assert "diffpose/data/keypoints.py" in closure
    assert "diffpose/data/__init__.py" in closure
    # nothing the stage never imports
    assert "diffpose/training/trainer.py" not in closure
    assert all(p.startswith("diffpose/") and p.endswith(".py") for p in closure)


def test_imported_modules_sees_every_import_form(tmp_path, monkeypatch):
    pkg = tmp_path / "diffpose" / "sub"
    pkg.mkdir(parents=True)
    for name in ("__init__.py", "a.py", "b.py", "c.py", "d.py"):
        (pkg / name).write_text("")
    (tmp_path / "diffpose" / "__init__.py").write_text("")
    (pkg / "main.py").write_text(
        "import os\n"
        "import diffpose.sub.a as alias\n"
        "from diffpose.sub import b\n"
        "def f():\n"
        "    from diffpose.sub.c import thing\n"
        "    return thing\n"
        "try:\n"
        "    from . import d\n"
        "except ImportError:\n"
        "    pass\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    found = _imported_modules(pkg / "main.py")
    assert {"diffpose.sub.a", "diffpose.sub.b", "diffpose.sub.c", "diffpose.sub.d"} <= found
    assert "os" not in found


def test_coverage_by_file_or_folder():
    assert _covered("diffpose/data/keypoints.py", ["diffpose/data"])
    assert _covered("diffpose/data/keypoints.py", ["diffpose/data/keypoints.py"])
    assert not _covered("diffpose/data/keypoints.py", ["diffpose/data/key"])
    assert not _covered("diffpose/data/keypoints.py", ["diffpose/data/synthetic"])
