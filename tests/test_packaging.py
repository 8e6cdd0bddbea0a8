"""The project's own contracts: dependency lists in step, README's two commands, CI = README."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from diffpose.cli import COMMANDS

REPO = Path(__file__).resolve().parents[1]


def _name_and_spec(req: str) -> tuple[str, str]:
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req.split(";")[0])
    assert match, req
    return match.group(1).lower().replace("_", "-"), match.group(2).replace(" ", "")


CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name


def test_environment_yml_matches_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = dict(_name_and_spec(r) for r in project["dependencies"])
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    have: dict[str, str] = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for pip_dep in dep["pip"]:
                if not pip_dep.startswith("-e"):
                    name, spec = _name_and_spec(pip_dep)
                    have[name] = spec
        else:
            name, spec = _name_and_spec(dep.replace("=", "==", 1) if re.match(r"^[\w-]+=[^=<>]", dep) else dep)
            if name not in {"python", "pip"}:
                have[CONDA_NAMES.get(name, name)] = spec
    assert have == wanted


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (REPO / "README.md").read_text().splitlines()
    fence = readme.index("```bash")
    commands = [line.split("#")[0].strip() for line in readme[fence + 1 : readme.index("```", fence + 1)]]
    assert commands == ["bash scripts/dev.sh repro", "bash scripts/dev.sh test"]
    assert fence <= 3, "the two commands must be the README's first lines"
    ci = (REPO / ".ci" / "run").read_text()
    assert "bash scripts/dev.sh test" in ci


def test_every_registered_command_has_a_module_with_the_stage_interface() -> None:
    import importlib

    missing = []
    for name, (module, _help) in COMMANDS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError:
            missing.append(name)
            continue
        assert callable(mod.add_arguments) and callable(mod.main), name
    assert not missing, f"registered but not implemented: {missing}"


def test_console_script_and_python_m_agree() -> None:
    a = subprocess.run([sys.executable, "-m", "diffpose", "--help"], capture_output=True, text=True)
    b = subprocess.run([str(Path(sys.executable).parent / "diffpose"), "--help"], capture_output=True, text=True)
    assert a.returncode == b.returncode == 0
    assert a.stdout == b.stdout and "frames" in a.stdout


def test_bad_arguments_give_a_usage_error_not_a_traceback() -> None:
    proc = subprocess.run([sys.executable, "-m", "diffpose", "frames", "--jpeg-quality", "x"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "invalid int value" in proc.stderr and "Traceback" not in proc.stderr
