"""The tables stage's plots (matplotlib, Agg canvas, PNG) and the data files of dvc.yaml's ``plots:``.

Data files, CSV in long format (one row per point), written beside the PNGs:

- ``steps.csv``: model, frames, flip_test, ensemble, steps, Total, Total_std, n_seeds, series. The
  sweep grid on GT boxes; ``series`` names one line of steps.png
  (``"<model> K=<K> flip on|off, <frames> frames"``). x: steps, y: Total.
- ``ensemble.csv``: model, frames, flip_test, steps, ensemble, Total, Total_std, n_seeds, series
  (``"<model> steps=<S> flip on|off, <frames> frames"``). x: ensemble, y: Total.
- ``per_joint.csv``: model, boxes, frames, joint, mAP, mAP_std, n_seeds, bar. This run's main
  setting, one row per joint group (Head ... Total); ``bar`` labels the bar
  (``"<joint> <model> (<boxes> boxes, <frames> frames)"``). x: mAP, y: bar.
- ``history.csv``: model, seed, epoch, loss, lr, clips_per_second, series (``"<model> seed<seed>"``),
  from ``models/<model>/seed<seed>/history.json``. x: epoch, y: loss or lr.

``*_std`` is the sample standard deviation over the training seeds (empty for one seed). The files
are written whole even when there is nothing to plot (a header line only), so a dvc.yaml ``plots:``
entry always finds its file.

PNGs: ``steps.png`` and ``ensemble.png`` (a panel per swept model and frame subset, a line per K or
per steps count and flip test, seed std as error bars), ``per_joint.png`` (a panel per box source and
frame subset, grouped bars: a bar per model for each joint group), ``history.png`` (training loss
and learning rate per epoch, a line per model and seed; skipped with a log line when no
history.json exists).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from diffpose.io import atomic_open, atomic_path, read_json
from diffpose.report.tables import COLUMNS, THIS_RUN
from diffpose.sweep import train_seeds

log = logging.getLogger(__name__)

SWEEP_COLUMNS = ["model", "frames", "flip_test", "{other}", "{x}", "Total", "Total_std", "n_seeds", "series"]
PER_JOINT_COLUMNS = ["model", "boxes", "frames", "joint", "mAP", "mAP_std", "n_seeds", "bar"]
HISTORY_COLUMNS = ["model", "seed", "epoch", "loss", "lr", "clips_per_second", "series"]
_SHORT = {"steps": "steps", "ensemble": "K"}
_BOXES = {"gt": "GT", "detected": "detected"}


def _flip(value: Any) -> str:
    return "flip on" if bool(value) else "flip off"


# -- data files ---------------------------------------------------------------------------------

def sweep_data(table: pd.DataFrame, x: str) -> pd.DataFrame:
    """steps.csv / ensemble.csv from the ``steps`` / ``ensemble`` table."""
    other = "ensemble" if x == "steps" else "steps"
    columns = [c.format(x=x, other=other) for c in SWEEP_COLUMNS]
    series = [f"{r.model} {_SHORT[other]}={r[other]} {_flip(r.flip_test)}, {r.frames} frames"
              for _, r in table.iterrows()]
    return table.assign(series=series).reindex(columns=columns)


def per_joint_data(table: pd.DataFrame) -> pd.DataFrame:
    """per_joint.csv: this run's rows of the per_joint table, one row per joint group."""
    own = table[table["source"] == THIS_RUN]
    rows = [{"model": r["model"], "boxes": r["boxes"], "frames": r["frames"], "joint": joint, "mAP": r[joint],
             "mAP_std": r[f"{joint}_std"], "n_seeds": r["n_seeds"],
             "bar": f"{joint} {r['model']} ({r['boxes']} boxes, {r['frames']} frames)"}
            for _, r in own.iterrows() for joint in COLUMNS]
    return pd.DataFrame(rows, columns=PER_JOINT_COLUMNS)


def read_history(params: dict[str, Any], root: str | os.PathLike = ".") -> pd.DataFrame:
    """history.csv: every epoch of models/<model>/seed<seed>/history.json that exists."""
    rows = []
    for model in params["models"]:
        for seed in train_seeds(params):
            path = Path(root) / "models" / model / f"seed{seed}" / "history.json"
            if not path.is_file():
                log.info("plots: %s not found: no training curve for %s seed %d", path, model, seed)
                continue
            epochs = read_json(path, allow_nan=True)
            if not isinstance(epochs, list):
                log.warning("plots: %s: expected a list of epochs, got %s; skipped", path,
                            type(epochs).__name__)
                continue
            rows += [{"model": model, "seed": seed, **{k: e.get(k) for k in HISTORY_COLUMNS[2:6]},
                      "series": f"{model} seed{seed}"}
                     for e in epochs if isinstance(e, dict) and "epoch" in e]
    frame = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    for column in HISTORY_COLUMNS[2:6]:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        frame.to_csv(fh, index=False)
    return path


# -- figures ------------------------------------------------------------------------------------

def _figure(rows: int, cols: int, width: float = 4.2, height: float = 3.2) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False)


def save_png(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    return path


def _empty(path: Path, text: str) -> Path:
    fig, axes = _figure(1, 1)
    axes[0, 0].text(0.5, 0.5, text, ha="center", va="center")
    axes[0, 0].set_axis_off()
    return save_png(fig, path)


def _yerr(values: pd.Series) -> Any:
    return None if values.isna().all() else values.fillna(0.0).to_numpy()


def sweep_png(data: pd.DataFrame, x: str, path: Path) -> Path:
    """Total against ``x`` (steps or ensemble): a panel per model and frame subset, a line per setting."""
    if data.empty:
        return _empty(path, "no sweep cells (params.yaml sweep)")
    other = "ensemble" if x == "steps" else "steps"
    models = list(dict.fromkeys(data["model"]))
    frames = list(dict.fromkeys(data["frames"]))
    fig, axes = _figure(len(frames), len(models))
    for col, model in enumerate(models):
        for row, subset in enumerate(frames):
            ax = axes[row, col]
            panel = data[(data["model"] == model) & (data["frames"] == subset)]
            for (flip, level), line in panel.groupby(["flip_test", other], sort=True):
                line = line.sort_values(x)
                ax.errorbar(line[x], line["Total"], yerr=_yerr(line["Total_std"]), marker="o", capsize=3,
                            label=f"{_SHORT[other]}={level}, {_flip(flip)}")
            ticks = sorted(panel[x].unique())
            ax.set_xscale("log", base=2)
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.set_title(f"{model}, {subset} frames")
            ax.set_xlabel("DDIM steps" if x == "steps" else "K (noise starts)")
            ax.set_ylabel("PoseTrack mAP (Total)")
            ax.legend(fontsize=8)
    return save_png(fig, path)


def per_joint_png(data: pd.DataFrame, path: Path) -> Path:
    """Grouped bars: a panel per box source and frame subset, a bar per model for each joint group."""
    if data.empty:
        return _empty(path, "no results")
    panels = list(dict.fromkeys(zip(data["boxes"], data["frames"])))
    models = list(dict.fromkeys(data["model"]))
    cols = 2 if len(panels) > 1 else 1
    rows = (len(panels) + cols - 1) // cols
    fig, axes = _figure(rows, cols, width=5.5)
    width = 0.8 / len(models)
    for ax, (boxes, frames) in zip(axes.flat, panels):
        for i, model in enumerate(models):
            bars = data[(data["model"] == model) & (data["boxes"] == boxes) & (data["frames"] == frames)]
            bars = bars.set_index("joint").reindex(list(COLUMNS))
            positions = [j + (i - (len(models) - 1) / 2) * width for j in range(len(COLUMNS))]
            ax.bar(positions, bars["mAP"], width, yerr=_yerr(bars["mAP_std"]), capsize=2, label=model)
        ax.set_xticks(range(len(COLUMNS)), list(COLUMNS))
        ax.set_title(f"{_BOXES.get(boxes, boxes)} boxes, {frames} frames")
        ax.set_ylabel("PoseTrack mAP")
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_axis_off()
    return save_png(fig, path)


def history_png(data: pd.DataFrame, path: Path) -> Path:
    """Training loss and learning rate per epoch, a line per model and seed."""
    fig, axes = _figure(1, 2)
    for series, line in data.groupby("series", sort=False):
        line = line.sort_values("epoch")
        axes[0, 0].plot(line["epoch"], line["loss"], marker="o", label=series)
        axes[0, 1].plot(line["epoch"], line["lr"], marker="o", label=series)
    for ax, what in zip(axes[0], ("training loss", "learning rate")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        ax.legend(fontsize=8)
    return save_png(fig, path)


def write_plots(tables: dict[str, pd.DataFrame], params: dict[str, Any], out: str | os.PathLike,
                root: str | os.PathLike = ".") -> list[Path]:
    """Every data file and PNG of the module docstring into ``out``; returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    steps, ensemble = sweep_data(tables["steps"], "steps"), sweep_data(tables["ensemble"], "ensemble")
    per_joint = per_joint_data(tables["per_joint"])
    history = read_history(params, root)
    written = [write_csv(out / "steps.csv", steps), write_csv(out / "ensemble.csv", ensemble),
               write_csv(out / "per_joint.csv", per_joint), write_csv(out / "history.csv", history),
               sweep_png(steps, "steps", out / "steps.png"),
               sweep_png(ensemble, "ensemble", out / "ensemble.png"),
               per_joint_png(per_joint, out / "per_joint.png")]
    if history.empty:
        log.info("plots: no models/<model>/seed<seed>/history.json: history.png not drawn")
        (out / "history.png").unlink(missing_ok=True)  # not one of an earlier run
    else:
        written.append(history_png(history, out / "history.png"))
    return written
