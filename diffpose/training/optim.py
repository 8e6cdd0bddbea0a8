"""The optimizer recipe for fine-tuning a pretrained ViT backbone, and the mixed-precision choice.

**Parameter groups.** With ``train.layer_decay`` = r < 1 (layer-wise learning-rate decay, as
BEiT and ViTPose fine-tune their ViTs), every parameter gets a layer id: the ViT's patch and
position embeddings are layer 0, ViT block i is layer i + 1, and everything else (the ViT's last
norm, the STRL, the decoder, the baseline's head: the parts trained from scratch) is layer
depth + 1. A parameter of layer l trains at ``lr * r ** (depth + 1 - l)``: the new parts at the
base rate, the top block at ``r * lr``, the embeddings at ``r ** (depth + 1) * lr`` (ViT-H with
r = 0.85: 0.85 ** 33 = 0.0047). With ``train.no_decay_norm_bias`` the 1-D parameters (norm
weights, BatchNorm and every bias) and the position embeddings get no weight decay.

With both at their defaults (r = 1, decay on everything) the optimizer is the single group it
always was: the demo trains bit for bit as before.

**Precision.** AMP runs on CUDA only: bf16 autocast where the GPU computes bf16 natively (Ampere
and later), fp16 with a GradScaler otherwise (``train.amp_dtype: auto``); ``bf16``/``fp16`` force
one. On the CPU training stays in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from diffpose.errors import ConfigError

AMP_DTYPES = ("auto", "bf16", "fp16")


@dataclass(frozen=True)
class GroupSpec:
    """One optimizer parameter group: its layer id (None: no layer-wise decay), learning-rate
    scale, weight decay and the names of its parameters (in ``named_parameters`` order)."""

    name: str
    layer_id: int | None
    lr_scale: float
    weight_decay: float
    names: tuple[str, ...]


def vit_depth(model: nn.Module) -> int | None:
    """Number of blocks of the model's ViT backbone (``model.backbone``), None without one."""
    from diffpose.models.backbones import ViT

    backbone = getattr(model, "backbone", None)
    return len(backbone.blocks) if isinstance(backbone, ViT) else None


def layer_id(name: str, depth: int) -> int:
    """Layer id of parameter ``name`` of a model whose ViT backbone (``backbone.*``) has ``depth``
    blocks: embeddings 0, block i -> i + 1, anything else depth + 1."""
    if not name.startswith("backbone."):
        return depth + 1
    rest = name[len("backbone."):]
    if rest == "pos_embed" or rest.startswith("patch_embed."):
        return 0
    if rest.startswith("blocks."):
        return int(rest.split(".")[1]) + 1
    return depth + 1


def exempt_from_weight_decay(name: str, param: torch.Tensor) -> bool:
    """Norm weights, biases (every 1-D tensor) and position embeddings."""
    return param.ndim <= 1 or name.endswith(".bias") or "pos_embed" in name


def parameter_groups(model: nn.Module, *, weight_decay: float, layer_decay: float = 1.0,
                     no_decay_norm_bias: bool = False) -> list[GroupSpec]:
    """The groups of the recipe (module docstring), in order of their first parameter."""
    depth = vit_depth(model)
    if layer_decay != 1.0 and depth is None:
        raise ConfigError(f"train.layer_decay {layer_decay} needs a ViT backbone (model backbone: vit); "
                          f"this {type(model).__name__} has none: set train.layer_decay to 1.0")
    groups: dict[tuple[int | None, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lid = layer_id(name, depth) if layer_decay != 1.0 and depth is not None else None
        no_decay = no_decay_norm_bias and exempt_from_weight_decay(name, param)
        key = (lid, no_decay)
        if key not in groups:
            scale = 1.0 if lid is None else float(layer_decay) ** (depth + 1 - lid)
            label = ("all" if lid is None else f"layer{lid}") + ("_no_decay" if no_decay else "_decay")
            groups[key] = {"name": label, "layer_id": lid, "lr_scale": scale,
                           "weight_decay": 0.0 if no_decay else float(weight_decay), "names": []}
        groups[key]["names"].append(name)
    return [GroupSpec(**{**g, "names": tuple(g["names"])}) for g in groups.values()]


def make_optimizer(model: nn.Module, *, optimizer: str, lr: float, weight_decay: float, layer_decay: float = 1.0,
                   no_decay_norm_bias: bool = False) -> torch.optim.Optimizer:
    """AdamW or Adam over the recipe's groups; each group keeps its ``lr_scale`` for :func:`set_lr`."""
    cls = torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adam
    if layer_decay == 1.0 and not no_decay_norm_bias:
        return cls(model.parameters(), lr=lr, weight_decay=weight_decay)  # one group, as the demo always had
    params = dict(model.named_parameters())
    specs = parameter_groups(model, weight_decay=weight_decay, layer_decay=layer_decay,
                             no_decay_norm_bias=no_decay_norm_bias)
    groups = [{"params": [params[n] for n in spec.names], "lr": lr * spec.lr_scale, "lr_scale": spec.lr_scale,
               "weight_decay": spec.weight_decay, "group": spec.name} for spec in specs]
    return cls(groups, lr=lr, weight_decay=weight_decay)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's rate times each group's ``lr_scale`` (1 when the group has none)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"] if "lr_scale" in group else lr


def optimizer_step(loss: torch.Tensor, model: nn.Module, optimizer: torch.optim.Optimizer,
                   scaler: torch.amp.GradScaler, grad_clip: float = 0.0) -> None:
    """Backward (through the scaler), gradient clipping to ``grad_clip`` (0 = off) and one step."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()


def _bf16_native() -> bool:
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch before 2.3 has no including_emulation (and reports native support only)
        return bool(torch.cuda.is_bf16_supported())


def autocast_dtype(amp: bool, amp_dtype: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of training on ``device``, None for fp32 (AMP off, or not on CUDA)."""
    if amp_dtype not in AMP_DTYPES:
        raise ConfigError(f"train.amp_dtype: expected one of {AMP_DTYPES}, got {amp_dtype!r}")
    if not amp or device.type != "cuda":
        return None
    if amp_dtype == "fp16":
        return torch.float16
    if amp_dtype == "bf16":
        if not _bf16_native():
            raise ConfigError("train.amp_dtype is bf16 but this GPU has no native bf16 (before Ampere): "
                              "use auto or fp16")
        return torch.bfloat16
    return torch.bfloat16 if _bf16_native() else torch.float16


def make_scaler(dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A GradScaler, enabled for fp16 only (bf16 has fp32's exponent range and needs none)."""
    return torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
