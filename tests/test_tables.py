"""The tables stage on a fake results tree (tests/fake_results.py): the tables in three formats, the
paper's rows, cells read through diffpose.sweep.cells, means and std over seeds, provenance, errors,
the plots and their data files."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from diffpose import cli
from diffpose.config import validate_params
from diffpose.errors import ConfigError, DataError
from diffpose.io import read_json
from diffpose.report import plots as plots_module
from diffpose.report import tables
from diffpose.stages import tables as stage
from diffpose.sweep import cells
from tests import fake_results as fake
from tests.pipeline_copy import REPO

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T1 = {"preset": "demo_diffpose", "num_frames": 1}  # a T=1 DiffPose: a row like any model, not the baseline


@pytest.fixture(autouse=True)
def _no_tracking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFPOSE_TRACKING", "off")


@pytest.fixture(scope="module")
def one_seed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's cells (diffpose + baseline, one seed); tables only (the command test draws plots)."""
    root = tmp_path_factory.mktemp("one_seed")
    fake.make_results(root)
    tables.write_tables(fake.PARAMS, root / "results" / "tables", root)
    return root


TWO_SEEDS = fake.params(train={"seeds": [0, 1]}, models={**fake.PARAMS["models"], "diffpose_t1": T1})


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seeds 0 and 1 and a third model (a T=1 DiffPose); tables only."""
    root = tmp_path_factory.mktemp("two_seeds")
    fake.make_results(root, TWO_SEEDS)
    tables.write_tables(TWO_SEEDS, root / "results" / "tables", root)
    return root


def _table(root: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(root / "results" / "tables" / f"{name}.csv", keep_default_na=False, na_values=[""],
                       dtype={"seeds": str})


def _row(frame: pd.DataFrame, **where) -> pd.Series:
    mask = pd.Series(True, index=frame.index)
    for key, value in where.items():
        mask &= frame[key] == value
    assert mask.sum() == 1, f"{where}: {mask.sum()} rows"
    return frame[mask].iloc[0]


# -- files ----------------------------------------------------------------------------------------

def test_every_table_is_written_as_csv_markdown_and_latex(one_seed: Path) -> None:
    folder = one_seed / "results" / "tables"
    for name in tables.TABLES:
        csv, md, tex = (folder / f"{name}.{ext}" for ext in ("csv", "md", "tex"))
        frame = pd.read_csv(csv)
        assert len(frame) > 0, name
        lines = md.read_text().splitlines()
        header = next(line for line in lines if line.startswith("| "))
        assert header.count("|") == len(frame.columns) - sum(c.endswith("_std") for c in frame.columns) + 1
        assert sum(line.startswith("| ") for line in lines) == len(frame) + 2  # header, rule, rows
        latex = tex.read_text()
        assert "\\begin{tabular}" in latex and "\\toprule" in latex and f"\\label{{tab:{name}}}" in latex
        assert "evaluate\\_run\\_id" in latex  # special characters escaped
    summary = read_json(folder / "summary.json")
    assert set(summary["models"]) == {"diffpose", "baseline"} and summary["baseline"] == "baseline"
    assert summary["models"]["diffpose"]["Total"]["gt_all"]["mean"] == pytest.approx(40 + 1 + 0.5)
    assert summary["models"]["diffpose"]["Total"]["detected_all"]["mean"] == pytest.approx(40 + 1 + 0.5 - 5)
    assert summary["models"]["diffpose"]["minus_baseline"]["gt_degraded"] == pytest.approx(10.0)
    assert summary["detector"]["box_ap50"] == pytest.approx(0.867)
    assert summary["models"]["baseline"]["training"]["clips_per_second"] == pytest.approx(100.0)
    assert summary["dataset"] == "synthetic (demo)"


def test_the_paper_rows_are_quoted_and_marked_with_their_dataset(one_seed: Path) -> None:
    frame = _table(one_seed, "per_joint")
    paper = frame[frame["source"] == tables.PAPER_SOURCE]
    assert "Feng et al., ICCV 2023" in tables.PAPER_SOURCE and "quoted from the paper" in tables.PAPER_SOURCE
    assert list(paper["dataset"]) == ["PoseTrack2017 val", "PoseTrack2018 val", "PoseTrack21 val"]
    assert list(_row(paper, dataset="PoseTrack2018 val")[list(tables.COLUMNS)]) == [
        85.0, 87.7, 84.3, 81.5, 81.4, 82.9, 77.6, 83.0]
    assert paper["evaluate_run_id"].isna().all() and paper["n_seeds"].isna().all()
    own = frame[frame["source"] == tables.THIS_RUN]
    assert set(own["dataset"]) == {"synthetic (demo)"}
    assert len(own) == 2 * 2 * 2  # models x boxes x frames
    assert _row(own, model="baseline", boxes="detected", frames="degraded")["Wri"] == pytest.approx(
        30 + 1 + 0.5 - 5 - 3 + 3)  # Wri is Total + 3 in the fake files
    text = (one_seed / "results" / "tables" / "per_joint.md").read_text()
    assert text.count(tables.PAPER_SOURCE) == 3 and "synthetic (demo)" in text


def test_the_dataset_column_follows_params_dataset() -> None:
    assert tables.dataset_name(fake.PARAMS) == "synthetic (demo)"
    posetrack = fake.params(dataset={"name": "posetrack18", "train": "t", "val": "v", "images": "i"})
    assert tables.dataset_name(posetrack) == "PoseTrack2018 val"  # as the paper's row on the same data
    assert tables.synth_preset(posetrack) is None
    assert tables.dataset_name(fake.params(dataset={"name": "synthetic"})) == "synthetic (demo)"


def test_every_table_names_the_evaluation_protocol(tmp_path: Path) -> None:
    params = fake.params(evaluate={"metric": "both", "protocol": "posetrack21"})
    fake.make_results(tmp_path, params)
    built = tables.build_tables(tables.aggregate(tables.read_cells(params, tmp_path)), params)
    for name, table in built.items():
        own = table[table["source"] == tables.THIS_RUN] if name == "per_joint" else table
        assert set(own["protocol"]) == {"posetrack21"}, name
    paper = built["per_joint"][built["per_joint"]["source"] == tables.PAPER_SOURCE]
    assert set(paper["protocol"]) == {"poseval"}


def test_ablation_tables_compare_what_they_say(one_seed: Path) -> None:
    steps = _table(one_seed, "steps")
    assert sorted(set(steps["steps"])) == [1, 2, 4] and sorted(set(steps["ensemble"])) == [1, 4]
    assert set(steps["model"]) == {"diffpose"} and set(steps["frames"]) == {"all", "degraded"}
    assert len(steps) == 3 * 2 * 2
    assert _row(steps, steps=4, ensemble=4, frames="degraded")["Total"] == pytest.approx(40 + 4 + 2 - 2 - 3)
    ensemble = _table(one_seed, "ensemble")
    assert list(ensemble.columns[:7]) == ["dataset", "protocol", "model", "frames", "flip_test", "steps", "ensemble"]
    assert set(ensemble["protocol"]) == {"poseval"} and set(ensemble["dataset"]) == {"synthetic (demo)"}
    assert list(ensemble["ensemble"][:2]) == [1, 4]  # K varies fastest
    flip = _table(one_seed, "flip")
    on = _row(flip, model="diffpose", frames="all", flip_test=True)
    off = _row(flip, model="diffpose", frames="all", flip_test=False)
    assert on["Total_delta"] == pytest.approx(2.0) and on["vs"] == "flip test off"
    assert math.isnan(off["Total_delta"])
    assert off["steps"] == 1 and off["ensemble"] == 1
    assert set(flip["model"]) == {"diffpose"}  # the baseline has no sweep cell
    boxes = _table(one_seed, "boxes")
    detected = _row(boxes, model="baseline", frames="degraded", boxes="detected")
    assert detected["Total_delta"] == pytest.approx(-5.0) and detected["vs"] == "GT boxes"
    baseline = _table(one_seed, "baseline")
    assert _row(baseline, model="diffpose", boxes="gt", frames="all")["Total_delta"] == pytest.approx(10.0)
    assert math.isnan(_row(baseline, model="baseline", boxes="gt", frames="all")["Total_delta"])


# -- cells ----------------------------------------------------------------------------------------

def test_a_removed_sweep_value_drops_its_rows_although_its_folder_stays(tmp_path: Path) -> None:
    listed = fake.make_results(tmp_path)
    fewer = fake.params(sweep={**fake.PARAMS["sweep"], "steps": [1, 2]})
    written, _, _ = tables.write_tables(fewer, tmp_path / "out", tmp_path)
    gone = [c for c in listed if c.family == "sweep" and c.steps == 4]
    assert gone and all((tmp_path / c.metrics).is_file() for c in gone)
    for name in ("steps", "ensemble"):
        frame = pd.read_csv(tmp_path / "out" / f"{name}.csv")
        assert sorted(set(frame["steps"])) == [1, 2], name
        assert len(frame) == 2 * 2 * 2
    assert 4 not in set(written["steps"]["steps"])


def test_an_infer_record_of_another_setting_is_refused(tmp_path: Path) -> None:
    fake.make_results(tmp_path)
    cell = next(c for c in cells(fake.PARAMS) if c.family == "sweep")
    record = read_json(tmp_path / cell.record)
    (tmp_path / cell.record).write_text(json.dumps({**record, "steps": 8}))
    with pytest.raises(DataError, match=f"steps is 8, the cell {cell.stage} has 1"):
        tables.read_cells(fake.PARAMS, tmp_path)


# -- seeds ----------------------------------------------------------------------------------------

def test_two_seeds_give_mean_std_and_their_count(two_seeds: Path) -> None:
    frame = _table(two_seeds, "per_joint")
    row = _row(frame, source=tables.THIS_RUN, model="diffpose", boxes="gt", frames="all")
    # seed 0: 40 + 1 step + 0.5 (K=1) = 41.5, seed 1: 43.5 -> mean 42.5, sample std sqrt(2)
    assert row["Total"] == pytest.approx(42.5) and row["Total_std"] == pytest.approx(math.sqrt(2))
    assert row["Head"] == pytest.approx(42.5) and row["Ankl_std"] == pytest.approx(math.sqrt(2))
    assert row["n_seeds"] == 2 and row["seeds"] == "0;1"
    stage0, stage1 = "infer@diffpose-0", "infer@diffpose-1"
    assert row["evaluate_run_id"] == ";".join(fake.run_id("evaluate", s, "all") for s in (stage0, stage1))
    assert row["infer_run_id"] == f"{fake.run_id('infer', stage0)};{fake.run_id('infer', stage1)}"
    assert row["git_commit"] == fake.COMMIT  # the same commit twice is named once
    steps = _table(two_seeds, "steps")
    assert (steps["n_seeds"] == 2).all() and steps["Total_std"].to_numpy() == pytest.approx(math.sqrt(2))
    md = (two_seeds / "results" / "tables" / "per_joint.md").read_text()
    assert "| 42.5 ± 1.4 |" in md
    summary = read_json(two_seeds / "results" / "tables" / "summary.json")
    training = summary["models"]["diffpose"]["training"]
    assert training["clips_per_second"] == pytest.approx(110.0)
    assert training["clips_per_second_std"] == pytest.approx(math.sqrt(200))
    assert training["seconds_total"] == pytest.approx(2 * 66.65)
    assert summary["models"]["diffpose"]["Total"]["gt_all"]["std"] == pytest.approx(math.sqrt(2))


def test_one_seed_has_no_std(one_seed: Path) -> None:
    frame = _table(one_seed, "per_joint")
    own = frame[frame["source"] == tables.THIS_RUN]
    assert own["Total_std"].isna().all() and (own["n_seeds"] == 1).all() and (own["seeds"] == "0").all()
    assert "±" not in (one_seed / "results" / "tables" / "per_joint.md").read_text()


def test_every_row_of_this_run_names_its_runs_commit_and_data(one_seed: Path) -> None:
    for name in tables.TABLES:
        frame = _table(one_seed, name)
        if name == "per_joint":
            frame = frame[frame["source"] == tables.THIS_RUN]
        assert len(frame) > 0
        assert frame["evaluate_run_id"].str.fullmatch(r"[0-9a-f]{32}").all(), name
        assert frame["infer_run_id"].str.fullmatch(r"[0-9a-f]{32}").all(), name
        assert (frame["git_commit"] == fake.COMMIT).all(), name
        assert (frame["data_version"] == fake.DATA_VERSION).all(), name
    row = _row(_table(one_seed, "steps"), steps=2, ensemble=4, frames="degraded")
    assert row["evaluate_run_id"] == fake.run_id("evaluate", "sweep@diffpose-0-2-4-False", "degraded")
    assert row["infer_run_id"] == fake.run_id("infer", "sweep@diffpose-0-2-4-False")


# -- models ---------------------------------------------------------------------------------------

def test_the_baseline_is_the_single_frame_model_and_a_t1_diffpose_is_a_row(two_seeds: Path) -> None:
    demo = fake.PARAMS["models"]
    assert tables.baseline_model(demo) == "baseline"
    assert tables.baseline_model({"t1": T1, **demo}) == "baseline"  # arch baseline before num_frames 1
    assert tables.baseline_model({"diffpose": demo["diffpose"], "t1": T1}) == "t1"
    concat = {"preset": "demo_diffpose", "lmsfi": False}
    assert tables.baseline_model({"diffpose": demo["diffpose"], "concat": concat}) is None
    assert tables.model_label({"preset": "demo_diffpose", "lmsfi": False}) == "DiffPose, plain concatenation"
    baseline = _table(two_seeds, "baseline")
    row = _row(baseline, model="diffpose_t1", boxes="gt", frames="all")
    assert row["Total_delta"] == pytest.approx(5.0) and row["vs"] == "baseline"


# -- errors ---------------------------------------------------------------------------------------

def _params_file(folder: Path, params: dict, monkeypatch: pytest.MonkeyPatch) -> Path:
    """params.yaml of the repository with the test's models, seeds, main setting and sweep. Until the
    schema knows train.seeds and sweep, the stage's loader is relaxed to plain YAML."""
    full = yaml.safe_load((REPO / "params.yaml").read_text())
    full["models"] = copy.deepcopy(params["models"])
    full["train"] = {k: v for k, v in full["train"].items() if k != "seed"}
    full["train"]["seeds"] = params["train"]["seeds"]
    full["infer"].update(params["infer"])
    full["sweep"] = copy.deepcopy(params["sweep"])
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(full))
    try:
        validate_params(full)
    except ConfigError:
        monkeypatch.setattr(stage, "load_params", lambda p: yaml.safe_load(Path(p).read_text()))
    return path


def test_a_missing_metrics_file_is_one_line_naming_it_and_its_stage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    listed = fake.make_results(tmp_path)
    cell = next(c for c in listed if c.family == "sweep" and c.steps == 2 and c.ensemble == 4)
    (tmp_path / cell.metrics_degraded).unlink()
    params = _params_file(tmp_path, fake.PARAMS, monkeypatch)
    monkeypatch.chdir(tmp_path)
    code = cli.main(["tables", "--params", str(params), "--out", "results/tables", "--plots", "results/plots",
                     "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1
    assert str(cell.metrics_degraded) in err[0] and "dvc repro sweep@diffpose-0-2-4-False" in err[0]
    assert not (tmp_path / "results" / "tables" / "summary.json").exists()


def test_a_missing_training_record_names_the_train_stage(tmp_path: Path) -> None:
    fake.make_results(tmp_path)
    (tmp_path / "models" / "baseline" / "seed0" / "metrics.json").unlink()
    message = r"models/baseline/seed0/metrics.json not found: run `dvc repro train@baseline-0`"
    with pytest.raises(DataError, match=message):
        tables.write_tables(fake.PARAMS, tmp_path / "out", tmp_path)


# -- the command and the plots ----------------------------------------------------------------------

def test_the_command_writes_tables_plots_and_plot_data(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    fake.make_results(tmp_path)
    params = _params_file(tmp_path, fake.PARAMS, monkeypatch)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["tables", "--params", str(params), "--out", "results/tables", "--plots", "results/plots",
                     "--no-progress"]) == 0
    assert "diffpose: PoseTrack mAP gt_all 41.5" in capsys.readouterr().out
    plots = tmp_path / "results" / "plots"
    for name in ("steps", "ensemble", "per_joint", "history"):
        png = (plots / f"{name}.png").read_bytes()
        assert png.startswith(PNG_MAGIC) and len(png) > 1000, name
    assert all((tmp_path / "results" / "tables" / f"{n}.csv").is_file() for n in tables.TABLES)
    expected = {"steps": [c.format(x="steps", other="ensemble") for c in plots_module.SWEEP_COLUMNS],
                "ensemble": [c.format(x="ensemble", other="steps") for c in plots_module.SWEEP_COLUMNS],
                "per_joint": plots_module.PER_JOINT_COLUMNS, "history": plots_module.HISTORY_COLUMNS}
    for name, columns in expected.items():
        frame = pd.read_csv(plots / f"{name}.csv")
        assert list(frame.columns) == columns, name
        assert f"``{name}.csv``: {', '.join(columns)}" in " ".join(plots_module.__doc__.split()), name
        assert len(frame) > 0, name
    per_joint = pd.read_csv(plots / "per_joint.csv")
    assert len(per_joint) == 2 * 2 * 2 * len(tables.COLUMNS)
    history = pd.read_csv(plots / "history.csv")
    assert list(history[history["series"] == "baseline seed0"]["loss"]) == pytest.approx([0.1, 0.05, 0.1 / 3])


def test_an_empty_sweep_and_no_training_history_still_write_every_data_file(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    params = fake.params(sweep={**fake.PARAMS["sweep"], "models": []})
    fake.make_results(tmp_path, params, history=False)
    caplog.set_level("INFO")
    written, _, _ = tables.write_tables(params, tmp_path / "tables", tmp_path)
    assert written["steps"].empty and written["flip"].empty and len(written["baseline"]) == 2 * 2 * 2
    paths = plots_module.write_plots(written, params, tmp_path / "plots", tmp_path)
    assert (tmp_path / "plots" / "steps.png").read_bytes().startswith(PNG_MAGIC)
    assert (tmp_path / "plots" / "per_joint.png") in paths
    assert not (tmp_path / "plots" / "history.png").exists()
    assert "history.png not drawn" in caplog.text
    assert list(pd.read_csv(tmp_path / "plots" / "history.csv").columns) == plots_module.HISTORY_COLUMNS
    assert list(pd.read_csv(tmp_path / "plots" / "steps.csv").columns)[:5] == [
        "model", "frames", "flip_test", "ensemble", "steps"]
