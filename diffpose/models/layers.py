"""Small building blocks shared by the ViT, the STRL and the pose decoder.

The Transformer block uses ViTPose's parameter names (``norm1``, ``attn.qkv``, ``attn.proj``,
``norm2``, ``mlp.fc1``, ``mlp.fc2``) so pretrained ViTPose weights map onto it one to one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention over ``[B, N, C]`` tokens (fused qkv projection)."""

    def __init__(self, dim: int, heads: int, *, qkv_bias: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention dim {dim} is not a multiple of heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DropPath(nn.Module):
    """Stochastic depth per sample (training only)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device, dtype=x.dtype) >= self.p
        return x * keep / (1.0 - self.p)


class TransformerBlock(nn.Module):
    """Pre-LN encoder layer: ``x + attn(LN(x))``, then ``x + mlp(LN(x))``. ``[B, N, C] -> [B, N, C]``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, *, drop_path: float = 0.0,
                 eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(round(dim * mlp_ratio)))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer sinusoidal embedding of timesteps ``t [B]`` -> ``[B, dim]`` (Vaswani et al. 2017)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepEmbedding(nn.Module):
    """Sinusoidal embedding followed by a two-layer MLP. ``t [B] -> [B, dim]``."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 2), nn.SiLU(), nn.Linear(dim * 2, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal_embedding(t, self.dim))


def conv_bn_relu(cin: int, cout: int, *, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def deconv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    """x2 upsampling by a 4x4 transposed convolution (SimpleBaseline's deconv layer)."""
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """Two 3x3 convs with a skip. ``[B, C, H, W] -> [B, C, H, W]``."""

    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch),
                                  nn.ReLU(inplace=True), nn.Conv2d(ch, ch, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class MapTransformer(nn.Module):
    """Transformer layers over a feature map: ``[B, C, h, w]`` -> tokens + learnable position
    embedding -> ``depth`` pre-LN layers -> LayerNorm -> ``[B, C, h, w]``."""

    def __init__(self, dim: int, heads: int, grid: tuple[int, int], depth: int = 1, mlp_ratio: float = 4.0):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, grid[0] * grid[1], dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2) + self.pos_embed
        for blk in self.blocks:
            tokens = blk(tokens)
        return self.norm(tokens).transpose(1, 2).reshape(b, c, h, w)


def state_dict_mismatch(own: dict[str, torch.Tensor], state: dict) -> str:
    """Why ``state`` cannot be loaded into a module whose state dict is ``own``: missing keys,
    unexpected keys and shape mismatches, each with examples; ``""`` when every key fits."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state)
                   if not isinstance(state[k], torch.Tensor) or state[k].shape != own[k].shape)
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) e.g. {missing[:3]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) e.g. {unexpected[:3]}")
    if wrong:
        k = wrong[0]
        stored = tuple(state[k].shape) if isinstance(state[k], torch.Tensor) else type(state[k]).__name__
        parts.append(f"{len(wrong)} shape mismatch(es) e.g. {k}: stored {stored} vs model {tuple(own[k].shape)}")
    return "; ".join(parts)
