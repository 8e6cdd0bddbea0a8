"""Pose decoder with Lookup-based MultiScale Feature Interaction (LMSFI), DiffPose Sec. 3.3.

Inputs: the condition ``F [B, D, h/4, w/4]`` (from the STRL, computed once per clip), the noisy
heatmap ``x_t [B, J, h, w]`` in diffusion space and the timestep ``t [B]``. Output: the prediction of
``x0 [B, J, h, w]`` in diffusion space.

1. A timestep embedding (sinusoidal + MLP) gives a per-joint scale and shift that rescale x_t (FiLM).
2. Three scales s = x1, x2, x4 of the condition grid: F is lifted by 1x1 conv / deconvolutions
   (``cond``), the rescaled heatmap is embedded at full resolution and brought down by strided convs
   (``hm``).
3. LMSFI (``lmsfi=True``): the heatmap features are refined (Transformer at the lowest scale, conv
   at the two higher), a 1x1 conv gives the refined J-channel heatmap R_s, the mask
   ``A_s = sigmoid(max_j R_s)`` gates the features, ``local = A_s * cond_s``, and
   ``concat(local, cond_s)`` goes through a Transformer (lowest scale) or a conv block.
   With ``heatmap_concat=True`` the refined heatmap features are concatenated as well (a stronger
   x_t path than the 1-channel mask; not in the paper). ``lmsfi=False`` is the paper's ablation:
   ``concat(heatmap features, cond_s)`` with no lookup.
4. Each scale is projected and upsampled (bilinear) to heatmap resolution, the three are summed and
   a 3x3 conv head predicts x0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffpose.models.layers import MapTransformer, TimestepEmbedding, conv_bn_relu, deconv_bn_relu


class LMSFIDecoder(nn.Module):
    def __init__(self, *, cond_channels: int, num_joints: int, grid: tuple[int, int],
                 dims: tuple[int, int, int], heads: int, depth: int, heatmap_dim: int, time_dim: int,
                 lmsfi: bool = True, heatmap_concat: bool = False):
        super().__init__()
        self.lmsfi, self.heatmap_concat = lmsfi, heatmap_concat
        j, hd = num_joints, heatmap_dim
        grids = [grid, (grid[0] * 2, grid[1] * 2), (grid[0] * 4, grid[1] * 4)]
        # timestep FiLM of the noisy heatmap
        self.time_embed = TimestepEmbedding(time_dim)
        self.film = nn.Linear(time_dim, 2 * j)
        # condition pyramid x1, x2, x4
        self.cond = nn.ModuleList([
            conv_bn_relu(cond_channels, dims[0], kernel=1),
            deconv_bn_relu(dims[0], dims[1]),
            deconv_bn_relu(dims[1], dims[2]),
        ])
        # heatmap pyramid: full resolution (x4), then strided convs down to x2 and x1
        self.hm_embed = conv_bn_relu(j, hd)
        self.hm_down = nn.ModuleList([conv_bn_relu(hd, hd, stride=2), conv_bn_relu(hd, hd, stride=2)])
        if lmsfi:
            hm_heads = max(1, hd // 16) if hd % max(1, hd // 16) == 0 else 1
            self.hm_refine = nn.ModuleList([
                MapTransformer(hd, hm_heads, grids[0], depth=1),
                conv_bn_relu(hd, hd), conv_bn_relu(hd, hd),
            ])
            self.hm_head = nn.ModuleList(nn.Conv2d(hd, j, 1) for _ in range(3))
        extra = hd if (heatmap_concat or not lmsfi) else 0
        self.fuse_in = nn.ModuleList([
            nn.Conv2d((dims[0] if lmsfi else 0) + dims[0] + extra, dims[0], 1),
            conv_bn_relu((dims[1] if lmsfi else 0) + dims[1] + extra, dims[1]),
            conv_bn_relu((dims[2] if lmsfi else 0) + dims[2] + extra, dims[2]),
        ])
        self.fuse = nn.ModuleList([
            MapTransformer(dims[0], heads, grids[0], depth=depth),
            conv_bn_relu(dims[1], dims[1]),
            conv_bn_relu(dims[2], dims[2]),
        ])
        out = dims[2]
        self.to_out = nn.ModuleList(nn.Conv2d(d, out, 1) for d in dims)
        self.head = nn.Sequential(nn.ReLU(inplace=False), nn.Conv2d(out, j, 3, padding=1))
        self.out_size = grids[2]

    def condition_pyramid(self, cond: torch.Tensor) -> list[torch.Tensor]:
        """``F [B, D, h/4, w/4]`` -> [x1, x2, x4] features; depends on F only, so a sampler can reuse it."""
        feats, x = [], cond
        for layer in self.cond:
            x = layer(x)
            feats.append(x)
        return feats

    def forward(self, cond: torch.Tensor | list[torch.Tensor], x_t: torch.Tensor,
                t: torch.Tensor) -> torch.Tensor:
        """``cond``: F or its precomputed ``condition_pyramid``; ``x_t [B, J, h, w]``; ``t [B]``
        -> x0 ``[B, J, h, w]``."""
        pyramid = self.condition_pyramid(cond) if isinstance(cond, torch.Tensor) else cond
        scale, shift = self.film(self.time_embed(t)).chunk(2, dim=1)
        x = x_t * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
        h4 = self.hm_embed(x)
        h2 = self.hm_down[0](h4)
        h1 = self.hm_down[1](h2)
        total = None
        for s, (hm, c) in enumerate(zip((h1, h2, h4), pyramid)):
            if self.lmsfi:
                hm = self.hm_refine[s](hm)
                mask = torch.sigmoid(self.hm_head[s](hm).amax(dim=1, keepdim=True))   # A_s [B, 1, hs, ws]
                parts = [mask * c, c] + ([hm] if self.heatmap_concat else [])
            else:
                parts = [hm, c]
            y = self.fuse[s](self.fuse_in[s](torch.cat(parts, dim=1)))
            y = self.to_out[s](y)
            if y.shape[-2:] != self.out_size:
                y = F.interpolate(y, size=self.out_size, mode="bilinear", align_corners=False)
            total = y if total is None else total + y
        return self.head(total)
