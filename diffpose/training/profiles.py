"""Params profiles: partial params files (``profiles/<name>.yaml``) merged over ``params.yaml``.

A profile holds only the sections and keys it changes: the paper's recipe for one dataset
(``posetrack17``, ``posetrack18``, ``posetrack21``). :func:`load_profile` merges it over the base
params and validates the result exactly as ``params.yaml`` is validated (one schema, errors that
name the key), then checks that every model entry, the ``train`` and the ``data`` sections build.

Merge rule: mappings merge key by key, any other value (lists included) replaces the base's;
the ``models`` section is replaced whole (a demo model entry must not leak into a paper run).

    python -m diffpose.training.profiles posetrack18                  # check it, print a summary
    python -m diffpose.training.profiles posetrack18 --out params-posetrack18.yaml
    torchrun --nproc_per_node=8 --no-python diffpose train --params params-posetrack18.yaml ...

The summary counts each model's parameters on the meta device (nothing allocated) and says
whether its ``vit_pretrained`` file is there.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from diffpose.config import DEFAULT_PARAMS, _ParamsLoader, load_params, validate_params
from diffpose.errors import ConfigError, DiffposeError

REPLACED_SECTIONS = ("models",)


def profile_path(name: str | os.PathLike, base: str | os.PathLike = DEFAULT_PARAMS) -> Path:
    """A profile file: ``name`` itself when it is a file, else ``profiles/<name>.yaml`` beside ``base``."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return path
    return Path(base).resolve().parent / "profiles" / f"{name}.yaml"


def read_profile(path: str | os.PathLike) -> dict[str, Any]:
    """The profile's sections (not validated alone: a profile is partial). Duplicate keys and alias
    bombs are refused as in params.yaml."""
    path = Path(path)
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml")) if path.parent.is_dir() else []
        raise ConfigError(f"{path}: profile not found" + (f" (profiles there: {', '.join(known)})" if known else ""))
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_ParamsLoader)  # noqa: S506 (SafeLoader subclass)
    except Exception as err:  # noqa: BLE001 - YAML, encoding, duplicate keys, alias bombs: one line naming the file
        if hasattr(err, "line") and hasattr(err, "key"):
            reason = f"line {err.line}: duplicate key {err.key!r}"
        else:
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"{path}: not a readable profile ({reason})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a profile is a mapping of params sections, got {type(data).__name__}")
    return data


def merge(base: dict[str, Any], profile: dict[str, Any]) -> dict[str, Any]:
    """``profile`` over ``base`` (module docstring's rule); neither input is changed."""
    out = copy.deepcopy(base)
    for section, value in profile.items():
        if section in REPLACED_SECTIONS or not isinstance(value, dict) or not isinstance(out.get(section), dict):
            out[section] = copy.deepcopy(value)
        else:
            out[section] = _merge_mapping(out[section], value)
    return out


def _merge_mapping(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = (_merge_mapping(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict)
                    else copy.deepcopy(value))
    return out


def load_profile(name: str | os.PathLike, base: str | os.PathLike = DEFAULT_PARAMS) -> dict[str, Any]:
    """``base`` with the profile merged over it, validated; ConfigError naming both files otherwise."""
    path = profile_path(name, base)
    params = merge(load_params(base), read_profile(path))
    source = f"{path} over {base}"
    validate_params(params, source=source)
    check_buildable(params, source)
    return params


def check_buildable(params: dict[str, Any], source: str) -> None:
    """Every ``models`` entry resolves to a ModelConfig, ``train``/``data`` to their dataclasses,
    and layer-wise decay is only asked of ViT models."""
    from diffpose.data.clips import DataConfig
    from diffpose.models.config import resolve_model_config
    from diffpose.training.trainer import TrainConfig

    # the seeds list and the process count say how many trainings run and where, not how one trains
    train = {k: v for k, v in params["train"].items() if k not in ("seeds", "processes")}
    try:
        cfg = TrainConfig.from_dict(train)
        DataConfig.from_dict(params["data"])
        for model, entry in params["models"].items():
            model_cfg = resolve_model_config(entry)
            if cfg.layer_decay != 1.0 and model_cfg.backbone != "vit":
                raise ConfigError(f"models.{model}: train.layer_decay {cfg.layer_decay} needs a ViT backbone")
    except (ConfigError, TypeError) as err:
        raise ConfigError(f"{source}: {err}") from None


def write_params(params: dict[str, Any], out: str | os.PathLike, header: str = "") -> None:
    """Write merged params as a full params file (atomically)."""
    from diffpose.io import atomic_open

    with atomic_open(out, "w", encoding="utf-8") as fh:
        if header:
            fh.write("".join(f"# {line}\n" for line in header.splitlines()))
        yaml.safe_dump(params, fh, sort_keys=False, default_flow_style=None, width=110)


def describe_models(params: dict[str, Any]) -> list[str]:
    """One line per model: preset, backbone, input, T, parameters (meta device) and weights file."""
    import torch

    from diffpose.models.config import resolve_model_config
    from diffpose.models.factory import ARCHITECTURES

    lines = []
    for name, entry in params["models"].items():
        cfg = resolve_model_config(entry)
        with torch.device("meta"):
            count = sum(p.numel() for p in ARCHITECTURES[cfg.arch](cfg.replace(vit_pretrained="")).parameters())
        backbone = f"ViT-{cfg.vit_size}" if cfg.backbone == "vit" else "conv"
        weights = ""
        if cfg.backbone == "vit":
            there = "present" if cfg.vit_pretrained and Path(cfg.vit_pretrained).is_file() else "MISSING"
            weights = f", vit_pretrained {cfg.vit_pretrained or '(none)'} [{there}]"
        size = f"{cfg.input_size[0]}x{cfg.input_size[1]}"
        lines.append(f"{name}: {entry.get('preset', '-')} ({cfg.arch}, {backbone}, {size}, T={cfg.num_frames}, "
                     f"{count / 1e6:.1f}M params{weights})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m diffpose.training.profiles",
        description="check a params profile merged over params.yaml; optionally write the result")
    parser.add_argument("profile", help="profile name (profiles/<name>.yaml beside --params) or file")
    parser.add_argument("--params", default=DEFAULT_PARAMS, help="base params file (default params.yaml)")
    parser.add_argument("--out", help="write the merged params here (a full params file for --params)")
    args = parser.parse_args(argv)
    try:
        params = load_profile(args.profile, args.params)
        path = profile_path(args.profile, args.params)
        print(f"{path} over {args.params}: valid")
        for line in describe_models(params):
            print(f"  {line}")
        if args.out:
            header = (f"{path} merged over {args.params} (python -m diffpose.training.profiles); "
                      "edit the profile, not this file")
            write_params(params, args.out, header=header)
            print(f"wrote {args.out}")
    except DiffposeError as err:
        print(f"profiles: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
