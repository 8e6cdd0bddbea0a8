"""Stage ``train``: train ``models.<NAME>`` from params.yaml on the training split.

    diffpose train --model diffpose --out models/diffpose/seed0
    torchrun --nproc_per_node=2 -m diffpose train --model diffpose --out models/diffpose/seed0

With ``train.processes`` N > 1 in params.yaml (an execution knob: the batch is global, so results
do not depend on it beyond float rounding), ``diffpose train`` started outside torchrun becomes
``torchrun --standalone --nproc_per_node=N`` running the same command (torchrun's launcher, in this
process): the DAG's stage command stays the same and launches N processes (one per GPU, or gloo
processes on the CPU).
Rerunning the same command after an interruption (even kill -9) resumes from ``OUT/last.pt``.
"""

from __future__ import annotations

import argparse
import os

from diffpose.config import DEFAULT_PARAMS, load_params, section
from diffpose.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="name of an entry under 'models' in params.yaml")
    parser.add_argument("--seed", type=int, default=None, help="training seed (default: the first of train.seeds)")
    parser.add_argument("--out", required=True, help="output folder (last.pt, model.pt, metrics.json)")
    parser.add_argument("--params", default=DEFAULT_PARAMS, help="params file (default params.yaml)")
    parser.add_argument("--annotations", default="data/synth/annotations/train",
                        help="PoseTrack18 annotation file or folder (default data/synth/annotations/train)")
    parser.add_argument("--images", default="data/frames", help="image root the annotations' file_names are relative to")
    parser.add_argument("--val-annotations", metavar="DIR",
                        help="val sequence files scored every train.val_every epochs (best.pt kept; frames under --images); "
                             "ignored when train.val_every is 0")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def configs(params: dict, model: str, source: str = DEFAULT_PARAMS, seed: int | None = None):
    """(ModelConfig, TrainConfig, DataConfig) for ``models.<model>`` of validated params, trained with
    ``seed`` (default: the first of ``train.seeds``)."""
    from diffpose.data.clips import DataConfig
    from diffpose.models.config import resolve_model_config
    from diffpose.training.trainer import TrainConfig

    models = section(params, "models", source)
    if model not in models:
        raise ConfigError(f"{source}: models.{model}: no such model (defined: {', '.join(sorted(models))})")
    train = dict(section(params, "train", source))
    seeds = train.pop("seeds")
    train.pop("processes", None)  # how many processes run it (main()), not how it trains
    train["seed"] = int(seeds[0] if seed is None else seed)
    return (resolve_model_config(models[model]), TrainConfig.from_dict(train),
            DataConfig.from_dict(section(params, "data", source)))


def run(*, model: str, out: str, params_path: str = DEFAULT_PARAMS, annotations: str, images: str,
        progress: bool = True, seed: int | None = None, val_annotations: str | None = None) -> dict:
    from diffpose.training.trainer import train

    params = load_params(params_path)
    model_cfg, train_cfg, data_cfg = configs(params, model, params_path, seed)
    record = {"model_name": model, "models": {model: params["models"][model]}, "model_config": model_cfg.to_dict(),
              "train": train_cfg.to_dict(), "data": data_cfg.to_dict(), "annotations": annotations}
    return train(model_cfg=model_cfg, train_cfg=train_cfg, data_cfg=data_cfg, annotations=annotations,
                 image_root=images, out_dir=out, name=model, params=record, progress=progress,
                 val_annotations=val_annotations)  # validation samples with its fixed settings (1 step, K=1, flip)


def main(args: argparse.Namespace) -> int:
    from diffpose.training.distributed import relaunch

    processes = int(section(load_params(args.params), "train", args.params).get("processes", 1))
    code = relaunch(args.command_line, processes, "train.processes")  # from a person, DVC or Snakemake: N processes
    if code is not None:
        return code
    result = run(model=args.model, out=args.out, params_path=args.params, annotations=args.annotations,
                 images=args.images, progress=not args.no_progress, seed=args.seed,
                 val_annotations=args.val_annotations)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"train: {args.model}: {result['epochs']} epochs, final loss {result['final_loss']:.5g}, "
              f"{result['clips_per_second']} clips/s -> {args.out}/model.pt"
              + (f" (MLflow run {result['mlflow_run_id']})" if result.get("mlflow_run_id") else ""))
    return 0
