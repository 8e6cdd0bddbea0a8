"""Optional backend: torchvision's COCO-trained Faster R-CNN (ResNet-50 FPN), from a local file.

Needs ``pip install diffpose[torchvision]`` and a weights file on disk (for example torchvision's
``fasterrcnn_resnet50_fpn_coco-258fb6c6.pth``, fetched by a separate, checksummed step: nothing
is downloaded at run time). Only the person class (COCO label 1) is kept; no score filtering here
(the stage applies ``detect.score_threshold``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from diffpose.detect.base import as_boxes
from diffpose.errors import ConfigError, DataError

PERSON = 1  # COCO category id of "person" in torchvision's detection models


def torchvision_available() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken install (e.g. mismatched torch) counts as absent
        return False
    return True


class TorchvisionDetector:
    needs_images = True

    def __init__(self, *, weights: str | os.PathLike | None = None, device: str = "cpu") -> None:
        if not torchvision_available():
            raise ConfigError(
                "detect.backend torchvision needs torchvision, which is not installed (or does not import "
                "beside this torch): pip install 'diffpose[torchvision]'"
            )
        if not weights:
            raise ConfigError("detect.torchvision.weights: give a local Faster R-CNN (resnet50_fpn, COCO) weights file")
        path = Path(weights)
        if not path.is_file():
            raise DataError(f"{path}: weights file not found")
        import torch
        from torchvision.models.detection import fasterrcnn_resnet50_fpn

        model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
        except Exception as err:  # noqa: BLE001 - any load failure is a bad file
            raise DataError(f"{path}: not a fasterrcnn_resnet50_fpn state dict ({type(err).__name__}: {err})") from None
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)

    def detect(self, images: Sequence[np.ndarray | None], file_names: Sequence[str] = ()) -> list[np.ndarray]:
        import torch

        tensors = [
            torch.from_numpy(np.ascontiguousarray(img[:, :, ::-1])).permute(2, 0, 1).float().div(255).to(self.device)
            for img in images
        ]
        with torch.inference_mode():
            outputs = self.model(tensors)
        result = []
        for out in outputs:
            keep = out["labels"] == PERSON
            xyxy = out["boxes"][keep].cpu().numpy()
            scores = out["scores"][keep].cpu().numpy()
            boxes = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2], scores[:, None]], axis=1)
            result.append(as_boxes(boxes))
        return result
