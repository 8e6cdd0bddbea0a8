"""``ModelConfig``: every architectural and diffusion hyperparameter of a pose model.

Defaults follow ../shared/docs/paper-notes.md; where the paper is silent the value is a documented
choice [I] and a parameter. ``PRESETS`` holds named configurations (``paper``: ViT-H/16 at 256x192,
64x48 heatmaps, T=3; ``demo_*``: the CPU demo; ``tiny``: tests). ``resolve_model_config`` turns a
``models.<name>`` entry of params.yaml (``preset`` + overrides) into a validated ModelConfig.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from diffpose.errors import ConfigError

ARCHS = ("diffpose", "baseline")
BACKBONES = ("vit", "conv")
VIT_SIZES = {  # ViTPose layout: embed dim, depth, heads (patch 16, MLP ratio 4); ViTPose-S has 12 heads
    "S": (384, 12, 12),  # of 32 channels (not DeiT-S's 6): its weights load either way, the outputs differ
    "B": (768, 12, 12),
    "L": (1024, 24, 16),
    "H": (1280, 32, 16),
}
AGGREGATIONS = ("linear", "mlp", "mean", "key")
TIMESTEP_SAMPLING = ("uniform", "power")
BASELINE_TARGETS = ("diffusion", "unit")
BACKBONE_STRIDE = 16  # ViT: the condition grid is input / 16 (16x12 for 256x192 input)
CONV_STAGES = (2, 3, 4, 5)  # conv backbone: one stride-2 stage per width -> output stride 4..32


def _pair(value: Any, key: str) -> tuple[int, int]:
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        raise ConfigError(f"model config: {key} must be two positive integers (H, W), got {value!r}")
    return (int(value[0]), int(value[1]))


# Sampler settings that older checkpoints stored in the model config. They change only inference
# (params infer.*, swept by the sweep stages), so they are not part of the model: a change must
# re-run inference cells, never training. Model config key -> infer key.
INFERENCE_KEYS = {"ddim_eta": "ddim_eta", "ensemble_combine": "ensemble_combine"}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture + diffusion settings. Tags: [P] paper, [A] author notes, [I] our choice."""

    arch: str = "diffpose"
    num_frames: int = 3                        # T, key frame at T // 2 [A, I]
    num_joints: int = 17
    input_size: tuple[int, int] = (256, 192)   # (H, W) [A]
    heatmap_size: tuple[int, int] = (64, 48)   # (h, w) = 4 x the condition grid = input / 4 for ViT [A]
    sigma: float = 2.0                         # Gaussian sigma in heatmap cells
    # backbone (per frame; ViT: output stride 16, conv: 2 ** len(conv_widths))
    backbone: str = "vit"                      # vit | conv
    vit_size: str = "H"                        # S | B | L | H [A: 1280-wide tokens]
    vit_pretrained: str = ""                   # local ViTPose-format checkpoint ('' = random init)
    vit_drop_path: float = 0.0
    grad_checkpoint: bool = False              # recompute ViT blocks in backward (paper-scale memory)
    conv_widths: tuple[int, ...] = (16, 32, 64, 96)  # conv backbone: one stride-2 stage per width (2-5)
    conv_blocks: int = 1                       # extra 3x3 residual blocks per conv stage
    # STRL [P]
    strl_dim: int = 384                        # [I]
    strl_depth: int = 4                        # L [I]
    strl_heads: int = 8                        # [I]
    strl_mlp_ratio: float = 4.0
    strl_aggregate: str = "linear"             # LayerNorm + Linear over the frame axis [A]
    # pose decoder (LMSFI) [P]
    decoder_dims: tuple[int, int, int] = (256, 128, 64)  # channels at x1, x2, x4 of the condition grid [I]
    decoder_heads: int = 8
    decoder_depth: int = 1                     # Transformer layers at the lowest scale
    heatmap_dim: int = 32                      # channels of the heatmap branch [I]
    time_dim: int = 128                        # timestep embedding width [I]
    lmsfi: bool = True                         # False: plain concatenation (the paper's ablation)
    heatmap_concat: bool = False               # also feed the refined heatmap features (not only the
                                               # 1-channel mask) to the fusion blocks: a stronger x_t path [I]
    # diffusion [I: DiffusionDet defaults]
    timesteps: int = 1000
    schedule: str = "cosine"
    schedule_s: float = 0.008
    signal_scale: float = 2.0
    timestep_sampling: str = "uniform"         # uniform | power (t = T * u**timestep_power)
    timestep_power: float = 1.0
    self_correction: float = 0.0               # fraction of training clips noised from the model's own
                                               # one-step prediction instead of the GT (not in the paper) [I]
    # baseline (SimpleBaseline-style deconv head)
    baseline_deconv: tuple[int, ...] = (256, 256)
    baseline_target: str = "diffusion"         # diffusion: targets scaled like DiffPose's; unit: [0, 1]

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_size", _pair(self.input_size, "input_size"))
        object.__setattr__(self, "heatmap_size", _pair(self.heatmap_size, "heatmap_size"))
        for key in ("conv_widths", "decoder_dims", "baseline_deconv"):
            value = getattr(self, key)
            if not isinstance(value, (list, tuple)) or not value or not all(
                    isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
                raise ConfigError(f"model config: {key} must be a list of positive integers, got {value!r}")
            object.__setattr__(self, key, tuple(int(v) for v in value))
        self._check()

    def _check(self) -> None:
        def bad(key: str, expected: str) -> ConfigError:
            return ConfigError(f"model config: {key}: expected {expected}, got {getattr(self, key)!r}")

        choices = {"arch": ARCHS, "backbone": BACKBONES, "vit_size": tuple(VIT_SIZES),
                   "strl_aggregate": AGGREGATIONS,
                   "timestep_sampling": TIMESTEP_SAMPLING, "baseline_target": BASELINE_TARGETS,
                   "schedule": ("cosine",)}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise bad(key, "one of " + ", ".join(allowed))
        def number(v: object) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        for key in ("num_frames", "num_joints", "strl_dim", "strl_depth", "strl_heads", "decoder_heads",
                    "decoder_depth", "heatmap_dim", "time_dim", "timesteps", "conv_blocks"):
            value = getattr(self, key)
            minimum = 0 if key in ("strl_depth", "conv_blocks") else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise bad(key, "a positive integer" if minimum else "a non-negative integer")
        for key in ("sigma", "signal_scale", "strl_mlp_ratio", "schedule_s", "timestep_power"):
            if not number(getattr(self, key)) or getattr(self, key) <= 0:
                raise bad(key, "a positive number")
        for key in ("self_correction", "vit_drop_path"):
            if not number(getattr(self, key)) or not 0.0 <= getattr(self, key) <= 1.0:
                raise bad(key, "a number in [0, 1]")
        for key in ("lmsfi", "heatmap_concat", "grad_checkpoint"):
            if not isinstance(getattr(self, key), bool):
                raise bad(key, "true or false")
        if not isinstance(self.vit_pretrained, str):
            raise bad("vit_pretrained", "a file path string ('' = none)")
        if len(self.decoder_dims) != 3:
            raise bad("decoder_dims", "three channel counts (x1, x2, x4 scales)")
        if self.backbone == "conv" and len(self.conv_widths) not in CONV_STAGES:
            raise bad("conv_widths", f"{CONV_STAGES[0]} to {CONV_STAGES[-1]} widths (output stride 4 to 32)")
        h, w = self.input_size
        stride = self.backbone_stride
        if h % stride or w % stride:
            raise bad("input_size", f"(H, W) divisible by the backbone stride {stride}")
        fh, fw = self.feature_size
        if (fh * 4, fw * 4) != self.heatmap_size:
            raise bad("heatmap_size", f"4 x the condition grid (input / {stride}) = {(fh * 4, fw * 4)}")
        if self.strl_dim % self.strl_heads:
            raise bad("strl_dim", f"a multiple of strl_heads={self.strl_heads}")
        if self.decoder_dims[0] % self.decoder_heads:
            raise bad("decoder_dims", f"decoder_dims[0] a multiple of decoder_heads={self.decoder_heads}")

    # -- derived ----------------------------------------------------------------------------------
    @property
    def backbone_stride(self) -> int:
        """Output stride of the per-frame backbone: 16 for ViT, 2 per stage for the conv backbone."""
        return BACKBONE_STRIDE if self.backbone == "vit" else 2 ** len(self.conv_widths)

    @property
    def feature_size(self) -> tuple[int, int]:
        """(h, w) of the condition grid: input / backbone stride."""
        return (self.input_size[0] // self.backbone_stride, self.input_size[1] // self.backbone_stride)

    @property
    def key_index(self) -> int:
        return self.num_frames // 2

    # -- (de)serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML types (tuples -> lists)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, saved: bool = False) -> ModelConfig:
        """Build from a mapping; an unknown key raises ConfigError naming it. ``saved``: the config
        of a checkpoint, whose inference-only keys of older versions (INFERENCE_KEYS) are dropped."""
        if not isinstance(d, dict):
            raise ConfigError(f"model config: expected a mapping, got {type(d).__name__}")
        moved = sorted(set(d) & set(INFERENCE_KEYS))
        if moved and not saved:
            raise ConfigError(f"model config: {', '.join(moved)} are inference settings, not the model's: "
                              f"set them under infer ({', '.join('infer.' + INFERENCE_KEYS[k] for k in moved)})")
        d = {k: v for k, v in d.items() if k not in INFERENCE_KEYS}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"model config: unknown key(s) {', '.join(unknown)} "
                              f"(known: {', '.join(sorted(known))})")
        try:
            return cls(**d)
        except TypeError as err:
            raise ConfigError(f"model config: {err}") from None

    @classmethod
    def preset(cls, name: str) -> ModelConfig:
        if name not in PRESETS:
            raise ConfigError(f"model config: unknown preset {name!r} (known: {', '.join(PRESETS)})")
        return cls.from_dict(PRESETS[name])

    def replace(self, **changes: Any) -> ModelConfig:
        return ModelConfig.from_dict({**self.to_dict(), **changes})


# The CPU demo: 64x48 crops through a stride-8 conv backbone (an 8x6 condition grid, 32x24 heatmaps:
# the benchmark's PCKh threshold is ~2 cells there, ~1 cell at stride 16).
_DEMO = {
    "num_frames": 3, "input_size": [64, 48], "heatmap_size": [32, 24], "sigma": 2.0,
    "backbone": "conv", "conv_widths": [12, 24, 48], "conv_blocks": 1,
    "strl_dim": 64, "strl_depth": 1, "strl_heads": 4, "strl_mlp_ratio": 2.0,
    "decoder_dims": [64, 32, 16], "decoder_heads": 4, "decoder_depth": 1, "heatmap_dim": 8, "time_dim": 64,
    "baseline_deconv": [48, 32],
}

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"arch": "diffpose", "num_frames": 3, "input_size": [256, 192], "heatmap_size": [64, 48],
              "sigma": 2.0, "backbone": "vit", "vit_size": "H"},
    "paper_baseline": {"arch": "baseline", "num_frames": 1, "input_size": [256, 192],
                       "heatmap_size": [64, 48], "sigma": 2.0, "backbone": "vit", "vit_size": "H"},
    # t = T * u**0.1 trains the one-step, from-noise case (t near T) far more often than uniform t,
    # where the decoder learns to lean on x_t: demo mAP at 1 step 47.7 (uniform), 58.2 (0.25), 59.8 (0.1)
    "demo_diffpose": {"arch": "diffpose", **_DEMO, "timestep_sampling": "power", "timestep_power": 0.1},
    "demo_baseline": {"arch": "baseline", **{**_DEMO, "num_frames": 1}},
    # the demo DiffPose with a stronger x_t path and sampling-aware training (not in the paper)
    "demo_diffpose_xt": {"arch": "diffpose", **_DEMO, "heatmap_concat": True, "self_correction": 0.5},
    "tiny": {"arch": "diffpose", "num_frames": 3, "input_size": [64, 48], "heatmap_size": [16, 12],
             "sigma": 1.5, "backbone": "conv", "conv_widths": [8, 8, 16, 16], "conv_blocks": 0,
             "strl_dim": 16, "strl_depth": 1, "strl_heads": 2, "strl_mlp_ratio": 2.0,
             "decoder_dims": [16, 8, 8], "decoder_heads": 2, "heatmap_dim": 8, "time_dim": 16,
             "baseline_deconv": [16, 16]},
}


def resolve_model_config(entry: dict[str, Any]) -> ModelConfig:
    """A ``models.<name>`` entry of params.yaml -> ModelConfig: the ``preset`` (default ``paper``'s
    field defaults when absent) with the other keys as overrides."""
    if not isinstance(entry, dict):
        raise ConfigError(f"models entry: expected a mapping, got {type(entry).__name__}")
    entry = dict(entry)
    name = entry.pop("preset", None)
    base: dict[str, Any] = {}
    if name is not None:
        if name not in PRESETS:
            raise ConfigError(f"models entry: unknown preset {name!r} (known: {', '.join(PRESETS)})")
        base = dict(PRESETS[name])
    return ModelConfig.from_dict({**base, **entry})


__all__ = ["ModelConfig", "PRESETS", "resolve_model_config", "VIT_SIZES"]
