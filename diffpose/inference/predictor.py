"""Batched prediction: clips -> sampled heatmaps -> keypoints in image pixels with scores.

Joint score = heatmap peak x box score (the DCPose-family rule); coordinates are mapped from the
crop back to the image through each sample's inverse affine. With ``flip_test`` every clip is also
predicted mirrored, and the mirrored heatmaps, flipped back with left and right swapped, are averaged
in (the field's usual test-time flip). The codec's cell-centred mapping makes a flip of the crop a
flip of the heatmap grid, so no half-cell shift is applied.

The sampler's noise for clip ``i`` (in dataset order) comes from its own generator, seeded with
:func:`clip_seed` ``(seed, i)``: predictions depend on the seed only, not on the batch size or on
which process predicts which batch. Under torchrun, process ``r`` of ``N`` predicts batches
``r, r+N, ...`` and rank 0 gathers them back into dataset order, so one process and N processes
write the same predictions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader

from diffpose.data.keypoints import FLIP_INDEX
from diffpose.data.transforms import apply_affine, invert_affine
from diffpose.errors import DataError

if TYPE_CHECKING:
    from diffpose.training.distributed import DistContext


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


def clip_seed(seed: int, clip_index: int) -> int:
    """The sampler seed of clip ``clip_index`` (dataset order): distinct for every (seed, clip) of
    any run that has fewer than a million clips."""
    return seed * 1_000_003 + clip_index


def shard_batches(n: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[tuple[int, list[int]]]:
    """(batch index, clip indices) of the batches process ``rank`` of ``world_size`` predicts:
    whole batches ``rank, rank + world_size, ...`` of the ``n`` clips in dataset order."""
    starts = range(0, n, batch_size)
    return [(i, list(range(start, min(start + batch_size, n)))) for i, start in enumerate(starts)
            if i % world_size == rank]


@torch.no_grad()
def predict_dataset(model: torch.nn.Module, dataset, codec, *, batch_size: int = 32, steps: int = 1,
                    ensemble: int = 1, seed: int = 0, workers: int = 0, progress: bool = True,
                    desc: str = "infer", flip_test: bool = False, eta: float = 1.0,
                    combine_rule: str = "mean_heatmap", ctx: DistContext | None = None) -> Predictions | None:
    """Run ``model.predict`` over every clip of ``dataset`` (a ClipDataset in inference mode).

    The noise of clip ``i`` comes from a generator seeded with ``clip_seed(seed, i)``, so a rerun
    with the same seed gives the same predictions, with any batch size and number of processes.
    ``ctx`` (a torchrun context): this process predicts its share of the batches
    (:func:`shard_batches`), rank 0 gathers every share and returns the Predictions in dataset
    order, the other ranks return None. Shapes: frames [B, T, 3, H, W] -> heatmaps [B, J, h, w] ->
    coords [B, J, 2].
    """
    from diffpose.progress import progress_bar
    from diffpose.training.distributed import gather_objects

    check_finite_weights(model)
    device = model_device(model)
    model.eval()
    rank, world_size = (ctx.rank, ctx.world_size) if ctx is not None else (0, 1)
    mine = shard_batches(len(dataset), batch_size, rank, world_size)
    loader = DataLoader(dataset, batch_sampler=[clips for _, clips in mine], num_workers=workers,
                        pin_memory=device.type == "cuda")
    predicted: list[tuple[int, np.ndarray, np.ndarray]] = []  # (batch index, keypoints, scores)
    started = time.perf_counter()
    with progress_bar(sum(len(clips) for _, clips in mine), desc, "clip", enabled=progress and rank == 0) as bar:
        for (index, clips), batch in zip(mine, loader):
            generators = [torch.Generator(device=device).manual_seed(clip_seed(seed, clip)) for clip in clips]
            predicted.append((index, *_predict_batch(model, batch, codec, device, generators, steps=steps,
                                                     ensemble=ensemble, eta=eta, combine_rule=combine_rule,
                                                     flip_test=flip_test)))
            bar.update(len(predicted[-1][1]))
            elapsed = time.perf_counter() - started
            bar.set_postfix(clips_s=f"{bar.n / max(elapsed, 1e-9):.1f}", refresh=False)
    shares = gather_objects(ctx, predicted) if ctx is not None else [predicted]
    if shares is None:
        return None
    seconds = time.perf_counter() - started
    ordered = sorted((share for rank_share in shares for share in rank_share), key=lambda item: item[0])
    j = model.cfg.num_joints if hasattr(model, "cfg") else 0
    keypoints = np.concatenate([xy for _, xy, _ in ordered]) if ordered else np.zeros((0, j, 2))
    scores = np.concatenate([sc for _, _, sc in ordered]) if ordered else np.zeros((0, j))
    bad = ~(np.isfinite(keypoints).all(axis=(1, 2)) & np.isfinite(scores).all(axis=1))
    if bad.any():
        raise DataError(
            f"the model predicts non-finite keypoints or scores for {int(bad.sum())} of {len(bad)} person clips "
            f"(first: clip #{int(np.argmax(bad))}); nothing was written"
        )
    return Predictions(keypoints, scores, seconds)


def _predict_batch(model: torch.nn.Module, batch: dict, codec, device: torch.device,
                   generator: list[torch.Generator], *, flip_test: bool, **sampler) -> tuple[np.ndarray, np.ndarray]:
    """One loader batch -> (keypoints [B, J, 2] in image px, scores [B, J]); ``generator``: one per
    clip (the mirrored pass draws its noise after the unmirrored one, from the same generators)."""
    frames = batch["frames"].to(device, non_blocking=True).float().div_(255.0)
    heatmaps = model.predict(frames, generator=generator, **sampler)
    if flip_test:
        mirrored = model.predict(frames.flip(-1), generator=generator, **sampler)
        heatmaps = (heatmaps + unflip_heatmaps(mirrored)) / 2
    coords, peaks = codec.decode(heatmaps.float().cpu())
    coords = np.asarray(coords, dtype=np.float64)
    peaks = np.asarray(peaks, dtype=np.float64)
    matrices = batch["matrix"].numpy()
    xy = np.stack([apply_affine(coords[b], invert_affine(matrices[b])) for b in range(coords.shape[0])])
    return xy, peaks * batch["score"].numpy()[:, None]


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
