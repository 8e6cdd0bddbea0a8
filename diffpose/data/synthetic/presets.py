"""Benchmark sizes. ``tiny`` runs in seconds for tests; ``demo`` is the CPU demo's data.

``demo`` is deliberately larger on the train side than the issue's rough sizing (~1,500 train
instances): a measured probe (docs/demo-findings.md) showed every model memorising 1,500 clips
(train PCKh .999, val ~.65), while 8,000 clips generalised; generated data is cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffpose.errors import ConfigError


@dataclass(frozen=True)
class Preset:
    name: str
    width: int  # frame size in pixels (even numbers: the mp4 encoder needs them)
    height: int
    train_sequences: int
    val_sequences: int
    train_frames: int  # frames per train video
    val_frames: int  # frames per val video
    train_labelled: int  # length of the dense labelled segment of a train video
    val_every: int  # val videos label every k-th frame (PoseTrack18: 4)
    person_height: tuple[float, float]  # standing height in pixels before camera zoom, near..far
    fps: float = 25.0
    max_people: int = 4


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        width=192,
        height=144,
        train_sequences=2,
        val_sequences=2,
        train_frames=16,
        val_frames=16,
        train_labelled=12,
        val_every=4,
        person_height=(60.0, 115.0),
    ),
    "demo": Preset(
        name="demo",
        width=320,
        height=240,
        train_sequences=90,
        val_sequences=18,
        train_frames=40,
        val_frames=48,
        train_labelled=30,
        val_every=4,
        person_height=(95.0, 190.0),
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"synth preset must be one of {', '.join(PRESETS)}, got {name!r}") from None
