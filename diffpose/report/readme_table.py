"""The README's results block, generated from the tables of the run of record.

Nothing in the block is typed by hand: every figure is read from the files the ``tables`` stage
writes (``diffpose tables``, :mod:`diffpose.report.tables`), committed with ``dvc.lock``:

- ``results/tables/summary.json``: per model the main-setting PoseTrack mAP (GT boxes, degraded
  subset, detected boxes; mean and std over the training seeds), its difference to the
  single-frame baseline and the training time; the setting, the seeds, the person detector;
- ``results/tables/per_joint.csv``: the per-joint rows of this run and the paper's, quoted;
- ``results/tables/steps.csv``, ``flip.csv``: the sampler sweep (steps x K) and the flip test.

The block sits in README.md between ``<!-- results:begin -->`` and ``<!-- results:end -->``::

    python -m diffpose.report.readme_table                    # print the block
    python -m diffpose.report.readme_table --write README.md  # rewrite the block in place
    python -m diffpose.report.readme_table --check README.md  # exit 1 if the block is stale

``tests/test_readme.py`` runs the check, so a table that changes without the README fails the tests.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from diffpose.report.tables import COLUMNS, THIS_RUN

BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"
TABLES = Path("results") / "tables"
SUMMARY = TABLES / "summary.json"
PER_JOINT = TABLES / "per_joint.csv"
STEPS = TABLES / "steps.csv"  # the sampler sweep (optional: a run without sweep cells has no rows)
FLIP = TABLES / "flip.csv"
HEADLINE = (  # key of summary.json models.<name>.Total, column header
    ("gt_all", "PoseTrack mAP, GT boxes"),
    ("gt_degraded", "degraded subset"),
    ("detected_all", "detected boxes"),
)
EVALUATIONS = {  # (boxes, frames) of per_joint.csv -> what it measures
    ("gt", "all"): "GT boxes, all labelled frames",
    ("gt", "degraded"): "GT boxes, frames with a degraded person",
    ("detected", "all"): "detected boxes, all labelled frames",
    ("detected", "degraded"): "detected boxes, frames with a degraded person",
}


class ReadmeBlockError(Exception):
    """README.md lacks the markers, or has them more than once or out of order."""


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def _num(value: Any, digits: int) -> str:
    return "-" if _missing(value) else f"{value:.{digits}f}"


def _stat(mean: Any, std: Any) -> str:
    """``45.2``, or ``45.2 ± 0.3`` over several seeds."""
    return _num(mean, 1) + ("" if _missing(std) else f" ± {std:.1f}")


def _diff(value: Any) -> str:
    return "-" if _missing(value) else f"{round(value, 1) + 0.0:+.1f}"  # + 0.0 turns -0.0 into 0.0


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _names(summary: dict[str, Any]) -> dict[str, str]:
    """Model -> its label, with the preset where two models share a label."""
    labels = [m["label"] for m in summary["models"].values()]
    return {name: f"{m['label']} ({m['preset']})" if labels.count(m["label"]) > 1 and m.get("preset")
            else m["label"] for name, m in summary["models"].items()}


def _training(train: dict[str, Any], seeds: int) -> str:
    text = (f"{train['seconds_per_seed']:,.0f} s{' per seed' if seeds > 1 else ''} "
            f"({train['clips_per_second']:,.0f} clips/s)")
    if train.get("resumed_after_epoch"):
        text += f", resumed after epoch {train['resumed_after_epoch']} (time of the last run only)"
    if train.get("world_size", 1) > 1:
        text += f", {train['world_size']} processes"
    return text


def _setting_sentence(summary: dict[str, Any]) -> str:
    preset = summary.get("synth_preset")
    where = f"synthetic `{preset}` benchmark, val split" if preset else summary["dataset"]
    ap = (summary.get("detector") or {}).get("detect", {}).get("box_ap")
    if ap and "labelled_frames" in ap:
        where += f" ({ap['labelled_frames']} labelled frames, {ap['gt_persons']} people)"
    setting = summary["setting"]
    steps, starts = setting["steps"], setting["ensemble"]
    parts = [where, f"{steps} denoising step{'s' if steps != 1 else ''}, "
                    f"{starts} noise start{'s' if starts != 1 else ''}, "
                    f"{'with' if setting['flip_test'] else 'without'} flip test"]
    trains = {(m["training"].get("epochs"), m["training"].get("training_clips"))
              for m in summary["models"].values()}
    if len(trains) == 1:
        epochs, clips = trains.pop()
        if epochs is not None and clips is not None:
            parts.append(f"every model trained {epochs} epochs on {clips:,} person clips")
    seeds = summary["seeds"]
    if len(seeds) > 1:
        parts.append(f"{len(seeds)} training seeds ({', '.join(map(str, seeds))}): "
                     "mean ± standard deviation")
    return "Run of record (`dvc.lock`): " + "; ".join(parts) + "."


def _headline(summary: dict[str, Any]) -> list[str]:
    names = _names(summary)
    lines = [_row(["model", *(title for _, title in HEADLINE), "training"]),
             _row(["---"] * (2 + len(HEADLINE)))]
    for name, model in summary["models"].items():
        label = f"{names[name]} (`{model['preset']}`)" if model.get("preset") else names[name]
        totals = [_stat(model["Total"][key]["mean"], model["Total"][key]["std"]) for key, _ in HEADLINE]
        lines.append(_row([label, *totals, _training(model["training"], len(summary["seeds"]))]))
    baseline = summary.get("baseline")
    for name, model in summary["models"].items():
        if "minus_baseline" in model:
            lines.append(_row([f"{names[name]} - {names[baseline]}",
                               *(_diff(model["minus_baseline"][key]) for key, _ in HEADLINE), ""]))
    return lines


def _per_joint(summary: dict[str, Any], rows: pd.DataFrame) -> list[str]:
    names = _names(summary)
    lines = [_row(["boxes, frames", "model", *COLUMNS]), _row(["---"] * (2 + len(COLUMNS)))]
    for row in rows[rows["source"] == THIS_RUN].to_dict("records"):
        what = EVALUATIONS.get((row["boxes"], row["frames"]), f"{row['boxes']} boxes, {row['frames']} frames")
        lines.append(_row([what, names.get(row["model"], row["model"]),
                           *(_stat(row[c], row.get(f"{c}_std")) for c in COLUMNS)]))
    return lines


def _detector(detector: dict[str, Any] | None) -> list[str]:
    boxes = (detector or {}).get("detect")
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
    lines += [_row([what, *(_num(ap.get(key), 3) for key in ("AP50", "AP", "AP75", "recall50"))])
              for what, ap in rows]
    about = [f"Person detector: backend `{boxes['backend']}`"]
    train = detector.get("train")
    if train:
        about.append(f"trained in {train['seconds']:,.0f} s ({train['steps']:,} steps, {train['precision']})")
    about.append(f"detection ran at {boxes['frames_per_second']:.0f} frames/s "
                 f"over {boxes['frames_detected']:,} frames")
    if filled:
        about.append(f"gap filling added {filled['boxes_added']} boxes on labelled frames")
    return [", ".join(about) + ". Box AP by pycocotools on the labelled val frames:", "", *lines]


def _training_total(summary: dict[str, Any]) -> str:
    pose = sum(m["training"]["seconds_total"] or 0.0 for m in summary["models"].values())
    train = (summary.get("detector") or {}).get("train")
    if not train:
        return f"Training took {pose:,.0f} s in all."
    return (f"Training took {pose + train['seconds']:,.0f} s in all "
            f"({pose:,.0f} s for the pose models, {train['seconds']:,.0f} s for the detector).")


def _sampler(summary: dict[str, Any], steps: pd.DataFrame, flip: pd.DataFrame) -> list[str]:
    """The sweep on GT boxes, all frames: Total per DDIM steps (rows) and K (columns), per model and
    flip setting, with the person clips/s; then the flip test's effect at the main setting."""
    names = _names(summary)
    lines: list[str] = []
    grid = steps[steps["frames"] == "all"]
    for (model, flipped), rows in grid.groupby(["model", "flip_test"], sort=False):
        ks = sorted(rows["ensemble"].unique())
        lines += ["", f"{names.get(model, model)}, sampler sweep on GT boxes, all labelled frames, "
                      f"{'with' if flipped else 'without'} flip test (PoseTrack mAP; person clips/s):", "",
                  _row(["DDIM steps", *(f"K = {k}" for k in ks)]), _row(["---"] * (1 + len(ks)))]
        for step, by_k in rows.groupby("steps", sort=True):
            cells = []
            for k in ks:
                hit = by_k[by_k["ensemble"] == k]
                cells.append("-" if hit.empty else f"{_stat(hit['Total'].iloc[0], hit['Total_std'].iloc[0])} "
                                                   f"({_num(hit['person_clips_per_second'].iloc[0], 0)}/s)")
            lines.append(_row([str(step), *cells]))
    flips = flip[(flip["frames"] == "all") & flip["Total_delta"].notna()]
    if not flips.empty:
        said = [f"{names.get(r['model'], r['model'])} {_diff(r['Total_delta'])}" for r in flips.to_dict("records")]
        lines += ["", "Flip test at the main setting (GT boxes, all labelled frames), mAP with it minus "
                      "without: " + ", ".join(said) + "."]
    return lines


def _paper(rows: pd.DataFrame) -> list[str]:
    lines = [_row(["paper: DiffPose, ViT-H, real PoseTrack", *COLUMNS]), _row(["---"] * (1 + len(COLUMNS)))]
    lines += [_row([row["dataset"], *(_num(row[c], 1) for c in COLUMNS)])
              for row in rows[rows["source"] != THIS_RUN].to_dict("records")]
    return lines


def source_files(root: str | Path = ".") -> list[Path]:
    """The committed files the block is built from (those that exist)."""
    return [f for f in (Path(root) / SUMMARY, Path(root) / PER_JOINT, Path(root) / STEPS, Path(root) / FLIP)
            if f.is_file()]


def results_block(root: str | Path = ".") -> str:
    """The Markdown between the markers (markers excluded), built from the tables under ``root``."""
    root = Path(root)
    for path in (root / SUMMARY, root / PER_JOINT):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run `dvc repro tables`")
    summary = json.loads((root / SUMMARY).read_text())
    rows = pd.read_csv(root / PER_JOINT)
    parts = [
        "<!-- generated by `python -m diffpose.report.readme_table --write README.md` from results/tables "
        "(summary.json, per_joint.csv, steps.csv, flip.csv); do not edit by hand -->",
        "",
        _setting_sentence(summary),
        "",
        *_headline(summary),
        "",
        "Per joint group (PoseTrack mAP, %; Total is the mean over the 15 joints):",
        "",
        *_per_joint(summary, rows),
    ]
    if (root / STEPS).is_file() and (root / FLIP).is_file():
        parts += _sampler(summary, pd.read_csv(root / STEPS), pd.read_csv(root / FLIP))
    detector = _detector(summary.get("detector"))
    if detector:
        parts += ["", *detector]
    parts += ["", _training_total(summary),
              "", "The paper's PoseTrack mAP (Feng et al., ICCV 2023, arXiv 2307.16687), for reference only: "
              "real video, a ViT-H backbone and GPUs, not comparable with the synthetic demo above:",
              "", *_paper(rows)]
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
        description="Generate the README's results block from the committed tables (results/tables).")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", metavar="README", help="rewrite the block between the markers in this file")
    mode.add_argument("--check", metavar="README",
                      help="exit 1 if the block in this file differs from the generated one")
    parser.add_argument("--root", help="project root holding results/tables "
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
