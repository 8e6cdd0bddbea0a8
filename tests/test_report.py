"""`diffpose report`: the offline HTML page, checked as a browser shows it.

The results tree is built here: the tiny synthetic benchmark and its frames (a second), predictions
that are the ground truth plus noise with a few joints moved far away (so some, and only those,
are missed), detections from the GT boxes, two CSV tables, a summary and two PNG plots.
"""

from __future__ import annotations

import copy
import csv
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from diffpose.data.frames import extract_all
from diffpose.data.keypoints import NAME_TO_INDEX
from diffpose.data.posetrack import load_sequence, write_sequence
from diffpose.data.synthetic import generate
from diffpose.errors import DataError
from diffpose.evaluation.posetrack_map import evaluated_frames
from diffpose.io import write_json
from diffpose.report import html as report
from diffpose.sweep import cells
from tests.chromium import artifacts_dir, open_page
from tests.pipeline_copy import REPO, deep_merge, tool_env

RUN_IDS = ["0f" * 16, "a1" * 16, "b2" * 16]
FAR = ("left_wrist", "right_knee")  # moved 40 px on the first person of every frame: missed
WIDTH = 480


def _params() -> dict:
    """params.yaml with the tiny overrides and the baseline listed first (the report must still
    draw the DiffPose cell)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    tiny = yaml.safe_load((REPO / "tests" / "data" / "params_tiny.yaml").read_text())
    params = deep_merge(params, tiny)
    params["models"] = {"baseline": params["models"]["baseline"], "diffpose": params["models"]["diffpose"]}
    params["train"]["seeds"] = [0]
    return params


def _predictions(gt: dict, rng: np.random.Generator) -> dict:
    """The GT people with 1.5 px of noise on every joint, FAR joints of the first person of each
    frame 40 px away, per-joint scores."""
    images = [{"id": im["id"], "file_name": im["file_name"]} for im in gt["images"]]
    seen: set[int] = set()
    people = []
    for ann in gt["annotations"]:
        k = np.array(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        present = ~(k == 0).all(axis=1)
        k[present, :2] += rng.normal(0, 1.5, size=(int(present.sum()), 2))
        if ann["image_id"] not in seen:
            seen.add(ann["image_id"])
            for name in FAR:
                if present[NAME_TO_INDEX[name]]:
                    k[NAME_TO_INDEX[name], :2] += 40.0
        k[present, 2] = 0.9
        people.append({"image_id": ann["image_id"], "track_id": ann["track_id"], "bbox": ann["bbox"],
                       "keypoints": [round(float(v), 2) for v in k.ravel()], "scores": [0.9] * len(k)})
    return {"images": images, "annotations": people, "categories": gt["categories"]}


def _write_csv(path: Path, rows: list[list]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)


def build_tree(root: Path) -> dict:
    """The inputs of the report under ``root``; returns the params, the paths and what to expect."""
    params = _params()
    generate(root / "data" / "synth", preset="tiny", seed=0, workers=1, progress=False)
    extract_all(root / "data" / "synth" / "videos", root / "data" / "frames", workers=1, progress=False)
    gt_dir = root / "data" / "synth" / "annotations" / "val"
    cell = next(c for c in cells(params) if c.family == "infer" and c.model == "diffpose")
    rng = np.random.default_rng(0)
    detections = []
    for path in sorted(gt_dir.glob("*.json")):
        gt = load_sequence(path)
        write_sequence(root / cell.predictions / path.name, _predictions(gt, rng))
        file_names = {im["id"]: im["file_name"] for im in gt["images"]}
        detections += [{"image_id": a["image_id"], "file_name": file_names[a["image_id"]], "category_id": 1,
                        "bbox": [v + 2.0 for v in a["bbox"]], "score": 0.87} for a in gt["annotations"]]
    write_json(root / "results" / "detect" / "val_detections.json", detections)
    write_json(root / cell.record, {"model": "diffpose", "mlflow_run_id": RUN_IDS[2]})
    tables = root / "results" / "tables"
    tables.mkdir(parents=True)
    _write_csv(tables / "per_joint.csv", [
        ["model", "Head", "Total", "mlflow_run_id"],
        ["diffpose", 87.123456, 45.2, RUN_IDS[0]],
        ["baseline <b>", 85.8, 37.75, RUN_IDS[1]],
    ])
    _write_csv(tables / "ablation_steps.csv", [["steps", "Total", "mlflow_run_id"], [1, 45.2, RUN_IDS[0]],
                                                [2, 44.9, RUN_IDS[1]], [4, 44.1, RUN_IDS[2]]])
    write_json(tables / "summary.json", {"diffpose": {"Total": 45.2}, "baseline": {"Total": 37.8}})
    plots = root / "results" / "plots"
    plots.mkdir(parents=True)
    for name, colour in (("ablation_steps", (200, 80, 20)), ("training_loss", (20, 80, 200))):
        image = np.full((120, 200, 3), 255, np.uint8)
        cv2.line(image, (10, 110), (190, 10), colour, 3)
        assert cv2.imwrite(str(plots / f"{name}.png"), image)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return {"params": params, "cell": cell, "gt_dir": gt_dir, "inputs": _inputs(root)}


def _inputs(root: Path) -> report.Inputs:
    """The inputs in the layout of the pipeline (dvc.yaml's paths) under ``root``."""
    return report.Inputs(tables=root / "results" / "tables", plots=root / "results" / "plots",
                         annotations=root / "data" / "synth" / "annotations" / "val", images=root / "data" / "frames",
                         detections=root / "results" / "detect" / "val_detections.json", results_root=root)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return build_tree(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def page(tree: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("report-out") / "report.html"
    counts = report.build_report(tree["params"], tree["inputs"], out)
    return out, counts


def _evaluated_frames(gt_dir: Path) -> int:
    return sum(min(3, len(evaluated_frames(load_sequence(p)))) for p in sorted(gt_dir.glob("*.json")))


def test_page_holds_every_table_plot_and_frame(tree: dict, page: tuple[Path, dict]):
    out, counts = page
    text = out.read_text(encoding="utf-8")
    assert counts == {"tables": 2, "plots": 2, "frames": _evaluated_frames(tree["gt_dir"]), "bytes": len(text.encode())}
    assert counts["frames"] >= 4
    for name in ("per_joint", "ablation_steps"):
        assert f'<h3 id="table-{name}">{name}</h3>' in text
    for run_id in RUN_IDS:
        assert f"<code>{run_id}</code>" in text
    assert "baseline &lt;b&gt;" in text and "<b>" not in text  # CSV text is escaped
    assert '<td class="num" title="87.123456">87.123</td>' in text  # long decimals shortened, exact in the tooltip
    assert text.index('id="table-per_joint"') < text.index('id="table-ablation_steps"')  # the paper's table first
    assert "<th>diffpose.Total</th><td>45.2</td>" in text  # summary.json, flattened
    assert text.count("data:image/png;base64,") == 2
    assert text.count("data:image/jpeg;base64,") == counts["frames"]
    assert tree["cell"].predictions.as_posix() in text and "DiffPose (<code>diffpose</code>), training seed 0" in text
    assert "Data: synthetic (tiny)." in text


def test_page_needs_nothing_beyond_itself(page: tuple[Path, dict]):
    text = page[0].read_text(encoding="utf-8")
    assert not re.search(r"<script|<link|<iframe|@import|url\(", text, re.IGNORECASE)
    assert not re.findall(r"""(?:src|href)\s*=\s*(?!["']?(?:data:|#))""", text, re.IGNORECASE)
    assert len(text) < 3_000_000


def test_same_inputs_same_bytes(tree: dict, page: tuple[Path, dict], tmp_path: Path):
    again = tmp_path / "again.html"
    report.build_report(tree["params"], tree["inputs"], again)
    assert again.read_bytes() == page[0].read_bytes()


def test_report_draws_the_first_diffpose_model():
    params = _params()
    assert list(params["models"]) == ["baseline", "diffpose"]
    assert report.overlay_cell(params).model == "diffpose"
    only_baseline = copy.deepcopy(params)
    del only_baseline["models"]["diffpose"]
    only_baseline["sweep"]["models"] = []
    assert report.overlay_cell(only_baseline).model == "baseline"


def _person(xy: np.ndarray, head: float = 20.0) -> dict:
    """A GT or predicted person from (17, 2) coordinates (NaN = absent); head size 0.6 x diagonal."""
    k = np.zeros((17, 3))
    present = ~np.isnan(xy[:, 0])
    k[present, :2], k[present, 2] = xy[present], 1
    side = head / 0.6 / np.sqrt(2)
    return {"keypoints": k.ravel().tolist(), "bbox_head": [0.0, 0.0, side, side]}


def test_misses_are_the_joints_beyond_the_pckh_threshold():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(50, 400, (17, 2)), rng.uniform(50, 400, (17, 2))
    a[3:5] = b[3:5] = np.nan  # no ears
    pred_a, pred_b = a.copy(), b.copy()
    pred_a[NAME_TO_INDEX["left_wrist"]] += [9.0, 0.0]  # 0.45 head: within the threshold
    pred_a[NAME_TO_INDEX["right_knee"]] += [0.0, 11.0]  # 0.55 head: missed
    pred_b[NAME_TO_INDEX["nose"]] = np.nan  # a joint the prediction lacks
    # predictions listed in the other order: pairing is by agreement, not by position
    found, total = report.misses([_person(a), _person(b)], [_person(pred_b), _person(pred_a)])
    assert total == 30
    assert len(found) == 2
    got = {tuple(np.round(g, 6)): p for g, p in found}
    assert np.allclose(got[tuple(np.round(a[NAME_TO_INDEX["right_knee"]], 6))], pred_a[NAME_TO_INDEX["right_knee"]])
    assert got[tuple(np.round(b[NAME_TO_INDEX["nose"]], 6))] is None
    # a GT person without any prediction misses all its joints
    alone, total = report.misses([_person(a)], [])
    assert total == 15 and len(alone) == 15 and all(p is None for _, p in alone)


def test_missed_joints_are_circled_in_red():
    image = np.full((100, 160, 3), 128, np.uint8)
    gt_xy = np.array([40.0, 50.0])
    pred_xy = np.array([100.0, 50.0])
    out = report.draw_frame(image, [], [], [], [(gt_xy, pred_xy)], width=320)
    assert out.shape == (200, 320, 3)
    ring = out[100, 200 + 6]  # on the circle around the predicted joint, scaled by 2
    assert ring[2] > 200 and ring[0] < 80 and ring[1] < 80
    assert (out[100, 120:190, 2] > 200).all()  # the line towards the ground truth
    untouched = report.draw_frame(image, [], [], [], [], width=320)
    assert (untouched[100, 206] == 128).all()


@pytest.mark.parametrize("missing, named", [
    ("results/tables", "results/tables"),
    ("results/tables/*.csv", "results/tables: no .csv table"),
    ("results/plots", "results/plots"),
    ("results/detect/val_detections.json", "results/detect/val_detections.json"),
    ("results/infer/diffpose/seed0/predictions/500002_mpii_test.json", "predictions/500002_mpii_test.json"),
    ("data/frames/images/val/500001_mpii_test/*.jpg", "data/frames/images/val/500001_mpii_test/"),
    ("data/synth/annotations/val", "data/synth/annotations/val"),
])
def test_a_missing_input_is_one_line_naming_it(tree: dict, tmp_path: Path, missing: str, named: str):
    root = shutil.copytree(tree["inputs"].results_root, tmp_path / "copy")
    for path in root.glob(missing):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    with pytest.raises(DataError) as err:
        report.build_report(tree["params"], _inputs(root), tmp_path / "report.html")
    assert named in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "report.html").exists()


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = tool_env()
    env["DIFFPOSE_TRACKING"] = "off"
    return subprocess.run([sys.executable, "-m", "diffpose", "report", "--params", "params.yaml", *args],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_cli_writes_the_page_and_names_a_missing_file(tree: dict):
    root = tree["inputs"].results_root
    proc = _cli(root, "--out", "results/report.html", "--no-track")
    assert proc.returncode == 0, proc.stderr
    assert (root / "results" / "report.html").stat().st_size > 10_000
    assert "report written to results/report.html: 2 tables, 2 plots" in proc.stdout
    proc = _cli(root, "--out", "results/other.html", "--detections", "results/detect/nothing.json", "--no-track")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "diffpose report: error: results/detect/nothing.json: file not found"
    assert not (root / "results" / "other.html").exists()


def test_browser_renders_tables_and_every_image(page: tuple[Path, dict]):
    out, counts = page
    shot = artifacts_dir() / "report.png"
    result = open_page(out, {
        "images": "Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])",
        "tables": """Array.from(document.querySelectorAll('h3[id^="table-"]')).map(h => {
            const t = h.nextElementSibling.querySelector("table");
            return [h.textContent, t.tBodies[0].rows.length, t.getBoundingClientRect().height];
        })""",
        "text": "document.body.innerText",
    }, ready="document.readyState === 'complete' && Array.from(document.images).every(i => i.complete)",
        screenshot=shot)
    assert result.values["ready"] is True
    assert result.console_errors == []
    assert result.failed_requests == []
    assert all(url.startswith(("file:", "data:")) for url in result.requested_urls), result.requested_urls
    images = result.values["images"]
    assert len(images) == counts["plots"] + counts["frames"]
    assert [alt for alt, *_ in images if alt.startswith("plot ")] == ["plot ablation_steps.png", "plot training_loss.png"]
    broken = [alt for alt, complete, width, height in images if not (complete and width > 0 and height > 0)]
    assert broken == []
    assert all(width == WIDTH for alt, _, width, _ in images if not alt.startswith("plot "))
    assert {name: rows for name, rows, _ in result.values["tables"]} == {"ablation_steps": 3, "per_joint": 2}
    assert all(height > 20 for *_, height in result.values["tables"])
    assert all(run_id in result.values["text"] for run_id in RUN_IDS)
    screenshot = cv2.imdecode(np.frombuffer(shot.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert screenshot is not None and screenshot.shape[0] > 600 and screenshot.std() > 10
