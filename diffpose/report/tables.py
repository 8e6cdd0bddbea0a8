"""The paper's per-joint table and the ablations, built with pandas from the DAG's inference cells.

Inputs, relative to the project root, for the cells :func:`diffpose.sweep.cells` lists (never a
glob of ``results/``: a value removed from params.yaml drops its rows although its folder stays):
``<cell>/infer.json``, ``<cell>/metrics.json`` and ``<cell>/metrics_degraded.json``; then
``models/<model>/seed<seed>/metrics.json`` (training) and ``results/detect/val_box_ap.json``,
``results/detect/train_detector.json`` (the latter optional: only the synthetic detector is trained).
A missing file is a one-line DataError naming it and the DVC stage that writes it.

Outputs (``write_tables``): ``<name>.csv``, ``<name>.md`` and ``<name>.tex`` for each table in
:data:`TABLES`, and ``summary.json`` (the headline numbers the README block is generated from).

Rows. One row is one cell setting with its results averaged over the training seeds
(``train.seeds``): ``<metric>`` is the mean, ``<metric>_std`` the sample standard deviation (empty
for one seed), ``n_seeds`` and ``seeds`` say over what. Every row of this run carries
``evaluate_run_id`` (the MLflow run of the ``diffpose evaluate`` that wrote the metrics file, its
"run" block), ``infer_run_id`` (infer.json), ``git_commit`` and ``data_version`` (the hash of the
val annotation files), each the distinct values over the seeds joined by ``;``. ``frames`` is
``all`` (every labelled val frame) or ``degraded`` (the frames with a blurred or occluded person);
``boxes`` is ``gt`` or ``detected`` (the detect stage's boxes). The CSV holds every column at full
precision; the Markdown and LaTeX files show the same rows with ``mean ± std`` in one cell.

Tables:

- ``per_joint``: Head ... Total of every model at the main setting (``infer.*``) on GT and detected
  boxes, all frames and the degraded subset, followed by the paper's rows (PoseTrack2017/2018/21
  val), whose ``source`` says they are quoted from the paper; ``dataset`` names each row's data.
- ``steps``, ``ensemble``: Total over the sampler grid (params ``sweep``, GT boxes) ordered for
  reading mAP against the DDIM steps (per model, flip test and K) or against K (per model, flip test
  and steps); with the inference speed (person clips/s).
- ``boxes``: GT against detected boxes per model (main setting).
- ``flip``: flip test on against off per model in ``sweep.models``: the main cell against the sweep
  cell with the main steps and K and the other flip test.
- ``baseline``: every model against the single-frame baseline (main setting, both box sources).

The comparison tables (``boxes``, ``flip``, ``baseline``) have ``Total_delta``, the difference of
the row's mean Total and its reference row's (GT boxes, flip test off, the baseline), and ``vs``
naming that reference. The baseline is the model whose resolved config is single-frame
(``arch: baseline`` first, else ``num_frames: 1``); any other model, a T=1 or plain-concatenation
DiffPose included, is a row like the others.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from diffpose.data.keypoints import TABLE_GROUPS
from diffpose.errors import DataError
from diffpose.io import atomic_open, read_json, write_json
from diffpose.models.config import resolve_model_config
from diffpose.progress import track
from diffpose.sweep import Cell, cells, train_seeds

log = logging.getLogger(__name__)

COLUMNS = (*TABLE_GROUPS, "Total")
FRAMES = (("all", "metrics"), ("degraded", "metrics_degraded"))  # frames -> the Cell attribute of its file
MAIN_FAMILIES = ("infer", "infer_detected")
SETTING = ("steps", "ensemble", "flip_test")
PROVENANCE = ("evaluate_run_id", "infer_run_id", "git_commit", "data_version")
SEPARATOR = ";"
THIS_RUN = "this run"
# The paper's PoseTrack mAP, quoted (Feng et al., DiffPose, ICCV 2023, arXiv 2307.16687, Tables 1-3;
# ../shared/docs/paper-notes.md): ViT-H/16 on real video with detected boxes. Columns as COLUMNS.
PAPER_SOURCE = "quoted from the paper (Feng et al., ICCV 2023)"
PAPER_MODEL = "DiffPose (paper, ViT-H/16)"
PAPER = (
    ("PoseTrack2017 val", (89.0, 91.2, 87.4, 83.5, 85.5, 87.2, 80.2, 86.4)),
    ("PoseTrack2018 val", (85.0, 87.7, 84.3, 81.5, 81.4, 82.9, 77.6, 83.0)),
    ("PoseTrack21 val", (84.7, 85.6, 83.6, 80.8, 81.4, 83.5, 80.0, 82.9)),
)
POSETRACK = {"posetrack17": "PoseTrack2017 val", "posetrack18": "PoseTrack2018 val",
             "posetrack21": "PoseTrack21 val"}  # params dataset.name -> the dataset column
TABLES = {  # name -> caption
    "per_joint": "PoseTrack mAP per joint group at the main setting (Total: mean over the 15 joints), "
                 "beside the paper's figures",
    "steps": "PoseTrack mAP (Total) against the DDIM denoising steps, per model, flip test and K",
    "ensemble": "PoseTrack mAP (Total) against K (noise starts), per model, flip test and steps",
    "boxes": "PoseTrack mAP (Total) on GT and on detected boxes (main setting)",
    "flip": "PoseTrack mAP (Total) with and without flip test (main steps and K, GT boxes)",
    "baseline": "PoseTrack mAP (Total) of every model against the single-frame baseline (main setting)",
}
_ORDER = {"frames": ("all", "degraded"), "boxes": ("gt", "detected")}


# -- reading ------------------------------------------------------------------------------------

def need_json(path: Path, stage: str) -> Any:
    """The JSON at ``path``; a missing file names the DVC stage that writes it."""
    if not path.is_file():
        raise DataError(f"{path} not found: run `dvc repro {stage}` (the stage that writes it)")
    return read_json(path)


def _metric(metrics: dict[str, Any], column: str, path: Path) -> float:
    if column not in metrics:
        raise DataError(f"{path}: no {column!r}: not a metrics file of `diffpose evaluate`")
    value = metrics[column]
    return math.nan if value is None else float(value)


def _check_record(record: dict[str, Any], cell: Cell, path: Path) -> None:
    """infer.json must describe the cell it lies in (a folder left from other settings must not count)."""
    expected = {"model": cell.model, "seed": cell.seed, "boxes": cell.boxes, "steps": cell.steps,
                "ensemble": cell.ensemble, "flip_test": cell.flip_test}
    for key, value in expected.items():
        if record.get(key) is not None and record[key] != value:
            raise DataError(f"{path}: {key} is {record[key]!r}, the cell {cell.stage} has {value!r}: "
                            f"run `dvc repro {cell.stage}`")


def read_cell(cell: Cell, root: Path) -> list[dict[str, Any]]:
    """Two rows (all frames, degraded subset) of one cell: its settings, metrics and provenance."""
    record_path = root / cell.record
    record = need_json(record_path, cell.stage)
    _check_record(record, cell, record_path)
    rows = []
    for frames, attr in FRAMES:
        path = root / getattr(cell, attr)
        metrics = need_json(path, cell.stage)
        run = metrics.get("run") or {}
        rows.append({
            "family": cell.family, "model": cell.model, "seed": cell.seed, "boxes": cell.boxes,
            "steps": cell.steps, "ensemble": cell.ensemble, "flip_test": cell.flip_test, "frames": frames,
            **{c: _metric(metrics, c, path) for c in COLUMNS},
            "person_clips_per_second": record.get("person_clips_per_second"),
            "evaluate_run_id": run.get("mlflow_run_id"),
            "infer_run_id": record.get("mlflow_run_id"),
            "git_commit": run.get("git_commit") or record.get("git_commit"),
            "data_version": run.get("data_version") or record.get("data_version"),
        })
    return rows


def read_cells(params: dict[str, Any], root: str | os.PathLike = ".", *,
               progress: bool = False) -> pd.DataFrame:
    """One row per cell of ``cells(params)`` and frame subset, one seed per row."""
    root = Path(root)
    listed = cells(params)
    rows = [row for cell in track(listed, "tables: reading cells", "cell", enabled=progress)
            for row in read_cell(cell, root)]
    frame = pd.DataFrame(rows)
    frame["person_clips_per_second"] = pd.to_numeric(frame["person_clips_per_second"], errors="coerce")
    return frame


# -- seeds --------------------------------------------------------------------------------------

def _join(values: Iterable[Any]) -> str:
    """Distinct non-empty values, in order of appearance, joined by SEPARATOR."""
    seen: list[str] = []
    for value in values:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        text = str(value)
        if text and text not in seen:
            seen.append(text)
    return SEPARATOR.join(seen)


def _split(joined: Iterable[str]) -> list[str]:
    return [value for text in joined for value in str(text).split(SEPARATOR)]


def aggregate(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (NaN for one seed) and number of seeds per cell setting and frame subset."""
    keys = ["family", "model", "boxes", *SETTING, "frames"]
    grouped = rows.groupby(keys, sort=False)
    values = [*COLUMNS, "person_clips_per_second"]
    out = pd.concat([
        grouped[values].mean(),
        grouped[list(COLUMNS)].std(ddof=1).add_suffix("_std"),
        grouped.size().rename("n_seeds").astype("Int64"),
        grouped["seed"].agg(_join).rename("seeds"),
        grouped[list(PROVENANCE)].agg(_join),
    ], axis=1)
    return out.reset_index()


# -- models -------------------------------------------------------------------------------------

def model_label(entry: dict[str, Any]) -> str:
    """What a ``models.<name>`` entry is, from its resolved config (for people, not for lookups)."""
    config = resolve_model_config(entry)
    if config.arch == "baseline":
        return "single-frame baseline"
    return ", ".join(["DiffPose", *(["T=1"] if config.num_frames == 1 else []),
                      *([] if config.lmsfi else ["plain concatenation"])])


def baseline_model(models: dict[str, dict[str, Any]]) -> str | None:
    """The single-frame model the others are compared with: the first with ``arch: baseline``, else
    the first with ``num_frames: 1``; None when every model is multi-frame."""
    ranked = []
    for order, (name, entry) in enumerate(models.items()):
        config = resolve_model_config(entry)
        if config.arch == "baseline" or config.num_frames == 1:
            ranked.append((config.arch != "baseline", order, name))
    return min(ranked)[2] if ranked else None


def synth_preset(params: dict[str, Any]) -> str | None:
    """The synthetic benchmark's preset when the run is on it (params dataset.name, default synthetic)."""
    if (params.get("dataset") or {}).get("name", "synthetic") != "synthetic":
        return None
    return (params.get("synth") or {}).get("preset")


def dataset_name(params: dict[str, Any]) -> str:
    """What this run's rows are measured on: ``synthetic (<preset>)`` or the PoseTrack val split, named
    as in the paper's rows."""
    name = (params.get("dataset") or {}).get("name", "synthetic")
    if name != "synthetic":
        return POSETRACK.get(name, name)
    preset = synth_preset(params)
    return f"synthetic ({preset})" if preset else "synthetic"


# -- tables -------------------------------------------------------------------------------------

def _sorted(frame: pd.DataFrame, by: list[str], models: list[str]) -> pd.DataFrame:
    order = {"model": models, **_ORDER}

    def rank(column: pd.Series) -> pd.Series:
        if column.name in order:
            return column.map({v: i for i, v in enumerate(order[column.name])})
        return column

    return frame.sort_values(by, key=rank, kind="stable").reset_index(drop=True)


def _stats(columns: Iterable[str]) -> list[str]:
    return [name for c in columns for name in (c, f"{c}_std")]


def _with_delta(frame: pd.DataFrame, group: list[str], is_reference: pd.Series, label: str) -> pd.DataFrame:
    """``Total_delta``: Total minus the Total of the group's reference row; ``vs``: its label."""
    reference = frame.loc[is_reference, [*group, "Total"]].rename(columns={"Total": "_reference"})
    merged = frame.merge(reference, on=group, how="left")
    delta = (merged["Total"] - merged["_reference"]).where(~is_reference.to_numpy())
    vs = pd.Series(label, index=frame.index).where(~is_reference & delta.notna().to_numpy(), "")
    return frame.assign(Total_delta=delta.to_numpy(), vs=vs)


def per_joint_table(agg: pd.DataFrame, models: list[str], dataset: str) -> pd.DataFrame:
    own = agg[agg["family"].isin(MAIN_FAMILIES)].assign(source=THIS_RUN, dataset=dataset)
    own = own.astype({"steps": "Int64", "ensemble": "Int64", "flip_test": "boolean"})
    own = _sorted(own, ["boxes", "frames", "model"], models)
    paper = pd.DataFrame([{"source": PAPER_SOURCE, "dataset": name, "model": PAPER_MODEL, "boxes": "detected",
                           "frames": "all", **dict(zip(COLUMNS, values))} for name, values in PAPER])
    columns = ["source", "dataset", "model", "boxes", "frames", *SETTING, *_stats(COLUMNS),
               "n_seeds", "seeds", *PROVENANCE]
    return pd.concat([own, paper], ignore_index=True).reindex(columns=columns)


def sweep_table(agg: pd.DataFrame, models: list[str], x: str) -> pd.DataFrame:
    """The sweep grid ordered for reading Total against ``x`` (steps or ensemble)."""
    other = "ensemble" if x == "steps" else "steps"
    rows = _sorted(agg[agg["family"] == "sweep"], ["model", "frames", "flip_test", other, x], models)
    columns = ["model", "frames", "flip_test", other, x, "Total", "Total_std", "person_clips_per_second",
               "n_seeds", "seeds", *PROVENANCE]
    return rows.reindex(columns=columns)


def _comparison(rows: pd.DataFrame, order: list[str], models: list[str], group: list[str],
                is_reference: Any, label: str) -> pd.DataFrame:
    rows = _sorted(rows, order, models)
    rows = _with_delta(rows, group, is_reference(rows), label)
    columns = [*order, *(c for c in SETTING if c not in order), "Total", "Total_std", "Total_delta", "vs",
               "n_seeds", "seeds", *PROVENANCE]
    return rows.reindex(columns=columns)


def boxes_table(agg: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    rows = agg[agg["family"].isin(MAIN_FAMILIES)]
    return _comparison(rows, ["model", "frames", "boxes"], models, ["model", "frames"],
                       lambda r: r["boxes"] == "gt", "GT boxes")


def flip_table(agg: pd.DataFrame, models: list[str], infer: dict[str, Any]) -> pd.DataFrame:
    main = agg[agg["family"] == "infer"]
    other = agg[(agg["family"] == "sweep") & (agg["steps"] == int(infer["steps"]))
                & (agg["ensemble"] == int(infer["ensemble"]))
                & (agg["flip_test"] != bool(infer["flip_test"]))]
    both = set(main["model"]) & set(other["model"])
    rows = pd.concat([main[main["model"].isin(both)], other[other["model"].isin(both)]], ignore_index=True)
    return _comparison(rows, ["model", "frames", "flip_test"], models, ["model", "frames"],
                       lambda r: ~r["flip_test"].astype(bool), "flip test off")


def baseline_table(agg: pd.DataFrame, models: list[str], baseline: str | None) -> pd.DataFrame:
    rows = agg[agg["family"].isin(MAIN_FAMILIES)]
    return _comparison(rows, ["boxes", "frames", "model"], models, ["boxes", "frames"],
                       lambda r: r["model"] == baseline, baseline or "")


def build_tables(agg: pd.DataFrame, params: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """Every table of TABLES from the seed-aggregated cells."""
    models = list(params["models"])
    dataset = dataset_name(params)
    tables = {
        "per_joint": per_joint_table(agg, models, dataset),
        "steps": sweep_table(agg, models, "steps"),
        "ensemble": sweep_table(agg, models, "ensemble"),
        "boxes": boxes_table(agg, models),
        "flip": flip_table(agg, models, params["infer"]),
        "baseline": baseline_table(agg, models, baseline_model(params["models"])),
    }
    # every table names its data and the PoseTrack mAP's rules (params evaluate.protocol); the
    # paper's rows are poseval's, as the DCPose family reports them
    protocol = (params.get("evaluate") or {}).get("protocol", "poseval")
    for name, table in tables.items():
        if name == "per_joint":
            table.insert(2, "protocol", table["source"].map(lambda source: "poseval" if source == PAPER_SOURCE
                                                              else protocol))
        else:
            table.insert(0, "protocol", protocol)
            table.insert(0, "dataset", dataset)
    return tables


# -- formats ------------------------------------------------------------------------------------

def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _number(value: Any, digits: int, sign: bool = False) -> str:
    if _missing(value):
        return ""
    return f"{round(float(value), digits) + 0.0:{'+' if sign else ''}.{digits}f}"  # + 0.0: no -0.0


def display(table: pd.DataFrame) -> pd.DataFrame:
    """The table as text for people: ``mean ± std`` in one cell, one decimal, flip test on/off."""
    out = {}
    for column in table.columns:
        values = table[column]
        if column.endswith("_std"):
            continue
        if f"{column}_std" in table.columns:
            std = table[f"{column}_std"]
            out[column] = [_number(m, 1) + (f" ± {_number(s, 1)}" if not _missing(s) else "")
                           for m, s in zip(values, std)]
        elif column == "Total_delta":
            out[column] = [_number(v, 1, sign=True) for v in values]
        elif column == "person_clips_per_second":
            out["clips/s"] = [_number(v, 0) for v in values]
        elif column == "flip_test":
            out[column] = ["" if _missing(v) else ("on" if v else "off") for v in values]
        else:
            out[column] = ["" if _missing(v) else str(v) for v in values]
    return pd.DataFrame(out, columns=list(out))


def to_markdown(table: pd.DataFrame) -> str:
    """A pipe table (GitHub Markdown) of the display text."""
    text = display(table)

    def row(cells: Iterable[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    lines = [row(text.columns), row(["---"] * len(text.columns))]
    lines += [row(values) for values in text.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def to_latex(table: pd.DataFrame, caption: str, label: str) -> str:
    """A booktabs tabular of the display text (pandas ``to_latex``), special characters escaped."""
    text = display(table)
    latex = text.to_latex(index=False, escape=True, caption=caption, label=f"tab:{label}",
                          column_format="l" * len(text.columns))
    return latex.replace("±", r"$\pm$")


def write_table(folder: Path, name: str, table: pd.DataFrame, caption: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.{ext}" for ext in ("csv", "md", "tex")]
    with atomic_open(paths[0], "w", encoding="utf-8", newline="") as fh:
        table.to_csv(fh, index=False)
    with atomic_open(paths[1], "w", encoding="utf-8") as fh:
        fh.write(f"{caption}.\n\n{to_markdown(table)}")
    with atomic_open(paths[2], "w", encoding="utf-8") as fh:
        fh.write(to_latex(table, caption, name))
    return paths


# -- summary ------------------------------------------------------------------------------------

def _json_number(value: Any) -> float | int | None:
    return None if _missing(value) else (int(value) if isinstance(value, int) else float(value))


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _same(values: list[Any]) -> Any:
    """The value when every seed has the same, else None."""
    return values[0] if values and all(v == values[0] for v in values) else None


def training_summary(model: str, seeds: list[int], root: Path) -> dict[str, Any]:
    """The training metrics of ``model`` over its seeds (models/<model>/seed<seed>/metrics.json)."""
    runs = [need_json(root / "models" / model / f"seed{seed}" / "metrics.json", f"train@{model}-{seed}")
            for seed in seeds]
    speed = pd.Series([r.get("clips_per_second") for r in runs], dtype=float)
    seconds = pd.Series([r.get("train_seconds_this_run") for r in runs], dtype=float)
    return {
        "clips_per_second": _json_number(speed.mean()),
        "clips_per_second_std": _json_number(speed.std(ddof=1)),
        "seconds_per_seed": _json_number(seconds.mean()),
        "seconds_total": _json_number(seconds.sum(min_count=1)),
        "epochs": _same([r.get("epochs") for r in runs]),
        "training_clips": _same([r.get("training_clips") for r in runs]),
        "final_loss": _json_number(pd.Series([r.get("final_loss") for r in runs], dtype=float).mean()),
        "resumed_after_epoch": max((r.get("resumed_after_epoch") or 0) for r in runs),
        "world_size": max((r.get("world_size") or 1) for r in runs),
        "mlflow_run_ids": [r.get("mlflow_run_id") for r in runs if r.get("mlflow_run_id")],
    }


def _totals(agg: pd.DataFrame, model: str) -> dict[str, dict[str, Any]]:
    """Main-setting Total of ``model``: {gt_all, gt_degraded, detected_all, detected_degraded}."""
    out = {}
    for family, boxes in zip(MAIN_FAMILIES, ("gt", "detected")):
        for frames, _ in FRAMES:
            row = agg[(agg["family"] == family) & (agg["model"] == model) & (agg["frames"] == frames)].iloc[0]
            out[f"{boxes}_{frames}"] = {
                "mean": _json_number(row["Total"]), "std": _json_number(row["Total_std"]),
                "n_seeds": int(row["n_seeds"]), "evaluate_run_id": row["evaluate_run_id"],
                "infer_run_id": row["infer_run_id"]}
    return out


def detector_summary(root: Path) -> dict[str, Any]:
    """Box AP of the detect stage (required) and the detector's training record (when trained)."""
    detect = need_json(root / "results" / "detect" / "val_box_ap.json", "detect")
    train_path = root / "results" / "detect" / "train_detector.json"
    return {"box_ap50": (detect.get("box_ap") or {}).get("AP50"), "detect": detect,
            "train": read_json(train_path) if train_path.is_file() else None}


def summary(agg: pd.DataFrame, params: dict[str, Any], root: str | os.PathLike = ".") -> dict[str, Any]:
    """The headline numbers, for the README generator: per model the main-setting Total on GT boxes
    (all frames, degraded subset) and on detected boxes, its difference to the baseline, training
    speed; the detector's box AP50; the setting, seeds, commit and data version they come from."""
    root = Path(root)
    seeds = train_seeds(params)
    baseline = baseline_model(params["models"])
    models: dict[str, Any] = {}
    for name, entry in params["models"].items():
        config = resolve_model_config(entry)
        models[name] = {"label": model_label(entry), "preset": entry.get("preset"), "arch": config.arch,
                        "num_frames": config.num_frames, "Total": _totals(agg, name),
                        "training": training_summary(name, seeds, root)}
    for name, model in models.items():
        if baseline is not None and name != baseline:
            reference = models[baseline]["Total"]
            model["minus_baseline"] = {key: _difference(value["mean"], reference[key]["mean"])
                                       for key, value in model["Total"].items()}
    infer = params["infer"]
    return {
        "dataset": dataset_name(params),
        "synth_preset": synth_preset(params),
        "setting": {"steps": int(infer["steps"]), "ensemble": int(infer["ensemble"]),
                    "flip_test": bool(infer["flip_test"])},
        "seeds": seeds,
        "baseline": baseline,
        "models": models,
        "detector": detector_summary(root),
        "git_commit": _join(_split(agg["git_commit"])),
        "data_version": _join(_split(agg["data_version"])),
    }


def write_tables(params: dict[str, Any], out: str | os.PathLike, root: str | os.PathLike = ".", *,
                 progress: bool = False) -> tuple[dict[str, pd.DataFrame], dict[str, Any], pd.DataFrame]:
    """Read the cells, write every table (csv, md, tex) and summary.json into ``out``.

    Returns (tables, summary, the seed-aggregated cells) for the plots."""
    agg = aggregate(read_cells(params, root, progress=progress))
    tables = build_tables(agg, params)
    headline = summary(agg, params, root)
    out = Path(out)
    for name, table in tables.items():
        write_table(out, name, table, TABLES[name])
    write_json(out / "summary.json", headline, indent=2)
    log.info("tables: %d tables and summary.json in %s (%d cells, seeds %s)", len(tables), out,
             len(cells(params)), ", ".join(map(str, headline["seeds"])))
    return tables, headline, agg
