"""Pose models (diffpose.models): config, shapes for every configuration, gradients, overfitting,
sampling with steps/ensembles/seeds, the LMSFI ablation switch, the baseline, ViT weight loading."""

from __future__ import annotations

import dataclasses
import json
from importlib import resources

import jsonschema
import numpy as np
import pytest
import torch

from diffpose.data.codec import HeatmapCodec
from diffpose.errors import ConfigError, DataError
from diffpose.models.backbones import ViT, interpolate_pos_embed, load_vitpose_weights
from diffpose.models.baseline import SimpleBaseline
from diffpose.models.config import PRESETS, ModelConfig, resolve_model_config
from diffpose.models.diffpose import DiffPose
from diffpose.models.factory import build_model

TINY = ModelConfig.preset("tiny")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _clips(cfg: ModelConfig, n: int = 2, seed: int = 0):
    """Random frames and codec targets of random keypoints: ``(frames, target, weight, keypoints)``."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(n, cfg.num_frames, 3, *cfg.input_size, generator=g)
    rng = np.random.default_rng(seed)
    h, w = cfg.input_size
    kpts = np.stack([rng.uniform(4, w - 4, (n, cfg.num_joints)), rng.uniform(4, h - 4, (n, cfg.num_joints)),
                     np.ones((n, cfg.num_joints))], -1)
    codec = HeatmapCodec(cfg.input_size, cfg.heatmap_size, cfg.sigma)
    target = torch.from_numpy(np.stack([codec.encode(k)[0] for k in kpts]))
    return frames, target, torch.ones(n, cfg.num_joints), kpts


# -- config ------------------------------------------------------------------------------------

def test_config_round_trip_and_unknown_keys():
    cfg = ModelConfig.preset("demo_diffpose")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert json.loads(json.dumps(cfg.to_dict())) == cfg.to_dict()
    with pytest.raises(ConfigError, match="unknown key.*lmsfl"):
        ModelConfig.from_dict({**cfg.to_dict(), "lmsfl": False})
    with pytest.raises(ConfigError, match="heatmap_size"):
        cfg.replace(heatmap_size=[16, 12])
    with pytest.raises(ConfigError, match="vit_size"):
        cfg.replace(backbone="vit", vit_size="XL")
    with pytest.raises(ConfigError, match="unknown preset"):
        resolve_model_config({"preset": "huge"})


@pytest.mark.parametrize("key,value", [("lmsfi", "yes"), ("self_correction", 1.5), ("vit_drop_path", 2.0),
                                       ("num_frames", 0), ("sigma", -1.0), ("strl_dim", 31), ("conv_blocks", -1),
                                       ("input_size", [64]), ("decoder_dims", [16, 8]), ("vit_pretrained", None)])
def test_bad_values_name_the_key(key, value):
    with pytest.raises(ConfigError, match=f"model config: {key}"):
        TINY.replace(**{key: value})


def test_paper_preset_and_defaults_follow_the_notes():
    cfg = ModelConfig.preset("paper")
    assert (cfg.backbone, cfg.vit_size, cfg.input_size, cfg.heatmap_size, cfg.num_frames) == (
        "vit", "H", (256, 192), (64, 48), 3)
    assert (cfg.timesteps, cfg.schedule, cfg.schedule_s, cfg.signal_scale) == (1000, "cosine", 0.008, 2.0)
    assert cfg.lmsfi and cfg.feature_size == (16, 12)


@pytest.mark.parametrize("key", ["ddim_eta", "ensemble_combine"])
def test_sampler_settings_are_inference_params_not_model_config(key):
    # a model entry in params.yaml that sets one is told where it went; a saved config drops it
    value = {"ddim_eta": 0.0, "ensemble_combine": "mean_coords"}[key]
    with pytest.raises(ConfigError, match=f"infer.{key}"):
        ModelConfig.from_dict({**TINY.to_dict(), key: value})
    assert ModelConfig.from_dict({**TINY.to_dict(), key: value}, saved=True) == TINY


def test_conv_backbone_stride_sets_the_grid_and_heatmaps():
    """conv: one stride-2 stage per width; heatmaps are always 4x the condition grid."""
    assert (TINY.backbone_stride, TINY.feature_size, TINY.heatmap_size) == (16, (4, 3), (16, 12))
    demo = ModelConfig.preset("demo_diffpose")
    assert (demo.backbone_stride, demo.feature_size, demo.heatmap_size) == (8, (8, 6), (32, 24))
    assert ModelConfig.preset("paper").backbone_stride == 16
    with pytest.raises(ConfigError, match=r"heatmap_size: expected 4 x the condition grid \(input / 8\) = \(32, 24\)"):
        TINY.replace(conv_widths=[8, 16, 16])
    with pytest.raises(ConfigError, match="conv_widths: expected 2 to 5 widths"):
        TINY.replace(conv_widths=[8])
    with pytest.raises(ConfigError, match="input_size: expected .* divisible by the backbone stride 32"):
        TINY.replace(conv_widths=[8, 8, 8, 8, 8], input_size=[80, 48], heatmap_size=[8, 4])


def test_resolve_applies_preset_then_overrides():
    cfg = resolve_model_config({"preset": "demo_diffpose", "num_frames": 5, "lmsfi": False})
    assert cfg.num_frames == 5 and not cfg.lmsfi and cfg.backbone == "conv"
    assert resolve_model_config({"preset": "demo_baseline"}).arch == "baseline"


def test_schema_and_dataclass_agree():
    schema = json.loads((resources.files("diffpose") / "schemas" / "models.json").read_text())
    props = schema["additionalProperties"]["properties"]
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    assert set(props) == fields | {"preset"}
    assert set(props["preset"]["enum"]) == set(PRESETS)
    validator = jsonschema.Draft202012Validator(schema)
    validator.validate({name: dict(entry) for name, entry in PRESETS.items()})
    validator.validate({"demo": ModelConfig.preset("demo_diffpose").to_dict()})
    assert list(validator.iter_errors({"m": {"lmsfl": True}}))


# -- shapes for every configuration --------------------------------------------------------------

VARIANTS = {
    "tiny": {},
    "demo_diffpose": {"preset": "demo_diffpose"},
    "demo_baseline": {"preset": "demo_baseline"},
    "T1": {"num_frames": 1},
    "T5": {"num_frames": 5},
    "no_lmsfi": {"lmsfi": False},
    "heatmap_concat": {"heatmap_concat": True},
    "agg_mlp": {"strl_aggregate": "mlp"},
    "agg_mean": {"strl_aggregate": "mean"},
    "agg_key": {"strl_aggregate": "key"},
    "baseline_unit": {"arch": "baseline", "num_frames": 1, "baseline_target": "unit"},
    "vit_small": {"backbone": "vit", "vit_size": "S", "input_size": [64, 48], "heatmap_size": [16, 12]},
    "input_96x64": {"input_size": [96, 64], "heatmap_size": [24, 16]},
    "conv_stride8": {"conv_widths": [8, 16, 16], "heatmap_size": [32, 24]},
    "baseline_stride8": {"arch": "baseline", "num_frames": 1, "conv_widths": [8, 16, 16], "heatmap_size": [32, 24]},
}


def _variant(name: str) -> ModelConfig:
    over = dict(VARIANTS[name])
    preset = over.pop("preset", "tiny")
    return resolve_model_config({"preset": preset, **over})


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_shapes_for_every_configuration(name):
    cfg = _variant(name)
    torch.manual_seed(0)
    model = build_model(cfg)
    frames, target, weight, _ = _clips(cfg)
    loss = model.loss(frames, target, weight)
    assert loss.ndim == 0 and torch.isfinite(loss)
    model.eval()
    out = model.predict(frames, steps=2, ensemble=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, cfg.num_joints, *cfg.heatmap_size)
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.slow
def test_paper_configuration_forward():
    """ViT-H/16 at 256x192, T=3 (~640M parameters): one forward at batch 1 (~15 s, ~3 GB)."""
    cfg = ModelConfig.preset("paper")
    model = build_model(cfg).eval()
    n_backbone = sum(p.numel() for p in model.backbone.parameters())
    assert 625e6 < n_backbone < 640e6          # ViTPose-H backbone (ViT-H/16, 32 x 1280)
    frames = torch.rand(1, 3, 3, 256, 192)
    with torch.no_grad():
        feats = model.backbone(model.normalize(frames[:, 0]))
        assert feats.shape == (1, 1280, 16, 12)
        out = model.predict(frames, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 17, 64, 48) and torch.isfinite(out).all()


def test_wrong_number_of_frames_is_a_clear_error():
    model = build_model(TINY)
    frames, target, weight, _ = _clips(TINY.replace(num_frames=5))
    with pytest.raises(ValueError, match="num_frames T=3 got clips of T=5"):
        model.loss(frames, target, weight)
    with pytest.raises(ValueError, match="input_size"):
        model.predict(torch.rand(1, 3, 3, 32, 48))


# -- gradients and learning ----------------------------------------------------------------------

@pytest.mark.parametrize("over", [{}, {"lmsfi": False}, {"heatmap_concat": True}, {"strl_aggregate": "mlp"},
                                  {"self_correction": 1.0},
                                  {"arch": "baseline", "num_frames": 1}])
def test_gradients_reach_every_parameter(over):
    cfg = TINY.replace(**over)
    torch.manual_seed(0)
    model = build_model(cfg)
    frames, target, weight, _ = _clips(cfg, n=3)
    model.loss(frames, target, weight).backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"parameters without gradient: {dead}"


def test_self_correction_noises_the_models_own_prediction(monkeypatch):
    frames, target, weight, _ = _clips(TINY, n=4)
    seen = []

    def run(cfg: ModelConfig, train: bool):
        model = build_model(cfg).train(train)
        original = model.diffusion.loss
        monkeypatch.setattr(model.diffusion, "loss", lambda *a, **kw: seen.append(kw["source"]) or original(*a, **kw))
        model.loss(frames, target, weight)
        return seen[-1]

    assert run(TINY, True) is None
    assert run(TINY.replace(self_correction=1.0), False) is None          # training only
    source = run(TINY.replace(self_correction=1.0), True)
    x0 = (target * 2 - 1) * TINY.signal_scale
    assert source.shape == x0.shape and not source.requires_grad
    assert source.abs().max() <= TINY.signal_scale and (source - x0).abs().mean() > 0.1
    torch.manual_seed(0)
    flags = []
    for _ in range(3):                                                      # a per-clip choice
        half = run(TINY.replace(self_correction=0.5), True)
        flags += [(half[i] - x0[i]).abs().max().item() == 0 for i in range(4)]
    assert any(flags) and not all(flags)


def test_gradient_checkpointing_gives_the_same_gradients():
    cfg = TINY.replace(backbone="vit", vit_size="S", arch="baseline", num_frames=1)
    frames, target, weight, _ = _clips(cfg, n=2)
    grads = []
    for flag in (False, True):
        torch.manual_seed(0)
        model = build_model(cfg.replace(grad_checkpoint=flag))
        assert model.backbone.grad_checkpoint is flag
        model.loss(frames, target, weight).backward()
        grads.append(model.backbone.blocks[0].attn.qkv.weight.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-6) and grads[0].abs().sum() > 0


def _overfit(cfg: ModelConfig, steps: int = 200):
    torch.manual_seed(0)
    model = build_model(cfg)
    frames, target, weight, kpts = _clips(cfg, n=4, seed=1)

    def eval_loss() -> float:
        torch.manual_seed(123)  # the same timesteps and noise before and after training
        with torch.no_grad():
            return float(np.mean([model.loss(frames, target, weight).item() for _ in range(4)]))

    before = eval_loss()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        opt.zero_grad()
        model.loss(frames, target, weight).backward()
        opt.step()
    return model.eval(), before, eval_loss(), frames, kpts


@pytest.fixture(scope="module")
def trained():
    """The tiny DiffPose overfitted on four clips (shared by the sampling tests)."""
    return _overfit(TINY)


def test_tiny_batch_overfits(trained):
    _, before, after, _, _ = trained
    assert after < before / 10, (before, after)


def test_baseline_overfits():
    _, before, after, _, _ = _overfit(TINY.replace(arch="baseline", num_frames=1))
    assert after < before / 10, (before, after)


def _error_cells(model, frames, kpts, **kw) -> float:
    xy, _ = model.codec.decode(model.predict(frames, generator=torch.Generator().manual_seed(0), **kw))
    return float(np.abs(xy.numpy() - kpts[..., :2]).mean() / model.codec.stride.mean())


@pytest.mark.parametrize("steps", [1, 5])
def test_sampling_with_1_and_5_steps_from_the_same_weights(trained, steps):
    model, _, _, frames, kpts = trained
    untrained = build_model(TINY).eval()
    assert _error_cells(model, frames, kpts, steps=steps) < 1.0           # memorised poses come back
    assert _error_cells(untrained, frames, kpts, steps=steps) > 2.0


def test_more_steps_change_the_sample(trained):
    model, _, _, frames, _ = trained
    one = model.predict(frames, steps=1, generator=torch.Generator().manual_seed(0))
    five = model.predict(frames, steps=5, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(one, five)


def test_ensembles_k1_and_k4(trained):
    model, _, _, frames, kpts = trained
    k1 = model.predict(frames, ensemble=1, generator=torch.Generator().manual_seed(0))
    k4 = model.predict(frames, ensemble=4, generator=torch.Generator().manual_seed(0))
    assert k1.shape == k4.shape == (4, 17, 16, 12)
    # K=4 is the mean of four samples; the first of them uses the same noise rows as K=1
    g = torch.Generator().manual_seed(0)
    pyramid = [p.repeat(4, 1, 1, 1) for p in model.decoder.condition_pyramid(model.condition(frames))]
    x0 = model.diffusion.sample(lambda x, t: model.decoder(pyramid, x, t), (16, 17, 16, 12), generator=g)
    members = model.codec.from_diffusion(x0).reshape(4, 4, 17, 16, 12)
    assert torch.allclose(k4, members.mean(0), atol=1e-6)
    assert torch.allclose(k1, members[0], atol=1e-6)
    assert _error_cells(model, frames, kpts, ensemble=4) < 1.0


def test_condition_is_computed_once_per_clip(trained):
    model = trained[0]
    frames = trained[3]
    calls = []
    handle = model.backbone.register_forward_hook(lambda *a: calls.append(1))
    strl = model.strl.register_forward_hook(lambda *a: calls.append(2))
    try:
        model.predict(frames, steps=5, ensemble=4, generator=torch.Generator().manual_seed(0))
    finally:
        handle.remove()
        strl.remove()
    assert calls == [1, 2]


def test_same_seed_same_result_other_seed_other_result(trained):
    model, _, _, frames, _ = trained
    run = lambda seed: model.predict(frames, steps=3, ensemble=2,  # noqa: E731
                                     generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(7), run(7))
    assert not torch.allclose(run(7), run(8))


def test_denoising_error_diagnostic(trained):
    model, _, _, frames, kpts = trained
    codec = model.codec
    target = torch.from_numpy(np.stack([codec.encode(k)[0] for k in kpts]))
    weight = torch.ones(4, 17)
    run = lambda: model.denoising_error(frames, target, weight, timesteps=(0, 500, 999),  # noqa: E731
                                        generator=torch.Generator().manual_seed(0))
    errors = run()
    assert list(errors) == [0, 500, 999] and errors == run()
    assert all(np.isfinite(v) and v >= 0 for v in errors.values())
    untrained = build_model(TINY).eval()
    assert untrained.denoising_error(frames, target, weight, timesteps=(999,))[999] > 10 * errors[999]


def test_mean_coords_ensemble_rule(trained):
    model, _, _, frames, kpts = trained
    mean_hm = model.predict(frames, ensemble=3, generator=torch.Generator().manual_seed(0))
    mean_xy = model.predict(frames, ensemble=3, generator=torch.Generator().manual_seed(0), combine_rule="mean_coords")
    assert not torch.allclose(mean_hm, mean_xy)
    assert _error_cells(model, frames, kpts, ensemble=3, combine_rule="mean_coords") < 1.0


# -- the ablation switch and the baseline ---------------------------------------------------------

def test_lmsfi_switch_changes_the_architecture():
    with_lookup = build_model(TINY)
    plain = build_model(TINY.replace(lmsfi=False))
    keys_a, keys_b = set(with_lookup.state_dict()), set(plain.state_dict())
    assert any(k.startswith("decoder.hm_head") for k in keys_a)
    assert not any(k.startswith(("decoder.hm_head", "decoder.hm_refine")) for k in keys_b)
    assert with_lookup.decoder.fuse_in[1][0].in_channels == 2 * TINY.decoder_dims[1]
    assert plain.decoder.fuse_in[1][0].in_channels == TINY.decoder_dims[1] + TINY.heatmap_dim
    concat = build_model(TINY.replace(heatmap_concat=True))
    assert concat.decoder.fuse_in[1][0].in_channels == 2 * TINY.decoder_dims[1] + TINY.heatmap_dim


def test_baseline_uses_the_key_frame_and_ignores_sampler_arguments():
    cfg = TINY.replace(arch="baseline", num_frames=3)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert isinstance(model, SimpleBaseline)
    frames, _, _, _ = _clips(cfg)
    out = model.predict(frames)
    assert torch.equal(out, model.predict(frames, steps=5, ensemble=4, generator=torch.Generator()))
    other = frames.clone()
    other[:, 0] = 0.0
    other[:, 2] = 1.0
    assert torch.equal(out, model.predict(other))            # only the key frame T // 2 matters
    other[:, 1] = 0.5
    assert not torch.equal(out, model.predict(other))


def test_baseline_target_scaling_matches_diffpose():
    cfg = TINY.replace(arch="baseline", num_frames=1)
    frames, target, weight, _ = _clips(cfg)
    scaled, unit = build_model(cfg), build_model(cfg.replace(baseline_target="unit"))
    unit.load_state_dict(scaled.state_dict())
    for m in (scaled, unit):
        m.eval()
        with torch.no_grad():   # make the head output the exact target
            m.forward_heatmaps = lambda f, m=m: m._to_target(target)
        assert m.loss(frames, target, weight).item() == pytest.approx(0.0, abs=1e-12)
        assert torch.allclose(m.predict(frames), target, atol=1e-6)
    # the same raw output means [-2, 2] for "diffusion" and [0, 1] for "unit"
    raw = torch.full_like(target, -2.0)
    assert scaled._from_target(raw).max() == 0.0 and unit._from_target(raw).max() == 0.0
    assert scaled._to_target(target).min() == pytest.approx(-2.0) and unit._to_target(target).min() >= 0.0


# -- ViTPose weights ------------------------------------------------------------------------------

def _vitpose_state(dim: int, depth: int, grid: tuple[int, int], seed: int = 0) -> dict:
    """A synthetic checkpoint in the ViTPose/mmpose layout (``state_dict`` wrapper, prefixes, head)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    sd = {"backbone.patch_embed.proj.weight": r(dim, 3, 16, 16), "backbone.patch_embed.proj.bias": r(dim),
          "backbone.pos_embed": r(1, grid[0] * grid[1] + 1, dim),
          "backbone.last_norm.weight": r(dim), "backbone.last_norm.bias": r(dim),
          "keypoint_head.final_layer.weight": r(17, 256, 1, 1), "keypoint_head.final_layer.bias": r(17)}
    for i in range(depth):
        p = f"backbone.blocks.{i}."
        sd.update({p + "norm1.weight": r(dim), p + "norm1.bias": r(dim), p + "attn.qkv.weight": r(3 * dim, dim),
                   p + "attn.qkv.bias": r(3 * dim), p + "attn.proj.weight": r(dim, dim), p + "attn.proj.bias": r(dim),
                   p + "norm2.weight": r(dim), p + "norm2.bias": r(dim), p + "mlp.fc1.weight": r(4 * dim, dim),
                   p + "mlp.fc1.bias": r(4 * dim), p + "mlp.fc2.weight": r(dim, 4 * dim), p + "mlp.fc2.bias": r(dim)})
    return {"meta": {"mmpose_version": "0.x"}, "state_dict": sd}


def test_vitpose_checkpoint_loads_key_for_key(tmp_path):
    ckpt = _vitpose_state(32, 2, (16, 12))
    path = tmp_path / "vitpose.pth"
    torch.save(ckpt, path)
    vit = ViT((256, 192), dim=32, depth=2, heads=2)
    load_vitpose_weights(vit, path)
    own = vit.state_dict()
    for key, value in ckpt["state_dict"].items():
        if key.startswith("backbone."):
            assert torch.equal(own[key[len("backbone."):]], value), key


def test_vit_adds_the_class_slot_to_every_patch():
    """ViTPose has no class token but keeps its position slot, pos_embed[:, 0], and adds it to every
    patch token: the first block must see patch_embed(x) + pos_embed[:, 1:] + pos_embed[:, :1]."""
    vit = ViT((256, 192), dim=32, depth=2, heads=2).eval()
    load_vitpose_weights(vit, _vitpose_state(32, 2, (16, 12)))  # a pos_embed with a non-zero class slot
    x = torch.rand(2, 3, 256, 192)
    seen = []
    hook = vit.blocks[0].register_forward_pre_hook(lambda _module, args: seen.append(args[0].detach()))
    with torch.no_grad():
        out = vit(x)
        hook.remove()
        patches = vit.patch_embed(x).flatten(2).transpose(1, 2)          # [2, 192, 32]
        with_slot = patches + vit.pos_embed[:, 1:] + vit.pos_embed[:, :1]
        without_slot = patches + vit.pos_embed[:, 1:]
        by_hand = with_slot
        for block in vit.blocks:
            by_hand = block(by_hand)
        by_hand = vit.last_norm(by_hand).transpose(1, 2).reshape(2, 32, 16, 12)
    (tokens,) = seen
    assert tokens.shape == (2, 192, 32) and out.shape == (2, 32, 16, 12)
    torch.testing.assert_close(tokens, with_slot, rtol=0, atol=1e-6)
    torch.testing.assert_close(out, by_hand, rtol=0, atol=1e-5)
    # the check can fail: a forward that dropped the slot, or added it twice, would be caught
    for wrong in (without_slot, with_slot + vit.pos_embed[:, :1]):
        assert not torch.allclose(tokens, wrong, atol=1e-3)


def test_vitpose_pos_embed_is_interpolated_to_another_grid(tmp_path):
    ckpt = _vitpose_state(32, 1, (16, 12))
    ramp = torch.linspace(0, 1, 16).view(16, 1, 1).expand(16, 12, 32).reshape(1, 192, 32)
    ckpt["state_dict"]["backbone.pos_embed"] = torch.cat([torch.full((1, 1, 32), 5.0), ramp], dim=1)
    vit = ViT((128, 96), dim=32, depth=1, heads=2)          # an 8x6 grid
    load_vitpose_weights(vit, ckpt)
    pos = vit.pos_embed.detach()
    assert pos.shape == (1, 1 + 48, 32) and torch.all(pos[0, 0] == 5.0)
    rows = pos[0, 1:].reshape(8, 6, 32)[:, 0, 0]
    assert torch.all(rows[1:] > rows[:-1])                  # the vertical ramp survives resizing
    assert torch.allclose(pos[0, 1:].reshape(8, 6, 32)[3], pos[0, 1:].reshape(8, 6, 32)[3, :1].expand(6, 32))
    square = interpolate_pos_embed(torch.zeros(1, 1 + 14 * 14, 8), (16, 12))   # MAE 14x14
    assert square.shape == (1, 193, 8)


def test_vitpose_mismatch_names_the_file(tmp_path):
    path = tmp_path / "vitpose_b.pth"
    torch.save(_vitpose_state(32, 3, (16, 12)), path)
    with pytest.raises(DataError, match=r"vitpose_b\.pth.*unexpected .*blocks\.2"):
        load_vitpose_weights(ViT((256, 192), dim=32, depth=2, heads=2), path)
    with pytest.raises(DataError, match="not found"):
        load_vitpose_weights(ViT((256, 192), dim=32, depth=2, heads=2), tmp_path / "none.pth")


def test_factory_loads_pretrained_vit_from_a_local_file(tmp_path):
    dim, depth, _ = 384, 12, 6        # ViT-S
    path = tmp_path / "vitpose_s.pth"
    torch.save(_vitpose_state(dim, depth, (4, 3)), path)
    cfg = TINY.replace(backbone="vit", vit_size="S", vit_pretrained=str(path))
    model = build_model(cfg)
    assert torch.equal(model.backbone.blocks[11].mlp.fc2.bias,
                       torch.load(path, weights_only=True)["state_dict"]["backbone.blocks.11.mlp.fc2.bias"])


def test_mae_style_and_wrapped_checkpoints_map_onto_the_vit():
    vitpose = _vitpose_state(32, 1, (16, 12))["state_dict"]
    mae = {k[len("backbone."):]: v for k, v in vitpose.items() if k.startswith("backbone.")}
    mae["norm.weight"], mae["norm.bias"] = mae.pop("last_norm.weight"), mae.pop("last_norm.bias")
    mae.update({"cls_token": torch.zeros(1, 1, 32), "mask_token": torch.zeros(1, 1, 32),
                "decoder_embed.weight": torch.zeros(16, 32), "decoder_pos_embed": torch.zeros(1, 5, 16)})
    mae["pos_embed"] = torch.randn(1, 1 + 14 * 14, 32)          # MAE pretraining grid 14x14
    vit = ViT((256, 192), dim=32, depth=1, heads=2)
    load_vitpose_weights(vit, {"model": mae})
    assert torch.equal(vit.last_norm.weight, mae["norm.weight"])
    assert vit.pos_embed.shape == (1, 193, 32)
    wrapped = {"state_dict": {"module." + k: v for k, v in vitpose.items()}}
    vit2 = ViT((256, 192), dim=32, depth=1, heads=2)
    load_vitpose_weights(vit2, wrapped)
    assert torch.equal(vit2.blocks[0].attn.qkv.weight, vitpose["backbone.blocks.0.attn.qkv.weight"])


@pytest.mark.parametrize("size,heads", [("S", 12), ("B", 12), ("L", 16), ("H", 16)])
def test_vit_sizes_have_vitpose_attention_heads(size, heads):
    """ViTPose-S splits 384 channels into 12 heads (mmpose's ViTPose small config), not DeiT-S's 6:
    weights load under either split and give different outputs, so the split must be right."""
    from diffpose.models.config import VIT_SIZES

    dim, _depth, got = VIT_SIZES[size]
    assert got == heads and dim % got == 0
    if size == "S":
        cfg = TINY.replace(backbone="vit", vit_size="S", arch="baseline", num_frames=1)
        model = build_model(cfg)
        attentions = [m for m in model.modules() if type(m).__name__ == "Attention" and m.qkv.in_features == 384]
        assert attentions and all(a.heads == 12 for a in attentions)
