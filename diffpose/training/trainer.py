"""The training loop: resumable after a kill, exact on the CPU, data-parallel under torchrun.

Exact resume: the model is initialised from ``seed``; at the start of every epoch the torch RNG is
re-seeded from (seed, epoch, rank) and the data order and augmentation depend only on (seed,
epoch) (see ``diffpose.data.clips``); the learning rate is a pure function of the global step.
So the state after epoch e is fully described by the weights and the optimizer state, which
``last.pt`` stores (atomically) after every epoch. A rerun of the same command with the same
params continues after the last finished epoch and ends with the weights an uninterrupted run
gives (bit for bit on the CPU). A checkpoint written with other settings is not resumed from: its
fingerprint (model, train and data params, data version) differs and training starts over.

Outputs in ``out_dir``: ``last.pt`` (every epoch), ``model.pt`` (final), ``metrics.json``,
``mlflow_run_id.txt``. Only rank 0 writes.
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
from diffpose.training.schedule import SCHEDULES, lr_at

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
        return cfg

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d


# Settings that change where the computation runs but not its result: not in the fingerprint.
_NOT_FINGERPRINTED = {"device", "threads", "workers", "cache_mb", "channels_last"}


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


@dataclass
class _State:
    start_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    resumed: bool = False


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


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def _try_resume(last: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: Any,
                fp: str, device: torch.device) -> _State:
    from diffpose.models.checkpoint import load_checkpoint

    if not last.exists():
        return _State()
    try:
        loaded, payload = load_checkpoint(last, map_location=device)
    except Exception as err:  # noqa: BLE001 - an unreadable resume point is not fatal: start over
        print(f"diffpose train: warning: cannot resume from {last} ({type(err).__name__}: {err}); starting over",
              file=sys.stderr)
        return _State()
    extra = payload.get("extra") or {}
    if extra.get("fingerprint") != fp:
        print(f"diffpose train: {last} was written with other params, data or code; starting over", file=sys.stderr)
        return _State()
    model.load_state_dict(loaded.state_dict())
    optimizer.load_state_dict(extra["optimizer"])
    if extra.get("scaler"):
        scaler.load_state_dict(extra["scaler"])
    history = [dict(h) for h in extra.get("history", [])]
    return _State(start_epoch=int(extra["epoch"]) + 1, history=history, resumed=True)


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
) -> dict[str, Any]:
    """Train one model and return its metrics (see the module docstring for the files written).

    ``model_cfg`` is a ``ModelConfig``; ``build`` (default ``diffpose.models.factory.build_model``)
    makes the model from it. ``params`` are recorded in MLflow and in the checkpoints.
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

        seed_everything(train_cfg.seed)
        model = build(model_cfg).to(ctx.device)
        if train_cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)  # 4-D conv weights only
        optimizer = _make_optimizer(model, train_cfg)
        use_amp = train_cfg.amp and ctx.device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        state = _try_resume(out / "last.pt", model, optimizer, scaler, fp, ctx.device)
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
                "resumed_from_epoch": str(state.start_epoch) if state.resumed else "none"}
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
                    print(f"diffpose train: resuming {name} from {out / 'last.pt'} after epoch {state.start_epoch}",
                          file=sys.stderr)
            started = time.perf_counter()
            clips_seen = 0
            # one bar (or timed line with an ETA) over every remaining step of the run
            bar = progress_bar(total_steps, f"train {name}", "batch", enabled=progress and ctx.is_main,
                               initial=state.start_epoch * steps_per_epoch)
            for epoch in range(state.start_epoch, train_cfg.epochs):
                metrics = _run_epoch(
                    epoch=epoch, ctx=ctx, wrapped=wrapped, model=model, loader=loader, sampler=sampler,
                    optimizer=optimizer, scaler=scaler, use_amp=use_amp, cfg=train_cfg, schedule=schedule,
                    steps_per_epoch=steps_per_epoch, name=name, bar=bar, last=out / "last.pt")
                clips_seen += metrics["clips"]
                state.history.append({"epoch": epoch + 1, **metrics})
                if ctx.is_main:
                    save_checkpoint(out / "last.pt", model, params=record, extra={
                        "epoch": epoch, "global_step": (epoch + 1) * steps_per_epoch,
                        "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if use_amp else {},
                        "fingerprint": fp, "history": state.history, "model_name": name,
                        "data_version": version})
                    tracker.log_metrics({k: v for k, v in metrics.items() if k != "clips"}, step=epoch + 1)
                    bar.write(f"diffpose train: {name} epoch {epoch + 1}/{train_cfg.epochs} "  # loss, lr, speed
                              + " ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
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
            if ctx.is_main:
                save_checkpoint(out / "model.pt", model, params=record, extra={
                    "epoch": train_cfg.epochs - 1, "fingerprint": fp, "history": state.history,
                    "model_name": name, "data_version": version})
                write_json(out / "history.json", state.history, indent=1)  # per epoch: loss, lr, speed (plots)
                write_json(out / "metrics.json", {k: v for k, v in result.items()
                                                  if not (isinstance(v, float) and not math.isfinite(v))}, indent=2)
                tracker.log_metrics({"final_loss": result["final_loss"],
                                     "clips_per_second": result["clips_per_second"]})
                tracker.log_artifact(out / "model.pt")
            dist_util.barrier(ctx)
        return result
    finally:
        dist_util.teardown(ctx)


def _ranks_in_sync(ctx: dist_util.DistContext, model: nn.Module) -> bool:
    """True when every process holds bit-identical parameters and buffers (sha256 compared).

    BatchNorm statistics are updated locally after DDP's last buffer broadcast, so rank 0's
    buffers (the ones saved) are broadcast first."""
    if not ctx.distributed:
        return True
    for buf in model.buffers():
        torch.distributed.broadcast(buf, src=0)
    digest = hashlib.sha256()
    for tensor in (*model.parameters(), *model.buffers()):
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    mine = torch.tensor([int.from_bytes(digest.digest()[:7], "little")], dtype=torch.int64, device=ctx.device)
    gathered = [torch.zeros_like(mine) for _ in range(ctx.world_size)]
    torch.distributed.all_gather(gathered, mine)
    return all(bool((g == gathered[0]).all()) for g in gathered)


def _run_epoch(*, epoch: int, ctx: dist_util.DistContext, wrapped: nn.Module, model: nn.Module, loader, sampler,
               optimizer: torch.optim.Optimizer, scaler: Any, use_amp: bool, cfg: TrainConfig,
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
        for group in optimizer.param_groups:
            group["lr"] = lr
        frames = batch["frames"].to(ctx.device, non_blocking=True).float().div_(255.0)
        target = batch["target"].to(ctx.device, non_blocking=True)
        weight = batch["target_weight"].to(ctx.device, non_blocking=True)
        with torch.autocast(device_type=ctx.device.type, dtype=torch.float16, enabled=use_amp):
            loss = wrapped(frames, target, weight)
        value = loss.detach().float()
        bad = dist_util.all_reduce_sum(ctx, (~torch.isfinite(value)).float().reshape(1).to(ctx.device))
        if bad.item() > 0:
            have = f"the last good checkpoint {last} is kept" if last.exists() else "no checkpoint was written"
            raise TrainingDiverged(
                f"loss became {value.item()} at epoch {epoch + 1} step {step + 1} (lr {lr:.3g}); "
                f"training of '{name}' stopped, {have}")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
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
