"""Validation during training: the PoseTrack mAP of the current weights on a val split.

Every ``train.val_every`` epochs (and after the last one) the model predicts every GT-boxed person
of the val annotations, exactly as ``diffpose infer --boxes gt`` does with the same sampler settings
(same crops, codec and flip test, through :func:`diffpose.inference.predictor.predict_dataset`), and the
predictions are scored in-process by :mod:`diffpose.evaluation.posetrack_map` (the poseval
algorithm). Under torchrun each process predicts its share of the batches, as ``diffpose infer``
does, and rank 0 gathers, writes and scores them: the score does not depend on the number of
processes (the noise is seeded per clip). The trainer keeps ``best.pt`` by
the Total mAP (see :mod:`diffpose.training.trainer`).

The number picks a checkpoint; the number to report is the infer + evaluate stages' on the
checkpoint picked. On a GPU with AMP on, validation runs under the training's autocast dtype.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffpose.errors import ConfigError
from diffpose.training import distributed as dist_util


@dataclass(frozen=True)
class ValidationConfig:
    """Where and how to validate. ``every``: epochs between validations (0 = never). The sampler
    defaults (one DDIM step, K=1, flip test, eta 1) are the demo's main inference setting; the
    train stage keeps them, so that the ``infer`` params stay inference-only."""

    annotations: str
    images: str
    every: int
    steps: int = 1
    ensemble: int = 1
    flip_test: bool = True
    ddim_eta: float = 1.0
    ensemble_combine: str = "mean_heatmap"
    seed: int = 0
    batch_size: int = 32
    workers: int = 0

    @classmethod
    def from_infer(cls, infer: dict[str, Any] | None, *, annotations: str, images: str, every: int,
                   workers: int = 0) -> "ValidationConfig":
        """The sampler settings of a params ``infer`` section (keys it lacks keep the defaults)."""
        keys = ("steps", "ensemble", "flip_test", "ddim_eta", "ensemble_combine", "seed", "batch_size")
        picked = {k: (infer or {})[k] for k in keys if k in (infer or {})}
        return cls(annotations=annotations, images=images, every=every, workers=workers, **picked)

    def due(self, epoch: int, epochs: int) -> bool:
        """Validate after (1-based) ``epoch``: every ``every`` epochs and after the last one."""
        return self.every > 0 and (epoch % self.every == 0 or epoch == epochs)


class Validator:
    """Built once before training (a wrong folder fails in seconds, not after the first epoch)."""

    def __init__(self, cfg: ValidationConfig, model_cfg: Any, *, box_enlarge: float, frame_stride: int,
                 cache_mb: float, ctx: dist_util.DistContext) -> None:
        from diffpose.data.clips import ClipDataset, load_sequences, person_samples
        from diffpose.data.codec import HeatmapCodec

        if not Path(cfg.annotations).is_dir():
            raise ConfigError(f"--val-annotations {cfg.annotations}: expected a folder of val sequence files "
                              "(the evaluator pairs each with its predictions by file name)")
        self.cfg, self.ctx = cfg, ctx
        sequences = load_sequences(cfg.annotations)
        self.sequences = [s for s, _ in sequences]
        # every boxed GT person, as diffpose.inference.boxes.gt_samples (infer --boxes gt) takes them;
        # not imported from there, which would make training depend on the detectors' code
        self.samples = person_samples(sequences, labelled_only=False)
        self.dataset = ClipDataset(self.sequences, self.samples, cfg.images,
                                   input_size=tuple(model_cfg.input_size), num_frames=model_cfg.num_frames,
                                   frame_stride=frame_stride, box_enlarge=box_enlarge, cache_mb=cache_mb)
        self.codec = HeatmapCodec(input_size=tuple(model_cfg.input_size),
                                  heatmap_size=tuple(model_cfg.heatmap_size), sigma=model_cfg.sigma)

    def __call__(self, model: torch.nn.Module, *, autocast: torch.dtype | None = None,
                 progress: bool = False, desc: str = "validate") -> dict[str, Any] | None:
        """PoseTrack mAP (``Head`` ... ``Total``, ``per_joint``) on rank 0, None on the others."""
        from diffpose.inference.predictor import model_device, predict_dataset

        cfg = self.cfg
        device = model_device(model)
        precision = (torch.autocast(device_type=device.type, dtype=autocast) if autocast is not None
                     else contextlib.nullcontext())
        was_training = model.training
        try:
            with precision:
                preds = predict_dataset(model, self.dataset, self.codec, batch_size=cfg.batch_size, steps=cfg.steps,
                                        ensemble=cfg.ensemble, seed=cfg.seed, workers=cfg.workers,
                                        progress=progress and self.ctx.is_main, desc=desc, flip_test=cfg.flip_test,
                                        eta=cfg.ddim_eta, combine_rule=cfg.ensemble_combine, ctx=self.ctx)
        finally:
            model.train(was_training)
        if preds is None:  # not rank 0: rank 0 holds every share
            return None
        return self._score(preds.keypoints, preds.scores)

    def _score(self, keypoints: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
        from diffpose.evaluation.posetrack_map import evaluate_folders
        from diffpose.inference.writer import write_predictions

        with tempfile.TemporaryDirectory(prefix="diffpose-val-") as tmp:
            write_predictions(tmp, self.sequences, self.samples, keypoints, scores)
            return evaluate_folders(self.cfg.annotations, tmp)
