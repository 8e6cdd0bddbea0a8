"""Noise schedules as pure functions.

Notation (Ho et al. 2020): ``x_t = sqrt(alpha_bar_t) * x0 + sqrt(1 - alpha_bar_t) * eps``.
"""

from __future__ import annotations

import math

import torch


def cosine_alpha_bar(timesteps: int, s: float = 0.008) -> torch.Tensor:
    """``alpha_bar_t`` for t = 0..T-1 of the cosine schedule (float64, ``[T]``).

    Nichol & Dhariwal, *Improved Denoising Diffusion Probabilistic Models*, ICML 2021, eq. 17:
    ``f(t) = cos^2(((t / T) + s) / (1 + s) * pi / 2)``, ``alpha_bar_t = f(t) / f(0)``, with the
    per-step ``beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}`` clipped to 0.999 (their Sec. 3.2).
    Index t here is the paper's t + 1 (the first noising step), as in DiffusionDet.
    """
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    steps = torch.arange(timesteps + 1, dtype=torch.float64)
    f = torch.cos(((steps / timesteps) + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(0.0, 0.999)
    return torch.cumprod(1.0 - betas, dim=0)
