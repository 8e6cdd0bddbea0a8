"""SpatioTemporal Representation Learner (STRL), DiffPose Sec. 3.2.

``[B, T, C, h, w]`` per-frame backbone features -> patch tokens (1x1 projection of every cell) ->
the T frames' tokens concatenated ``[B, T*h*w, D]`` + a learnable position embedding -> L pre-LN
Transformer layers -> LayerNorm -> frame aggregation -> the condition feature ``F [B, D, h, w]``.

Aggregation (``strl_aggregate``): ``linear`` a Linear over the frame axis T -> 1 (author notes),
``mlp`` an MLP over the concatenated frame features of each cell, ``mean``, ``key`` (key frame
only, an ablation).
"""

from __future__ import annotations

import torch
from torch import nn

from diffpose.models.layers import TransformerBlock


class STRL(nn.Module):
    def __init__(self, in_channels: int, *, dim: int, depth: int, heads: int, mlp_ratio: float,
                 num_frames: int, grid: tuple[int, int], aggregate: str = "linear"):
        super().__init__()
        self.num_frames, self.grid, self.aggregate = num_frames, grid, aggregate
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=1)
        self.pos_embed = nn.Parameter(torch.zeros(1, num_frames * grid[0] * grid[1], dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        if aggregate == "linear":
            self.frame_fc = nn.Linear(num_frames, 1)
            nn.init.constant_(self.frame_fc.weight, 1.0 / num_frames)
            nn.init.zeros_(self.frame_fc.bias)
        elif aggregate == "mlp":
            self.frame_mlp = nn.Sequential(nn.LayerNorm(num_frames * dim), nn.Linear(num_frames * dim, dim),
                                           nn.GELU(), nn.Linear(dim, dim))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """``feats [B, T, C, h, w]`` -> ``F [B, D, h, w]``."""
        b, t, c, h, w = feats.shape
        x = self.patch_embed(feats.reshape(b * t, c, h, w))              # [B*T, D, h, w]
        d = x.shape[1]
        tokens = x.flatten(2).transpose(1, 2).reshape(b, t * h * w, d) + self.pos_embed
        for blk in self.blocks:
            tokens = blk(tokens)
        tokens = self.norm(tokens).reshape(b, t, h * w, d)
        if self.aggregate == "linear":
            fused = self.frame_fc(tokens.permute(0, 2, 3, 1)).squeeze(-1)  # [B, h*w, D]
        elif self.aggregate == "mlp":
            fused = self.frame_mlp(tokens.permute(0, 2, 1, 3).reshape(b, h * w, t * d))
        elif self.aggregate == "mean":
            fused = tokens.mean(1)
        else:
            fused = tokens[:, t // 2]
        return fused.transpose(1, 2).reshape(b, d, h, w)
