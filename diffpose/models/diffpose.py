"""DiffPose (Feng et al., ICCV 2023): heatmap diffusion conditioned on a spatiotemporal feature.

backbone (per frame) -> STRL -> condition F (once per clip) -> LMSFI decoder as the x0 denoiser of
``HeatmapDiffusion``. Training: t ~ schedule, x_t = q(x0), loss = weighted MSE(x0_hat, x0) in
diffusion space. Inference: K noise starts share F, DDIM with any number of steps, the K heatmaps are
combined by the inference setting ``ensemble_combine``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from diffpose.diffusion.ensemble import combine
from diffpose.diffusion.gaussian import HeatmapDiffusion, weighted_mse
from diffpose.models.backbones import build_backbone
from diffpose.models.base import PoseModel
from diffpose.models.config import ModelConfig
from diffpose.models.decoder import LMSFIDecoder
from diffpose.models.strl import STRL


class DiffPose(PoseModel):
    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.backbone = build_backbone(cfg)
        grid = cfg.feature_size
        self.strl = STRL(self.backbone.out_channels, dim=cfg.strl_dim, depth=cfg.strl_depth,
                         heads=cfg.strl_heads, mlp_ratio=cfg.strl_mlp_ratio, num_frames=cfg.num_frames,
                         grid=grid, aggregate=cfg.strl_aggregate)
        self.decoder = LMSFIDecoder(cond_channels=cfg.strl_dim, num_joints=cfg.num_joints, grid=grid,
                                    dims=cfg.decoder_dims, heads=cfg.decoder_heads, depth=cfg.decoder_depth,
                                    heatmap_dim=cfg.heatmap_dim, time_dim=cfg.time_dim, lmsfi=cfg.lmsfi,
                                    heatmap_concat=cfg.heatmap_concat)
        self.diffusion = HeatmapDiffusion(timesteps=cfg.timesteps, schedule_s=cfg.schedule_s,
                                          signal_scale=cfg.signal_scale,
                                          timestep_sampling=cfg.timestep_sampling,
                                          timestep_power=cfg.timestep_power)

    def condition(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames [B, T, 3, H, W]`` in [0, 1] -> ``F [B, D, H/16, W/16]``."""
        self.check_frames(frames)
        b, t = frames.shape[:2]
        feats = self.backbone(self.normalize(frames.flatten(0, 1)))
        return self.strl(feats.reshape(b, t, *feats.shape[1:]))

    def loss(self, frames: torch.Tensor, target: torch.Tensor, target_weight: torch.Tensor) -> torch.Tensor:
        pyramid = self.decoder.condition_pyramid(self.condition(frames))
        x0 = self.codec.to_diffusion(target)
        denoise = lambda x_t, t: self.decoder(pyramid, x_t, t)  # noqa: E731
        source = self._self_correction_source(denoise, x0)
        return self.diffusion.loss(denoise, x0, target_weight, source=source)

    def _self_correction_source(self, denoise, x0: torch.Tensor) -> torch.Tensor | None:
        """With ``cfg.self_correction`` = p > 0 (training only), a fraction p of the clips is noised
        from the model's own one-step prediction (no gradient) instead of the ground truth, so that at
        t < T the decoder learns to correct an imperfect pose, as it meets one at the second DDIM
        step, rather than to trust x_t. Not in the paper: a remedy for multi-step sampling that
        degrades a one-step prediction (the training/sampling mismatch called exposure bias)."""
        p = self.cfg.self_correction
        if p <= 0 or not self.training:
            return None
        b = x0.shape[0]
        with torch.no_grad():
            t_last = torch.full((b,), self.diffusion.timesteps - 1, device=x0.device, dtype=torch.long)
            first = denoise(torch.randn_like(x0), t_last).clamp(-self.cfg.signal_scale, self.cfg.signal_scale)
        pick = (torch.rand(b, device=x0.device) < p).view(b, 1, 1, 1)
        return torch.where(pick, first.to(x0.dtype), x0)

    @torch.no_grad()
    def denoising_error(self, frames: torch.Tensor, target: torch.Tensor, target_weight: torch.Tensor, *,
                        timesteps: tuple[int, ...] = (0, 100, 250, 500, 750, 999),
                        generator: torch.Generator | None = None) -> dict[int, float]:
        """Weighted x0 MSE (diffusion space) at fixed timesteps: a diagnostic of how much the decoder
        uses the noisy heatmap. If the error at small t is not clearly below the error at t = T-1,
        the prediction hardly depends on x_t, and extra DDIM steps or ensemble members cannot help."""
        pyramid = self.decoder.condition_pyramid(self.condition(frames))
        x0 = self.codec.to_diffusion(target)
        out = {}
        for t in timesteps:
            tt = torch.full((x0.shape[0],), int(t), device=x0.device, dtype=torch.long)
            noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
            x_t = self.diffusion.q_sample(x0, tt, noise)
            pred = self.decoder(pyramid, x_t, tt).clamp(-self.cfg.signal_scale, self.cfg.signal_scale)
            out[int(t)] = weighted_mse(pred, x0, target_weight).item()
        return out

    @torch.no_grad()
    def predict(self, frames: torch.Tensor, *, steps: int = 1, ensemble: int = 1,
                generator: torch.Generator | Sequence[torch.Generator] | None = None, eta: float = 1.0,
                combine_rule: str = "mean_heatmap") -> torch.Tensor:
        """``[B, J, h, w]`` heatmaps in [0, 1]: ``ensemble`` (K) DDIM runs of ``steps`` steps (DDIM
        ``eta``) that share the condition feature, combined by ``combine_rule`` (inference settings:
        params infer.ddim_eta, infer.ensemble_combine). Sample k of clip b uses noise
        row ``k * B + b``, drawn from ``generator``, or, given B generators (one per clip), from
        ``generator[b]``: then a clip's prediction does not depend on the batch it is in."""
        if ensemble < 1:
            raise ValueError(f"ensemble must be >= 1, got {ensemble}")
        b = frames.shape[0]
        if generator is not None and not isinstance(generator, torch.Generator):
            if len(generator) != b:
                raise ValueError(f"{len(generator)} generators for {b} clips")
            generator = list(generator) * ensemble                           # row k * B + b -> clip b
        pyramid = self.decoder.condition_pyramid(self.condition(frames))      # once per clip
        if ensemble > 1:
            pyramid = [p.repeat(ensemble, 1, 1, 1) for p in pyramid]          # [K*B, ...]
        j, (h, w) = self.cfg.num_joints, self.cfg.heatmap_size
        x0 = self.diffusion.sample(lambda x_t, t: self.decoder(pyramid, x_t, t), (ensemble * b, j, h, w),
                                   steps=steps, eta=eta, generator=generator, dtype=pyramid[0].dtype)
        heatmaps = self.codec.from_diffusion(x0).reshape(ensemble, b, j, h, w)
        return combine(heatmaps, combine_rule, self.codec)
