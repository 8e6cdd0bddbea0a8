"""The README's results block, generated from the committed run of record.

Nothing in the block is typed by hand: every figure is read from the metrics files that
``dvc repro`` writes and that are committed with ``dvc.lock``:

- ``results/metrics/<model>.json``, ``<model>_degraded.json``, ``<model>_detected.json``
  (PoseTrack mAP on GT boxes, on the frames with a degraded person, on detected boxes);
- ``models/<model>/metrics.json`` (training time, clips/s, epochs);
- ``results/detect/val_box_ap.json`` and ``results/detect/train_detector.json`` (person detector);
- ``dvc.lock`` (the params the run used: data preset, model presets, sampler settings).

The block sits in README.md between ``<!-- results:begin -->`` and ``<!-- results:end -->``::

    python -m diffpose.report.readme_table                    # print the block
    python -m diffpose.report.readme_table --write README.md  # rewrite the block in place
    python -m diffpose.report.readme_table --check README.md  # exit 1 if the block is stale

``tests/test_readme.py`` runs the check, so a metrics file that changes without the README fails
the tests.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import sys
from pathlib import Path
from typing import Any

import yaml

from diffpose.data.keypoints import TABLE_GROUPS

BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"
COLUMNS = (*TABLE_GROUPS, "Total")
LABELS = {"diffpose": "DiffPose", "baseline": "single-frame baseline"}
EVALUATIONS = (  # metrics file suffix, what it measures
    ("", "GT boxes, all labelled frames"),
    ("_degraded", "GT boxes, frames with a degraded person"),
    ("_detected", "detected boxes, all labelled frames"),
)
# The paper's PoseTrack mAP (Feng et al., DiffPose, ICCV 2023, arXiv 2307.16687): reference values
# quoted from the paper, not measured here. Columns as COLUMNS.
PAPER = (
    ("PoseTrack2017 val", (89.0, 91.2, 87.4, 83.5, 85.5, 87.2, 80.2, 86.4)),
    ("PoseTrack2018 val", (85.0, 87.7, 84.3, 81.5, 81.4, 82.9, 77.6, 83.0)),
    ("PoseTrack21 val", (84.7, 85.6, 83.6, 80.8, 81.4, 83.5, 80.0, 82.9)),
)


class ReadmeBlockError(Exception):
    """README.md lacks the markers, or has them more than once or out of order."""


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _lock_params(root: Path) -> dict[str, dict[str, Any]]:
    """Stage name -> the params.yaml values dvc.lock records for it ({} without dvc.lock)."""
    lock = root / "dvc.lock"
    if not lock.is_file():
        return {}
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    out: dict[str, dict[str, Any]] = {}
    for name, stage in stages.items():
        params = dict((stage.get("params") or {}).get("params.yaml", {}))
        for key, value in list(params.items()):  # stages that track single keys: `infer.steps`
            section, dot, rest = key.partition(".")
            if dot and isinstance(params.setdefault(section, {}), dict):
                params[section].setdefault(rest, value)
        out[name] = params
    return out


def _models(root: Path) -> list[str]:
    """Models with a training metrics file and an evaluation: DiffPose first, the baseline next."""
    names = [p.parent.name for p in sorted((root / "models").glob("*/metrics.json"))
             if (root / "results" / "metrics" / f"{p.parent.name}.json").is_file()]
    order = {name: i for i, name in enumerate(LABELS)}
    return sorted(names, key=lambda n: (order.get(n, len(order)), n))


def _num(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def _diff(a: Any, b: Any) -> str:
    if a is None or b is None:
        return "-"
    d = round(a - b, 1)
    return f"{d + 0.0:+.1f}"  # + 0.0 turns -0.0 into 0.0


def _label(name: str, lock: dict[str, dict[str, Any]]) -> str:
    preset = lock.get(f"train@{name}", {}).get(f"models.{name}", {}).get("preset")
    label = LABELS.get(name, name)
    return f"{label} (`{preset}`)" if preset else label


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _training(train: dict[str, Any]) -> str:
    text = f"{train['train_seconds_this_run']:,.0f} s ({train['clips_per_second']:,.0f} clips/s)"
    if train.get("resumed_after_epoch"):
        text += f", resumed after epoch {train['resumed_after_epoch']} (time of the last run only)"
    if train.get("world_size", 1) > 1:
        text += f", {train['world_size']} processes"
    return text


def _setting_sentence(root: Path, models: list[str], lock: dict[str, dict[str, Any]]) -> str:
    parts = []
    preset = lock.get("synth", {}).get("synth", {}).get("preset")
    boxes = _read_json(root / "results" / "detect" / "val_box_ap.json")
    where = f"synthetic `{preset}` benchmark, val split" if preset else "val split"
    if boxes and "box_ap" in boxes:
        ap = boxes["box_ap"]
        where += f" ({ap['labelled_frames']} labelled frames, {ap['gt_persons']} people)"
    parts.append(where)
    infer = lock.get(f"infer@{models[0]}", {}).get("infer", {}) if models else {}
    if infer:
        flip = "with flip test" if infer.get("flip_test") else "without flip test"
        steps, starts = infer.get("steps"), infer.get("ensemble")
        parts.append(f"{steps} denoising step{'s' if steps != 1 else ''}, "
                     f"{starts} noise start{'s' if starts != 1 else ''}, {flip}")
    trains = {(t.get("epochs"), t.get("training_clips"))
              for t in (_read_json(root / "models" / m / "metrics.json") for m in models)}
    if len(trains) == 1:
        epochs, clips = trains.pop()
        parts.append(f"every model trained {epochs} epochs on {clips:,} person clips")
    return "Run of record (`dvc.lock`): " + "; ".join(parts) + "."


def _headline(root: Path, models: list[str], lock: dict[str, dict[str, Any]]) -> list[str]:
    metrics = root / "results" / "metrics"
    lines = [_row(["model", "PoseTrack mAP, GT boxes", "degraded subset", "detected boxes", "training"]),
             _row(["---"] * 5)]
    totals: dict[str, list[Any]] = {}
    for name in models:
        totals[name] = [(_read_json(metrics / f"{name}{suffix}.json") or {}).get("Total")
                        for suffix, _ in EVALUATIONS]
        train = _read_json(root / "models" / name / "metrics.json")
        lines.append(_row([_label(name, lock), *(_num(t, 1) for t in totals[name]), _training(train)]))
    if "diffpose" in totals and "baseline" in totals:
        lines.append(_row(["DiffPose - baseline",
                           *(_diff(a, b) for a, b in zip(totals["diffpose"], totals["baseline"])), ""]))
    return lines


def _per_joint(root: Path, models: list[str]) -> list[str]:
    metrics = root / "results" / "metrics"
    lines = [_row(["boxes, frames", "model", *COLUMNS]), _row(["---"] * (2 + len(COLUMNS)))]
    for suffix, what in EVALUATIONS:
        for name in models:
            result = _read_json(metrics / f"{name}{suffix}.json")
            if result is not None:
                lines.append(_row([what, LABELS.get(name, name), *(_num(result.get(c), 1) for c in COLUMNS)]))
    return lines


def _detector(root: Path) -> list[str]:
    boxes = _read_json(root / "results" / "detect" / "val_box_ap.json")
    if not boxes or "box_ap" not in boxes:
        return []
    filled = boxes.get("fill_gaps")
    rows = [("the detect stage's output" + (", gaps filled along each video" if filled else ""),
             boxes["box_ap"])]
    if filled and "box_ap_per_frame" in filled:
        rows.append(("the detector alone, per frame (before gap filling)", filled["box_ap_per_frame"]))
    if "box_ap_kept" in boxes:
        rows.append((f"the boxes pose inference uses (score >= {boxes['score_threshold']})",
                     boxes["box_ap_kept"]))
    lines = [_row(["person boxes", "box AP50", "AP", "AP75", "recall50"]), _row(["---"] * 5)]
    lines += [_row([what, *(_num(ap[key], 3) for key in ("AP50", "AP", "AP75", "recall50"))])
              for what, ap in rows]
    about = [f"Person detector: backend `{boxes['backend']}`"]
    train = _read_json(root / "results" / "detect" / "train_detector.json")
    if train:
        about.append(f"trained in {train['seconds']:,.0f} s ({train['steps']:,} steps, {train['precision']})")
    about.append(f"detection ran at {boxes['frames_per_second']:.0f} frames/s "
                 f"over {boxes['frames_detected']:,} frames")
    if filled:
        about.append(f"gap filling added {filled['boxes_added']} boxes on labelled frames")
    return [", ".join(about) + ". Box AP by pycocotools on the labelled val frames:", "", *lines]


def _training_total(root: Path, models: list[str]) -> str:
    pose = sum(_read_json(root / "models" / m / "metrics.json")["train_seconds_this_run"] for m in models)
    train = _read_json(root / "results" / "detect" / "train_detector.json")
    if train is None:
        return f"Training took {pose:,.0f} s in all."
    return (f"Training took {pose + train['seconds']:,.0f} s in all "
            f"({pose:,.0f} s for the pose models, {train['seconds']:,.0f} s for the detector).")


def _paper() -> list[str]:
    lines = [_row(["paper: DiffPose, ViT-H, real PoseTrack", *COLUMNS]), _row(["---"] * (1 + len(COLUMNS)))]
    lines += [_row([bench, *(f"{v:.1f}" for v in values)]) for bench, values in PAPER]
    return lines


def source_files(root: str | Path = ".") -> list[Path]:
    """The committed metrics files the block is built from (those that exist)."""
    root = Path(root)
    files = []
    for name in _models(root):
        files.append(root / "models" / name / "metrics.json")
        files += [root / "results" / "metrics" / f"{name}{suffix}.json" for suffix, _ in EVALUATIONS]
    files += [root / "results" / "detect" / f for f in ("val_box_ap.json", "train_detector.json")]
    return [f for f in files if f.is_file()]


def results_block(root: str | Path = ".") -> str:
    """The Markdown between the markers (markers excluded), built from the files under ``root``."""
    root = Path(root)
    lock = _lock_params(root)
    models = _models(root)
    if not models:
        raise FileNotFoundError(f"{root}: no models/<name>/metrics.json with results/metrics/<name>.json")
    parts = [
        "<!-- generated by `python -m diffpose.report.readme_table --write README.md` from the committed "
        "metrics files; do not edit by hand -->",
        "",
        _setting_sentence(root, models, lock),
        "",
        *_headline(root, models, lock),
        "",
        "Per joint group (PoseTrack mAP, %; Total is the mean over the 15 joints):",
        "",
        *_per_joint(root, models),
    ]
    detector = _detector(root)
    if detector:
        parts += ["", *detector]
    parts += ["", _training_total(root, models),
              "", "The paper's PoseTrack mAP (Feng et al., ICCV 2023, arXiv 2307.16687), for reference only: "
              "real video, a ViT-H backbone and GPUs, not comparable with the synthetic demo above:",
              "", *_paper()]
    return "\n".join(parts)


def _split(text: str) -> tuple[str, str, str]:
    """(before and including BEGIN, the block, END and after)."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ReadmeBlockError(f"expected one {BEGIN} followed by one {END}")
    head, rest = text.split(BEGIN, 1)
    body, tail = rest.split(END, 1)
    return head + BEGIN, body, END + tail


def readme_block(text: str) -> str:
    """The block currently between the markers of ``text``, without the surrounding newlines."""
    return _split(text)[1].strip("\n")


def replace_block(text: str, block: str) -> str:
    head, _, tail = _split(text)
    return f"{head}\n{block}\n{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m diffpose.report.readme_table",
        description="Generate the README's results block from the committed metrics files.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", metavar="README", help="rewrite the block between the markers in this file")
    mode.add_argument("--check", metavar="README",
                      help="exit 1 if the block in this file differs from the generated one")
    parser.add_argument("--root", help="project root holding results/ and models/ "
                                        "(default: the README's folder, else .)")
    args = parser.parse_args(argv)
    readme = Path(args.write or args.check) if (args.write or args.check) else None
    root = Path(args.root) if args.root else (readme.parent if readme else Path("."))
    try:
        block = results_block(root)
        if readme is None:
            print(block)
            return 0
        text = readme.read_text()
        current = readme_block(text)
    except (OSError, KeyError, ValueError, ReadmeBlockError) as err:
        print(f"readme_table: error: {err}", file=sys.stderr)
        return 2
    if args.check:
        if current == block:
            return 0
        diff = difflib.unified_diff(current.splitlines(), block.splitlines(), f"{readme} (now)", "generated",
                                    lineterm="")
        print("\n".join(diff), file=sys.stderr)
        print(f"readme_table: {readme}: the results block is stale; run "
              f"`python -m diffpose.report.readme_table --write {readme}`", file=sys.stderr)
        return 1
    new = replace_block(text, block)
    if new != text:
        readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
