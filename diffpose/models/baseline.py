"""Single-frame heatmap regression (SimpleBaseline style: backbone + deconvolution head).

Uses the key frame ``T // 2`` of the clip and the same backbone options as DiffPose. For a fair
comparison its regression targets use the same scaling as DiffPose's diffusion signal
(``baseline_target = "diffusion"``: [0, 1] -> [-signal_scale, signal_scale]); ``"unit"`` regresses
[0, 1] heatmaps directly.
"""

from __future__ import annotations

import torch
from torch import nn

from diffpose.diffusion.gaussian import weighted_mse
from diffpose.errors import ConfigError
from diffpose.models.backbones import build_backbone
from diffpose.models.base import PoseModel
from diffpose.models.config import ModelConfig
from diffpose.models.layers import deconv_bn_relu


class SimpleBaseline(PoseModel):
    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        if len(cfg.baseline_deconv) != 2:
            raise ConfigError(f"model config: baseline_deconv: expected two widths (condition grid -> x4 heatmaps), "
                              f"got {list(cfg.baseline_deconv)}")
        self.backbone = build_backbone(cfg)
        layers, cin = [], self.backbone.out_channels
        for width in cfg.baseline_deconv:
            layers.append(deconv_bn_relu(cin, width))
            cin = width
        self.head = nn.Sequential(*layers, nn.Conv2d(cin, cfg.num_joints, 1))

    def forward_heatmaps(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames [B, T, 3, H, W]`` -> raw head output ``[B, J, h, w]`` (target space)."""
        self.check_frames(frames)
        return self.head(self.backbone(self.normalize(frames[:, self.cfg.key_index])))

    def _to_target(self, heatmaps: torch.Tensor) -> torch.Tensor:
        return self.codec.to_diffusion(heatmaps) if self.cfg.baseline_target == "diffusion" else heatmaps

    def _from_target(self, out: torch.Tensor) -> torch.Tensor:
        return self.codec.from_diffusion(out) if self.cfg.baseline_target == "diffusion" else out.clamp(0, 1)

    def loss(self, frames: torch.Tensor, target: torch.Tensor, target_weight: torch.Tensor) -> torch.Tensor:
        return weighted_mse(self.forward_heatmaps(frames), self._to_target(target), target_weight)

    @torch.no_grad()
    def predict(self, frames: torch.Tensor, *, steps: int = 1, ensemble: int = 1,
                generator: torch.Generator | None = None, eta: float = 1.0,
                combine_rule: str = "mean_heatmap") -> torch.Tensor:
        """Deterministic: the sampler arguments are accepted and ignored."""
        return self._from_target(self.forward_heatmaps(frames))
