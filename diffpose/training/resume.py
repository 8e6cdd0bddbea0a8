"""Where a training run starts: after the last finished epoch of ``OUT/last.pt``, or from scratch.

Rank 0 alone reads the resume files and decides; the decision and, when resuming, the weights,
the optimizer state and the scaler state go from rank 0 to every other process. A process that
cannot read the file (a node-local disk, a read error) or would read another one therefore still
starts exactly where rank 0 does, instead of training other epochs than the others (a hang in the
next collective) or stepping with other Adam moments (parameters drifting apart).

Candidates, in order: ``last.pt``, then ``last.prev.pt`` (the one before; the trainer keeps
both). A candidate is used when it reads as a diffpose checkpoint, its fingerprint (model, train
and data params, data and code version) is this run's, and its weights fit the model. Resuming
from ``last.prev.pt`` renames it to ``last.pt`` (replacing the unusable one).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffpose.errors import DataError
from diffpose.training import distributed as dist_util

LAST = "last.pt"
PREVIOUS = "last.prev.pt"


@dataclass
class ResumePoint:
    """Rank 0's decision. ``start_epoch`` is 0-based; ``best`` is ``{"epoch", "Total"}`` of the
    best validation so far (None: none yet); ``source`` the file resumed from (None: from scratch)."""

    start_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    scaler: dict[str, Any] = field(default_factory=dict)
    best: dict[str, float] | None = None
    source: str | None = None

    @property
    def resumed(self) -> bool:
        return self.source is not None


def _say(message: str) -> None:
    print(f"diffpose train: {message}", file=sys.stderr)


def find_resume_point(out: Path, fingerprint: str, model: nn.Module) -> tuple[ResumePoint, dict | None]:
    """(decision, payload of the file resumed from or None), reading ``out`` (rank 0 only)."""
    from diffpose.models.checkpoint import read_payload
    from diffpose.models.layers import state_dict_mismatch

    tried = False
    for path in (out / LAST, out / PREVIOUS):
        if not path.exists():
            continue
        tried = True
        try:
            payload = read_payload(path, map_location="cpu")
        except DataError as err:  # an unreadable resume point is not fatal: try the next one
            _say(f"warning: cannot resume from {path} ({err})")
            continue
        extra = payload.get("extra") or {}
        if extra.get("fingerprint") != fingerprint:
            _say(f"{path} was written with other params, data or code; not resuming from it")
            continue
        mismatch = state_dict_mismatch(model.state_dict(), payload["state_dict"])
        if mismatch or "optimizer" not in extra:
            _say(f"warning: cannot resume from {path} ({mismatch or 'no optimizer state'})")
            continue
        point = ResumePoint(start_epoch=int(extra["epoch"]) + 1, history=[dict(h) for h in extra.get("history", [])],
                            scaler=dict(extra.get("scaler") or {}), best=extra.get("best"), source=str(path))
        return point, payload
    if tried:
        _say("starting over")
    return ResumePoint(), None


def resume(ctx: dist_util.DistContext, out: Path, fingerprint: str, model: nn.Module,
           optimizer: torch.optim.Optimizer, scaler: Any) -> ResumePoint:
    """Rank 0 decides (:func:`find_resume_point`); every process loads rank 0's state."""
    point, payload = find_resume_point(out, fingerprint, model) if ctx.is_main else (None, None)
    if ctx.is_main and point.source == str(out / PREVIOUS):
        # last.pt is unusable: the good previous one takes its name, so that the next save keeps
        # two good files instead of rotating the unusable one into last.prev.pt
        os.replace(out / PREVIOUS, out / LAST)
    point = dist_util.broadcast_object(ctx, point)
    if not point.resumed:
        return point
    weights = dist_util.broadcast_state(ctx, payload["state_dict"] if ctx.is_main else None)
    optimizer_state = dist_util.broadcast_state(ctx, payload["extra"]["optimizer"] if ctx.is_main else None)
    del payload
    model.load_state_dict(weights, strict=True)
    optimizer.load_state_dict(optimizer_state)
    if point.scaler:
        scaler.load_state_dict(point.scaler)
    return point
