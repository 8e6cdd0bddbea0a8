"""Heatmap diffusion, kept apart from the denoising network.

``HeatmapDiffusion`` owns the schedule (a buffer, so its device follows the model), timestep
sampling, forward noising, the x0-prediction loss and the DDIM sampler. The network is any callable
``denoise(x_t, t) -> x0_hat`` working in diffusion space (``[-signal_scale, signal_scale]``, see
``HeatmapCodec.to_diffusion``).

Sampling follows DDIM (Song et al., *Denoising Diffusion Implicit Models*, ICLR 2021, eq. 12) with
DiffusionDet's x0-parameterised update (Chen et al., ICCV 2023): timesteps
``linspace(-1, T-1, steps+1)`` reversed; at each pair (t, t_next) the network predicts x0
(clamped to the signal range), eps is recovered from x_t, and
``x_next = sqrt(ab_next) x0 + sqrt(1 - ab_next - sigma^2) eps + sigma z`` with
``sigma = eta * sqrt((1 - ab/ab_next) (1 - ab_next) / (1 - ab))``; the last step returns x0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from diffpose.diffusion.schedule import cosine_alpha_bar

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Noise = torch.Generator | Sequence[torch.Generator] | None  # one generator, or one per noise row


class HeatmapDiffusion(nn.Module):
    def __init__(self, *, timesteps: int = 1000, schedule_s: float = 0.008, signal_scale: float = 2.0,
                 ddim_eta: float = 1.0, timestep_sampling: str = "uniform", timestep_power: float = 1.0):
        super().__init__()
        self.timesteps = int(timesteps)
        self.signal_scale = float(signal_scale)
        self.ddim_eta = float(ddim_eta)
        self.timestep_sampling = timestep_sampling
        self.timestep_power = float(timestep_power)
        # not persistent: a pure function of the config, rebuilt on load
        alpha_bar = cosine_alpha_bar(self.timesteps, schedule_s).float()
        self.register_buffer("alpha_bar", alpha_bar, persistent=False)

    # -- training -------------------------------------------------------------------------------
    def sample_timesteps(self, batch: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``[B]`` integer timesteps: uniform on [0, T) (DiffusionDet), or ``T * u**power``
        (``power`` > 1 favours small t, where x_t still carries the pose; ``power`` < 1 favours t near
        T, the pure-noise input every DDIM run starts from and a one-step run predicts from)."""
        dev = self.alpha_bar.device
        if self.timestep_sampling == "uniform":
            return torch.randint(0, self.timesteps, (batch,), device=dev, generator=generator)
        u = torch.rand(batch, device=dev, generator=generator)
        return (u.pow(self.timestep_power) * self.timesteps).long().clamp_(0, self.timesteps - 1)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward process ``x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps``."""
        ab = self.alpha_bar[t].view(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def loss(self, denoise: Denoiser, x0: torch.Tensor, weight: torch.Tensor | None = None, *,
             source: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """x0-prediction MSE with per-joint weights. ``x0 [B, J, h, w]`` in diffusion space,
        ``weight [B, J]``. Mean over pixels, weighted per joint, mean over B and J.

        ``source`` (same shape, optional) is what gets noised into x_t instead of x0 (e.g. the
        model's own earlier prediction, see ``DiffPose``'s ``self_correction``); the target stays x0."""
        t = self.sample_timesteps(x0.shape[0], generator=generator)
        noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        x_t = self.q_sample(x0 if source is None else source, t, noise)
        return weighted_mse(denoise(x_t, t), x0, weight)

    # -- sampling -------------------------------------------------------------------------------
    def ddim_times(self, steps: int) -> list[tuple[int, int]]:
        """The (t, t_next) pairs of a ``steps``-step DDIM run; t_next = -1 means "return x0"."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if steps > self.timesteps:
            raise ValueError(f"steps {steps} exceeds the {self.timesteps} training timesteps")
        times = torch.linspace(-1, self.timesteps - 1, steps + 1).long().tolist()[::-1]
        return list(zip(times[:-1], times[1:]))

    @torch.no_grad()
    def sample(self, denoise: Denoiser, shape: tuple[int, ...], *, steps: int = 1, eta: float | None = None,
               generator: Noise = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Run DDIM from pure Gaussian noise; returns x0 ``shape`` in diffusion space (clamped).
        ``generator``: one for the whole tensor, or one per row (see :func:`randn`)."""
        eta = self.ddim_eta if eta is None else float(eta)
        dev = self.alpha_bar.device
        for g in ([generator] if generator is None or isinstance(generator, torch.Generator) else generator):
            if g is not None and g.device.type != dev.type:
                raise ValueError(f"the sampling generator is on {g.device}, the model on {dev}: "
                                 f"create it with torch.Generator(device=...) on the model's device")
        x = randn(shape, generator=generator, device=dev, dtype=dtype)
        s = self.signal_scale
        x0 = x
        for t, t_next in self.ddim_times(steps):
            tt = torch.full((shape[0],), t, device=dev, dtype=torch.long)
            x0 = denoise(x, tt).clamp(-s, s)
            if t_next < 0:
                break
            ab, ab_next = self.alpha_bar[t], self.alpha_bar[t_next]
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
            sigma = eta * ((1 - ab / ab_next) * (1 - ab_next) / (1 - ab)).sqrt()
            c = (1 - ab_next - sigma ** 2).clamp_min(0).sqrt()
            noise = randn(shape, generator=generator, device=dev, dtype=dtype)
            x = ab_next.sqrt() * x0 + c * eps + sigma * noise
        return x0


def randn(shape: tuple[int, ...], *, generator: Noise, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Standard Gaussian noise of ``shape``. ``generator`` a sequence: row ``r`` (``shape[0]`` rows)
    is drawn from ``generator[r]``, so a sample's noise does not depend on the batch it sits in."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(shape, device=device, dtype=dtype, generator=generator)
    if len(generator) != shape[0]:
        raise ValueError(f"{len(generator)} generators for {shape[0]} noise rows")
    return torch.stack([torch.randn(shape[1:], device=device, dtype=dtype, generator=g) for g in generator])


def weighted_mse(pred: torch.Tensor, target: torch.Tensor,
                 weight: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, J, h, w]`` MSE per joint, times ``weight [B, J]``, averaged over B and J."""
    per_joint = (pred - target).pow(2).mean(dim=(2, 3))
    if weight is not None:
        per_joint = per_joint * weight.to(per_joint.dtype)
    return per_joint.mean()
