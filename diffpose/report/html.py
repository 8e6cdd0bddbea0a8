"""The run's report: one self-contained HTML page of tables, plots and skeletons on val frames.

What goes in:

- every CSV of the tables folder (the ``tables`` stage's output), rendered whole under its file
  name, whatever its columns (the MLflow run id of each row is one of them); ``summary.json``
  beside them, when present, gives the headline numbers at the top;
- every PNG of the plots folder;
- for a few evenly spaced evaluated frames of each val sequence (frames with an annotated
  person), the frame with the predictions of the main ``infer`` cell of the first DiffPose model
  (:func:`diffpose.sweep.cells`), the ground truth, the detect stage's boxes and, circled in red,
  every predicted joint farther from its ground truth than the PCKh threshold of the PoseTrack mAP
  (0.5 x the head size); a ground-truth joint the prediction lacks is circled too.

The page needs nothing beyond itself: images are ``data:`` URIs (JPEG thumbnails of the frames,
the plots as they are), the CSS is inline and there is no script. The same inputs give the same
bytes (no time stamps), so DVC sees an unchanged report as unchanged. A missing input is a
:class:`DataError` naming it.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from diffpose.config import flatten
from diffpose.data import keypoints as kp
from diffpose.data.posetrack import load_sequence, sequence_files
from diffpose.errors import ConfigError, DataError
from diffpose.evaluation.posetrack_map import HEAD_SIZE_FACTOR, PCKH_THRESHOLD, evaluated_frames
from diffpose.io import atomic_open, read_json
from diffpose.models.config import resolve_model_config
from diffpose.report.tables import dataset_name, model_label
from diffpose.sweep import Cell, cells

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIRST_TABLE = "per_joint"  # the paper's Table 1 layout leads the page when the tables stage writes it
# BGR colours of the frame overlays
PRED_COLOUR = (0, 230, 255)  # yellow
GT_COLOUR = (60, 220, 60)  # green
BOX_COLOUR = (255, 190, 0)  # azure
MISS_COLOUR = (0, 0, 255)  # red
EVALUATED_JOINTS = kp.LABELLED_IN_POSETRACK18  # the ears are never labelled, nor scored


@dataclass(frozen=True)
class Inputs:
    """Where the report reads from; ``results_root`` is the folder the cells' ``results/...``
    paths are relative to (the project root)."""

    tables: Path
    plots: Path
    annotations: Path  # the val split's ground-truth sequence files
    images: Path  # root that the file names in the annotations are relative to
    detections: Path  # the detect stage's boxes (COCO results list)
    results_root: Path = Path(".")


@dataclass(frozen=True)
class Options:
    frames_per_sequence: int = 3
    width: int = 480  # thumbnail width, pixels
    jpeg_quality: int = 80

    def __post_init__(self) -> None:
        for name, low in (("frames_per_sequence", 1), ("width", 32), ("jpeg_quality", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"report: {name} must be an integer >= {low}, got {value!r}")
        if self.jpeg_quality > 100:
            raise ConfigError(f"report: jpeg_quality must be at most 100, got {self.jpeg_quality}")


@dataclass(frozen=True)
class Table:
    name: str
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Figure:
    """One image of the page: a data URI, its caption and pixel size."""

    uri: str
    caption: str
    width: int
    height: int


# --------------------------------------------------------------------------------------------
# inputs


def overlay_cell(params: dict[str, Any]) -> Cell:
    """The main ``infer`` cell (GT boxes, infer.* settings, first training seed) of the first
    model whose architecture is DiffPose; of the first model when there is none."""
    main = [c for c in cells(params) if c.family == "infer"]
    if not main:
        raise ConfigError("params: no inference cell to draw (models and train.seeds must not be empty)")
    diffusion = [c for c in main if resolve_model_config(params["models"][c.model]).arch == "diffpose"]
    return (diffusion or main)[0]


def read_tables(folder: Path) -> list[Table]:
    """Every ``*.csv`` of ``folder``: the paper's main table (per_joint) first, the others by name."""
    if not folder.is_dir():
        raise DataError(f"{folder}: tables folder not found (written by `diffpose tables`)")
    files = sorted((p for p in folder.glob("*.csv") if p.is_file()), key=lambda p: (p.stem != FIRST_TABLE, p.name))
    if not files:
        raise DataError(f"{folder}: no .csv table in the tables folder")
    return [read_table(path) for path in files]


def read_table(path: Path) -> Table:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the table ({err})") from None
    try:
        rows = [row for row in csv.reader(io.StringIO(text)) if row]
    except csv.Error as err:
        raise DataError(f"{path}: malformed CSV ({err})") from None
    if not rows:
        raise DataError(f"{path}: empty table (no header row)")
    width = max(map(len, rows))
    rows = [row + [""] * (width - len(row)) for row in rows]
    return Table(path.stem, rows[0], rows[1:])


def read_summary(folder: Path) -> dict[str, Any]:
    """``summary.json`` of the tables folder, flattened (``a.b`` keys); {} when there is none."""
    path = folder / "summary.json"
    if not path.exists():
        return {}
    summary = read_json(path)
    if not isinstance(summary, dict):
        raise DataError(f"{path}: expected a JSON object of headline numbers, got {type(summary).__name__}")
    return flatten(summary)


def read_plots(folder: Path) -> list[Figure]:
    """Every PNG under ``folder`` (sorted by path), as it is."""
    if not folder.is_dir():
        raise DataError(f"{folder}: plots folder not found (written by `diffpose tables`)")
    figures = []
    for path in sorted(p for p in folder.rglob("*.png") if p.is_file()):
        data = path.read_bytes()
        if not data.startswith(PNG_SIGNATURE) or len(data) < 24:
            raise DataError(f"{path}: not a PNG image")
        width, height = (int.from_bytes(data[i:i + 4], "big") for i in (16, 20))  # the IHDR chunk
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        figures.append(Figure(uri, path.relative_to(folder).as_posix(), width, height))
    return figures


def read_detections(path: Path) -> dict[int, list[tuple[list[float], float]]]:
    """The detect stage's boxes by image id: [([x, y, w, h], score), ...]."""
    records = read_json(path)
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of detections, got {type(records).__name__}")
    boxes: dict[int, list[tuple[list[float], float]]] = defaultdict(list)
    for i, rec in enumerate(records):
        try:
            x, y, w, h = (float(v) for v in rec["bbox"])
            boxes[int(rec["image_id"])].append(([x, y, w, h], float(rec.get("score", 1.0))))
        except (TypeError, KeyError, ValueError):
            raise DataError(f"{path}: detection #{i}: expected image_id, bbox [x, y, w, h] and score") from None
    return dict(boxes)


def cell_record(cell: Cell, root: Path) -> dict[str, Any]:
    """The cell's infer.json (settings, MLflow run id); {} when the cell has none."""
    path = root / cell.record
    return read_json(path) if path.exists() else {}


# --------------------------------------------------------------------------------------------
# frames


def pick_frames(gt: dict, count: int) -> list[int]:
    """Positions of ``count`` evenly spaced evaluated frames (first and last included)."""
    frames = evaluated_frames(gt)
    if len(frames) <= count:
        return frames
    if count == 1:
        return [frames[len(frames) // 2]]
    return [frames[round(k * (len(frames) - 1) / (count - 1))] for k in range(count)]


def _keypoints(anns: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """xy (N, 17, 2) and present (N, 17): a keypoint is absent when its x, y and v are all 0."""
    values = np.array([a["keypoints"] for a in anns], dtype=np.float64).reshape(-1, kp.NUM_KEYPOINTS, 3)
    return values[..., :2], ~(values == 0).all(axis=-1)


def misses(gt: list[dict], pred: list[dict]) -> tuple[list[tuple[np.ndarray, np.ndarray | None]], int]:
    """The joints of one frame that the PoseTrack mAP counts wrong, and the number of GT joints.

    Each GT person is paired with a prediction greedily, the pair with the most joints within the
    threshold first (as the evaluator pairs them; on a tie, the smaller mean distance). A miss is
    ``(gt_xy, pred_xy)``: a predicted joint farther than PCKH_THRESHOLD x the head size from the
    GT joint, or ``pred_xy`` None where the prediction lacks a GT joint (an unpaired GT person
    misses every joint). Shapes: G GT people, P predictions, J = 17 joints.
    """
    gt = [a for a in gt if a.get("bbox_head") is not None]
    if not gt:
        return [], 0
    gxy, ghas = _keypoints(gt)
    ghas &= EVALUATED_JOINTS
    head = HEAD_SIZE_FACTOR * np.hypot(*np.array([a["bbox_head"][2:] for a in gt], dtype=np.float64).T)
    if pred:
        pxy, phas = _keypoints(pred)
    else:
        pxy, phas = np.zeros((0, kp.NUM_KEYPOINTS, 2)), np.zeros((0, kp.NUM_KEYPOINTS), bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        dist = np.linalg.norm(gxy[:, None] - pxy[None], axis=-1) / head[:, None, None]  # (G, P, J)
    both = ghas[:, None] & phas[None]
    within = both & (dist <= PCKH_THRESHOLD)
    hits = within.sum(-1)
    mean = np.where(both, np.nan_to_num(dist, nan=np.inf), 0).sum(-1) / np.maximum(both.sum(-1), 1)
    pairs = sorted(np.ndindex(hits.shape), key=lambda gp: (-hits[gp], mean[gp], gp))
    partner: dict[int, int] = {}
    for g, p in pairs:
        if g not in partner and p not in partner.values():
            partner[g] = p
    found: list[tuple[np.ndarray, np.ndarray | None]] = []
    for g in range(len(gt)):
        p = partner.get(g)
        for j in np.flatnonzero(ghas[g]):
            if p is None or not phas[p, j]:
                found.append((gxy[g, j], None))
            elif not within[g, p, j]:
                found.append((gxy[g, j], pxy[p, j]))
    return found, int(ghas.sum())


def _point(xy: np.ndarray, scale: float) -> tuple[int, int]:
    return int(round(xy[0] * scale)), int(round(xy[1] * scale))


def _skeleton(out: np.ndarray, xy: np.ndarray, has: np.ndarray, colour: tuple[int, int, int], thickness: int,
              scale: float) -> None:
    """The limbs (keypoints.SKELETON) of one person whose two ends are both present, in place."""
    for a, b in kp.SKELETON:
        if has[a] and has[b]:
            cv2.line(out, _point(xy[a], scale), _point(xy[b], scale), colour, thickness, cv2.LINE_AA)


def draw_frame(image: np.ndarray, gt: list[dict], pred: list[dict], boxes: list[tuple[list[float], float]],
               wrong: list[tuple[np.ndarray, np.ndarray | None]], width: int) -> np.ndarray:
    """The BGR frame scaled to ``width`` with the detector's boxes, the predicted skeletons, the
    ground truth (thin, joints as crosses) and the misses (red circles, a line to the GT joint).

    One colour per role, not diffpose.inference.overlay's colour per person: its hues include the
    red and green that mark misses and the ground truth here."""
    scale = width / image.shape[1]
    size = (width, max(1, round(image.shape[0] * scale)))
    out = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    for (x, y, w, h), score in boxes:
        cv2.rectangle(out, _point((x, y), scale), _point((x + w, y + h), scale), BOX_COLOUR, 1)
        cv2.putText(out, f"{score:.2f}", _point((x, y - 2), scale), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                    BOX_COLOUR, 1, cv2.LINE_AA)
    for people, colour, thickness in ((pred, PRED_COLOUR, 2), (gt, GT_COLOUR, 1)):
        if not people:
            continue
        xy, has = _keypoints(people)
        has &= EVALUATED_JOINTS
        for person in range(len(people)):
            _skeleton(out, xy[person], has[person], colour, thickness, scale)
        for person, joint in zip(*np.nonzero(has)):
            centre = _point(xy[person, joint], scale)
            if people is gt:
                cv2.drawMarker(out, centre, colour, cv2.MARKER_CROSS, 7, 1, cv2.LINE_AA)
            else:
                cv2.circle(out, centre, 2, colour, -1, cv2.LINE_AA)
    for gt_xy, pred_xy in wrong:
        centre = _point(gt_xy if pred_xy is None else pred_xy, scale)
        if pred_xy is not None:
            cv2.line(out, centre, _point(gt_xy, scale), MISS_COLOUR, 1, cv2.LINE_AA)
        cv2.circle(out, centre, 6, MISS_COLOUR, 2, cv2.LINE_AA)
    return out


def jpeg_uri(image: np.ndarray, quality: int) -> str:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover (OpenCV always encodes a BGR uint8 image)
        raise DataError("OpenCV could not encode a JPEG thumbnail")
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode("ascii")


def sequence_figures(gt_path: Path, pred_dir: Path, images: Path, detections: dict,
                     options: Options) -> list[Figure]:
    """The thumbnails of one val sequence (frames paired by position, as the evaluator pairs them)."""
    pred_path = pred_dir / gt_path.name
    if not pred_path.is_file():
        raise DataError(f"{pred_path}: prediction file not found (for {gt_path})")
    gt, pred = load_sequence(gt_path, kind="gt"), load_sequence(pred_path, kind="pred")
    if len(gt["images"]) != len(pred["images"]):
        raise DataError(f"{pred_path}: {len(pred['images'])} frames, but {gt_path} has {len(gt['images'])}")
    by_frame: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for kind, seq in (("gt", gt), ("pred", pred)):
        for ann in seq["annotations"]:
            by_frame[kind, ann["image_id"]].append(ann)
    figures = []
    for i in pick_frames(gt, options.frames_per_sequence):
        image_gt, image_pred = gt["images"][i], pred["images"][i]
        people_gt, people_pred = by_frame["gt", image_gt["id"]], by_frame["pred", image_pred["id"]]
        frame_path = images / image_gt["file_name"]
        frame = cv2.imread(str(frame_path), cv2.IMREAD_COLOR) if frame_path.is_file() else None
        if frame is None:
            raise DataError(f"{frame_path}: frame not found or not an image (for {gt_path} frame #{i})")
        wrong, total = misses(people_gt, people_pred)
        boxes = detections.get(image_gt["id"], [])
        thumb = draw_frame(frame, people_gt, people_pred, boxes, wrong, options.width)
        caption = (f"{gt_path.stem} frame {i}: {len(people_gt)} people, {len(wrong)} of {total} joints missed, "
                   f"{len(boxes)} detected boxes")
        figures.append(Figure(jpeg_uri(thumb, options.jpeg_quality), caption, thumb.shape[1], thumb.shape[0]))
    return figures


# --------------------------------------------------------------------------------------------
# HTML

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; color: #222; margin: 1.5em auto; max-width: 1500px;
       padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ccc; }
h3 { margin: 1.2em 0 .3em; font-size: 1.05em; }
table { border-collapse: collapse; margin: .3em 0 1em; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 2px 7px; text-align: left; vertical-align: top; white-space: nowrap; }
.wide { overflow-x: auto; } details { margin: .5em 0 1em; } summary { cursor: pointer; color: #444; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafafa; }
code { font-size: 12px; } .muted { color: #666; }
figure { display: inline-block; margin: 0 .6em .8em 0; vertical-align: top; }
figcaption { font-size: 12px; color: #444; max-width: 480px; }
img { display: block; max-width: 100%; height: auto; border: 1px solid #ccc; }
.legend span { display: inline-block; margin-right: 1.2em; } .swatch { font-weight: bold; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _short(text: str) -> str:
    """A CSV number with more than 3 decimals, shortened (the exact value stays in the tooltip)."""
    value = _number(text)
    if value is None or "." not in text or len(text.split(".")[1].rstrip("0")) <= 3 or "e" in text.lower():
        return text
    return f"{value:.3f}" if abs(value) >= 0.1 else f"{value:.3g}"


def _is_run_id(column: str) -> bool:
    name = column.lower()
    return "run_id" in name or "mlflow" in name


def table_html(table: Table) -> str:
    numeric = [bool(col) and all(_number(c) is not None for c in col if c) for col in zip(*table.rows)] \
        if table.rows else [False] * len(table.header)
    head = "".join(f"<th>{_esc(h)}</th>" for h in table.header)
    body = []
    for row in table.rows:
        cells_html = []
        for text, column, is_num in zip(row, table.header, numeric):
            if _is_run_id(column) and text:
                cells_html.append(f"<td><code>{_esc(text)}</code></td>")
            elif is_num and text:
                cells_html.append(f'<td class="num" title="{_esc(text)}">{_esc(_short(text))}</td>')
            else:
                cells_html.append(f"<td>{_esc(text)}</td>")
        body.append("<tr>" + "".join(cells_html) + "</tr>")
    return (f'<h3 id="table-{_esc(table.name)}">{_esc(table.name)}</h3>\n<div class="wide"><table><thead><tr>{head}'
            f"</tr></thead><tbody>\n" + "\n".join(body) + "\n</tbody></table></div>")


def figure_html(figure: Figure, alt: str) -> str:
    return (f'<figure><img src="{figure.uri}" width="{figure.width}" height="{figure.height}" alt="{_esc(alt)}">'
            f"<figcaption>{_esc(figure.caption)}</figcaption></figure>")


def _summary_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return _short(repr(value))
    return value if isinstance(value, str) else json.dumps(value)


def summary_html(summary: dict[str, Any]) -> str:
    """summary.json folded away (it is long: the README's figures); numbers shortened as in the tables."""
    if not summary:
        return ""
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(_summary_value(v))}</td></tr>" for k, v in summary.items())
    return (f"<details><summary>summary.json: {len(summary)} values</summary>\n"
            f'<div class="wide"><table>{rows}</table></div></details>')


def cell_html(cell: Cell, label: str, record: dict[str, Any]) -> str:
    flip = "on" if cell.flip_test else "off"
    setting = f"{cell.steps} DDIM step(s), ensemble {cell.ensemble}, flip test {flip}"
    run = record.get("mlflow_run_id")
    bits = [f"{_esc(label)} (<code>{_esc(cell.model)}</code>), training seed {cell.seed}, "
            f"{cell.boxes.upper()} boxes, {setting}",
            f"predictions <code>{_esc(cell.predictions.as_posix())}</code>",
            f"MLflow run <code>{_esc(run)}</code>" if run else "MLflow run: not recorded"]
    return "<p>" + "; ".join(bits) + ".</p>"


LEGEND = ('<p class="legend"><span><span class="swatch" style="color:#ffe600">&#9679;&#8212;</span> predicted '
          'skeleton</span><span><span class="swatch" style="color:#3cdc3c">+&#8212;</span> ground truth</span>'
          '<span><span class="swatch" style="color:#00beff">&#9633;</span> detect stage box (score)</span>'
          '<span><span class="swatch" style="color:#ff0000">&#9675;</span> joint farther than '
          f'{PCKH_THRESHOLD} x the head size from the ground truth (PoseTrack mAP counts it wrong), '
          'or missing; the red line leads to the ground truth</span></p>')


def render_page(*, title: str, intro: str, summary: dict[str, Any], tables: list[Table], plots: list[Figure],
                cell: Cell, label: str, record: dict[str, Any], sequences: list[tuple[str, list[Figure]]]) -> str:
    parts = ['<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">', f"<title>{_esc(title)}</title>",
             f"<style>{CSS}</style>\n</head>\n<body>\n<h1>{_esc(title)}</h1>\n<p class=\"muted\">{intro}</p>",
             "<h2>Tables</h2>", *map(table_html, tables), summary_html(summary), "<h2>Plots</h2>"]
    parts += [figure_html(f, f"plot {f.caption}") for f in plots] or ['<p class="muted">No plot.</p>']
    parts += ["<h2>Predictions on val frames</h2>", cell_html(cell, label, record), LEGEND]
    for name, figures in sequences:
        thumbnails = "".join(figure_html(f, f.caption) for f in figures)
        parts.append(f"<h3>{_esc(name)}</h3>\n<div>{thumbnails}</div>")
    parts.append("</body>\n</html>\n")
    return "\n".join(p for p in parts if p)


def build_report(params: dict[str, Any], inputs: Inputs, out: str | os.PathLike,
                 options: Options = Options()) -> dict[str, float]:
    """Read the inputs, write the page to ``out`` atomically and return its counts."""
    cell = overlay_cell(params)
    tables = read_tables(inputs.tables)
    summary = read_summary(inputs.tables)
    plots = read_plots(inputs.plots)
    gt_files = sequence_files(inputs.annotations)
    if not gt_files:
        raise DataError(f"{inputs.annotations}: no .json ground-truth sequence file")
    detections = read_detections(inputs.detections)
    pred_dir = inputs.results_root / cell.predictions
    if not pred_dir.is_dir():
        raise DataError(f"{pred_dir}: predictions folder of cell {cell.stage} not found")
    sequences = [(path.stem, sequence_figures(path, pred_dir, inputs.images, detections, options))
                 for path in gt_files]
    intro = (f"Data: {_esc(dataset_name(params))}. {len(tables)} tables from <code>{_esc(inputs.tables)}</code>, "
             f"{len(plots)} plots from <code>{_esc(inputs.plots)}</code>, {sum(len(f) for _, f in sequences)} val "
             f"frames of {len(sequences)} sequences from <code>{_esc(inputs.annotations)}</code>.")
    page = render_page(title="DiffPose reproduction: report", intro=intro, summary=summary, tables=tables,
                       plots=plots, cell=cell, label=model_label(params["models"][cell.model]),
                       record=cell_record(cell, inputs.results_root), sequences=sequences)
    with atomic_open(out, "w", encoding="utf-8") as fh:
        fh.write(page)
    return {"tables": len(tables), "plots": len(plots), "frames": sum(len(f) for _, f in sequences),
            "bytes": len(page.encode("utf-8"))}
