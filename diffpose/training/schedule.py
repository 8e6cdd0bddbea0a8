"""Learning-rate schedules as pure functions of the global step (no hidden scheduler state, so a
resumed run computes exactly the rate an uninterrupted run would)."""

from __future__ import annotations

import bisect
import math

SCHEDULES = ("cosine", "step", "constant")


def lr_at(
    step: int,
    *,
    base_lr: float,
    total_steps: int,
    warmup_steps: int = 0,
    kind: str = "cosine",
    min_lr_ratio: float = 0.0,
    milestones: tuple[int, ...] = (),
    gamma: float = 0.1,
) -> float:
    """Learning rate for optimizer step ``step`` (0-based).

    Linear warm-up from ``base_lr / warmup_steps`` to ``base_lr`` over ``warmup_steps``; then
    ``cosine``: half a cosine from ``base_lr`` to ``min_lr_ratio * base_lr`` at ``total_steps``
    (Loshchilov & Hutter, SGDR); ``step``: multiplied by ``gamma`` at each milestone (in steps);
    ``constant``: ``base_lr``.
    """
    if kind not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}")
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if kind == "constant":
        return base_lr
    if kind == "step":
        return base_lr * gamma ** bisect.bisect_right(sorted(milestones), step)
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    floor = min_lr_ratio * base_lr
    return floor + (base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
