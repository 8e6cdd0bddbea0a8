"""The detector backends, by name: a plain dict of factories ``(options, frames) -> Detector``.

``options`` is the backend's own params section (``detect.<backend>`` in params.yaml), passed as
keyword arguments; ``frames`` are the split's frames (only ``precomputed`` needs them, to resolve
image ids). Heavy imports (torch) happen inside the factories that need them. A missing or unknown
option is a ConfigError naming it and the backend's options (read from the signature the options
go to), not a TypeError traceback.
"""

from __future__ import annotations

import inspect
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


def _options_target(backend: str) -> Callable | None:
    """The callable a backend's options are passed to as keyword arguments (None: the factory
    reads them itself)."""
    if backend == "hog":
        from diffpose.detect.hog import HogDetector

        return HogDetector
    if backend == "synthetic":
        from diffpose.detect.centernet import CenterNetDetector

        return CenterNetDetector.from_checkpoint
    if backend == "torchvision":
        from diffpose.detect.torchvision_backend import TorchvisionDetector

        return TorchvisionDetector
    return None


def option_problem(backend: str, options: dict[str, Any]) -> str | None:
    """Why ``options`` do not fit the backend's signature (unknown or missing options), or None."""
    target = _options_target(backend)
    if target is None:
        return None
    parameters = {name: p for name, p in inspect.signature(target).parameters.items()
                  if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(target).parameters.values())
    unknown = [] if takes_any else sorted(set(options) - set(parameters))
    missing = [name for name, p in parameters.items() if p.default is p.empty and name not in options]
    if not unknown and not missing:
        return None
    parts = []
    if unknown:
        parts.append(f"unknown option{'s' * (len(unknown) > 1)} {', '.join(unknown)}")
    if missing:
        parts.append(f"missing option{'s' * (len(missing) > 1)} {', '.join(missing)}")
    return f"{'; '.join(parts)} (the options are: {', '.join(parameters)})"


def make_detector(backend: str, options: dict[str, Any] | None = None, frames: Sequence[Frame] = ()) -> Detector:
    """Build a backend; ConfigError names the backend and the option when they are wrong."""
    try:
        factory = BACKENDS[backend]
    except KeyError:
        raise ConfigError(f"detect.backend must be one of {', '.join(BACKENDS)}, got {backend!r}") from None
    options = dict(options or {})
    try:
        return factory(options, frames)
    except TypeError:
        problem = option_problem(backend, options)
        if problem is None:
            raise  # not the options: a bug
        raise ConfigError(f"detect.{backend}: {problem}") from None
    except ValueError as err:
        raise ConfigError(f"detect.{backend}: {err}") from None
