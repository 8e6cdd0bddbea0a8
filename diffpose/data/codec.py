"""The one heatmap codec shared by the dataset, the models and inference.

Coordinates: keypoints are in input-crop pixels with OpenCV's convention (pixel ``i`` has its
centre at ``i``). A heatmap cell covers ``stride = W / w`` input pixels, so its centre sits at input
coordinate ``(i + 0.5) * stride - 0.5``; encode and decode use exactly that mapping, so the
round-trip has no half-cell bias.

* ``encode``: an unnormalised Gaussian (peak 1, ``sigma`` in heatmap cells) centred at the
  *sub-pixel* location (unbiased encoding, no rounding to the grid).
* ``decode``: argmax, then DARK-style sub-pixel refinement (Zhang et al., *Distribution-Aware
  Coordinate Representation for Human Pose Estimation*, CVPR 2020): the log-heatmap is expanded to
  second order around the maximum and the Newton step ``-H^-1 g`` is taken (kept within one cell).
  On an exact Gaussian the log is quadratic, so the step is exact, also for peaks on the border
  (the stencil moves inwards). Where the log-Hessian is not negative definite (flat or noisy
  peaks) the classic quarter-cell shift towards the higher neighbour is used. DARK's distribution
  modulation (Gaussian smoothing before the log) is optional (``blur=True``): on small heatmaps
  its border padding biases peaks near the edge, so it is off by default. The score is the peak
  value of the raw heatmap.
* ``to_diffusion`` / ``from_diffusion``: [0, 1] heatmaps <-> the diffusion signal space
  ``[-signal_scale, signal_scale]`` (DiffusionDet's signal scaling); ``from_diffusion`` clamps.
  The mapping lives here and nowhere else; the value comes from ``ModelConfig.signal_scale``.

Shapes: J joints, (H, W) input crop, (h, w) heatmap, B batch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


class HeatmapCodec:
    """Gaussian heatmap targets, DARK decoding and the diffusion-space mapping."""

    def __init__(self, input_size: tuple[int, int], heatmap_size: tuple[int, int], sigma: float = 2.0,
                 signal_scale: float = 2.0, blur: bool = False):
        if len(input_size) != 2 or len(heatmap_size) != 2:
            raise ValueError(f"input_size and heatmap_size are (H, W) pairs, "
                             f"got {input_size}, {heatmap_size}")
        if sigma <= 0 or signal_scale <= 0:
            raise ValueError(f"sigma and signal_scale must be positive, got {sigma}, {signal_scale}")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
        self.sigma = float(sigma)
        self.signal_scale = float(signal_scale)
        self.blur = bool(blur)
        # input px per heatmap cell, per axis (x, y)
        self.stride = np.array([self.input_size[1] / self.heatmap_size[1],
                                self.input_size[0] / self.heatmap_size[0]], dtype=np.float64)

    # -- coordinate mapping -------------------------------------------------------------------
    def to_heatmap_coords(self, xy: np.ndarray) -> np.ndarray:
        """input-crop px ``[..., 2]`` (x, y) -> heatmap cells."""
        return (np.asarray(xy, dtype=np.float64) + 0.5) / self.stride - 0.5

    def to_input_coords(self, xy):
        """heatmap cells ``[..., 2]`` -> input-crop px (numpy or torch)."""
        if isinstance(xy, torch.Tensor):
            stride = torch.as_tensor(self.stride, dtype=xy.dtype, device=xy.device)
            return (xy + 0.5) * stride - 0.5
        return (np.asarray(xy, dtype=np.float64) + 0.5) * self.stride - 0.5

    # -- encode ---------------------------------------------------------------------------------
    def encode(self, keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``keypoints [J, 3]`` (x, y, visibility) in input-crop px -> (heatmaps ``[J, h, w]`` in
        [0, 1], target_weight ``[J]``). A joint with visibility <= 0, a non-finite coordinate, or
        a centre outside the crop (outside the heatmap's cell area) gets a zero map and weight 0."""
        kpts = np.asarray(keypoints, dtype=np.float64)
        if kpts.ndim != 2 or kpts.shape[1] < 3:
            raise ValueError(f"keypoints must be [J, 3] (x, y, visibility), got shape {kpts.shape}")
        h, w = self.heatmap_size
        mu = self.to_heatmap_coords(kpts[:, :2])
        finite = np.isfinite(mu).all(axis=1)
        mu = np.where(finite[:, None], mu, 0.0)
        inside = (mu[:, 0] >= -0.5) & (mu[:, 0] < w - 0.5) & (mu[:, 1] >= -0.5) & (mu[:, 1] < h - 0.5)
        weight = ((kpts[:, 2] > 0) & finite & inside).astype(np.float32)
        xs = np.arange(w, dtype=np.float64)
        ys = np.arange(h, dtype=np.float64)
        gx = np.exp(-((xs[None, :] - mu[:, :1]) ** 2) / (2 * self.sigma ** 2))  # [J, w]
        gy = np.exp(-((ys[None, :] - mu[:, 1:2]) ** 2) / (2 * self.sigma ** 2))  # [J, h]
        heatmaps = (gy[:, :, None] * gx[:, None, :]).astype(np.float32) * weight[:, None, None]
        return heatmaps, weight

    # -- decode ---------------------------------------------------------------------------------
    def _blur(self, hm: torch.Tensor) -> torch.Tensor:
        """Separable Gaussian smoothing of ``[N, h, w]`` (replicate border), max per map kept."""
        radius = max(1, int(math.ceil(3 * self.sigma)))
        x = torch.arange(-radius, radius + 1, dtype=hm.dtype, device=hm.device)
        k = torch.exp(-(x ** 2) / (2 * self.sigma ** 2))
        k = k / k.sum()
        n, h, w = hm.shape
        out = hm[:, None]
        out = F.conv2d(F.pad(out, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
        out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))
        out = out[:, 0]
        peak_in = hm.flatten(1).amax(1).clamp_min(0)
        peak_out = out.flatten(1).amax(1).clamp_min(1e-12)
        return out * (peak_in / peak_out)[:, None, None]

    def decode(self, heatmaps):
        """``heatmaps [B, J, h, w]`` (torch or numpy) -> (coords ``[B, J, 2]`` in input-crop px,
        scores ``[B, J]`` = peak values). Returns the same kind (torch / numpy) as the input."""
        is_numpy = not isinstance(heatmaps, torch.Tensor)
        hm = torch.as_tensor(np.asarray(heatmaps) if is_numpy else heatmaps).detach()
        if hm.ndim != 4:
            raise ValueError(f"heatmaps must be [B, J, h, w], got shape {tuple(hm.shape)}")
        hm = hm.to(torch.float64 if hm.dtype == torch.float64 else torch.float32)
        b, j, h, w = hm.shape
        flat = hm.reshape(b * j, h * w)
        scores, idx = flat.max(dim=1)
        xy = self._refine(hm.reshape(b * j, h, w), idx)
        coords = self.to_input_coords(xy).reshape(b, j, 2)
        scores = scores.reshape(b, j)
        if is_numpy:
            return coords.cpu().numpy(), scores.cpu().numpy()
        return coords, scores

    def _refine(self, hm: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Sub-pixel peak ``[N, 2]`` (x, y) in heatmap cells for ``hm [N, h, w]`` and its argmax ``idx``.

        Second-order Taylor expansion of ``log(hm)`` on the 3x3 stencil around the argmax (moved
        inwards by one cell on the border, which stays exact for a Gaussian because its log is
        quadratic), Newton step ``-H^-1 g``; the result is kept within one cell of the argmax and
        inside the map. Where the Hessian is not negative definite the classic quarter-cell shift
        towards the higher neighbour is used instead.
        """
        n, h, w = hm.shape
        ix, iy = idx % w, torch.div(idx, w, rounding_mode="floor")
        xy = torch.stack([ix, iy], dim=1).to(hm.dtype)
        if h < 3 or w < 3:
            return xy
        src = self._blur(hm) if self.blur else hm
        logh = torch.log(src.clamp_min(1e-10))
        cx, cy = ix.clamp(1, w - 2), iy.clamp(1, h - 2)
        rows = torch.arange(n, device=hm.device)

        def at(dy: int, dx: int) -> torch.Tensor:
            return logh[rows, cy + dy, cx + dx]

        c = at(0, 0)
        gx = 0.5 * (at(0, 1) - at(0, -1))
        gy = 0.5 * (at(1, 0) - at(-1, 0))
        dxx = at(0, 1) - 2 * c + at(0, -1)
        dyy = at(1, 0) - 2 * c + at(-1, 0)
        dxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
        det = dxx * dyy - dxy ** 2
        ok = (dxx < 0) & (dyy < 0) & (det > 1e-12)
        safe = torch.where(ok, det, torch.ones_like(det))
        newton = torch.stack([cx.to(hm.dtype) - (dyy * gx - dxy * gy) / safe,
                              cy.to(hm.dtype) - (dxx * gy - dxy * gx) / safe], dim=1)
        # quarter-offset fallback, from the raw heatmap at the argmax
        def raw(dy: int, dx: int) -> torch.Tensor:
            return hm[rows, (iy + dy).clamp(0, h - 1), (ix + dx).clamp(0, w - 1)]

        quarter = xy + 0.25 * torch.stack([torch.sign(raw(0, 1) - raw(0, -1)),
                                           torch.sign(raw(1, 0) - raw(-1, 0))], dim=1)
        out = torch.where(ok[:, None] & torch.isfinite(newton), newton, quarter)
        out = torch.minimum(torch.maximum(out, xy - 1), xy + 1)
        lo = torch.tensor([-0.5, -0.5], dtype=hm.dtype, device=hm.device)
        hi = torch.tensor([w - 0.5, h - 0.5], dtype=hm.dtype, device=hm.device)
        return torch.minimum(torch.maximum(out, lo), hi)

    # -- diffusion space ------------------------------------------------------------------------
    def to_diffusion(self, x):
        """[0, 1] heatmaps -> diffusion signal ``[-signal_scale, signal_scale]``."""
        return (x * 2.0 - 1.0) * self.signal_scale

    def from_diffusion(self, x):
        """diffusion signal -> [0, 1] heatmaps (clamped)."""
        y = (x / self.signal_scale + 1.0) / 2.0
        if isinstance(y, torch.Tensor):
            return y.clamp(0.0, 1.0)
        return np.clip(y, 0.0, 1.0)
