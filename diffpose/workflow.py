"""Snakemake rules generated from the DVC pipeline (dvc.yaml is the DAG of record).

DVC's own API resolves ``${...}`` templating and ``foreach``/``matrix`` stages; each resolved stage
becomes a :class:`RuleSpec` with the same command, inputs and outputs, so Snakemake runs the same
DAG with parallel jobs and cluster executors. Mapping rules:

- a dependency inside another stage's output folder becomes a dependency on that folder (Snakemake
  can only link a rule to the exact paths another rule declares);
- a source folder no stage produces is expanded to its files, so an edited module re-runs the
  rule (a folder's own mtime does not change when a file inside it is edited);
- an output is a folder when it already is one, or when its name has no suffix;
- the values of the tracked params keys are part of the rule's params, so a changed param re-runs
  it in Snakemake just as in DVC;
- a stage's ``meta: {cores: N}`` (DVC ignores ``meta``; ``${...}`` works in it) becomes the rule's
  ``threads``, so parallel jobs do not oversubscribe the cores (2 torch threads on a core another
  job uses ran ~16x slower here); N = 0 means all cores, no ``meta.cores`` means 1.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


@dataclass(frozen=True)
class RuleSpec:
    name: str  # a valid Snakemake rule name derived from the DVC stage name
    stage: str  # the DVC stage name (``train@diffpose`` for foreach stages)
    cmd: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    directories: frozenset[str]  # which outputs are folders
    params: str  # JSON of the tracked params values
    cores: int = 1  # cores the stage keeps busy (the rule's threads); 0 = all of them


def _rule_name(stage: str) -> str:
    name = re.sub(r"\W", "_", stage.replace("@", "__"))
    return name if name[0].isalpha() else f"stage_{name}"


def _is_dir_output(path: str, root: Path) -> bool:
    full = root / path
    if full.exists():
        return full.is_dir()
    return PurePosixPath(path).suffix == ""


def _inside(path: str, folder: str) -> bool:
    return PurePosixPath(path).is_relative_to(PurePosixPath(folder)) and path != folder


def _source_files(path: str, root: Path) -> list[str]:
    full = root / path
    if not full.is_dir():
        return [path]
    files = [
        p.relative_to(root).as_posix()
        for p in sorted(full.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")
    ]
    return files or [path]


def _cores(stage: str, meta: object) -> int:
    value = meta.get("cores", 1) if isinstance(meta, dict) else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"dvc.yaml: stage {stage}: meta.cores must be a whole number >= 0 (0 = all cores), got {value!r}")
    return value


def rules_from_dvc(root: str | os.PathLike = ".") -> list[RuleSpec]:
    """Resolve dvc.yaml under ``root`` into rule specs, in DVC's stage order."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    root = Path(root).resolve()
    with Repo(str(root)) as repo:
        stages = [s for s in repo.index.stages if getattr(s, "cmd", None)]
        resolved = []
        for stage in stages:
            if Path(stage.wdir).resolve() != root:
                raise ValueError(f"dvc.yaml: stage {stage.name}: wdir other than the repo root is not supported")
            params: dict = {}
            deps = []
            for dep in stage.deps:
                if isinstance(dep, ParamsDependency):
                    params.update(dep.read_params())
                else:
                    deps.append(dep.def_path)
            outs = [o.def_path for o in stage.outs]
            cmd = stage.cmd if isinstance(stage.cmd, str) else " && ".join(stage.cmd)
            resolved.append((stage.name, cmd, deps, outs, params, _cores(stage.name, stage.meta)))
    all_outs = [o for _, _, _, outs, _, _ in resolved for o in outs]
    specs = []
    for name, cmd, deps, outs, params, cores in resolved:
        inputs: list[str] = []
        for dep in deps:
            producer = next((o for o in all_outs if o == dep or _inside(dep, o)), None)
            if producer is not None:
                inputs.append(producer)
            elif any(_inside(o, dep) for o in all_outs):
                raise ValueError(f"dvc.yaml: stage {name}: dependency {dep} contains another stage's output")
            else:
                inputs.extend(_source_files(dep, root))
        specs.append(
            RuleSpec(
                name=_rule_name(name),
                stage=name,
                cmd=cmd,
                inputs=tuple(dict.fromkeys(inputs)),
                outputs=tuple(outs),
                directories=frozenset(o for o in outs if _is_dir_output(o, root)),
                params=json.dumps(params, sort_keys=True),
                cores=cores,
            )
        )
    return specs
