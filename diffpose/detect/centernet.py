"""A small CenterNet-style person detector (Zhou et al. 2019, "Objects as Points") in plain torch.

The network predicts, at stride 4 of its input:
- a centre heatmap (1 channel, logits): a Gaussian peak at each person's box centre;
- the box size as log(w / 4), log(h / 4) (2 channels, in output cells);
- the sub-cell offset of the centre (2 channels, in [0, 1) cells).
Decoding: sigmoid, 3x3 max-pool peak picking, top-K peaks, boxes from size and offset, then a
light box NMS. Frames are resized by ``input_scale`` before the network (and boxes mapped back),
so one model serves any frame size with people of the trained pixel height.

Used as the ``synthetic`` backend (trained on the synthetic benchmark by the train_detector stage).
Checkpoints are self-describing: ``{"format", "model_args", "input_scale", "state_dict", ...}``,
loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from diffpose.detect.base import as_boxes, nms
from diffpose.errors import DataError

FORMAT = "diffpose-centernet/1"
STRIDE = 4  # output cell size in input pixels
ALIGN = 16  # inputs are padded to a multiple of the network's total stride
MEAN = (0.45, 0.45, 0.45)
STD = (0.25, 0.25, 0.25)


@dataclass(frozen=True)
class CenterNetConfig:
    width: int = 16  # channels at stride 2; x2 at stride 4 and in the heads, x4 at strides 8 and 16
    head_conv: int = 0  # > 0: each head is 3x3 conv (this many channels) + ReLU + 1x1, as in CenterNet; 0: 1x1


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


def _head(cin: int, hidden: int, cout: int) -> nn.Module:
    if not hidden:
        return nn.Conv2d(cin, cout, 1)
    return nn.Sequential(nn.Conv2d(cin, hidden, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(hidden, cout, 1))


def _last(head: nn.Module) -> nn.Conv2d:
    return head[-1] if isinstance(head, nn.Sequential) else head  # type: ignore[return-value]


class CenterNet(nn.Module):
    """(B, 3, H, W) normalised image, H and W multiples of 16 -> dict of (B, C, H/4, W/4):
    ``heat`` (C=1 logits), ``size`` (C=2 log cells), ``offset`` (C=2 cells)."""

    def __init__(self, config: CenterNetConfig = CenterNetConfig()) -> None:
        super().__init__()
        w = config.width
        self.config = config
        self.s2 = _block(3, w, 2)
        self.s4 = nn.Sequential(_block(w, 2 * w, 2), _block(2 * w, 2 * w))
        self.s8 = nn.Sequential(_block(2 * w, 4 * w, 2), _block(4 * w, 4 * w))
        self.s16 = nn.Sequential(_block(4 * w, 4 * w, 2), _block(4 * w, 4 * w), _block(4 * w, 4 * w))
        self.lat8 = nn.Conv2d(4 * w, 4 * w, 1)
        self.lat4 = nn.Conv2d(2 * w, 4 * w, 1)
        self.fuse = nn.Sequential(_block(4 * w, 2 * w), _block(2 * w, 2 * w))
        self.heads = nn.ModuleDict({name: _head(2 * w, config.head_conv, ch)
                                    for name, ch in (("heat", 1), ("size", 2), ("offset", 2))})
        # start from "almost no person anywhere" (focal-loss prior 0.1), as CenterNet does
        nn.init.constant_(_last(self.heads["heat"]).bias, -2.19)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f4 = self.s4(self.s2(x))
        f8 = self.s8(f4)
        f16 = self.s16(f8)
        p8 = self.lat8(f8) + F.interpolate(f16, size=f8.shape[-2:], mode="nearest")
        p4 = self.fuse(self.lat4(f4) + F.interpolate(p8, size=f4.shape[-2:], mode="nearest"))
        return {name: head(p4) for name, head in self.heads.items()}


def to_tensor(images: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    """List of H x W x 3 BGR uint8 (same size) -> (B, 3, H, W) normalised RGB, padded to ALIGN."""
    batch = torch.from_numpy(np.stack(images)[..., ::-1].copy()).to(device)
    x = batch.permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    x = (x - mean) / std
    h, w = x.shape[-2:]
    return F.pad(x, (0, (-w) % ALIGN, 0, (-h) % ALIGN))


def decode(out: dict[str, torch.Tensor], *, max_detections: int = 100) -> list[np.ndarray]:
    """Network output -> per image [N, 5] x, y, w, h, score in network-input pixels."""
    heat = torch.sigmoid(out["heat"][:, 0])  # (B, h, w)
    peaks = heat * (F.max_pool2d(heat[:, None], 3, stride=1, padding=1)[:, 0] == heat)
    b, h, w = heat.shape
    k = min(max_detections, h * w)
    scores, idx = peaks.view(b, -1).topk(k, dim=1)
    ys, xs = (idx // w).float(), (idx % w).float()
    size = out["size"].view(b, 2, -1).gather(2, idx[:, None].expand(b, 2, k)).exp() * STRIDE
    off = out["offset"].view(b, 2, -1).gather(2, idx[:, None].expand(b, 2, k)) * STRIDE
    cx = xs * STRIDE + off[:, 0] + STRIDE / 2 - 0.5
    cy = ys * STRIDE + off[:, 1] + STRIDE / 2 - 0.5
    boxes = torch.stack([cx - size[:, 0] / 2, cy - size[:, 1] / 2, size[:, 0], size[:, 1], scores], dim=2)
    return [row[row[:, 4] > 0].cpu().numpy() for row in boxes]


def save_checkpoint(path: str | os.PathLike, model: CenterNet, *, input_scale: float, extra: dict | None = None) -> None:
    """Self-describing checkpoint, written atomically."""
    from diffpose.io import atomic_path

    state = {
        "format": FORMAT, "model_args": asdict(model.config), "input_scale": float(input_scale), "stride": STRIDE,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, **(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike) -> tuple[CenterNet, dict]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: detector checkpoint not found (run the train_detector stage: diffpose train-detector)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
        raise DataError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise DataError(f"{path}: not a {FORMAT} checkpoint (format {state.get('format') if isinstance(state, dict) else None!r})")
    model = CenterNet(CenterNetConfig(**state["model_args"]))
    model.load_state_dict(state["state_dict"])
    return model.eval(), state


class CenterNetDetector:
    needs_images = True

    def __init__(self, model: CenterNet, *, input_scale: float, max_detections: int = 100, nms_iou: float = 0.6,
                 flip_test: bool = False) -> None:
        self.model = model.eval()
        self.input_scale = float(input_scale)
        self.max_detections = max_detections
        self.nms_iou = nms_iou
        self.flip_test = flip_test

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The network's output; with ``flip_test`` the centre heatmap and sizes are averaged with
        those of the mirrored frame (mirrored back), the offsets are the unflipped pass's."""
        out = self.model(x)
        if not self.flip_test:
            return out
        mirrored = self.model(x.flip(-1))
        heat = (torch.sigmoid(out["heat"]) + torch.sigmoid(mirrored["heat"].flip(-1))) / 2
        return {"heat": torch.logit(heat.clamp(1e-6, 1 - 1e-6)), "size": (out["size"] + mirrored["size"].flip(-1)) / 2,
                "offset": out["offset"]}

    @classmethod
    def from_checkpoint(cls, checkpoint: str | os.PathLike, *, max_detections: int = 100, nms_iou: float = 0.6,
                        device: str = "cpu", threads: int = 0, flip_test: bool = False) -> CenterNetDetector:
        """``threads`` > 0 sets torch's CPU threads (1 is much faster on a busy shared machine)."""
        if threads:
            torch.set_num_threads(threads)
        model, state = load_checkpoint(checkpoint)
        return cls(model.to(torch.device(device)), input_scale=state["input_scale"], max_detections=max_detections,
                   nms_iou=nms_iou, flip_test=flip_test)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def prepare(self, image: np.ndarray) -> np.ndarray:
        if self.input_scale == 1.0:
            return image
        return cv2.resize(image, None, fx=self.input_scale, fy=self.input_scale, interpolation=cv2.INTER_AREA)

    @torch.inference_mode()
    def detect(self, images: Sequence[np.ndarray | None], file_names: Sequence[str] = ()) -> list[np.ndarray]:
        small = [self.prepare(img) for img in images]
        results: list[np.ndarray | None] = [None] * len(small)
        by_shape: dict[tuple, list[int]] = {}
        for i, img in enumerate(small):  # frames of one size share a forward pass
            by_shape.setdefault(img.shape, []).append(i)
        for indices in by_shape.values():
            out = self.forward(to_tensor([small[i] for i in indices], self.device))
            for i, boxes in zip(indices, decode(out, max_detections=self.max_detections)):
                boxes[:, :4] /= self.input_scale
                results[i] = nms(as_boxes(boxes), self.nms_iou)
        return results  # type: ignore[return-value]
