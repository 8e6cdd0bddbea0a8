"""The training loop: resumable after a kill, exact on the CPU, data-parallel under torchrun.

Exact resume: the model is initialised from ``seed``; at the start of every epoch the torch RNG is
re-seeded from (seed, epoch, rank) and the data order and augmentation depend only on (seed,
epoch) (see ``diffpose.data.clips``); the learning rate is a pure function of the global step.
So the state after epoch e is fully described by the weights and the optimizer state, which
``last.pt`` stores (atomically) after every epoch. A rerun of the same command with the same
params continues after the last finished epoch and ends with the weights an uninterrupted run
gives (bit for bit on the CPU). A checkpoint written with other settings is not resumed from: its
fingerprint (model, train and data params, data version) differs and training starts over.

Under torchrun, rank 0 alone decides whether to resume and sends its state to the other processes
(:mod:`diffpose.training.resume`); BatchNorm layers become SyncBatchNorm on GPUs.

Outputs in ``out_dir``: ``last.pt`` (every epoch; the one before is kept as ``last.prev.pt``),
``model.pt`` (final), ``best.pt`` (with validation: the weights of the best Total mAP so far),
``metrics.json``, ``history.json``, ``mlflow_run_id.txt``. Only rank 0 writes.

The optimizer recipe (layer-wise learning-rate decay, weight-decay exemptions) and the AMP dtype
are in :mod:`diffpose.training.optim`; validation during training in
:mod:`diffpose.training.validation`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from diffpose.data import clips
from diffpose.provenance import data_version
from diffpose.errors import ConfigError, DiffposeError
from diffpose.io import write_json
from diffpose.progress import progress_bar
from diffpose.training import distributed as dist_util
from diffpose.training.optim import AMP_DTYPES, autocast_dtype, make_optimizer, make_scaler, optimizer_step, set_lr
from diffpose.training.resume import LAST, PREVIOUS, ResumePoint, resume
from diffpose.training.schedule import SCHEDULES, lr_at
from diffpose.training.validation import ValidationConfig, Validator

log = logging.getLogger(__name__)

OPTIMIZERS = ("adamw", "adam")


class TrainingDiverged(DiffposeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass(frozen=True)
class TrainConfig:
    """params.yaml ``train``."""

    epochs: int = 10
    batch_size: int = 32  # global: split evenly over the processes
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0
    milestones: tuple[int, ...] = ()  # epochs, for schedule "step"
    gamma: float = 0.1
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    amp: bool = True  # mixed precision, CUDA only (ignored on the CPU)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch CPU threads per process; 0 = torch's default
    channels_last: bool = True  # NHWC conv weights/activations (CPU demo: ~1.1-1.15x clips/s; tensor cores on GPUs)
    amp_dtype: str = "auto"  # auto (bf16 where the GPU has it natively, else fp16 + GradScaler) | bf16 | fp16
    layer_decay: float = 1.0  # layer-wise lr decay over the ViT backbone's blocks; 1 = off (one lr)
    no_decay_norm_bias: bool = False  # no weight decay on norms, biases and position embeddings
    val_every: int = 0  # validate every N epochs and after the last (needs val annotations); 0 = off

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        values = dict(values)
        if "milestones" in values:
            values["milestones"] = tuple(values["milestones"])
        cfg = cls(**values)
        if cfg.optimizer not in OPTIMIZERS:
            raise ConfigError(f"train.optimizer: expected one of {OPTIMIZERS}, got {cfg.optimizer!r}")
        if cfg.schedule not in SCHEDULES:
            raise ConfigError(f"train.schedule: expected one of {SCHEDULES}, got {cfg.schedule!r}")
        if cfg.amp_dtype not in AMP_DTYPES:
            raise ConfigError(f"train.amp_dtype: expected one of {AMP_DTYPES}, got {cfg.amp_dtype!r}")
        if not 0.0 < cfg.layer_decay <= 1.0:
            raise ConfigError(f"train.layer_decay: expected a number in (0, 1], got {cfg.layer_decay!r}")
        if cfg.val_every < 0:
            raise ConfigError(f"train.val_every: expected 0 (off) or a number of epochs, got {cfg.val_every!r}")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d


# Settings that change where the computation runs but not its result, and validation (it reads the
# weights, never changes them): not in the fingerprint.
_NOT_FINGERPRINTED = {"device", "threads", "workers", "cache_mb", "channels_last", "val_every"}


# Source that determines the trained weights, relative to the package: an edit here (the same
# code DVC's train stage depends on) makes an existing last.pt stale, so training starts over
# instead of "resuming" a run made by other code.
# What training reads: the model, the noise schedule, the loop, and the data path from annotation
# files to target heatmaps (reader, keypoint table, clips, transforms, codec). Not inference-only
# code (the ensemble rules, the sampler settings): editing it must not restart a training.
_TRAINING_SOURCES = ("models", "diffusion/__init__.py", "diffusion/gaussian.py", "diffusion/schedule.py", "training",
                     "data/clips.py", "data/transforms.py", "data/codec.py", "data/keypoints.py",
                     "data/posetrack.py")


def training_source_files() -> list[Path]:
    """The installed diffpose package's source files that training reads (_TRAINING_SOURCES)."""
    root = Path(__file__).resolve().parents[1]
    files: list[Path] = []
    for rel in _TRAINING_SOURCES:
        path = root / rel
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


def code_version() -> str:
    """sha256 over the training-relevant source files of the installed diffpose package."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for file in training_source_files():
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        digest.update(file.read_bytes())
    return digest.hexdigest()


def fingerprint(model_cfg: dict, train_cfg: TrainConfig, data_cfg: clips.DataConfig, data_version: str) -> str:
    def strip(d: dict) -> dict:
        return {k: v for k, v in d.items() if k not in _NOT_FINGERPRINTED}

    blob = json.dumps(
        {"model": model_cfg, "train": strip(train_cfg.to_dict()), "data": strip(data_cfg.to_dict()),
         "data_version": data_version, "code_version": code_version()},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def seed_everything(seed: int, epoch: int = -1, rank: int = 0) -> None:
    """Seed torch and numpy from (seed, epoch, rank) (epoch -1: model initialisation)."""
    state = np.random.SeedSequence([seed, epoch + 1, rank]).generate_state(2)
    torch.manual_seed(int(state[0]))
    np.random.seed(int(state[1]))


class _LossModule(nn.Module):
    """Routes ``forward`` to ``model.loss`` so DistributedDataParallel syncs its gradients."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return self.model.loss(frames, target, weight)


def build_training_data(model_cfg: Any, data_cfg: clips.DataConfig, annotations: str, image_root: str,
                        seed: int) -> tuple[clips.ClipDataset, str]:
    """The training clip dataset (GT boxes, augmentation, codec targets) and its data version."""
    from diffpose.data.codec import HeatmapCodec

    seqs = clips.load_sequences(annotations)
    samples = clips.training_samples(seqs)
    if not samples:
        raise DiffposeError(f"{annotations}: no annotated person with labelled keypoints to train on")
    codec = HeatmapCodec(input_size=tuple(model_cfg.input_size), heatmap_size=tuple(model_cfg.heatmap_size),
                         sigma=model_cfg.sigma)
    dataset = clips.ClipDataset(
        [s for s, _ in seqs], samples, image_root,
        input_size=tuple(model_cfg.input_size), num_frames=model_cfg.num_frames,
        frame_stride=data_cfg.frame_stride, codec=codec, train=True, augmentation=data_cfg.augmentation,
        box_enlarge=data_cfg.box_enlarge, seed=seed, cache_mb=data_cfg.cache_mb,
    )
    return dataset, data_version([s.source for s, _ in seqs])


def _validator(train_cfg: TrainConfig, model_cfg: Any, data_cfg: clips.DataConfig, ctx: dist_util.DistContext, *,
               annotations: str | None, images: str, settings: dict[str, Any] | None) -> Validator | None:
    """The validator of ``train.val_every`` on ``annotations`` (None when validation is off)."""
    if train_cfg.val_every == 0:
        return None  # val annotations given with validation off: a pipeline may always pass them
    if not annotations:
        raise ConfigError(f"train.val_every is {train_cfg.val_every} but no val annotations were given "
                          "(diffpose train --val-annotations DIR)")
    cfg = ValidationConfig.from_infer(settings, annotations=annotations, images=images, every=train_cfg.val_every,
                                      workers=data_cfg.workers)
    return Validator(cfg, model_cfg, box_enlarge=data_cfg.box_enlarge, frame_stride=data_cfg.frame_stride,
                     cache_mb=data_cfg.cache_mb, ctx=ctx)


def pretrained_backbone_warning(model_cfg: Any, name: str) -> str | None:
    """One line when a ViT backbone starts from random weights (the paper's starts from ViTPose)."""
    if getattr(model_cfg, "backbone", None) != "vit" or model_cfg.vit_pretrained:
        return None
    return (f"WARNING: '{name}' trains its ViT-{model_cfg.vit_size} backbone from random weights "
            f"(vit_pretrained is empty): the paper's starts from ViTPose-{model_cfg.vit_size} weights, without "
            "them expect far lower mAP (docs/paper-recipe.md)")


def _prepare_model(build: Callable[[Any], nn.Module], model_cfg: Any, train_cfg: TrainConfig,
                   ctx: dist_util.DistContext) -> nn.Module:
    """The model of ``model_cfg`` on this process's device, initialised from ``train_cfg.seed``."""
    seed_everything(train_cfg.seed)
    model = build(model_cfg).to(ctx.device)
    if ctx.distributed and ctx.device.type == "cuda":
        # per-GPU batches are small at paper scale (8 GPUs share the global batch): BN statistics
        # over the global batch; gloo (CPU) has no SyncBatchNorm, and the CPU demo runs one process
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if train_cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)  # 4-D conv weights only
    return model


def train(
    *,
    model_cfg: Any,
    train_cfg: TrainConfig,
    data_cfg: clips.DataConfig,
    annotations: str,
    image_root: str,
    out_dir: str,
    name: str = "model",
    params: dict[str, Any] | None = None,
    progress: bool = True,
    build: Callable[[Any], nn.Module] | None = None,
    val_annotations: str | None = None,
    val_images: str | None = None,
    val_settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one model and return its metrics (see the module docstring for the files written).

    ``model_cfg`` is a ``ModelConfig``; ``build`` (default ``diffpose.models.factory.build_model``)
    makes the model from it. ``params`` are recorded in MLflow and in the checkpoints. With
    ``train_cfg.val_every`` > 0, ``val_annotations`` (a folder of val sequence files, frames under
    ``val_images``, default ``image_root``) is scored every that many epochs with the sampler
    settings ``val_settings`` (a params ``infer`` section; default one step, K=1, flip test).
    """
    from diffpose.models.checkpoint import save_checkpoint
    from diffpose.tracking import stage_run

    if build is None:
        from diffpose.models.factory import build_model as build
    ctx = dist_util.setup(train_cfg.device)
    try:
        if train_cfg.threads > 0:
            torch.set_num_threads(train_cfg.threads)
        out = Path(out_dir)
        if train_cfg.batch_size % ctx.world_size:
            raise ConfigError(
                f"train.batch_size {train_cfg.batch_size} must be divisible by the {ctx.world_size} processes")
        dataset, version = build_training_data(model_cfg, data_cfg, annotations, image_root, train_cfg.seed)
        fp = fingerprint(model_cfg.to_dict(), train_cfg, data_cfg, version)
        per_rank_batch = train_cfg.batch_size // ctx.world_size
        steps_per_epoch = clips.batches_per_epoch(len(dataset), per_rank_batch, ctx.world_size, drop_last=True)
        if steps_per_epoch == 0:
            raise ConfigError(
                f"train.batch_size {train_cfg.batch_size} exceeds the {len(dataset)} training clips in {annotations}")
        loader, sampler = clips.make_loader(
            dataset, batch_size=per_rank_batch, shuffle=True, seed=train_cfg.seed, workers=data_cfg.workers,
            rank=ctx.rank, world_size=ctx.world_size, drop_last=True, device=ctx.device)
        validator = _validator(train_cfg, model_cfg, data_cfg, ctx, annotations=val_annotations,
                               images=val_images or image_root, settings=val_settings)

        warning = pretrained_backbone_warning(model_cfg, name)
        if warning and ctx.is_main:
            print(f"diffpose train: {warning}", file=sys.stderr)
        model = _prepare_model(build, model_cfg, train_cfg, ctx)
        optimizer = make_optimizer(model, optimizer=train_cfg.optimizer, lr=train_cfg.lr,
                                   weight_decay=train_cfg.weight_decay, layer_decay=train_cfg.layer_decay,
                                   no_decay_norm_bias=train_cfg.no_decay_norm_bias)
        amp = autocast_dtype(train_cfg.amp, train_cfg.amp_dtype, ctx.device)
        scaler = make_scaler(amp)
        state = resume(ctx, out, fp, model, optimizer, scaler)
        if validator is not None and not state.resumed and ctx.is_main and (out / "best.pt").exists():
            (out / "best.pt").unlink()  # an earlier run's: this run validates and writes its own
        dist_util.barrier(ctx)
        wrapped: nn.Module = _LossModule(model)
        if ctx.distributed:
            wrapped = nn.parallel.DistributedDataParallel(
                wrapped, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)

        record = dict(params or {})
        record.setdefault("model_config", model_cfg.to_dict())
        record.setdefault("train", train_cfg.to_dict())
        record.setdefault("data", data_cfg.to_dict())
        tags = {"model": name, "data_version": version, "world_size": str(ctx.world_size),
                "resumed_from_epoch": str(state.start_epoch) if state.resumed else "none",
                "precision": str(amp).replace("torch.", "") if amp is not None else "fp32"}
        if getattr(model_cfg, "backbone", None) == "vit":
            tags["vit_pretrained"] = model_cfg.vit_pretrained or "none (random init)"
        if warning:
            tags["warning"] = warning
        total_steps = train_cfg.epochs * steps_per_epoch
        schedule = dict(
            base_lr=train_cfg.lr, total_steps=total_steps,
            warmup_steps=int(round(train_cfg.warmup_epochs * steps_per_epoch)), kind=train_cfg.schedule,
            min_lr_ratio=train_cfg.min_lr_ratio, milestones=tuple(m * steps_per_epoch for m in train_cfg.milestones),
            gamma=train_cfg.gamma)
        with stage_run("train", record, tags=tags, enabled=ctx.is_main) as tracker:
            if ctx.is_main:
                out.mkdir(parents=True, exist_ok=True)
                if tracker.run_id:
                    (out / "mlflow_run_id.txt").write_text(tracker.run_id + "\n")
                if state.resumed:
                    print(f"diffpose train: resuming {name} from {state.source} after epoch {state.start_epoch}",
                          file=sys.stderr)
            started = time.perf_counter()
            clips_seen = 0
            last_val: dict[str, Any] | None = None
            # one bar (or timed line with an ETA) over every remaining step of the run
            bar = progress_bar(total_steps, f"train {name}", "batch", enabled=progress and ctx.is_main,
                               initial=state.start_epoch * steps_per_epoch)
            for epoch in range(state.start_epoch, train_cfg.epochs):
                metrics = _run_epoch(
                    epoch=epoch, ctx=ctx, wrapped=wrapped, model=model, loader=loader, sampler=sampler,
                    optimizer=optimizer, scaler=scaler, amp=amp, cfg=train_cfg, schedule=schedule,
                    steps_per_epoch=steps_per_epoch, name=name, bar=bar, last=out / LAST)
                clips_seen += metrics["clips"]
                entry: dict[str, float] = {"epoch": epoch + 1, **metrics}
                state.history.append(entry)
                val = None
                if validator is not None and validator.cfg.due(epoch + 1, train_cfg.epochs):
                    dist_util.broadcast_buffers(ctx, model)  # every process validates rank 0's weights
                    val = validator(model, autocast=amp, progress=progress,
                                    desc=f"validate {name} epoch {epoch + 1}")
                if ctx.is_main:
                    common = {"fingerprint": fp, "model_name": name, "data_version": version}
                    if val is not None:
                        last_val = val
                        _keep_best(val, epoch + 1, state, entry, out, model, record, tracker,
                                   {**common, "epoch": epoch, "history": state.history})
                    save_checkpoint(out / LAST, model, params=record, previous=out / PREVIOUS, extra={
                        **common, "epoch": epoch, "global_step": (epoch + 1) * steps_per_epoch,
                        "optimizer": optimizer.state_dict(),
                        "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                        "history": state.history, "best": state.best})
                    tracker.log_metrics({k: v for k, v in metrics.items() if k != "clips"}, step=epoch + 1)
                    bar.write(f"diffpose train: {name} epoch {epoch + 1}/{train_cfg.epochs} "  # loss, lr, speed
                              + " ".join(f"{k} {v:.4g}" for k, v in entry.items() if isinstance(v, float)))
                dist_util.barrier(ctx)
            bar.close()
            seconds = time.perf_counter() - started
            in_sync = _ranks_in_sync(ctx, model)
            if not in_sync:
                raise DiffposeError(f"training of '{name}': parameters differ between processes after training")
            result = {
                "model": name,
                "epochs": train_cfg.epochs,
                "resumed_after_epoch": state.start_epoch if state.resumed else 0,
                "final_loss": state.history[-1]["loss"] if state.history else float("nan"),
                "train_seconds_this_run": round(seconds, 3),
                "clips_per_second": round(clips_seen / seconds, 2) if seconds > 0 and clips_seen else 0.0,
                "training_clips": len(dataset),
                "world_size": ctx.world_size,
                "ranks_in_sync": in_sync,
                "data_version": version,
                "mlflow_run_id": tracker.run_id,
            }
            if validator is not None:
                result.update({"val_annotations": str(val_annotations),
                               "val_mAP": last_val["Total"] if last_val else float("nan"),
                               "best_epoch": state.best["epoch"] if state.best else None,
                               "best_val_mAP": state.best["Total"] if state.best else float("nan")})
            if ctx.is_main:
                save_checkpoint(out / "model.pt", model, params=record, extra={
                    "epoch": train_cfg.epochs - 1, "fingerprint": fp, "history": state.history,
                    "model_name": name, "data_version": version})
                write_json(out / "history.json", state.history, indent=1)  # per epoch: loss, lr, speed (plots)
                write_json(out / "metrics.json", {k: v for k, v in result.items()
                                                  if not (isinstance(v, float) and not math.isfinite(v))}, indent=2)
                tracker.log_metrics({"final_loss": result["final_loss"],
                                     "clips_per_second": result["clips_per_second"]})
                if state.best:
                    tracker.log_metrics({"best_val_mAP": state.best["Total"]})
                    tracker.set_tags({"best_epoch": str(state.best["epoch"])})
                tracker.log_artifact(out / "model.pt")
            dist_util.barrier(ctx)
        return result
    finally:
        dist_util.teardown(ctx)


def _keep_best(val: dict[str, Any], epoch: int, state: ResumePoint, entry: dict[str, float], out: Path,
               model: nn.Module, record: dict[str, Any], tracker: Any, extra: dict[str, Any]) -> None:
    """Log a validation (rank 0) and write ``best.pt`` (atomically) when its Total mAP is the best
    so far. ``epoch`` is 1-based; a NaN Total (no GT joint) is logged and never best."""
    from diffpose.evaluation.posetrack_map import TABLE_COLUMNS
    from diffpose.models.checkpoint import save_checkpoint

    table = {k: float(val[k]) for k in TABLE_COLUMNS}
    tracker.log_metrics({f"val_{k}" if k != "Total" else "val_mAP": v for k, v in table.items()}, step=epoch)
    total = table["Total"]
    if not math.isfinite(total):
        return
    entry["val_mAP"] = total
    if state.best is None or total > state.best["Total"]:
        state.best = {"epoch": epoch, "Total": total}
        save_checkpoint(out / "best.pt", model, params=record, extra={**extra, "val": table, "best": state.best})


def _ranks_in_sync(ctx: dist_util.DistContext, model: nn.Module) -> bool:
    """True when every process holds bit-identical parameters and buffers (sha256 compared).

    BatchNorm statistics are updated locally after DDP's last buffer broadcast, so rank 0's
    buffers (the ones saved) are broadcast first."""
    if not ctx.distributed:
        return True
    dist_util.broadcast_buffers(ctx, model)
    digest = hashlib.sha256()
    for tensor in (*model.parameters(), *model.buffers()):
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    mine = torch.tensor([int.from_bytes(digest.digest()[:7], "little")], dtype=torch.int64, device=ctx.device)
    gathered = [torch.zeros_like(mine) for _ in range(ctx.world_size)]
    torch.distributed.all_gather(gathered, mine)
    return all(bool((g == gathered[0]).all()) for g in gathered)


def _run_epoch(*, epoch: int, ctx: dist_util.DistContext, wrapped: nn.Module, model: nn.Module, loader, sampler,
               optimizer: torch.optim.Optimizer, scaler: Any, amp: torch.dtype | None, cfg: TrainConfig,
               schedule: dict, steps_per_epoch: int, name: str, bar: Any, last: Path) -> dict[str, float]:
    seed_everything(cfg.seed, epoch, ctx.rank)
    sampler.set_epoch(epoch)
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64)
    count = 0
    lr = cfg.lr
    started = time.perf_counter()
    for step, batch in enumerate(loader):
        global_step = epoch * steps_per_epoch + step
        lr = lr_at(global_step, **schedule)
        set_lr(optimizer, lr)  # times each group's lr_scale (layer-wise decay)
        frames = batch["frames"].to(ctx.device, non_blocking=True).float().div_(255.0)
        target = batch["target"].to(ctx.device, non_blocking=True)
        weight = batch["target_weight"].to(ctx.device, non_blocking=True)
        with torch.autocast(device_type=ctx.device.type, dtype=amp or torch.float16, enabled=amp is not None):
            loss = wrapped(frames, target, weight)
        value = loss.detach().float()
        bad = dist_util.all_reduce_sum(ctx, (~torch.isfinite(value)).float().reshape(1).to(ctx.device))
        if bad.item() > 0:
            have = f"the last good checkpoint {last} is kept" if last.exists() else "no checkpoint was written"
            raise TrainingDiverged(
                f"loss became {value.item()} at epoch {epoch + 1} step {step + 1} (lr {lr:.3g}); "
                f"training of '{name}' stopped, {have}")
        optimizer_step(loss, model, optimizer, scaler, cfg.grad_clip)
        n = frames.shape[0]
        loss_sum += value.double().cpu() * n
        count += n
        elapsed = time.perf_counter() - started
        bar.update(1)
        bar.set_postfix(epoch=f"{epoch + 1}/{cfg.epochs}", loss=f"{value.item():.4g}",
                        clips_s=f"{count * ctx.world_size / max(elapsed, 1e-9):.1f}", lr=f"{lr:.2g}", refresh=False)
    totals = dist_util.all_reduce_sum(ctx, torch.tensor([float(loss_sum), float(count)], device=ctx.device))
    seconds = time.perf_counter() - started
    clips_total = float(totals[1])
    return {
        "loss": float(totals[0] / max(clips_total, 1.0)),
        "lr": float(lr),
        "epoch_seconds": round(seconds, 3),
        "clips_per_second": round(clips_total / seconds, 2) if seconds > 0 else 0.0,
        "clips": clips_total,
    }
