"""Train the CenterNet person detector on a split's labelled frames (PoseTrack18 annotations).

Targets follow CenterNet (Zhou et al. 2019): a Gaussian at each person's box centre at stride 4
(elliptical, sigma = 0.54 * box side / 6 as in TTFNet, Liu et al. 2020), focal loss on the heatmap
(alpha 2, beta 4), L1 on log size and centre offset at the centre cells plus a GIoU loss on the
box decoded there (demo val AP50 +.005 at score >= .2, +.027 at >= .05; regressing the size
around the centre as well, TTFNet-style, measured worse here: val AP50 .64 vs .73). People
PoseTrack leaves unlabelled (ignore polygons, annotated people without a labelled joint) are
masked out of the heatmap loss, so the detector is not taught to call them background.
Augmentation (val scenes are new backgrounds and people, so the detector must not memorise the
train scenes): random scale and shift, horizontal flip, per-channel colour gain,
brightness/contrast, blur and noise. Training stops at ``max_steps`` (deterministic for a seed on
one machine); ``seconds`` is a wall-clock cap that, when it bites, is logged as such.
Speed: the forward pass runs under bf16 autocast where the hardware has bf16 instructions
(``precision: auto``), tensors are channels_last, and the next batch is augmented in a thread
while the network steps: 123 against 265-278 ms per step (2.2-2.3x) for fp32, NCHW and 1
thread on this project's CPUs (``benchmarks/bench_detector_train.py``). A non-finite loss stops training
with one line.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from diffpose.detect.centernet import STRIDE, CenterNet, CenterNetConfig, save_checkpoint, to_tensor
from diffpose.detect.frames import read_split
from diffpose.errors import ConfigError, DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    max_steps: int = 1000
    seconds: float = 0.0  # wall-clock cap, 0 = none; reaching it is an error (results must not depend on speed)
    batch_size: int = 16
    lr: float = 3e-3
    input_scale: float = 1.0
    width: int = 16
    seed: int = 0
    threads: int = 2  # torch CPU threads (0 = torch default); on cores other work is using, 1 is far faster
    augment: bool = True
    head_conv: int = 32  # > 0: 3x3 conv of this many channels in front of each output head
    giou_weight: float = 1.0  # > 0: add a GIoU loss on the box decoded at each centre cell
    gaussian_alpha: float = 0.54  # centre Gaussian sigma = alpha * box side / 6 (TTFNet's 0.54)
    precision: str = "auto"  # auto | bf16 | fp32: autocast dtype of the forward pass (see resolve_precision)
    channels_last: bool = True  # NHWC tensors (tensor cores; no measurable effect in this loop on CPU)


PRECISIONS = ("auto", "bf16", "fp32")


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``, or None for plain fp32.

    ``auto`` picks bfloat16 where the hardware computes it natively (CPUs with AVX512-BF16 or
    AMX, which oneDNN uses; CUDA GPUs with bf16 support) and fp32 elsewhere, where emulated
    bfloat16 would be slower. Weights, optimiser state and the loss stay fp32 either way.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"detect.train.precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu" and _native_cpu_bf16():
        return torch.bfloat16
    return None


def _native_cpu_bf16() -> bool:
    """True on CPUs with bfloat16 instructions (AVX512-BF16 or AMX); torch's probes are private,
    so a missing probe counts as no."""
    probes = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return torch.backends.mkldnn.is_available() and any(probe is not None and probe() for probe in probes)


@dataclass
class Sample:
    """One labelled frame at network-input scale: image (H, W, 3) BGR uint8, boxes [K, 4]
    x, y, w, h of labelled people, ignore [M, 4] boxes and polygons of unlabelled people."""

    image: np.ndarray
    boxes: np.ndarray
    ignore_boxes: np.ndarray
    regions: list[np.ndarray]


def load_samples(annotations: str | os.PathLike, image_root: str | os.PathLike, *, input_scale: float,
                 progress: bool = True) -> list[Sample]:
    """Labelled frames with their people, resized by ``input_scale``; DataError names a frame
    that does not decode."""
    from diffpose.progress import track

    frames, truth = read_split(annotations, frames="labelled")
    samples = []
    for frame in track(frames, "load frames", "frame", enabled=progress):
        path = Path(image_root) / frame.file_name
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DataError(f"{path}: cannot decode training frame (missing or corrupt)")
        if input_scale != 1.0:
            image = cv2.resize(image, None, fx=input_scale, fy=input_scale, interpolation=cv2.INTER_AREA)
        t = truth[frame.image_id]
        samples.append(Sample(
            image=image,
            boxes=t.boxes[~t.ignore] * input_scale,
            ignore_boxes=t.boxes[t.ignore] * input_scale,
            regions=[r * input_scale for r in t.regions],
        ))
    if not samples:
        raise DataError(f"{annotations}: no labelled frames to train the detector on")
    return samples


def make_targets(sample: Sample, shape: tuple[int, int], flip: bool, *, alpha: float = 0.54) -> dict[str, np.ndarray]:
    """Targets on the (h, w) output grid: heat (h, w), weight (h, w) of the heatmap loss,
    size (2, h, w) as log cells, offset (2, h, w), centre mask (h, w)."""
    h, w = shape
    width_px = sample.image.shape[1]
    heat = np.zeros((h, w), np.float32)
    weight = np.ones((h, w), np.float32)
    size = np.zeros((2, h, w), np.float32)
    offset = np.zeros((2, h, w), np.float32)
    centre = np.zeros((h, w), np.float32)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)

    def flipped(box: np.ndarray) -> np.ndarray:
        return np.array([width_px - box[0] - box[2], box[1], box[2], box[3]]) if flip else box

    for poly in sample.regions:
        pts = poly.copy()
        if flip:
            pts[:, 0] = width_px - pts[:, 0]
        cv2.fillPoly(weight, [np.round((pts + 0.5) / STRIDE - 0.5).astype(np.int32)], 0.0)
    for box in sample.ignore_boxes:
        x, y, bw, bh = flipped(box) / STRIDE
        weight[max(int(y), 0):int(np.ceil(y + bh)), max(int(x), 0):int(np.ceil(x + bw))] = 0.0
    for box in sample.boxes:
        bx, by, bw, bh = flipped(box)
        cx, cy = (bx + bw / 2 + 0.5) / STRIDE - 0.5, (by + bh / 2 + 0.5) / STRIDE - 0.5
        ix, iy = int(np.floor(cx)), int(np.floor(cy))
        if not (0 <= ix < w and 0 <= iy < h) or bw <= 0 or bh <= 0:
            continue
        sx, sy = max(alpha * bw / STRIDE / 6, 0.6), max(alpha * bh / STRIDE / 6, 0.6)
        gauss = np.exp(-((xs - ix) ** 2) / (2 * sx * sx) - ((ys - iy) ** 2) / (2 * sy * sy))
        gauss[iy, ix] = 1.0
        np.maximum(heat, gauss, out=heat)
        size[:, iy, ix] = np.log([bw / STRIDE, bh / STRIDE])
        offset[:, iy, ix] = (cx - ix, cy - iy)
        centre[iy, ix] = 1.0
    weight = np.maximum(weight, (heat > 0.05).astype(np.float32))
    return {"heat": heat, "weight": weight, "size": size, "offset": offset, "centre": centre}


def focal_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, summed and divided by the number of centres.
    logits, target, weight: (B, h, w)."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    pos_loss = -torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = -torch.log(1 - p) * p**2 * (1 - target) ** 4 * (1 - pos) * weight
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1)


def _corners(size: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Box corners x0, y0, x1, y1 (N, 4) in cells relative to the centre cell, from log sizes and
    offsets (N, 2)."""
    wh = size.clamp(max=8.0).exp()
    return torch.cat([offset - wh / 2, offset + wh / 2], dim=1)


def giou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - generalised IoU (Rezatofighi et al. 2019) of corner boxes (N, 4) -> (N,)."""
    area_p = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    area_t = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    lo, hi = torch.maximum(pred[:, :2], target[:, :2]), torch.minimum(pred[:, 2:], target[:, 2:])
    inter = (hi - lo).clamp(min=0).prod(dim=1)
    union = area_p + area_t - inter
    hull = (torch.maximum(pred[:, 2:], target[:, 2:]) - torch.minimum(pred[:, :2], target[:, :2])).prod(dim=1)
    return 1 - inter / union.clamp(min=1e-6) + (hull - union) / hull.clamp(min=1e-6)


def detector_loss(out: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], *,
                  giou_weight: float = 0.0) -> dict[str, torch.Tensor]:
    centre = targets["centre"][:, None]
    n = centre.sum().clamp(min=1)
    parts = {
        "heat": focal_loss(out["heat"][:, 0], targets["heat"], targets["weight"]),
        "size": (F.l1_loss(out["size"], targets["size"], reduction="none") * centre).sum() / n,
        "offset": (F.l1_loss(out["offset"], targets["offset"], reduction="none") * centre).sum() / n,
    }
    parts["total"] = parts["heat"] + parts["size"] + parts["offset"]
    if giou_weight > 0:
        at = targets["centre"] > 0  # (B, h, w)
        def pick(t: torch.Tensor) -> torch.Tensor:  # (B, 2, h, w) -> (N, 2) at the centre cells
            return t.permute(0, 2, 3, 1)[at]
        if at.any():
            loss = giou_loss(_corners(pick(out["size"]), pick(out["offset"])),
                             _corners(pick(targets["size"]), pick(targets["offset"]))).mean()
        else:
            loss = out["size"].sum() * 0
        parts["giou"] = loss
        parts["total"] = parts["total"] + giou_weight * loss
    return parts


def _pad_to(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    return cv2.copyMakeBorder(image, 0, h - image.shape[0], 0, w - image.shape[1], cv2.BORDER_CONSTANT, value=0)


def augment(sample: Sample, rng: np.random.Generator, *, scale: tuple[float, float] = (0.7, 1.3),
            shift: float = 0.2) -> Sample:
    """Random scale about the centre, shift (share of the frame), flip, colour, blur and noise.
    The frame keeps its size; a person cut below half their box by the frame edge becomes an
    ignored person."""
    h, w = sample.image.shape[:2]
    s = float(np.exp(rng.uniform(np.log(scale[0]), np.log(scale[1]))))
    flip = rng.random() < 0.5
    a = -s if flip else s
    tx = w / 2 - a * w / 2 + rng.uniform(-shift, shift) * w
    ty = h / 2 - s * h / 2 + rng.uniform(-shift, shift) * h
    matrix = np.array([[a, 0.0, tx], [0.0, s, ty]], np.float32)
    image = cv2.warpAffine(sample.image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    def move(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not len(boxes):
            return boxes.reshape(0, 4), np.zeros(0, bool)
        x0 = a * boxes[:, 0] + tx
        x1 = a * (boxes[:, 0] + boxes[:, 2]) + tx
        y0, y1 = s * boxes[:, 1] + ty, s * (boxes[:, 1] + boxes[:, 3]) + ty
        lo_x, hi_x = np.minimum(x0, x1), np.maximum(x0, x1)
        cx0, cx1 = np.clip(lo_x, 0, w - 1), np.clip(hi_x, 0, w - 1)
        cy0, cy1 = np.clip(y0, 0, h - 1), np.clip(y1, 0, h - 1)
        full = (hi_x - lo_x) * (y1 - y0)
        kept = (cx1 - cx0) * (cy1 - cy0)
        moved = np.stack([cx0, cy0, cx1 - cx0, cy1 - cy0], axis=1)
        return moved, (kept >= 0.5 * np.maximum(full, 1e-6)) & (kept > 0)

    boxes, ok = move(sample.boxes)
    ignored, ok_ignored = move(sample.ignore_boxes)
    regions = [np.stack([a * r[:, 0] + tx, s * r[:, 1] + ty], axis=1) for r in sample.regions]
    out = image.astype(np.float32)
    out = out * rng.uniform(0.8, 1.2, 3)[None, None] * rng.uniform(0.7, 1.3) + rng.uniform(-30, 30)
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.5))
    if rng.random() < 0.3:
        out = out + rng.normal(0, rng.uniform(2, 8), out.shape)
    return Sample(
        image=np.clip(out, 0, 255).astype(np.uint8),
        boxes=boxes[ok],
        ignore_boxes=np.concatenate([ignored[ok_ignored], boxes[~ok & (boxes[:, 2] * boxes[:, 3] > 0)]]),
        regions=regions,
    )


def make_batch(samples: list[Sample], rng: np.random.Generator, device: torch.device, *,
               augmented: bool = True, alpha: float = 0.54) -> tuple[torch.Tensor, dict]:
    """Images (augmented, see ``augment``) padded to one size, and their targets."""
    if augmented:
        samples = [augment(s, rng) for s in samples]
    hmax = max(s.image.shape[0] for s in samples)
    wmax = max(s.image.shape[1] for s in samples)
    x = to_tensor([_pad_to(s.image, (hmax, wmax)) for s in samples], device)
    grid = (x.shape[-2] // STRIDE, x.shape[-1] // STRIDE)
    per = [make_targets(s, grid, flip=False, alpha=alpha) for s in samples]
    for t, s in zip(per, samples):  # padding is neither person nor background
        t["weight"][(s.image.shape[0] + STRIDE - 1) // STRIDE:, :] = 0
        t["weight"][:, (s.image.shape[1] + STRIDE - 1) // STRIDE:] = 0
    targets = {k: torch.from_numpy(np.stack([t[k] for t in per])).to(device) for k in per[0]}
    return x, targets


def train_detector(
    samples: list[Sample], config: TrainConfig, *, progress: bool = True, log_every: int = 25,
    on_log=None,
) -> tuple[CenterNet, dict]:
    """Train from scratch; returns the model (eval mode) and a history
    ``{"steps", "seconds", "loss_first", "loss_last", "stopped_by"}`` (losses averaged over
    ``log_every`` steps). ``on_log(step, metrics)`` is called every ``log_every`` steps. Torch's
    thread count is restored afterwards."""
    previous_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _train(samples, config, progress=progress, log_every=log_every, on_log=on_log)
    finally:
        torch.set_num_threads(previous_threads)


def _batches(samples: list[Sample], config: TrainConfig, rng: np.random.Generator,
             device: torch.device) -> Iterator[tuple[torch.Tensor, dict]]:
    """Endless training batches: epochs of shuffled frames, each batch augmented (all randomness
    from ``rng``, so the sequence depends on the seed only)."""
    order = rng.permutation(len(samples))
    cursor = 0
    while True:
        if cursor + config.batch_size > len(order):
            order, cursor = rng.permutation(len(samples)), 0
        chosen = [samples[i] for i in order[cursor : cursor + config.batch_size]]
        cursor += config.batch_size
        x, targets = make_batch(chosen, rng, device, augmented=config.augment, alpha=config.gaussian_alpha)
        if config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        yield x, targets


def _prefetched(batches: Iterator, pool: ThreadPoolExecutor) -> Iterator:
    """The same items, each made in ``pool`` while the previous one is being used (OpenCV and
    numpy release the GIL, so augmentation overlaps the network's step)."""
    pending = pool.submit(next, batches)
    while True:
        item = pending.result()
        pending = pool.submit(next, batches)
        yield item


def _train(samples: list[Sample], config: TrainConfig, *, progress: bool, log_every: int, on_log) -> tuple[CenterNet, dict]:
    from diffpose.progress import progress_bar

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = CenterNet(CenterNetConfig(width=config.width, head_conv=config.head_conv))
    device = torch.device("cpu")
    dtype = resolve_precision(config.precision, device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.lr, total_steps=config.max_steps,
                                                   pct_start=0.1)
    model.train()
    log.info("detector training: %d frames, %s, %s, %d torch threads", len(samples),
             "fp32" if dtype is None else f"{dtype} autocast", "channels_last" if config.channels_last else "NCHW",
             torch.get_num_threads())
    start = time.perf_counter()
    window: list[float] = []
    history: dict = {"loss_first": None, "loss_last": None, "stopped_by": "max_steps",
                     "precision": "fp32" if dtype is None else "bf16"}
    step = 0
    bar = progress_bar(config.max_steps, "train detector", "step", enabled=progress)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="detector-batches") as pool:
        batches = _prefetched(_batches(samples, config, rng, device), pool)
        while step < config.max_steps:
            if config.seconds and time.perf_counter() - start > config.seconds:
                # a cap that bites would make the trained detector depend on the machine's speed
                raise DataError(f"detector training reached detect.train.seconds = {config.seconds:g} s at step "
                                f"{step} of {config.max_steps}; raise it (0 = no cap) or lower max_steps")
            x, targets = next(batches)
            with torch.autocast(device_type=device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                out = model(x)
            out = {k: v.float() for k, v in out.items()}
            losses = detector_loss(out, targets, giou_weight=config.giou_weight)
            if not torch.isfinite(losses["total"]):
                raise DataError(f"detector training: loss is {losses['total'].item()} at step {step + 1} "
                                f"(parts: {', '.join(f'{k} {v.item():.4g}' for k, v in losses.items())}); "
                                "lower detect.train.lr or use precision fp32")
            optimiser.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimiser.step()
            schedule.step()
            step += 1
            window.append(losses["total"].item())
            bar.update(1)
            if step % log_every == 0 or step == config.max_steps:
                mean = float(np.mean(window))
                window = []
                history["loss_first"] = mean if history["loss_first"] is None else history["loss_first"]
                history["loss_last"] = mean
                bar.set_postfix(loss=f"{mean:.3f}")
                if on_log:
                    on_log(step, {"loss": mean, "lr": schedule.get_last_lr()[0]})
    bar.close()
    history.update(steps=step, seconds=time.perf_counter() - start)
    return model.to(memory_format=torch.contiguous_format).eval(), history


def train_and_save(
    annotations: str | os.PathLike, image_root: str | os.PathLike, out: str | os.PathLike, config: TrainConfig, *,
    progress: bool = True, on_log=None,
) -> dict:
    samples = load_samples(annotations, image_root, input_scale=config.input_scale, progress=progress)
    model, history = train_detector(samples, config, progress=progress, on_log=on_log)
    history["frames"] = len(samples)
    history["people"] = int(sum(len(s.boxes) for s in samples))
    save_checkpoint(out, model, input_scale=config.input_scale,
                    extra={"train": asdict(config), "history": history, "annotations": str(annotations)})
    return history
