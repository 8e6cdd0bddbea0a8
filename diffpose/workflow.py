"""Snakemake rules generated from the DVC pipeline (dvc.yaml is the DAG of record).

DVC's own API resolves ``${...}`` templating and ``foreach``/``matrix`` stages; each resolved stage
becomes a :class:`RuleSpec` with the same command, inputs and outputs, so Snakemake runs the same
DAG with parallel jobs and cluster executors. Mapping rules:

- a dependency inside another stage's output folder becomes a dependency on that folder (Snakemake
  can only link a rule to the exact paths another rule declares); a dependency on a folder that
  other stages write into (a table over ``results/metrics``) becomes a dependency on each of those
  outputs;
- a ``persist: true`` output (training's ``last.pt``, ``data/frames``) is resume state that
  Snakemake must never own: Snakemake deletes a job's outputs before it runs and after it fails
  (its ``update()`` flag instead copies them aside and restores the pre-job copy on failure, which
  throws away the progress a killed training made, and copies a frames folder every run). So
  such an output is not a rule output; in its place the rule declares a marker,
  ``logs/snakemake/persist/<output>.done`` (flagged ``touch``: Snakemake touches it after the job
  succeeds), and the rules that depend on the output depend on the marker. Outputs that DVC wrote
  (``dvc repro``, ``dvc checkout``) have no marker yet, and ``snakemake --touch`` touches only
  files that exist: :func:`mark_persisted` (for the Snakefile, before its rules) writes the marker of
  each persist output whose stage DVC finds up to date against dvc.lock, dated like the output,
  so Snakemake does not re-run the frames, the trainings and everything after them;
- a ``dvc add``-ed path (or a path inside one) is one input, its ``.dvc`` file (which changes
  exactly when the data does), not one input per file (PoseTrack: ~10^5 frames);
- a source folder no stage produces is expanded to its files when it is (or is inside) a Python
  package, so an edited module re-runs the rule (a folder's own mtime does not change when a file
  inside it is edited); any other such folder (data placed by hand) is one input, the folder;
- an output is a folder when it already is one, or when its name has no suffix;
- the values of the tracked params keys are part of the rule's params, so a changed param re-runs
  it in Snakemake just as in DVC;
- a stage's ``meta: {cores: N}`` (DVC ignores ``meta``; ``${...}`` works in it) becomes the rule's
  ``threads``, so parallel jobs do not oversubscribe the cores (2 torch threads on a core another
  job uses ran ~16x slower here); N = 0 means all cores, no ``meta.cores`` means 1;
- a stage's ``meta: {resources: {name: value}}`` becomes the rule's ``resources`` (``mem_mb``,
  ``runtime`` in minutes, ``gpu``, ``slurm_partition``...: what a cluster executor asks for), for
  every cell of a ``foreach``/``matrix`` stage at once; a profile's ``set-resources`` (keyed by rule
  name) still wins over it (docs/cluster.md).
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
    resources: tuple[tuple[str, int | str], ...] = ()  # (name, value) from meta.resources


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


PERSIST_MARKERS = "logs/snakemake/persist"  # where the marker of a persist output lives


def persist_marker(out: str) -> str:
    return f"{PERSIST_MARKERS}/{out.rstrip('/')}.done"


def _in_package(full: Path, root: Path) -> bool:
    """``full`` is a Python package or lies inside one (below ``root``)."""
    for folder in (full, *full.parents):
        if folder == root or not folder.is_relative_to(root):
            return False
        if (folder / "__init__.py").is_file():
            return True
    return False


def _source_files(path: str, root: Path) -> list[str]:
    full = root / path
    if not full.is_dir() or not _in_package(full, root):
        return [path]
    files = [
        p.relative_to(root).as_posix()
        for p in sorted(full.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")
    ]
    return files or [path]


def _touch(path: str):
    """``path`` flagged for Snakemake to touch after the job (a plain string without Snakemake)."""
    try:
        from snakemake.io import touch
    except ImportError:  # the generator works without Snakemake (tests, DVC-only installs)
        return path
    return touch(path)


def _cores(stage: str, meta: object) -> int:
    value = meta.get("cores", 1) if isinstance(meta, dict) else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"dvc.yaml: stage {stage}: meta.cores must be a whole number >= 0 (0 = all cores), got {value!r}")
    return value


def _resources(stage: str, meta: object) -> tuple[tuple[str, int | str], ...]:
    value = meta.get("resources", {}) if isinstance(meta, dict) else {}
    if not isinstance(value, dict):
        raise ValueError(f"dvc.yaml: stage {stage}: meta.resources must be a mapping of name: value, "
                         f"got {value!r}")
    for name, amount in value.items():
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_") or name == "threads":
            raise ValueError(f"dvc.yaml: stage {stage}: meta.resources: {name!r} is not a resource name "
                             f"(an identifier, not threads: that is meta.cores)")
        whole = isinstance(amount, int) and not isinstance(amount, bool)
        if not (isinstance(amount, str) or (whole and amount >= 0)):
            raise ValueError(f"dvc.yaml: stage {stage}: meta.resources.{name} must be a whole number >= 0 "
                             f"or a string, got {amount!r}")
    return tuple(sorted(value.items()))


def rules_from_dvc(root: str | os.PathLike = ".") -> list[RuleSpec]:
    """Resolve dvc.yaml under ``root`` into rule specs, in DVC's stage order."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    root = Path(root).resolve()
    with Repo(str(root)) as repo:
        stages = _pipeline_stages(repo, root)
        added = {  # dvc add-ed path -> its .dvc file, both relative to root
            Path(out.fs_path).resolve().relative_to(root).as_posix(): Path(s.path).resolve().relative_to(root).as_posix()
            for s in repo.index.stages if not getattr(s, "cmd", None) and s.path.endswith(".dvc")
            for out in s.outs
        }
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
            persisted = {o.def_path for o in stage.outs if o.persist}
            cmd = stage.cmd if isinstance(stage.cmd, str) else " && ".join(stage.cmd)
            resolved.append((stage.name, cmd, deps, outs, persisted, params,
                             _cores(stage.name, stage.meta), _resources(stage.name, stage.meta)))
    all_outs = [o for _, _, _, outs, *_ in resolved for o in outs]
    all_persisted = {o for _, _, _, _, persisted, *_ in resolved for o in persisted}

    def target(out: str) -> str:  # what a dependant links to: the output, or its marker
        return persist_marker(out) if out in all_persisted else out

    specs = []
    for name, cmd, deps, outs, persisted, params, cores, resources in resolved:
        inputs: list[str] = []
        for dep in deps:
            producer = next((o for o in all_outs if o == dep or _inside(dep, o)), None)
            tracked = next((a for a in added if a == dep or _inside(dep, a)), None)
            if producer is not None:
                inputs.append(target(producer))
            elif tracked is not None:
                inputs.append(added[tracked])
            elif inside := [o for o in all_outs if _inside(o, dep)]:  # a folder other stages write into
                inputs.extend(target(o) for o in inside)
            else:
                inputs.extend(_source_files(dep, root))
        rule_outs = [o for o in outs if o not in persisted]
        specs.append(
            RuleSpec(
                name=_rule_name(name),
                stage=name,
                cmd=cmd,
                inputs=tuple(dict.fromkeys(inputs)),
                outputs=tuple(rule_outs) + tuple(_touch(persist_marker(o)) for o in outs if o in persisted),
                directories=frozenset(o for o in rule_outs if _is_dir_output(o, root)),
                params=json.dumps(params, sort_keys=True),
                cores=cores,
                resources=resources,
            )
        )
    return specs


def _pipeline_stages(repo, root: Path) -> list:
    """The command stages of the root dvc.yaml alone: a pipeline file elsewhere
    (workflow/realdata/dvc.yaml: downloads that need the network and a token) is run by
    `dvc repro <its path>`, never by Snakemake."""
    return [s for s in repo.index.stages if getattr(s, "cmd", None) and Path(s.path).resolve() == root / "dvc.yaml"]


def _newest_mtime(path: Path) -> float:
    """The latest modification time of ``path`` and, for a folder, of everything inside it."""
    newest = path.stat().st_mtime
    if path.is_dir():
        for folder, _, files in os.walk(path):
            times = [os.stat(os.path.join(folder, name)).st_mtime for name in files]
            newest = max([newest, os.stat(folder).st_mtime, *times])
    return newest


def mark_persisted(root: str | os.PathLike = ".") -> list[str]:
    """Write the missing marker of every ``persist: true`` output whose stage DVC finds up to date
    (command, params, deps and outputs as dvc.lock records them), with the output's modification
    time; return the markers written. A stage DVC would re-run (or never ran) gets no marker, so
    Snakemake runs it too; a marker that exists is left alone. Nothing is done while DVC holds the
    repository's lock (a ``dvc repro`` running there)."""
    from dvc.lock import LockError
    from dvc.repo import Repo

    root = Path(root).resolve()
    written = []
    with Repo(str(root)) as repo:
        try:
            with repo.lock:
                for stage in _pipeline_stages(repo, root):
                    missing = [o for o in stage.outs if o.persist and (root / o.def_path).exists()
                               and not (root / persist_marker(o.def_path)).exists()]
                    if not missing or stage.changed():
                        continue
                    for out in missing:
                        marker = root / persist_marker(out.def_path)
                        marker.parent.mkdir(parents=True, exist_ok=True)
                        marker.touch()
                        mtime = _newest_mtime(root / out.def_path)
                        os.utime(marker, (mtime, mtime))
                        written.append(persist_marker(out.def_path))
        except LockError:
            return []
    return written
