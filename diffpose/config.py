"""params.yaml: load once, validate once, fail with a message that names the key.

The schema is split by section: ``diffpose/schemas/<section>.json`` is the JSON Schema of the
top-level key ``<section>``. The module that owns a section owns its schema file, and this loader
assembles them, so DVC stages, the CLI and the Snakefile all validate through the same code.
Unknown top-level sections are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import functools
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from diffpose.errors import ConfigError

DEFAULT_PARAMS = "params.yaml"

# Keys of params.yaml that change where and how fast a stage runs, never its results. dvc.yaml
# tracks every other key a stage reads and none of these, so changing one re-runs nothing under
# DVC or Snakemake (tests/test_knobs.py checks both directions). A new params key is a result key
# unless it is added here.
EXECUTION_KNOBS: tuple[str, ...] = (
    "frames.workers",
    "data.workers",  # loader processes: augmentation is seeded by (seed, epoch, sample), not by worker
    "data.cache_mb",
    "train.device",
    "train.threads",
    "train.channels_last",  # memory layout only (not in the training fingerprint either)
    "infer.batch_size",
    "infer.workers",
    "infer.device",
    "infer.threads",
    "detect.batch_size",  # inference batch of the detector
    "detect.synthetic.device",
    "detect.synthetic.threads",
    "detect.torchvision.device",
    "detect.train.threads",
    "detect.train.channels_last",  # NHWC tensors; detect.train.precision (bf16) does change results
)


@functools.lru_cache(maxsize=1)
def params_schema() -> dict[str, Any]:
    """The JSON Schema of the whole params file, assembled from the per-section files."""
    sections: dict[str, Any] = {}
    folder = resources.files("diffpose") / "schemas"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            sections[entry.name[: -len(".json")]] = json.loads(entry.read_text(encoding="utf-8"))
    return {"type": "object", "properties": sections, "additionalProperties": False}


def _key_path(error: Any) -> str:
    parts = [str(p) for p in error.absolute_path]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in allowed)
        if extra:
            parts.append(extra[0])
    return ".".join(parts) or "<top level>"


def validate_params(params: Any, source: str | os.PathLike = DEFAULT_PARAMS) -> dict[str, Any]:
    """Check ``params`` against the schema; raise ConfigError naming file, key, value, rule."""
    import jsonschema

    if not isinstance(params, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(params).__name__}")
    validator = jsonschema.Draft202012Validator(params_schema())
    errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        key = _key_path(err)
        if err.validator == "additionalProperties":
            allowed = ", ".join(sorted(err.schema.get("properties", {})))
            raise ConfigError(f"{source}: {key}: unknown key (allowed here: {allowed})")
        raise ConfigError(f"{source}: {key}: {err.message}")
    return params


def load_params(path: str | os.PathLike = DEFAULT_PARAMS) -> dict[str, Any]:
    """Read and validate a params file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found") from None
    try:
        params = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    return validate_params(params or {}, source=path)


def section(params: dict[str, Any], name: str, source: str | os.PathLike = DEFAULT_PARAMS) -> dict[str, Any]:
    """One section of validated params; a clear error if the file lacks it."""
    if name not in params:
        raise ConfigError(f"{source}: missing section '{name}'")
    return params[name]


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: the form MLflow and result tables use."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
