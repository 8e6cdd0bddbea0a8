"""The detector backends, by name: a plain dict of factories ``(options, frames) -> Detector``.

``options`` is the backend's own params section (``detect.<backend>`` in params.yaml), passed as
keyword arguments; ``frames`` are the split's frames (only ``precomputed`` needs them, to resolve
image ids). Heavy imports (torch) happen inside the factories that need them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from diffpose.detect.base import Detector
from diffpose.detect.frames import Frame
from diffpose.errors import ConfigError


def _precomputed(options: dict[str, Any], frames: Sequence[Frame]) -> Detector:
    from diffpose.detect.precomputed import PrecomputedDetector

    boxes = options.get("boxes")
    if not boxes:
        raise ConfigError("detect.precomputed.boxes: give the boxes file (DCPose val_boxes.json or COCO results)")
    return PrecomputedDetector(boxes, frames, ignore_unmatched=bool(options.get("ignore_unmatched", False)))


def _hog(options: dict[str, Any], frames: Sequence[Frame]) -> Detector:
    from diffpose.detect.hog import HogDetector

    return HogDetector(**options)


def _synthetic(options: dict[str, Any], frames: Sequence[Frame]) -> Detector:
    from diffpose.detect.centernet import CenterNetDetector

    return CenterNetDetector.from_checkpoint(**options)


def _torchvision(options: dict[str, Any], frames: Sequence[Frame]) -> Detector:
    from diffpose.detect.torchvision_backend import TorchvisionDetector

    return TorchvisionDetector(**options)


BACKENDS: dict[str, Callable[[dict[str, Any], Sequence[Frame]], Detector]] = {
    "precomputed": _precomputed,
    "hog": _hog,
    "synthetic": _synthetic,
    "torchvision": _torchvision,
}


def make_detector(backend: str, options: dict[str, Any] | None = None, frames: Sequence[Frame] = ()) -> Detector:
    """Build a backend; ConfigError names the backend and the option when they are wrong."""
    try:
        factory = BACKENDS[backend]
    except KeyError:
        raise ConfigError(f"detect.backend must be one of {', '.join(BACKENDS)}, got {backend!r}") from None
    try:
        return factory(dict(options or {}), frames)
    except TypeError as err:
        if "keyword argument" not in str(err):
            raise
        raise ConfigError(f"detect.{backend}: {err}") from None  # an unknown option
    except ValueError as err:
        raise ConfigError(f"detect.{backend}: {err}") from None
