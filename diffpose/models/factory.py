"""``build_model(cfg)``: a plain dict of architectures, no string registry magic."""

from __future__ import annotations

import torch

from diffpose.errors import ConfigError
from diffpose.models.base import PoseModel
from diffpose.models.baseline import SimpleBaseline
from diffpose.models.config import ModelConfig
from diffpose.models.diffpose import DiffPose

ARCHITECTURES: dict[str, type[PoseModel]] = {"diffpose": DiffPose, "baseline": SimpleBaseline}
MAX_PARAMETERS = 2_000_000_000  # 8 GB of float32 weights: far beyond any model of the paper


def build_model(cfg: ModelConfig) -> PoseModel:
    """The model of ``cfg.arch``; a ViT backbone with ``vit_pretrained`` set loads those weights.

    The size is counted first on the meta device (nothing allocated): a config (from params or
    from an untrusted checkpoint) asking for more than MAX_PARAMETERS weights, or whose weights
    cannot be allocated, is a ConfigError naming the model entry, not an allocation traceback.
    """
    count = _parameter_count(cfg)
    if count is not None and count > MAX_PARAMETERS:
        raise ConfigError(f"{_describe(cfg)}: {count:,} parameters, more than the limit of {MAX_PARAMETERS:,}")
    try:
        return ARCHITECTURES[cfg.arch](cfg)
    except MemoryError:
        raise ConfigError(f"{_describe(cfg)}: not enough memory to build the model") from None
    except RuntimeError as err:
        if "alloc" not in str(err).lower():
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{_describe(cfg)}: cannot allocate the model ({first})") from None


def _parameter_count(cfg: ModelConfig) -> int | None:
    """The number of weights of ``cfg``'s model, built on the meta device; None if it cannot be."""
    if cfg.vit_pretrained:
        return None  # loads a file in its constructor
    try:
        with torch.device("meta"):
            model = ARCHITECTURES[cfg.arch](cfg)
    except Exception:  # noqa: BLE001 - a module that cannot live on meta: the real build decides
        return None
    return sum(p.numel() for p in model.parameters())


def _describe(cfg: ModelConfig) -> str:
    sizes = {k: v for k, v in cfg.to_dict().items() if "width" in k or "dim" in k or k.endswith("_size")}
    return f"model config ({cfg.arch}: {', '.join(f'{k}={v}' for k, v in sizes.items())})"
