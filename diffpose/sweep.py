"""The inference cells of the DAG, derived from params.yaml exactly as dvc.yaml expands them.

A *cell* is one (model, training seed, box source, sampler setting, flip test) combination: one DVC
stage that runs ``diffpose infer`` then ``diffpose evaluate`` (all val frames and the degraded
subset) into its own folder. dvc.yaml has three families of cells:

- ``infer`` (matrix: models x train.seeds): the main setting ``infer.*`` on GT boxes;
- ``infer_detected`` (same matrix): the main setting on the detect stage's boxes;
- ``sweep`` (matrix: sweep.models x train.seeds x sweep.steps x sweep.ensemble x sweep.flip_test):
  the sampler grid of the diffusion models on GT boxes (steps and K do not apply to the
  single-frame baseline, so it is not in ``sweep.models``).

Consumers (the tables and the report) read the cells this module lists, never a glob of
``results/``: a value removed from params.yaml drops its rows even though DVC leaves the old
folder on disk. :func:`cells` and dvc.yaml must agree; tests/test_sweep.py checks them against the
stages DVC resolves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from diffpose.errors import ConfigError

FAMILIES = ("infer", "infer_detected", "sweep")


@dataclass(frozen=True)
class Cell:
    family: str          # infer | infer_detected | sweep (the DVC stage family)
    model: str           # a key of params.models
    seed: int            # training seed (train.seeds)
    boxes: str           # gt | detected
    steps: int
    ensemble: int
    flip_test: bool

    @property
    def folder(self) -> Path:
        """``results/<family>/<model>/seed<seed>[/steps<S>-k<K>-flip<bool>]``."""
        base = Path("results") / self.family / self.model / f"seed{self.seed}"
        if self.family == "sweep":
            return base / f"steps{self.steps}-k{self.ensemble}-flip{str(self.flip_test).lower()}"
        return base

    @property
    def stage(self) -> str:
        """The DVC stage name (DVC renders matrix values with str(): booleans as True/False)."""
        if self.family == "sweep":
            return f"sweep@{self.model}-{self.seed}-{self.steps}-{self.ensemble}-{self.flip_test}"
        return f"{self.family}@{self.model}-{self.seed}"

    @property
    def predictions(self) -> Path:
        return self.folder / "predictions"

    @property
    def record(self) -> Path:
        """infer.json: the cell's settings, speed and provenance (MLflow run, git commit, data hash)."""
        return self.folder / "infer.json"

    @property
    def metrics(self) -> Path:
        return self.folder / "metrics.json"

    @property
    def metrics_degraded(self) -> Path:
        return self.folder / "metrics_degraded.json"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "folder": str(self.folder), "stage": self.stage}


def train_seeds(params: dict[str, Any]) -> list[int]:
    return [int(s) for s in params["train"]["seeds"]]


def cells(params: dict[str, Any]) -> list[Cell]:
    """Every cell of the DAG for validated ``params``, in dvc.yaml's order."""
    infer, sweep = params["infer"], params["sweep"]
    unknown = [m for m in sweep["models"] if m not in params["models"]]
    if unknown:
        raise ConfigError(f"sweep.models: {unknown[0]!r} is not a model under 'models' "
                          f"(defined: {', '.join(sorted(params['models']))})")
    seeds = train_seeds(params)
    steps, k, flip = int(infer["steps"]), int(infer["ensemble"]), bool(infer["flip_test"])
    out: list[Cell] = []
    for family, boxes in (("infer", "gt"), ("infer_detected", "detected")):
        out += [Cell(family, model, seed, boxes, steps, k, flip) for model in params["models"] for seed in seeds]
    out += [Cell("sweep", model, seed, "gt", int(s), int(e), bool(f))
            for model in sweep["models"] for seed in seeds
            for s in sweep["steps"] for e in sweep["ensemble"] for f in sweep["flip_test"]]
    return out
