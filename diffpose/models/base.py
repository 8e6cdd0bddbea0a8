"""``PoseModel``: what every pose model offers the trainer and the inference code.

Frames arrive as ``[B, T, 3, H, W]`` float RGB in [0, 1] with the key frame at ``T // 2``; the
model normalises them with its own ImageNet mean/std buffers. Heatmaps are ``[B, J, h, w]``.

* ``loss(frames, target, target_weight) -> scalar``: ``target [B, J, h, w]`` in [0, 1],
  ``target_weight [B, J]``.
* ``predict(frames, *, steps=1, ensemble=1, generator=None) -> [B, J, h, w]`` heatmaps in [0, 1].
"""

from __future__ import annotations

import torch
from torch import nn

from diffpose.data.codec import HeatmapCodec
from diffpose.models.config import ModelConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PoseModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.codec = HeatmapCodec(cfg.input_size, cfg.heatmap_size, cfg.sigma, signal_scale=cfg.signal_scale)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def check_frames(self, frames: torch.Tensor) -> None:
        """Raise ValueError with the expected and actual layout when ``frames`` does not fit."""
        t = self.cfg.num_frames
        h, w = self.cfg.input_size
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise ValueError(f"{self.cfg.arch}: expected frames [B, T={t}, 3, {h}, {w}], "
                             f"got shape {tuple(frames.shape)}")
        if frames.shape[1] != t:
            raise ValueError(f"{self.cfg.arch}: model built for num_frames T={t} got clips of "
                             f"T={frames.shape[1]} frames (data and model must agree on num_frames)")
        if tuple(frames.shape[-2:]) != (h, w):
            raise ValueError(f"{self.cfg.arch}: model built for input_size {(h, w)} got frames of "
                             f"{tuple(frames.shape[-2:])}")

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` in [0, 1] -> ImageNet-normalised."""
        return (images - self.pixel_mean.to(images.dtype)) / self.pixel_std.to(images.dtype)

    def loss(self, frames: torch.Tensor, target: torch.Tensor, target_weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, frames: torch.Tensor, *, steps: int = 1, ensemble: int = 1,
                generator: torch.Generator | None = None, eta: float = 1.0,
                combine_rule: str = "mean_heatmap") -> torch.Tensor:
        raise NotImplementedError

    def forward(self, frames: torch.Tensor, target: torch.Tensor,
                target_weight: torch.Tensor) -> torch.Tensor:
        """``forward`` is the training loss, so DistributedDataParallel can wrap the model directly."""
        return self.loss(frames, target, target_weight)
