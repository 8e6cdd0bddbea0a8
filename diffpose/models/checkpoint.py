"""Self-describing checkpoints: the weights plus everything needed to rebuild the model.

Payload (a dict of tensors and plain containers, loadable with ``torch.load(weights_only=True)``)::

    {"format": "diffpose-checkpoint", "version": 1, "arch": ..., "model_config": ModelConfig.to_dict(),
     "params": {...resolved params...}, "state_dict": {...}, "extra": {...trainer state...}}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from diffpose.errors import ConfigError, DataError
from diffpose.io import atomic_path
from diffpose.models.base import PoseModel
from diffpose.models.config import ModelConfig
from diffpose.models.layers import state_dict_mismatch

FORMAT = "diffpose-checkpoint"
VERSION = 1


def save_checkpoint(path: str | os.PathLike, model: PoseModel, *, params: dict | None = None,
                    extra: dict | None = None, previous: str | os.PathLike | None = None) -> None:
    """Write ``path`` atomically (a killed process never leaves a partial file under that name).

    With ``previous``, the file ``path`` held so far becomes ``previous`` once the new one is
    complete (the two renames follow each other), so the last two versions are kept and at every
    moment at least one whole file exists under one of the two names."""
    module = getattr(model, "module", model)  # a DDP wrapper holds the model in .module
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "arch": module.cfg.arch,
        "model_config": module.cfg.to_dict(),
        "params": dict(params or {}),
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "extra": dict(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
        if previous is not None and Path(path).exists():
            os.replace(path, previous)


def read_payload(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint dict, checked for format and version; DataError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - a damaged file fails in many ways (KeyError, EOFError, ...)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path}: not a readable checkpoint "
                        f"(truncated or not a torch file: {reason})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DataError(f"{path}: not a diffpose checkpoint (no '{FORMAT}' format marker)")
    if payload.get("version") != VERSION:
        raise DataError(f"{path}: checkpoint format version {payload.get('version')!r} is not supported "
                        f"(this code reads version {VERSION})")
    for key in ("model_config", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise DataError(f"{path}: checkpoint has no '{key}' mapping")
    return payload


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", *,
                    expect_arch: str | None = None) -> tuple[PoseModel, dict[str, Any]]:
    """Rebuild the model from the stored config, load its weights (strict) and return
    ``(model, payload)``; ``payload["extra"]`` holds the trainer's state."""
    from diffpose.models.factory import build_model

    path = Path(path)
    payload = read_payload(path, map_location)
    try:
        cfg_dict = dict(payload["model_config"])
        cfg_dict["vit_pretrained"] = ""  # the stored weights already include the backbone
        cfg = ModelConfig.from_dict(cfg_dict, saved=True)
    except ConfigError as err:
        raise DataError(f"{path}: stored model config is invalid ({err})") from None
    if expect_arch is not None and cfg.arch != expect_arch:
        raise DataError(f"{path}: checkpoint holds a '{cfg.arch}' model, expected '{expect_arch}'")
    model = build_model(cfg)
    state = payload["state_dict"]
    mismatch = state_dict_mismatch(model.state_dict(), state)
    if mismatch:
        raise DataError(f"{path}: weights do not match the stored '{cfg.arch}' config ({mismatch})")
    model.load_state_dict(state, strict=True)
    if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
        model.to(map_location)
    return model, payload
