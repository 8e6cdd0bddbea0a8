"""Per-frame backbones: ``[N, 3, H, W] -> [N, C, H/s, W/s]`` (ViT: s = 16; conv: s = 2 ** stages).

* ``ViT``: the ViTPose layout (Xu et al., *ViTPose*, NeurIPS 2022): a 16x16 patch embedding with
  padding 2, an absolute position embedding with a class-token slot that is *added* to every patch
  (there is no class token), pre-LN blocks, a final LayerNorm. ``load_vitpose_weights`` reads a
  local checkpoint in any of three key layouts (see :func:`vitpose_backbone_state`):

  - the official ViTPose repository (mmpose 0.x): ``backbone.patch_embed.proj``,
    ``backbone.pos_embed`` (with the class slot), ``backbone.blocks.N.{norm1,attn.qkv,attn.proj,
    norm2,mlp.fc1,mlp.fc2}``, ``backbone.last_norm``;
  - mmpose 1.x (mmpretrain's ``VisionTransformer``): ``backbone.patch_embed.projection``,
    ``backbone.pos_embed`` (no class slot), ``backbone.layers.N.{ln1,attn.qkv,attn.proj,ln2,
    ffn.layers.0.0,ffn.layers.1}``, ``backbone.ln1``;
  - a bare ViT such as an MAE checkpoint (timm names, final ``norm``), the usual ViTPose start;

  and resizes the position embedding when the token grid differs, and zero-pads a smaller patch
  kernel (MAE ViT-H is /14) to 16x16 as ViTPose does.
* ``ConvBackbone``: a small CNN for the CPU demo, one stride-2 stage per width.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from diffpose.errors import DataError
from diffpose.models.config import BACKBONE_STRIDE, VIT_SIZES, ModelConfig
from diffpose.models.layers import ResidualBlock, TransformerBlock, conv_bn_relu, state_dict_mismatch


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int = 16, padding: int = 2):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class ViT(nn.Module):
    """ViTPose-layout Vision Transformer. ``[N, 3, H, W] -> [N, dim, H/16, W/16]``."""

    def __init__(self, input_size: tuple[int, int], *, dim: int, depth: int, heads: int,
                 mlp_ratio: float = 4.0, drop_path: float = 0.0, grad_checkpoint: bool = False):
        super().__init__()
        self.grad_checkpoint = grad_checkpoint
        self.grid = (input_size[0] // BACKBONE_STRIDE, input_size[1] // BACKBONE_STRIDE)
        self.out_channels = dim
        self.patch_embed = PatchEmbed(dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1] + 1, dim))
        # stochastic depth rising linearly to drop_path over the blocks (ViTPose); computed on the CPU so
        # that the model can be built on the meta device (size counts without allocating ViT-H)
        rates = torch.linspace(0, drop_path, depth, device="cpu").tolist() if depth else []
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, mlp_ratio, drop_path=r) for r in rates)
        self.last_norm = nn.LayerNorm(dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(_init_vit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        n, c, h, w = x.shape
        if (h, w) != self.grid:
            raise ValueError(f"ViT built for a {self.grid} token grid got {(h, w)} (input {tuple(x.shape)})")
        tokens = x.flatten(2).transpose(1, 2) + self.pos_embed[:, 1:] + self.pos_embed[:, :1]
        for blk in self.blocks:
            if self.grad_checkpoint and self.training and torch.is_grad_enabled():
                tokens = checkpoint(blk, tokens, use_reentrant=False)
            else:
                tokens = blk(tokens)
        return self.last_norm(tokens).transpose(1, 2).reshape(n, c, h, w)


def _init_vit(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class ConvBackbone(nn.Module):
    """One stride-2 stage per width (3x3 conv + BN + ReLU, then ``blocks`` residual blocks)."""

    def __init__(self, widths: tuple[int, ...], blocks: int = 1):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for w in widths:
            layers.append(conv_bn_relu(cin, w, stride=2))
            layers.extend(ResidualBlock(w) for _ in range(blocks))
            cin = w
        self.body = nn.Sequential(*layers)
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def build_backbone(cfg: ModelConfig) -> nn.Module:
    if cfg.backbone == "vit":
        dim, depth, heads = VIT_SIZES[cfg.vit_size]
        vit = ViT(cfg.input_size, dim=dim, depth=depth, heads=heads, drop_path=cfg.vit_drop_path,
                  grad_checkpoint=cfg.grad_checkpoint)
        if cfg.vit_pretrained:
            load_vitpose_weights(vit, cfg.vit_pretrained)
        return vit
    return ConvBackbone(cfg.conv_widths, cfg.conv_blocks)


# -- ViTPose checkpoints ----------------------------------------------------------------------------

def _unwrap(obj: object) -> Mapping[str, torch.Tensor]:
    """The tensor mapping inside an mmpose/ViTPose/MAE checkpoint (``state_dict``/``model`` wrappers)."""
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise TypeError(f"expected a mapping of tensors, got {type(obj).__name__}")
    return obj


_NOT_BACKBONE = ("head.", "keypoint_head.", "fc_norm.", "decoder")

# mmpose 1.x / mmpretrain VisionTransformer names -> this ViT's (ViTPose's); anything else passes
# through unchanged, so a part this ViT lacks (pre_norm, layer-scale gammas) is named in the error
_MMPRETRAIN_NAMES = (
    (re.compile(r"^patch_embed\.projection\."), "patch_embed.proj."),
    (re.compile(r"^layers\.(\d+)\.ln1\."), r"blocks.\1.norm1."),
    (re.compile(r"^layers\.(\d+)\.ln2\."), r"blocks.\1.norm2."),
    (re.compile(r"^layers\.(\d+)\.attn\.(qkv|proj)\."), r"blocks.\1.attn.\2."),
    (re.compile(r"^layers\.(\d+)\.ffn\.layers\.0\.0\."), r"blocks.\1.mlp.fc1."),
    (re.compile(r"^layers\.(\d+)\.ffn\.layers\.1\."), r"blocks.\1.mlp.fc2."),
    (re.compile(r"^ln1\."), "last_norm."),
)


def checkpoint_layout(keys: Iterable[str]) -> str:
    """``vitpose`` (official repository), ``mmpretrain`` (mmpose 1.x) or ``bare`` (MAE/timm ViT),
    from the key names (a ``module.``/``backbone.`` prefix allowed)."""
    names = [k[len("module."):] if k.startswith("module.") else k for k in keys]
    backbone = [k[len("backbone."):] for k in names if k.startswith("backbone.")]
    if any(k.startswith(("layers.", "patch_embed.projection.")) for k in backbone or names):
        return "mmpretrain"
    return "vitpose" if backbone else "bare"


def vitpose_backbone_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The backbone entries of a ViT checkpoint under this ViT's names, for any of the layouts of
    the module docstring.

    A DataParallel ``module.`` prefix is removed first. With ``backbone.`` keys only those are
    kept (the keypoint head, ``keypoint_head.*`` or ``head.*``, is dropped). A bare ViT's final
    ``norm.*`` becomes ``last_norm.*``; class token, mask token, MAE decoder and classification head
    are dropped. mmpretrain names are mapped; its ViT (``with_cls_token=False``, as in mmpose 1.x's
    ViTPose configs) adds no class slot to the patches, so the slot becomes zero (an added zero
    changes nothing) or, for a position embedding without one, a zero slot is put in front.
    """
    stripped = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    layout = checkpoint_layout(stripped)
    has_prefix = any(k.startswith("backbone.") for k in stripped)
    out = {}
    for key, value in stripped.items():
        if has_prefix:
            if not key.startswith("backbone."):
                continue
            key = key[len("backbone."):]
        elif key.startswith("norm."):
            key = "last_" + key
        if key in ("cls_token", "mask_token") or key.startswith(_NOT_BACKBONE):
            continue
        if layout == "mmpretrain":
            for pattern, replacement in _MMPRETRAIN_NAMES:
                key = pattern.sub(replacement, key)
        out[key] = value
    if layout == "mmpretrain" and "pos_embed" in out:
        has_slot = any(k.split(".")[-1] == "cls_token" for k in stripped)
        out["pos_embed"] = _zero_class_slot(out["pos_embed"], has_slot=has_slot)
    return out


def _zero_class_slot(pos_embed: torch.Tensor, *, has_slot: bool) -> torch.Tensor:
    """``[1, (1 +) N, C]`` -> ``[1, 1 + N, C]`` whose class slot is zero."""
    patches = pos_embed[:, 1:] if has_slot else pos_embed
    return torch.cat([torch.zeros_like(patches[:, :1]), patches], dim=1)


def pad_patch_kernel(weight: torch.Tensor, size: int) -> torch.Tensor:
    """A ``[C, 3, k, k]`` patch-embedding kernel zero-padded (centred) to ``size`` x ``size``, as
    ViTPose starts a /16 ViT from the /14 MAE ViT-H."""
    k = weight.shape[-1]
    if k >= size:
        return weight
    before = (size - k) // 2
    return F.pad(weight, (before, size - k - before, before, size - k - before))


def interpolate_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resize a ``[1, 1 + gh*gw, C]`` position embedding (class slot first) to ``grid`` (bicubic).

    The source grid is the factorisation of the token count closest to the target aspect ratio
    (ViTPose checkpoints are 16x12 for 256x192; MAE ones 14x14).
    """
    n = pos_embed.shape[1] - 1
    if n == grid[0] * grid[1]:
        return pos_embed
    target = grid[0] / grid[1]
    pairs = [(a, n // a) for a in range(1, n + 1) if n % a == 0]
    gh, gw = min(pairs, key=lambda p: abs(math.log(p[0] / p[1]) - math.log(target)))
    cls, patches = pos_embed[:, :1], pos_embed[:, 1:]
    c = patches.shape[-1]
    patches = patches.reshape(1, gh, gw, c).permute(0, 3, 1, 2).float()
    patches = F.interpolate(patches, size=grid, mode="bicubic", align_corners=False)
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], c).to(pos_embed.dtype)
    return torch.cat([cls, patches], dim=1)


def load_vitpose_weights(vit: ViT, source: str | os.PathLike | Mapping[str, torch.Tensor]) -> None:
    """Load ViTPose-format weights (a local file or a state dict) into ``vit``; strict on the
    backbone keys. Raises DataError naming the file and the first mismatching keys."""
    name = str(source) if not isinstance(source, Mapping) else "<state dict>"
    if isinstance(source, Mapping):
        raw = source
    else:
        path = Path(source)
        if not path.is_file():
            raise DataError(f"{path}: pretrained ViT weights not found")
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
            reason = f"{type(err).__name__}: {err}"
            raise DataError(f"{path}: not a readable PyTorch checkpoint ({reason})") from None
    try:
        state = vitpose_backbone_state(_unwrap(raw))
    except TypeError as err:
        raise DataError(f"{name}: not a ViTPose checkpoint ({err})") from None
    if "pos_embed" in state:
        state["pos_embed"] = interpolate_pos_embed(state["pos_embed"], vit.grid)
    kernel = state.get("patch_embed.proj.weight")
    if isinstance(kernel, torch.Tensor) and kernel.ndim == 4 and kernel.shape[-1] == kernel.shape[-2]:
        state["patch_embed.proj.weight"] = pad_patch_kernel(kernel, vit.patch_embed.proj.kernel_size[0])
    mismatch = state_dict_mismatch(vit.state_dict(), state)
    if mismatch:
        raise DataError(f"{name}: ViTPose weights do not fit this ViT ({mismatch})")
    vit.load_state_dict(state, strict=True)
