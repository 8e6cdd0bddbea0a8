"""The paper-scale training recipe: optimizer parameter groups (layer-wise lr decay, weight-decay
exemptions), the AMP dtype, drop path, validation during training with best.pt, ViTPose weights in
both key layouts, the warning for a ViT without pretrained weights, and the dataset profiles."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from diffpose.errors import ConfigError, DataError
from diffpose.models.backbones import ViT, checkpoint_layout, load_vitpose_weights
from diffpose.models.checkpoint import read_payload
from diffpose.models.config import ModelConfig
from diffpose.models.factory import build_model
from diffpose.training import optim
from diffpose.training.trainer import TrainConfig, fingerprint
from tests.test_clips import make_tiny_dataset

REPO = Path(__file__).resolve().parents[1]
TINY = ModelConfig.preset("tiny")
PROFILES = ("posetrack17", "posetrack18", "posetrack21")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class SmallVitModel(nn.Module):
    """A ViT backbone (3 blocks) and a head with a conv, a BatchNorm and a position embedding."""

    def __init__(self, depth: int = 3) -> None:
        super().__init__()
        self.backbone = ViT((64, 48), dim=32, depth=depth, heads=2)
        self.head = nn.Sequential(nn.Conv2d(32, 8, 1), nn.BatchNorm2d(8))
        self.head_pos_embed = nn.Parameter(torch.zeros(1, 12, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)).flatten(2).transpose(1, 2) + self.head_pos_embed


def _group_of(specs: list[optim.GroupSpec]) -> dict[str, optim.GroupSpec]:
    return {name: spec for spec in specs for name in spec.names}


# -- parameter groups ------------------------------------------------------------------------------

def test_default_recipe_is_the_single_group_optimizer_bit_for_bit():
    torch.manual_seed(0)
    a, b = SmallVitModel(), SmallVitModel()
    b.load_state_dict(a.state_dict())
    ours = optim.make_optimizer(a, optimizer="adamw", lr=1e-3, weight_decay=1e-4)
    plain = torch.optim.AdamW(b.parameters(), lr=1e-3, weight_decay=1e-4)
    assert len(ours.param_groups) == 1 and "lr_scale" not in ours.param_groups[0]
    x = torch.rand(2, 3, 64, 48)
    for step in range(3):
        for model, opt in ((a, ours), (b, plain)):
            optim.set_lr(opt, 1e-3 * (step + 1))
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_layer_ids_of_the_vit_and_the_parts_trained_from_scratch():
    model = SmallVitModel(depth=3)
    ids = {name: optim.layer_id(name, 3) for name, _ in model.named_parameters()}
    assert ids["backbone.pos_embed"] == ids["backbone.patch_embed.proj.weight"] == 0
    assert ids["backbone.blocks.0.attn.qkv.weight"] == 1 and ids["backbone.blocks.2.mlp.fc2.bias"] == 3
    assert ids["backbone.last_norm.weight"] == ids["head.0.weight"] == ids["head_pos_embed"] == 4
    assert optim.layer_id("strl.blocks.0.attn.qkv.weight", 32) == 33  # the STRL's blocks are not the ViT's


def test_layer_wise_decay_ratios_and_the_lr_each_group_gets():
    model = SmallVitModel(depth=3)
    r = 0.75
    specs = optim.parameter_groups(model, weight_decay=0.05, layer_decay=r)
    by_name = _group_of(specs)
    assert set(by_name) == {n for n, _ in model.named_parameters()}           # every parameter, once
    assert sum(len(s.names) for s in specs) == len(list(model.parameters()))
    scale = {s.layer_id: s.lr_scale for s in specs}
    assert sorted(scale) == [0, 1, 2, 3, 4]
    assert scale[4] == 1.0 and scale[3] == pytest.approx(r) and scale[0] == pytest.approx(r ** 4)
    for lid in range(4):
        assert scale[lid] / scale[lid + 1] == pytest.approx(r)                 # r per layer
    opt = optim.make_optimizer(model, optimizer="adamw", lr=2e-3, weight_decay=0.05, layer_decay=r)
    optim.set_lr(opt, 1e-3)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert lr_of[id(params["head.0.weight"])] == pytest.approx(1e-3)
    assert lr_of[id(params["backbone.blocks.2.attn.proj.weight"])] == pytest.approx(1e-3 * r)
    assert lr_of[id(params["backbone.pos_embed"])] == pytest.approx(1e-3 * r ** 4)
    assert all(g["weight_decay"] == 0.05 for g in opt.param_groups)           # no exemption asked for


def test_no_weight_decay_on_norms_biases_and_position_embeddings():
    model = SmallVitModel(depth=2)
    specs = optim.parameter_groups(model, weight_decay=0.1, layer_decay=0.8, no_decay_norm_bias=True)
    decay = {n: s.weight_decay for s in specs for n in s.names}
    exempt = {"backbone.pos_embed", "backbone.patch_embed.proj.bias", "backbone.blocks.0.norm1.weight",
              "backbone.blocks.0.norm1.bias", "backbone.blocks.1.attn.qkv.bias", "backbone.blocks.1.mlp.fc1.bias",
              "backbone.last_norm.weight", "head.0.bias", "head.1.weight", "head.1.bias", "head_pos_embed"}
    decayed = {"backbone.patch_embed.proj.weight", "backbone.blocks.0.attn.qkv.weight",
               "backbone.blocks.1.mlp.fc2.weight", "head.0.weight"}
    assert all(decay[n] == 0.0 for n in exempt) and all(decay[n] == 0.1 for n in decayed)
    matrices = {n for n, p in model.named_parameters() if p.ndim >= 2 and "pos_embed" not in n}
    assert decayed < matrices and {n for n, v in decay.items() if v == 0.1} == matrices
    # without layer decay the exemption still splits the model into two groups
    two = optim.parameter_groups(model, weight_decay=0.1, no_decay_norm_bias=True)
    assert [(s.layer_id, s.lr_scale, s.weight_decay) for s in two] == [(None, 1.0, 0.0), (None, 1.0, 0.1)]


def test_layer_decay_on_a_conv_backbone_is_a_config_error():
    with pytest.raises(ConfigError, match="layer_decay 0.8 needs a ViT backbone"):
        optim.make_optimizer(build_model(TINY), optimizer="adamw", lr=1e-3, weight_decay=0.0, layer_decay=0.8)


def test_the_groups_survive_an_optimizer_state_round_trip():
    torch.manual_seed(0)
    model = SmallVitModel()
    opt = optim.make_optimizer(model, optimizer="adam", lr=1e-3, weight_decay=0.1, layer_decay=0.9,
                               no_decay_norm_bias=True)
    model(torch.rand(2, 3, 64, 48)).sum().backward()
    opt.step()
    fresh = optim.make_optimizer(model, optimizer="adam", lr=1e-3, weight_decay=0.1, layer_decay=0.9,
                                 no_decay_norm_bias=True)
    fresh.load_state_dict(opt.state_dict())
    optim.set_lr(fresh, 5e-4)
    assert [g["lr"] / 5e-4 for g in fresh.param_groups] == pytest.approx([g["lr_scale"] for g in opt.param_groups])


def test_train_config_checks_the_new_keys_and_the_schema_accepts_them():
    from diffpose.config import load_params, validate_params

    assert TrainConfig() == TrainConfig.from_dict({})                 # defaults: today's behaviour
    assert (TrainConfig().layer_decay, TrainConfig().no_decay_norm_bias, TrainConfig().val_every,
            TrainConfig().amp_dtype) == (1.0, False, 0, "auto")
    for bad in ({"layer_decay": 0.0}, {"layer_decay": 1.5}, {"amp_dtype": "fp8"}, {"val_every": -1}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            TrainConfig.from_dict(bad)
    params = load_params(REPO / "params.yaml")
    params["train"].update(layer_decay=0.85, no_decay_norm_bias=True, val_every=5, amp_dtype="bf16")
    validate_params(params)
    params["train"]["layer_decay"] = 0
    with pytest.raises(ConfigError, match="train.layer_decay"):
        validate_params(params)


def test_fingerprint_covers_the_recipe_but_not_validation():
    from diffpose.data.clips import DataConfig

    base = TrainConfig()
    fp = lambda cfg: fingerprint(TINY.to_dict(), cfg, DataConfig(), "v")  # noqa: E731
    assert fp(base) == fp(TrainConfig(val_every=3))                     # validation never changes the weights
    for changed in ({"layer_decay": 0.9}, {"no_decay_norm_bias": True}, {"amp_dtype": "fp16"}):
        assert fp(TrainConfig(**changed)) != fp(base)


# -- precision ----------------------------------------------------------------------------------------

def test_amp_dtype_bf16_where_native_fp16_with_a_scaler_elsewhere(monkeypatch):
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    asked = []

    def supported(answer):
        def fake(including_emulation=True):
            asked.append(including_emulation)
            return answer
        return fake

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported(True))
    assert optim.autocast_dtype(True, "auto", cuda) is torch.bfloat16
    assert asked == [False]                                            # emulated bf16 (pre-Ampere) does not count
    assert optim.autocast_dtype(True, "fp16", cuda) is torch.float16
    assert optim.autocast_dtype(True, "auto", cpu) is None and optim.autocast_dtype(False, "auto", cuda) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported(False))
    assert optim.autocast_dtype(True, "auto", cuda) is torch.float16
    with pytest.raises(ConfigError, match="no native bf16"):
        optim.autocast_dtype(True, "bf16", cuda)
    made = []
    monkeypatch.setattr(torch.amp, "GradScaler", lambda device, enabled: made.append((device, enabled)))
    optim.make_scaler(torch.float16), optim.make_scaler(torch.bfloat16), optim.make_scaler(None)
    assert made == [("cuda", True), ("cuda", False), ("cuda", False)]  # a scaler for fp16 only


# -- drop path ----------------------------------------------------------------------------------------

def test_vit_drop_path_is_applied_per_block_and_only_in_training():
    cfg = TINY.replace(backbone="vit", vit_size="S", vit_drop_path=0.3, arch="baseline", num_frames=1)
    vit = build_model(cfg).backbone
    rates = [blk.drop_path.p for blk in vit.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.3) and rates == sorted(rates) and len(set(rates)) == 12
    x = torch.rand(8, 3, 64, 48)
    vit.train()
    torch.manual_seed(1)
    a = vit(x)
    torch.manual_seed(2)
    b = vit(x)
    assert not torch.allclose(a, b)                                    # samples dropped differently
    vit.eval()
    assert torch.equal(vit(x), vit(x))


def test_gradient_checkpointing_replays_the_same_drop_path_masks():
    torch.manual_seed(0)
    plain = ViT((64, 48), dim=32, depth=4, heads=2, drop_path=0.5).train()
    ckpt = ViT((64, 48), dim=32, depth=4, heads=2, drop_path=0.5, grad_checkpoint=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.rand(6, 3, 64, 48)
    grads = []
    for model in (plain, ckpt):
        torch.manual_seed(7)
        model(x).square().sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for g1, g2 in zip(*grads):
        torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-6)


# -- ViTPose weights in both layouts --------------------------------------------------------------

def _reference_vit(seed: int = 0) -> ViT:
    torch.manual_seed(seed)
    vit = ViT((64, 48), dim=32, depth=2, heads=2).eval()
    with torch.no_grad():
        for p in vit.parameters():
            p.add_(torch.randn_like(p) * 0.1)                          # non-trivial norms, biases, class slot
    return vit


def _official_layout(vit: ViT) -> dict:
    """The ViTAE-Transformer/ViTPose (mmpose 0.x) checkpoint of ``vit``."""
    sd = {f"backbone.{k}": v.clone() for k, v in vit.state_dict().items()}
    sd["keypoint_head.final_layer.weight"] = torch.zeros(17, 256, 1, 1)
    return {"meta": {"mmpose_version": "0.24"}, "state_dict": sd}


def _mmpretrain_layout(vit: ViT, *, with_cls_token: bool = False) -> dict:
    """The mmpose 1.x checkpoint (mmpretrain VisionTransformer names) computing what ``vit`` does:
    its position embedding has no class slot, so the slot is folded into every patch."""
    names = {"norm1": "ln1", "norm2": "ln2", "mlp.fc1": "ffn.layers.0.0", "mlp.fc2": "ffn.layers.1"}
    sd = {}
    for key, value in vit.state_dict().items():
        if key.startswith("blocks."):
            _, i, rest = key.split(".", 2)
            for ours, theirs in names.items():
                if rest.startswith(ours + "."):
                    rest = theirs + rest[len(ours):]
            key = f"layers.{i}.{rest}"
        key = key.replace("patch_embed.proj.", "patch_embed.projection.").replace("last_norm.", "ln1.")
        sd[f"backbone.{key}"] = value.clone()
    pos = vit.pos_embed.detach()
    folded = pos[:, 1:] + pos[:, :1]
    if with_cls_token:
        sd["backbone.cls_token"] = torch.randn(1, 1, 32)
        sd["backbone.pos_embed"] = torch.cat([torch.randn(1, 1, 32), folded], dim=1)  # mmpretrain drops this slot
    else:
        sd["backbone.pos_embed"] = folded
    sd["head.final_layer.weight"] = torch.zeros(17, 256, 1, 1)
    sd["data_preprocessor.mean"] = torch.zeros(3)
    return {"meta": {"mmpose_version": "1.0.0"}, "state_dict": sd}


@pytest.mark.parametrize("layout", ["official", "mmpretrain", "mmpretrain+cls"])
def test_vitpose_weights_load_from_both_layouts_and_compute_the_same(layout, tmp_path):
    ref = _reference_vit()
    ckpt = (_official_layout(ref) if layout == "official"
            else _mmpretrain_layout(ref, with_cls_token=layout.endswith("cls")))
    assert checkpoint_layout(ckpt["state_dict"]) == ("vitpose" if layout == "official" else "mmpretrain")
    path = tmp_path / "vitpose_h.pth"
    torch.save(ckpt, path)
    vit = ViT((64, 48), dim=32, depth=2, heads=2).eval()
    load_vitpose_weights(vit, path)
    x = torch.rand(2, 3, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(vit(x), ref(x), rtol=1e-5, atol=1e-5)
    assert torch.equal(vit.blocks[1].mlp.fc1.weight, ref.blocks[1].mlp.fc1.weight)
    if layout != "official":
        assert torch.all(vit.pos_embed[:, 0] == 0)                      # mmpretrain adds no class slot


def test_mmpretrain_parts_this_vit_lacks_are_named():
    ckpt = _mmpretrain_layout(_reference_vit())
    ckpt["state_dict"]["backbone.layers.0.attn.gamma1.weight"] = torch.ones(32)   # layer scale
    with pytest.raises(DataError, match=r"unexpected .*gamma1"):
        load_vitpose_weights(ViT((64, 48), dim=32, depth=2, heads=2), ckpt)


def test_a_14x14_mae_patch_kernel_is_zero_padded_to_16():
    ref = _reference_vit()
    sd = {k: v.clone() for k, v in ref.state_dict().items() if not k.startswith("last_norm")}
    sd.update({"norm.weight": ref.last_norm.weight.detach(), "norm.bias": ref.last_norm.bias.detach()})
    sd["patch_embed.proj.weight"] = torch.randn(32, 3, 14, 14)
    vit = ViT((64, 48), dim=32, depth=2, heads=2)
    load_vitpose_weights(vit, {"model": sd})
    kernel = vit.patch_embed.proj.weight.detach()
    assert torch.equal(kernel[:, :, 1:15, 1:15], sd["patch_embed.proj.weight"])
    assert kernel[:, :, 0].abs().sum() == 0 and kernel[:, :, :, 15].abs().sum() == 0


# -- training: the warning, validation and best.pt ----------------------------------------------

@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("data")
    ann, _ = make_tiny_dataset(root, sequences=3, frames=8)
    val, _ = make_tiny_dataset(root, sequences=2, frames=6, split="val", seed=1)
    return ann, val, root


def _configs(**train):
    from diffpose.data.clips import DataConfig

    values = {"epochs": 3, "batch_size": 4, "lr": 1e-3, "warmup_epochs": 0.5, "threads": 1, "device": "cpu",
              "amp": False}
    return TrainConfig.from_dict({**values, **train}), DataConfig(workers=0)


def test_a_vit_without_pretrained_weights_warns_once_and_tags_the_run(data, tmp_path, capsys):
    import mlflow

    from diffpose.training.trainer import train

    ann, _, root = data
    vit_cfg = TINY.replace(backbone="vit", vit_size="S")                # what the params ask for ...
    train_cfg, data_cfg = _configs(epochs=1)
    result = train(model_cfg=vit_cfg, train_cfg=train_cfg, data_cfg=data_cfg, annotations=str(ann),
                   image_root=str(root), out_dir=str(tmp_path / "out"), name="paper", progress=False,
                   build=lambda cfg: build_model(TINY))                 # ... built small to keep the test fast
    warnings = [line for line in capsys.readouterr().err.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "random weights" in warnings[0] and "ViT-S" in warnings[0]
    tags = mlflow.get_run(result["mlflow_run_id"]).data.tags
    assert tags["vit_pretrained"] == "none (random init)" and "random weights" in tags["warning"]
    assert tags["precision"] == "fp32"
    from diffpose.training.trainer import pretrained_backbone_warning

    assert pretrained_backbone_warning(vit_cfg.replace(vit_pretrained="w.pth"), "m") is None
    assert pretrained_backbone_warning(TINY, "m") is None               # the conv backbone has no pretraining


def test_validation_keeps_best_by_total_map_and_a_resume_keeps_it(data, tmp_path, monkeypatch):
    import mlflow

    from diffpose.training import trainer, validation

    ann, val, root = data
    out = tmp_path / "out"
    totals = iter([40.0, 55.0])

    def fake_validate(self, model, **_kwargs):
        value = next(totals, None)
        if value is None:
            raise KeyboardInterrupt                                     # the run dies during the 3rd validation
        return {"Head": value, "Shou": 1.0, "Elb": 1.0, "Wri": 1.0, "Hip": 1.0, "Knee": 1.0, "Ankl": 1.0,
                "Total": value, "per_joint": {}}

    monkeypatch.setattr(validation.Validator, "__call__", fake_validate)
    train_cfg, data_cfg = _configs(epochs=3, val_every=1)
    kwargs = dict(model_cfg=TINY, train_cfg=train_cfg, data_cfg=data_cfg, annotations=str(ann), image_root=str(root),
                  out_dir=str(out), name="tiny", progress=False, val_annotations=str(val))
    with pytest.raises(KeyboardInterrupt):
        trainer.train(**kwargs)
    best = read_payload(out / "best.pt")
    assert best["extra"]["best"] == {"epoch": 2, "Total": 55.0} and best["extra"]["val"]["Head"] == 55.0
    last = read_payload(out / "last.pt")
    assert last["extra"]["epoch"] == 1 and last["extra"]["best"] == {"epoch": 2, "Total": 55.0}
    assert all(torch.equal(best["state_dict"][k], v) for k, v in last["state_dict"].items())  # epoch 2's weights

    totals = iter([50.0])                                               # worse than epoch 2
    result = trainer.train(**kwargs)
    assert result["resumed_after_epoch"] == 2
    assert result["best_epoch"] == 2 and result["best_val_mAP"] == 55.0 and result["val_mAP"] == 50.0
    assert read_payload(out / "best.pt")["extra"]["best"]["epoch"] == 2  # not replaced by a worse epoch
    history = json.loads((out / "history.json").read_text())
    assert [h.get("val_mAP") for h in history] == [40.0, 55.0, 50.0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best_epoch"] == 2 and metrics["best_val_mAP"] == 55.0
    client = mlflow.MlflowClient()
    assert [m.value for m in client.get_metric_history(result["mlflow_run_id"], "val_mAP")] == [50.0]
    run = mlflow.get_run(result["mlflow_run_id"])
    assert run.data.tags["best_epoch"] == "2" and run.data.metrics["best_val_mAP"] == 55.0


def test_validation_scores_what_infer_and_evaluate_score(data, tmp_path):
    """The in-process validation of the last epoch equals `diffpose infer --boxes gt` + the evaluator
    on the checkpoint of that epoch, with the same sampler settings."""
    from diffpose.evaluation.posetrack_map import evaluate_folders
    from diffpose.stages import infer
    from diffpose.training.trainer import train

    ann, val, root = data
    settings = {"steps": 2, "ensemble": 2, "flip_test": True, "ddim_eta": 1.0, "ensemble_combine": "mean_heatmap",
                "seed": 3, "batch_size": 8, "workers": 0}
    train_cfg, data_cfg = _configs(epochs=2, val_every=2)
    result = train(model_cfg=TINY, train_cfg=train_cfg, data_cfg=data_cfg, annotations=str(ann), image_root=str(root),
                   out_dir=str(tmp_path / "out"), name="tiny", progress=False, val_annotations=str(val),
                   val_settings=settings)
    assert math.isfinite(result["val_mAP"]) and 0.0 <= result["val_mAP"] <= 100.0
    infer.run(checkpoint=str(tmp_path / "out" / "best.pt"), annotations=str(val), images=str(root),
              out=str(tmp_path / "pred"), settings={**settings, "device": "cpu"}, progress=False)
    assert evaluate_folders(val, tmp_path / "pred")["Total"] == result["val_mAP"]


def test_validation_needs_a_val_folder(data, tmp_path):
    from diffpose.training.trainer import train

    ann, val, root = data
    common = dict(model_cfg=TINY, data_cfg=_configs()[1], annotations=str(ann), image_root=str(root),
                  out_dir=str(tmp_path / "out"), name="tiny", progress=False)
    with pytest.raises(ConfigError, match="val_every is 2 but no val annotations"):
        train(train_cfg=_configs(val_every=2)[0], **common)
    with pytest.raises(ConfigError, match="expected a folder"):
        train(train_cfg=_configs(val_every=2)[0], val_annotations=str(next(val.glob("*.json"))), **common)
    assert not (tmp_path / "out" / "last.pt").exists()                  # failed before any training


# -- profiles --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PROFILES)
def test_each_profile_validates_and_builds_the_paper_model_with_layer_decay_groups(name):
    from diffpose.models.config import resolve_model_config
    from diffpose.models.factory import ARCHITECTURES
    from diffpose.training.profiles import load_profile, read_profile

    params = load_profile(name, REPO / "params.yaml")
    profile = read_profile(REPO / "profiles" / f"{name}.yaml")
    assert params["dataset"]["name"] == name and set(params["models"]) == set(profile["models"])
    aug = params["data"]["augmentation"]
    assert (aug["rotation"], aug["rotation_prob"], aug["scale"], aug["half_body_prob"], aug["flip_prob"]) == \
        (45.0, 0.6, 0.35, 0.3, 0.5)
    train_cfg = TrainConfig.from_dict({k: v for k, v in params["train"].items() if k not in ("seeds", "processes")})
    assert train_cfg.layer_decay == 0.85 and train_cfg.no_decay_norm_bias
    assert train_cfg.amp and train_cfg.val_every > 0
    cfg = resolve_model_config(params["models"]["diffpose"])
    assert (cfg.backbone, cfg.vit_size, cfg.input_size, cfg.heatmap_size, cfg.num_frames) == \
        ("vit", "H", (256, 192), (64, 48), 3)
    assert cfg.vit_pretrained.startswith("data/real/weights/") and cfg.vit_drop_path > 0
    with torch.device("meta"):                                          # ViT-H without allocating 2.6 GB
        model = ARCHITECTURES[cfg.arch](cfg.replace(vit_pretrained=""))
    assert 640e6 < sum(p.numel() for p in model.parameters()) < 642e6
    specs = optim.parameter_groups(model, weight_decay=train_cfg.weight_decay, layer_decay=train_cfg.layer_decay,
                                   no_decay_norm_bias=True)
    scales = {s.layer_id: s.lr_scale for s in specs}
    assert sorted(scales) == list(range(34)) and scales[33] == 1.0
    assert scales[0] == pytest.approx(0.85 ** 33)
    top = {n.split(".")[0] for s in specs if s.layer_id == 33 for n in s.names}
    assert top == {"backbone", "strl", "decoder"}                       # last_norm and the new parts


def test_profile_merge_rules_and_errors(tmp_path):
    from diffpose.training.profiles import load_profile, main, merge

    base = {"train": {"lr": 1.0, "epochs": 3}, "models": {"demo": {"preset": "tiny", "sigma": 1.0}}, "x": [1, 2]}
    merged = merge(base, {"train": {"lr": 2.0}, "models": {"paper": {"preset": "paper"}}, "x": [3]})
    assert merged == {"train": {"lr": 2.0, "epochs": 3}, "models": {"paper": {"preset": "paper"}}, "x": [3]}
    assert base["train"]["lr"] == 1.0                                   # inputs untouched
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  layer_decay: 1.5\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml over .*train\.layer_decay"):
        load_profile(bad, REPO / "params.yaml")
    bad.write_text("train:\n  lr: 1.0\n  lr: 2.0\n")
    with pytest.raises(ConfigError, match="duplicate key 'lr'"):
        load_profile(bad, REPO / "params.yaml")
    with pytest.raises(ConfigError, match="profile not found.*posetrack18"):
        load_profile("posetrack99", REPO / "params.yaml")
    out = tmp_path / "params-pt18.yaml"
    assert main(["posetrack18", "--params", str(REPO / "params.yaml"), "--out", str(out)]) == 0
    from diffpose.config import load_params

    assert load_params(out)["models"]["diffpose"]["preset"] == "paper"
    assert yaml.safe_load(out.read_text())["train"]["layer_decay"] == 0.85


@pytest.mark.slow  # builds ViT-H (641M parameters, 2.6 GB) once on the CPU
def test_the_posetrack18_profile_builds_the_real_paper_model():
    import gc

    from diffpose.models.config import resolve_model_config
    from diffpose.training.profiles import load_profile

    params = load_profile("posetrack18", REPO / "params.yaml")
    cfg = resolve_model_config(params["models"]["diffpose"]).replace(vit_pretrained="")
    model = build_model(cfg)
    try:
        assert 640e6 < sum(p.numel() for p in model.parameters()) < 642e6
        train = params["train"]
        opt = optim.make_optimizer(model, optimizer=train["optimizer"], lr=train["lr"],
                                   weight_decay=train["weight_decay"], layer_decay=train["layer_decay"],
                                   no_decay_norm_bias=train["no_decay_norm_bias"])
        assert len(opt.param_groups) == 68                               # 34 layers x (decay, no decay)
        assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
        optim.set_lr(opt, train["lr"])
        by_id = {id(p): g for g in opt.param_groups for p in g["params"]}
        assert by_id[id(model.backbone.blocks[31].attn.qkv.weight)]["lr"] == pytest.approx(5e-4 * 0.85)
        assert by_id[id(model.backbone.pos_embed)]["weight_decay"] == 0.0
        assert model.backbone.blocks[-1].drop_path.p == pytest.approx(0.55)
    finally:
        del model
        gc.collect()


# -- benchmarks/bench_gpu.py -------------------------------------------------------------------------

def _bench_gpu():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_gpu", REPO / "benchmarks" / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_gpu_says_plainly_when_there_is_no_gpu_and_runs_tiny_on_the_cpu(monkeypatch, capsys):
    bench = _bench_gpu()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.main([]) == 0
    out = capsys.readouterr().out
    assert "no CUDA GPU found" in out and "|" not in out                # the message, no table
    assert bench.main(["--cpu-tiny", "--batch-sizes", "1", "2", "--steps", "1", "--warmup", "0"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "fp32" in line]
    assert [r.split("|")[1].strip() for r in rows] == ["1", "2"]
    assert all(float(r.split("|")[3]) > 0 for r in rows)
