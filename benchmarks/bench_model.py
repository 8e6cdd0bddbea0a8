"""Model size and CPU speed of the demo and paper configurations.

    python benchmarks/bench_model.py                 # demo presets + the paper model (ViT-H, ~1 min)
    python benchmarks/bench_model.py --skip-paper --threads 1

Prints per configuration: parameters, FLOPs of one sampling pass (torch.utils.flop_counter, one
DDIM step, K=1; multiply-adds count as 2 FLOPs), inference time at batch 1 and 16 (demo) or 1
(paper), and training throughput (forward + backward + Adam step, clips/s at batch 32) for the
demo presets. Times are medians; the reference is the single-frame baseline measured in the same
run, so ratios are meaningful even on a busy machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from diffpose.models.config import ModelConfig
from diffpose.models.factory import build_model


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _inputs(cfg: ModelConfig, batch: int):
    frames = torch.rand(batch, cfg.num_frames, 3, *cfg.input_size)
    target = torch.rand(batch, cfg.num_joints, *cfg.heatmap_size)
    return frames, target, torch.ones(batch, cfg.num_joints)


def measure(name: str, cfg: ModelConfig, *, batches: tuple[int, ...], train_batch: int | None,
            repeats: int) -> dict:
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    row = {"name": name, "params": sum(p.numel() for p in model.parameters())}
    frames, _, _ = _inputs(cfg, 1)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.predict(frames, generator=torch.Generator().manual_seed(0))
    row["gflops"] = counter.get_total_flops() / 1e9
    for b in batches:
        frames, _, _ = _inputs(cfg, b)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            row[f"infer_b{b}_ms"] = 1e3 * _median_time(lambda: model.predict(frames, generator=g), repeats)
    if cfg.arch == "diffpose":
        frames, _, _ = _inputs(cfg, batches[-1])
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            row["infer_5steps_ms"] = 1e3 * _median_time(lambda: model.predict(frames, steps=5, generator=g), repeats)
            row["infer_k4_ms"] = 1e3 * _median_time(lambda: model.predict(frames, ensemble=4, generator=g), repeats)
    if train_batch:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        frames, target, weight = _inputs(cfg, train_batch)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            model.loss(frames, target, weight).backward()
            opt.step()

        row["train_clips_s"] = train_batch / _median_time(step, repeats)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-paper", action="store_true", help="skip the ViT-H paper model (~3 GB, ~1 min)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = []
    for name in ("demo_baseline", "demo_diffpose"):
        rows.append(measure(name, ModelConfig.preset(name), batches=(1, 16), train_batch=32, repeats=args.repeats))
    rows.append(measure("demo_diffpose T=1", ModelConfig.preset("demo_diffpose").replace(num_frames=1),
                        batches=(1, 16), train_batch=32, repeats=args.repeats))
    rows.append(measure("demo_diffpose no LMSFI", ModelConfig.preset("demo_diffpose").replace(lmsfi=False),
                        batches=(1, 16), train_batch=32, repeats=args.repeats))
    if not args.skip_paper:
        rows.append(measure("paper (ViT-H/16, T=3)", ModelConfig.preset("paper"), batches=(1,), train_batch=None,
                            repeats=max(1, min(args.repeats, 2))))
    ref = rows[0]
    print("| model | params | GFLOPs/clip | infer b1 ms | infer b16 ms | b16 5 steps ms | b16 K=4 ms "
          "| train clips/s (b32) | train vs baseline |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        def f(key: str, fmt: str = "{:.1f}") -> str:
            return fmt.format(r[key]) if key in r else "-"
        rel = f"{r['train_clips_s'] / ref['train_clips_s']:.2f}x" if "train_clips_s" in r else "-"
        print(f"| {r['name']} | {r['params'] / 1e6:.2f}M | {r['gflops']:.3f} | {f('infer_b1_ms')} | "
              f"{f('infer_b16_ms')} | {f('infer_5steps_ms')} | {f('infer_k4_ms')} | {f('train_clips_s')} | {rel} |")


if __name__ == "__main__":
    main()
