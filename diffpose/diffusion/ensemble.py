"""Combining K sampled pose estimates (DiffPose's multi-start ensemble).

``combine(heatmaps [K, B, J, h, w] in [0, 1], rule, codec) -> [B, J, h, w]``:

* ``mean_heatmap`` (default): average the K heatmaps before decoding.
* ``median_heatmap``: per-pixel median (robust to one bad start); for even K the mean of the two
  middle values (torch's ``median`` returns the lower one: with K=2 that is the per-pixel minimum).
* ``mean_coords``: decode each sample, average the coordinates and the peak scores, and render a
  Gaussian of the codec's sigma with that peak at the mean location (so the result is still a
  heatmap that the shared decoder reads back).
"""

from __future__ import annotations

import torch

RULES = ("mean_heatmap", "median_heatmap", "mean_coords")


def combine(heatmaps: torch.Tensor, rule: str = "mean_heatmap", codec=None) -> torch.Tensor:
    if heatmaps.ndim != 5:
        raise ValueError(f"expected [K, B, J, h, w] heatmaps, got shape {tuple(heatmaps.shape)}")
    if heatmaps.shape[0] == 1:
        return heatmaps[0]
    if rule == "mean_heatmap":
        return heatmaps.mean(0)
    if rule == "median_heatmap":
        ordered = heatmaps.sort(dim=0).values
        mid = heatmaps.shape[0] // 2
        return ordered[mid] if heatmaps.shape[0] % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    if rule == "mean_coords":
        if codec is None:
            raise ValueError("ensemble rule mean_coords needs the heatmap codec")
        return _mean_coords(heatmaps, codec)
    raise ValueError(f"unknown ensemble rule {rule!r} (known: {', '.join(RULES)})")


def _mean_coords(heatmaps: torch.Tensor, codec) -> torch.Tensor:
    k, b, j, h, w = heatmaps.shape
    coords, scores = codec.decode(heatmaps.reshape(k * b, j, h, w).float())
    xy = codec.to_heatmap_coords(coords.reshape(k, b, j, 2).mean(0).cpu().double().numpy())
    mu = torch.as_tensor(xy, dtype=heatmaps.dtype, device=heatmaps.device)      # [B, J, 2] in cells
    peak = scores.reshape(k, b, j).mean(0).to(heatmaps.device, heatmaps.dtype)
    xs = torch.arange(w, device=heatmaps.device, dtype=heatmaps.dtype)
    ys = torch.arange(h, device=heatmaps.device, dtype=heatmaps.dtype)
    two_s2 = 2 * codec.sigma ** 2
    gx = torch.exp(-(xs.view(1, 1, 1, w) - mu[..., 0, None, None]) ** 2 / two_s2)
    gy = torch.exp(-(ys.view(1, 1, h, 1) - mu[..., 1, None, None]) ** 2 / two_s2)
    return gx * gy * peak[..., None, None]
