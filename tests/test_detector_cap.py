"""The detector's wall-clock cap: off by default, an error when it bites (never a silently shorter run)."""

from __future__ import annotations

import numpy as np
import pytest

from diffpose.detect.train import Sample, TrainConfig, train_detector
from diffpose.errors import DataError


def _samples(n: int = 4) -> list[Sample]:
    rng = np.random.default_rng(0)
    boxes = np.array([[20.0, 10.0, 30.0, 60.0]])
    return [Sample(image=rng.integers(0, 255, (64, 96, 3), dtype=np.uint8), boxes=boxes,
                   ignore_boxes=np.zeros((0, 4)), regions=[]) for _ in range(n)]


def test_no_cap_by_default_runs_every_step() -> None:
    assert TrainConfig().seconds == 0
    _, history = train_detector(_samples(), TrainConfig(max_steps=3, batch_size=2, width=4, threads=1),
                                progress=False)
    assert history["steps"] == 3


def test_a_cap_that_bites_is_an_error_naming_the_param() -> None:
    config = TrainConfig(max_steps=50, batch_size=2, width=4, threads=1, seconds=1e-9)
    with pytest.raises(DataError, match=r"detect\.train\.seconds = 1e-09 s at step 0 of 50"):
        train_detector(_samples(), config, progress=False)
