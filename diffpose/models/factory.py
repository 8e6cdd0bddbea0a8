"""``build_model(cfg)``: a plain dict of architectures, no string registry magic."""

from __future__ import annotations

from diffpose.models.base import PoseModel
from diffpose.models.baseline import SimpleBaseline
from diffpose.models.config import ModelConfig
from diffpose.models.diffpose import DiffPose

ARCHITECTURES: dict[str, type[PoseModel]] = {"diffpose": DiffPose, "baseline": SimpleBaseline}


def build_model(cfg: ModelConfig) -> PoseModel:
    """The model of ``cfg.arch``; a ViT backbone with ``vit_pretrained`` set loads those weights."""
    return ARCHITECTURES[cfg.arch](cfg)
