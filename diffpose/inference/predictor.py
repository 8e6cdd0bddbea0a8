"""Batched prediction: clips -> sampled heatmaps -> keypoints in image pixels with scores.

Joint score = heatmap peak x box score (the DCPose-family rule); coordinates are mapped from the
crop back to the image through each sample's inverse affine. With ``flip_test`` every clip is also
predicted mirrored, and the mirrored heatmaps, flipped back with left and right swapped, are averaged
in (the field's usual test-time flip). The codec's cell-centred mapping makes a flip of the crop a
flip of the heatmap grid, so no half-cell shift is applied.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from diffpose.data.keypoints import FLIP_INDEX
from diffpose.data.transforms import apply_affine, invert_affine
from diffpose.errors import DataError


@dataclass(frozen=True)
class Predictions:
    """keypoints [N, J, 2] image px; scores [N, J] (peak x box score); in dataset order."""

    keypoints: np.ndarray
    scores: np.ndarray
    seconds: float

    @property
    def clips_per_second(self) -> float:
        return len(self.keypoints) / self.seconds if self.seconds > 0 else 0.0


def model_device(model: torch.nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def unflip_heatmaps(heatmaps: torch.Tensor) -> torch.Tensor:
    """Heatmaps ``[B, J, h, w]`` predicted on mirrored crops -> the unmirrored crops' heatmaps."""
    return heatmaps.flip(-1)[:, torch.as_tensor(FLIP_INDEX, device=heatmaps.device)]


@torch.no_grad()
def predict_dataset(model: torch.nn.Module, dataset, codec, *, batch_size: int = 32, steps: int = 1,
                    ensemble: int = 1, seed: int = 0, workers: int = 0, progress: bool = True,
                    desc: str = "infer", flip_test: bool = False, eta: float = 1.0,
                    combine_rule: str = "mean_heatmap") -> Predictions:
    """Run ``model.predict`` over every clip of ``dataset`` (a ClipDataset in inference mode).

    The sampler's noise comes from one generator seeded with ``seed``, so a rerun gives the same
    predictions. Shapes: frames [B, T, 3, H, W] -> heatmaps [B, J, h, w] -> coords [B, J, 2].
    """
    from diffpose.progress import progress_bar

    check_finite_weights(model)
    device = model_device(model)
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda")
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    n = len(dataset)
    all_xy, all_scores = [], []
    started = time.perf_counter()
    with progress_bar(n, desc, "clip", enabled=progress) as bar:
        for batch in loader:
            frames = batch["frames"].to(device, non_blocking=True).float().div_(255.0)
            sampler = {"steps": steps, "ensemble": ensemble, "generator": generator, "eta": eta,
                       "combine_rule": combine_rule}
            heatmaps = model.predict(frames, **sampler)
            if flip_test:
                mirrored = model.predict(frames.flip(-1), **sampler)
                heatmaps = (heatmaps + unflip_heatmaps(mirrored)) / 2
            coords, peaks = codec.decode(heatmaps.float().cpu())
            coords = np.asarray(coords, dtype=np.float64)
            peaks = np.asarray(peaks, dtype=np.float64)
            matrices = batch["matrix"].numpy()
            for b in range(coords.shape[0]):
                all_xy.append(apply_affine(coords[b], invert_affine(matrices[b])))
            all_scores.append(peaks * batch["score"].numpy()[:, None])
            bar.update(coords.shape[0])
            elapsed = time.perf_counter() - started
            bar.set_postfix(clips_s=f"{bar.n / max(elapsed, 1e-9):.1f}", refresh=False)
    seconds = time.perf_counter() - started
    j = model.cfg.num_joints if hasattr(model, "cfg") else 0
    keypoints = np.stack(all_xy) if all_xy else np.zeros((0, j, 2))
    scores = np.concatenate(all_scores) if all_scores else np.zeros((0, j))
    bad = ~(np.isfinite(keypoints).all(axis=(1, 2)) & np.isfinite(scores).all(axis=1))
    if bad.any():
        raise DataError(
            f"the model predicts non-finite keypoints or scores for {int(bad.sum())} of {len(bad)} person clips "
            f"(first: clip #{int(np.argmax(bad))}); nothing was written"
        )
    return Predictions(keypoints, scores, seconds)


def check_finite_weights(model: torch.nn.Module) -> None:
    """DataError naming the first parameter or buffer that holds NaN or infinity (a diverged or
    corrupted checkpoint would otherwise give NaN predictions, which no JSON file can hold)."""
    for name, tensor in (*model.named_parameters(), *model.named_buffers()):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            count = int((~torch.isfinite(tensor)).sum())
            raise DataError(
                f"model weights are not finite: {name} holds {count} NaN/inf value(s) of {tensor.numel()} "
                f"(a diverged or corrupted checkpoint); nothing was written"
            )
