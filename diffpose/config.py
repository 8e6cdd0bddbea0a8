"""params.yaml: load once, validate once, fail with a message that names the key.

The schema is split by section: ``diffpose/schemas/<section>.json`` is the JSON Schema of the
top-level key ``<section>``. The module that owns a section owns its schema file, and this loader
assembles them, so DVC stages, the CLI and the Snakefile all validate through the same code.
Unknown top-level sections are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import functools
import json
import math
import os
import reprlib
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
    "train.processes",  # torchrun processes: the global batch and its split keep the results (float rounding aside)
    "train.channels_last",  # memory layout only (not in the training fingerprint either)
    "infer.batch_size",  # speed and memory: the sampler noise is seeded per clip (infer.seed, clip index)
    "infer.workers",
    "infer.device",
    "infer.threads",
    "infer.processes",  # torchrun processes: whole batches per process, noise seeded per clip, same predictions
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


def _is_integer(_checker: Any, instance: Any) -> bool:
    # jsonschema counts 2.0 as an integer; a float where a count is meant is a mistake here
    return isinstance(instance, int) and not isinstance(instance, bool)


@functools.lru_cache(maxsize=1)
def _validator_class() -> Any:
    import jsonschema

    base = jsonschema.Draft202012Validator
    return jsonschema.validators.extend(base, type_checker=base.TYPE_CHECKER.redefine("integer", _is_integer))


def _non_finite(value: Any, path: tuple[str, ...] = ()) -> tuple[str, float] | None:
    """(key path, value) of the first NaN or infinity in ``value``; jsonschema's ``number`` accepts
    both and ``minimum`` does not reject NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return ".".join(path) or "<top level>", value
    if isinstance(value, dict):
        items = ((str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return None
    for key, item in items:
        found = _non_finite(item, (*path, key))
        if found:
            return found
    return None


def _first_problem(instance: Any, schema: dict[str, Any]) -> tuple[str, str] | None:
    """(dotted key, what is wrong) for the first problem of ``instance`` under ``schema``, or None."""
    bad = _non_finite(instance)
    if bad:
        return bad[0], f"must be a finite number, got {bad[1]}"
    errors = sorted(_validator_class()(schema).iter_errors(instance), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    err = errors[0]
    key = _key_path(err)
    if err.validator == "additionalProperties":
        allowed = ", ".join(sorted(err.schema.get("properties", {})))
        return key, f"unknown key (allowed here: {allowed})"
    # jsonschema quotes the whole value; keep the line short when the value is large
    message = err.message if len(err.message) <= 300 else f"{reprlib.repr(err.instance)} fails rule '{err.validator}'"
    return key, message


def validate_params(params: Any, source: str | os.PathLike = DEFAULT_PARAMS) -> dict[str, Any]:
    """Check ``params`` against the schema; raise ConfigError naming file, key, value, rule.

    Beyond JSON Schema: every number must be finite, and a float (even 2.0) is not an integer."""
    if not isinstance(params, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(params).__name__}")
    problem = _first_problem(params, params_schema())
    if problem:
        raise ConfigError(f"{source}: {problem[0]}: {problem[1]}")
    return params


def _property_schema(key: str) -> dict[str, Any]:
    schema = params_schema()
    for part in key.split("."):
        schema = schema["properties"][part]
    return schema


def check_options(options: dict[str, tuple[str | dict[str, Any], Any]]) -> None:
    """Check command-line values by the rules params.yaml obeys; ``None`` values (not given) pass.

    ``options`` maps an option (``--score-threshold``) to (the params key whose schema applies,
    e.g. ``detect.score_threshold``, or a schema of its own; the value). An override merged into
    params after they were validated would otherwise skip every range check."""
    for option, (rule, value) in options.items():
        if value is None:
            continue
        schema = _property_schema(rule) if isinstance(rule, str) else rule
        problem = _first_problem(value, schema)
        if problem:
            raise ConfigError(f"{option}: {problem[1]}")


# A params file is a few hundred values. Anchors and aliases are allowed (to share a block), but a
# document whose aliases expand beyond this many nodes is refused before it is built: a 1 KB
# "billion laughs" file would otherwise take minutes and gigabytes.
MAX_EXPANDED_NODES = 100_000


class _TooLarge(Exception):
    pass


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(key, line, first)
        self.key, self.line, self.first = key, line, first


class _ParamsLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and alias bombs."""

    def compose_document(self) -> Any:
        node = super().compose_document()
        _expanded_size(node, {}, set())
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, int] = {}
        for key_node, _value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # '<<' keys merge a block; its keys may be overridden on purpose
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise _DuplicateKey(key, line, seen[key])
                seen[key] = line
            except TypeError:
                continue  # an unhashable key: the base class reports it
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: Any, sizes: dict[int, int], stack: set[int]) -> int:
    """Nodes in the document with every alias expanded; raises _TooLarge past the limit."""
    ident = id(node)
    if ident in sizes:
        return sizes[ident]
    if ident in stack:
        raise _TooLarge("an alias refers to a block that contains it")
    stack.add(ident)
    size = 1
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    else:
        children = []
    for child in children:
        size += _expanded_size(child, sizes, stack)
        if size > MAX_EXPANDED_NODES:
            raise _TooLarge(f"its aliases expand to more than {MAX_EXPANDED_NODES} values")
    stack.discard(ident)
    sizes[ident] = size
    return size


def load_params(path: str | os.PathLike = DEFAULT_PARAMS) -> dict[str, Any]:
    """Read and validate a params file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read params file ({err.strerror or err})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: not UTF-8 text (byte 0x{data[err.start]:02x})") from None
    try:
        params = yaml.load(text, Loader=_ParamsLoader)  # noqa: S506 (a SafeLoader subclass)
    except _DuplicateKey as err:
        raise ConfigError(f"{path}: line {err.line}: duplicate key {err.key!r} (first on line {err.first}); "
                          "the second would silently win") from None
    except _TooLarge as err:
        raise ConfigError(f"{path}: refused: {err}") from None
    except RecursionError:
        raise ConfigError(f"{path}: refused: blocks nested too deeply") from None
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
