"""Training speed and peak GPU memory of the paper recipe, per batch size, on the GPU it finds.

    python benchmarks/bench_gpu.py                                 # profile posetrack18, model diffpose
    python benchmarks/bench_gpu.py --batch-sizes 8 16 24 32 --grad-checkpoint --json bench.json
    python benchmarks/bench_gpu.py --cpu-tiny                      # no GPU: the tiny preset on the CPU

One training step is what ``diffpose train`` does per batch on one GPU: forward and loss under the
recipe's autocast dtype (bf16 where the GPU has it natively, else fp16 with a GradScaler),
backward, gradient clipping and the optimizer step over the recipe's parameter groups (layer-wise
lr decay, weight-decay exemptions). Inputs are random clips already on the GPU, so the figures are
the model's ceiling; the loader must keep up with them (docs/paper-recipe.md). Per batch size (clips
per GPU): clips/s (median over the timed steps) and the peak memory torch allocated. A batch that
does not fit is reported as out of memory, and larger ones are skipped. The ViT starts from random
weights (speed and memory do not depend on them).

Without a CUDA GPU the script says so and exits 0; ``--cpu-tiny`` then runs the same steps with
the tiny preset on the CPU, to show the script works (no memory figure there).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def train_step_timer(model, optimizer, scaler, dtype, device, batch: int, grad_clip: float):
    """A function running one training step on a fixed random batch of ``batch`` clips."""
    from diffpose.training.optim import optimizer_step, set_lr

    cfg = model.cfg
    frames = torch.rand(batch, cfg.num_frames, 3, *cfg.input_size, device=device)
    target = torch.rand(batch, cfg.num_joints, *cfg.heatmap_size, device=device)
    weight = torch.ones(batch, cfg.num_joints, device=device)
    lr = optimizer.defaults["lr"]

    def step() -> None:
        set_lr(optimizer, lr)
        with torch.autocast(device_type=device.type, dtype=dtype or torch.float16, enabled=dtype is not None):
            loss = model.loss(frames, target, weight)
        optimizer_step(loss, model, optimizer, scaler, grad_clip)

    return step


def measure(model_cfg, train_cfg, device: torch.device, batch_sizes: list[int], *, steps: int,
            warmup: int) -> list[dict]:
    from diffpose.models.factory import build_model
    from diffpose.training.optim import autocast_dtype, make_optimizer, make_scaler

    torch.manual_seed(0)
    model = build_model(model_cfg).to(device).train()
    optimizer = make_optimizer(model, optimizer=train_cfg.optimizer, lr=train_cfg.lr,
                               weight_decay=train_cfg.weight_decay, layer_decay=train_cfg.layer_decay,
                               no_decay_norm_bias=train_cfg.no_decay_norm_bias)
    dtype = autocast_dtype(train_cfg.amp, train_cfg.amp_dtype, device)
    scaler = make_scaler(dtype)
    rows = []
    for batch in batch_sizes:
        row = {"batch": batch, "precision": str(dtype).replace("torch.", "") if dtype else "fp32"}
        try:
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            step = train_step_timer(model, optimizer, scaler, dtype, device, batch, train_cfg.grad_clip)
            times = []
            for i in range(warmup + steps):
                start = time.perf_counter()
                step()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if i >= warmup:
                    times.append(time.perf_counter() - start)
            row["clips_per_second"] = round(batch / statistics.median(times), 2)
            row["peak_memory_gb"] = (round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
                                     if device.type == "cuda" else None)
        except torch.cuda.OutOfMemoryError:
            row["clips_per_second"], row["peak_memory_gb"] = None, "out of memory"
            rows.append(row)
            break
        finally:
            optimizer.zero_grad(set_to_none=True)
        rows.append(row)
    return rows


def _table(rows: list[dict]) -> str:
    lines = ["| clips per GPU | precision | clips/s | peak memory (GB) |", "|---|---|---|---|"]
    for r in rows:
        memory = r["peak_memory_gb"] if r["peak_memory_gb"] is not None else "n/a (CPU)"
        lines.append(f"| {r['batch']} | {r['precision']} | {r['clips_per_second'] or '-'} | {memory} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="posetrack18",
                        help="params profile (profiles/<name>.yaml, default posetrack18)")
    parser.add_argument("--params", default=str(REPO / "params.yaml"), help="base params file")
    parser.add_argument("--model", default="diffpose", help="entry of the profile's models (default diffpose)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 24, 32],
                        help="clips per GPU to try, in increasing order")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per batch size (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--grad-checkpoint", action="store_true", help="recompute the ViT blocks in backward")
    parser.add_argument("--cpu-tiny", action="store_true", help="without a GPU: run the tiny preset on the CPU")
    parser.add_argument("--json", metavar="FILE", help="also write the rows and the set-up as JSON")
    args = parser.parse_args(argv)

    from diffpose.models.config import ModelConfig, resolve_model_config
    from diffpose.training.profiles import load_profile
    from diffpose.training.trainer import TrainConfig

    params = load_profile(args.profile, args.params)
    train_cfg = TrainConfig.from_dict({k: v for k, v in params["train"].items() if k not in ("seeds", "processes")})
    if torch.cuda.is_available():
        device = torch.device("cuda", 0)
        memory = torch.cuda.get_device_properties(device).total_memory / 2**30
        what = f"{torch.cuda.get_device_name(device)} ({memory:.0f} GB)"
        model_cfg = resolve_model_config(params["models"][args.model]).replace(
            vit_pretrained="", grad_checkpoint=args.grad_checkpoint)
    else:
        hint = "" if args.cpu_tiny else " --cpu-tiny runs the tiny preset on the CPU."
        print(f"bench_gpu: no CUDA GPU found (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}): "
              f"nothing to measure for the {args.profile} profile.{hint}")
        if not args.cpu_tiny:
            return 0
        device, what = torch.device("cpu"), f"CPU ({torch.get_num_threads()} threads), tiny preset"
        model_cfg = ModelConfig.preset("tiny")
        train_cfg = TrainConfig.from_dict({**train_cfg.to_dict(), "layer_decay": 1.0})  # the tiny preset has no ViT
    print(f"bench_gpu: {what}; profile {args.profile}, model {args.model}: {model_cfg.arch}, "
          f"{model_cfg.backbone}{'-' + model_cfg.vit_size if model_cfg.backbone == 'vit' else ''}, "
          f"{model_cfg.input_size[0]}x{model_cfg.input_size[1]}, T={model_cfg.num_frames}, "
          f"grad_checkpoint {model_cfg.grad_checkpoint}; layer_decay {train_cfg.layer_decay}, "
          f"optimizer {train_cfg.optimizer}",
          flush=True)
    rows = measure(model_cfg, train_cfg, device, args.batch_sizes, steps=args.steps, warmup=args.warmup)
    print(_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"device": what, "profile": args.profile, "model": args.model,
                                               "model_config": model_cfg.to_dict(), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
