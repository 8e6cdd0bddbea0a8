"""PoseTrack mAP: exactness against the official poseval outputs, ignore regions, CLI and errors."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from diffpose.cli import main as cli_main
from diffpose.data import keypoints as kp
from diffpose.evaluation import posetrack_map as pm
from diffpose.stages import evaluate as stage

CASES = ("case_a_gt_exact", "case_b_gauss5pct_seed0", "case_c_missing_fp_seed1")
GT_FORMATS = ("posetrack18_format", "posetrack17_format")
OFFICIAL_NAME = {"neck": "head_bottom"}  # poseval calls PoseTrack's head_bottom "neck"


@pytest.fixture(autouse=True)
def _no_tracking(monkeypatch):
    monkeypatch.setenv("DIFFPOSE_TRACKING", "off")


@pytest.fixture(scope="module")
def expected(posetrack18_dir):
    return json.loads((posetrack18_dir / "poseval_cases" / "expected_summary.json").read_text())["cases"]


def _official_sequence(posetrack18_dir: Path, case: str, seq: str) -> dict:
    """poseval's per-sequence output (``ap``: 15 joints, then Total; may hold NaN)."""
    return json.loads((posetrack18_dir / "poseval_cases" / case / "official_out" / f"{seq}_AP_metrics.json").read_text())


def _official(d: dict) -> dict:
    return {OFFICIAL_NAME.get(k, k): v for k, v in d.items() if k != "total"}


@pytest.mark.parametrize("gt_format", GT_FORMATS)
@pytest.mark.parametrize("case", CASES)
def test_matches_official_poseval(posetrack18_dir, expected, case, gt_format):
    pairs = pm.load_pairs(posetrack18_dir / "poseval_gt" / gt_format, posetrack18_dir / "poseval_cases" / case / "pred")
    result = pm.evaluate_pairs(pairs)
    metrics = result.metrics()
    want = expected[case]
    for col, value in want["group_ap_full_precision"].items():
        assert metrics[col] == pytest.approx(value, abs=1e-6), col
    per_joint = _official(want["per_joint_ap"])
    assert set(metrics["per_joint"]) == set(kp.POSETRACK15_NAMES) == set(per_joint)
    for name, value in per_joint.items():
        assert metrics["per_joint"][name] == pytest.approx(value, abs=1e-6), name
    for attr, key in (("recall", "per_joint_recall_at_last"), ("precision", "per_joint_precision_at_last")):
        got = dict(zip(kp.POSETRACK15_NAMES, getattr(result, attr)))
        for name, value in _official(want[key]).items():
            assert got[name] == pytest.approx(value, abs=1e-6), (attr, name)


def test_case_c_is_informative(expected):
    # guards the exactness test above against a fixture where everything is 100
    assert expected["case_c_missing_fp_seed1"]["group_ap_full_precision"]["Total"] == pytest.approx(62.102806, abs=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_per_sequence_matches_official(posetrack18_dir, case):
    pairs = pm.load_pairs(posetrack18_dir / "poseval_gt" / "posetrack18_format", posetrack18_dir / "poseval_cases" / case / "pred")
    result = pm.evaluate_pairs(pairs, per_sequence=True)
    assert sorted(result.per_sequence) == sorted(p.name for p in pairs)
    for name, seq in result.per_sequence.items():
        official = _official_sequence(posetrack18_dir, case, name)  # may hold NaN (a joint without GT here)
        np.testing.assert_allclose(seq.ap, official["ap"][:15], atol=1e-6, equal_nan=True)
        total = seq.table()["Total"]
        assert total == pytest.approx(official["ap"][15], abs=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_assignment_matches_official_per_frame(posetrack18_dir, case):
    """The (score, label) lists per frame and joint, and nGT, are poseval's."""
    official = json.loads((posetrack18_dir / "poseval_cases" / case / "official_assignment.json").read_text())["frames"]
    pairs = pm.load_pairs(posetrack18_dir / "poseval_gt" / "posetrack18_format", posetrack18_dir / "poseval_cases" / case / "pred")
    data = pm.apply_ignore_regions(pm.prepare(pairs))
    det = pm.assign(data.gt, data.pred, len(data.frame_seq))
    assert len(official) == len(data.frame_seq)
    for f, frame in enumerate(official):
        assert data.names[data.frame_seq[f]] == frame["seq_name"]
        for name, lists in frame["joints"].items():
            j = kp.POSETRACK15_NAMES.index(OFFICIAL_NAME.get(name, name))
            sel = (det.frame == f) & (det.joint == j)
            assert det.n_gt[f, j] == lists["nGT"], (f, name)
            assert det.score[sel].tolist() == pytest.approx(lists["scores"], abs=0), (f, name)
            assert det.label[sel].astype(int).tolist() == lists["labels"], (f, name)


def test_ignore_regions_remove_the_official_points(posetrack18_dir):
    """GT points left after the ignore-region step equal poseval's internal state (181 joints)."""
    internal = json.loads((posetrack18_dir / "poseval_gt" / "internal_gt_frames_after_load.json").read_text())["frames"]
    pairs = pm.load_pairs(posetrack18_dir / "poseval_gt" / "posetrack18_format", posetrack18_dir / "poseval_gt" / "posetrack18_format")
    before = pm.prepare(pairs)
    after = pm.apply_ignore_regions(before)
    assert before.gt.has.sum() == 182 and after.gt.has.sum() == 181
    for f, frame in enumerate(internal):
        people = np.flatnonzero(after.gt.frame == f)
        assert len(people) == len(frame["annorect"])
        for g, rect in zip(people, frame["annorect"]):
            ids = sorted(p["id"][0] for p in rect["annopoints"][0]["point"])
            assert ids == np.flatnonzero(after.gt.has[g]).tolist()
            for p in rect["annopoints"][0]["point"]:
                assert after.gt.xy[g, p["id"][0]].tolist() == [p["x"][0], p["y"][0]]


# ---- points in polygons: strictly-inside semantics ----

def _polys(*rings):
    xs = [np.array([v[0] for v in r], float) for r in rings]
    ys = [np.array([v[1] for v in r], float) for r in rings]
    counts = np.array([len(r) for r in rings])
    return pm.Polygons(np.zeros(len(rings), np.int64), np.cumsum(counts) - counts, counts,
                       np.concatenate(xs), np.concatenate(ys))


def _inside(points, *rings):
    pts = np.array(points, float)
    return pm.points_in_polygons(pts[:, 0], pts[:, 1], np.zeros(len(pts), np.int64), _polys(*rings), 1).tolist()


def test_points_on_edges_and_vertices_are_not_inside():
    square = [(0, 0), (10, 0), (10, 10), (0, 10)]
    pts = [(5, 5), (0, 5), (10, 5), (5, 0), (5, 10), (0, 0), (10, 10), (11, 5), (-1, 5), (5, 10.000001), (9.999999, 9.999999)]
    assert _inside(pts, square) == [True] + [False] * 6 + [False, False, False, True]


def test_even_odd_rule_concave_and_degenerate():
    bowtie = [(0, 0), (10, 10), (10, 0), (0, 10)]  # self-intersecting: two triangles meeting at (5, 5)
    assert _inside([(8, 5), (2, 5), (5, 2), (5, 5)], bowtie) == [True, True, False, False]
    u_shape = [(0, 0), (9, 0), (9, 9), (6, 9), (6, 3), (3, 3), (3, 9), (0, 9)]
    assert _inside([(1, 8), (4.5, 8), (7.5, 8), (4.5, 1), (6, 5)], u_shape) == [True, False, True, True, False]
    assert _inside([(1, 1), (0, 0)], [(0, 0), (2, 2)]) == [False, False]  # two vertices: no interior
    # a point strictly inside one polygon and on the edge of another is ignored
    assert _inside([(5, 5)], [(0, 5), (10, 5), (10, 8)], [(0, 0), (10, 0), (10, 10), (0, 10)]) == [True]


def test_polygons_only_apply_to_their_own_frame():
    square = _polys([(0, 0), (10, 0), (10, 10), (0, 10)])
    square.frame[:] = 1
    got = pm.points_in_polygons(np.array([5.0, 5.0]), np.array([5.0, 5.0]), np.array([0, 1]), square, 2)
    assert got.tolist() == [False, True]


def test_points_in_polygons_agrees_with_opencv_on_integer_grids():
    """cv2.pointPolygonTest (exact on integer coordinates) as an independent oracle, many boundary hits."""
    import cv2  # a hard dependency: a broken OpenCV must fail this test, not skip it

    rng = np.random.default_rng(0)
    for _ in range(40):
        n = int(rng.integers(3, 9))
        ring = rng.integers(0, 12, size=(n, 2))
        xs, ys = np.meshgrid(np.arange(-1, 13), np.arange(-1, 13))
        pts = np.stack([xs.ravel(), ys.ravel()], 1)
        got = _inside(pts.tolist(), [tuple(v) for v in ring.tolist()])
        contour = ring.reshape(-1, 1, 2).astype(np.int32)
        want = [cv2.pointPolygonTest(contour, (float(x), float(y)), False) > 0 for x, y in pts]
        assert got == want, ring.tolist()


# ---- tie rule and AP details ----

def test_voc_ap_basics_and_documented_tie_rule():
    assert pm.voc_ap(np.array([]), np.array([], bool), 3) == (0.0, 0.0, 0.0)
    ap, pre, rec = pm.voc_ap(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1], bool), 2)
    assert ap == pytest.approx(100 * (0.5 * 1 + 0.5 * 2 / 3)) and pre == pytest.approx(200 / 3) and rec == 100
    assert math.isnan(pm.voc_ap(np.array([0.5]), np.array([0], bool), 0)[0])
    # equal scores: the earlier detection (concatenation order) ranks first
    tp_first = pm.voc_ap(np.array([0.5, 0.5]), np.array([1, 0], bool), 1)[0]
    fp_first = pm.voc_ap(np.array([0.5, 0.5]), np.array([0, 1], bool), 1)[0]
    assert (tp_first, fp_first) == (100.0, 50.0)


# ---- CLI and bad input ----

def _copy_case(posetrack18_dir: Path, tmp_path: Path, case: str = "case_c_missing_fp_seed1") -> tuple[Path, Path]:
    gt = tmp_path / "gt"
    pred = tmp_path / "pred"
    shutil.copytree(posetrack18_dir / "poseval_gt" / "posetrack18_format", gt)
    shutil.copytree(posetrack18_dir / "poseval_cases" / case / "pred", pred)
    return gt, pred


def test_cli_writes_metrics_json_and_per_sequence(posetrack18_dir, tmp_path, expected, capsys):
    gt, pred = _copy_case(posetrack18_dir, tmp_path)
    out = tmp_path / "metrics.json"
    code = cli_main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--out", str(out),
                     "--per-sequence", str(tmp_path / "seq"), "--no-track"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Head" in printed and "62.1" in printed
    metrics = json.loads(out.read_text())
    assert list(metrics) == ["Head", "Shou", "Elb", "Wri", "Hip", "Knee", "Ankl", "Total", "per_joint"]
    assert list(metrics["per_joint"]) == list(kp.POSETRACK15_NAMES)
    assert metrics["Total"] == pytest.approx(expected["case_c_missing_fp_seed1"]["group_ap_full_precision"]["Total"], abs=1e-9)
    seq = json.loads((tmp_path / "seq" / "003418_mpii_test.json").read_text())
    assert seq["per_joint"]["right_knee"] is None  # NaN (no GT knee, but predictions) -> null
    assert seq["per_joint"]["right_ankle"] == 0.0  # no GT and no predictions: 0, as poseval
    official = _official_sequence(posetrack18_dir, "case_c_missing_fp_seed1", "003418_mpii_test")
    assert seq["Total"] == pytest.approx(official["ap"][15], abs=1e-9)  # poseval's own per-sequence Total


def test_cli_coco_metric_is_separate(posetrack18_dir, tmp_path):
    gt, _ = _copy_case(posetrack18_dir, tmp_path)
    out = tmp_path / "m.json"
    assert cli_main(["evaluate", "--gt", str(gt), "--pred", str(gt), "--metric", "both", "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["Total"] == 100.0
    assert metrics["coco"]["coco_AP"] == pytest.approx(100.0) and "AP" not in metrics
    assert cli_main(["evaluate", "--gt", str(gt), "--pred", str(gt), "--metric", "coco", "--out", str(out), "--no-track"]) == 0
    assert list(json.loads(out.read_text())) == ["coco"]


def test_cli_logs_to_mlflow(posetrack18_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIFFPOSE_TRACKING", "on")
    gt, pred = _copy_case(posetrack18_dir, tmp_path)
    assert cli_main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--out", str(tmp_path / "m.json")]) == 0
    assert "MLflow run" in capsys.readouterr().err


def _mutate(path: Path, fn) -> None:
    obj = json.loads(path.read_text())
    fn(obj)
    path.write_text(json.dumps(obj))


BAD_INPUTS = {
    "missing prediction file": (lambda gt, pred: (pred / "009473_mpii_test.json").unlink(),
                                ["009473_mpii_test.json", "prediction file missing"]),
    "frame count mismatch": (lambda gt, pred: _mutate(pred / "012834_mpii_test.json", lambda o: o["images"].append({"id": 1, "file_name": "x/000001.jpg"})),
                             ["012834_mpii_test.json", "2 frames", "has 1", "frame #1 (x/000001.jpg)"]),
    "fewer prediction frames": (lambda gt, pred: _mutate(pred / "012834_mpii_test.json", lambda o: o.update(images=[], annotations=[])),
                                ["012834_mpii_test.json", "0 frames", "frame #0 (images/val/012834_mpii_test/000000.jpg)"]),
    "malformed JSON": (lambda gt, pred: (pred / "003418_mpii_test.json").write_text('{"images": [}'),
                       ["003418_mpii_test.json", "malformed JSON at line 1"]),
    "NaN coordinate": (lambda gt, pred: _mutate(pred / "003418_mpii_test.json", lambda o: o["annotations"][0]["keypoints"].__setitem__(0, float("nan"))),
        ["003418_mpii_test.json", "annotation #0", "image 10034180000 images/val/003418_mpii_test/000000.jpg", "nose.x", "finite", "nan"]),
    "infinite coordinate": (lambda gt, pred: _mutate(gt / "009473_mpii_test.json", lambda o: o["annotations"][1]["keypoints"].__setitem__(16, 1e999)),
                            ["009473_mpii_test.json", "annotation #1", "000000.jpg", "left_shoulder.y", "inf"]),
    "wrong number of keypoints": (lambda gt, pred: _mutate(pred / "012834_mpii_test.json", lambda o: o["annotations"][5].__setitem__("keypoints", [1.0] * 45)),
                                  ["012834_mpii_test.json", "annotation #5", "000000.jpg", "51 numbers", "got 45"]),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_gives_one_line_error(posetrack18_dir, tmp_path, capsys, name):
    gt, pred = _copy_case(posetrack18_dir, tmp_path)
    breaker, needles = BAD_INPUTS[name]
    breaker(gt, pred)
    code = cli_main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--out", str(tmp_path / "m.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("diffpose evaluate: error: "), err
    assert "Traceback" not in err[0]
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    assert not (tmp_path / "m.json").exists()


# ---- subset filter ----

def test_degraded_subset_evaluates_only_flagged_frames(posetrack18_dir, tmp_path):
    gt, pred = _copy_case(posetrack18_dir, tmp_path)
    _mutate(gt / "009473_mpii_test.json", lambda o: o["annotations"][0].update(degraded=True))
    metrics = stage.run(gt, pred, subset="degraded")
    only = tmp_path / "only"
    only.mkdir()
    for d in ("g", "p"):
        (only / d).mkdir()
    shutil.copy(gt / "009473_mpii_test.json", only / "g")
    shutil.copy(pred / "009473_mpii_test.json", only / "p")
    alone = stage.run(only / "g", only / "p")
    assert metrics == alone
    official = _official_sequence(posetrack18_dir, "case_c_missing_fp_seed1", "009473_mpii_test")
    assert metrics["Total"] == pytest.approx(official["ap"][15], abs=1e-9)  # poseval's per-sequence Total
    assert stage.run(gt, pred)["Total"] != metrics["Total"]


def test_posetrack17_predictions_give_the_same_numbers(posetrack18_dir, tmp_path, expected):
    """Predictions converted to PoseTrack17 (per-point scores) evaluate exactly like the PT18 files."""
    case = "case_c_missing_fp_seed1"
    pred17 = tmp_path / "pred17"
    assert cli_main(["convert", "--to", "17", "--kind", "pred", str(posetrack18_dir / "poseval_cases" / case / "pred"), str(pred17)]) == 0
    assert "annolist" in json.loads((pred17 / "012834_mpii_test.json").read_text())
    metrics = stage.run(posetrack18_dir / "poseval_gt" / "posetrack17_format", pred17)
    for col, value in expected[case]["group_ap_full_precision"].items():
        assert metrics[col] == pytest.approx(value, abs=1e-6), col


def test_missing_joint_scores_rank_last(posetrack18_dir, tmp_path):
    """Without 'scores' every joint scores -9999 (poseval): still evaluated, AP from file order."""
    gt, pred = _copy_case(posetrack18_dir, tmp_path, "case_a_gt_exact")
    for f in pred.glob("*.json"):
        _mutate(f, lambda o: [a.pop("scores", None) for a in o["annotations"]])
    assert stage.run(gt, pred)["Total"] == 100.0
    data = pm.prepare(pm.load_pairs(gt, pred))
    assert np.all(data.pred.score == pm.MIN_SCORE)


def test_orientation_is_exact_near_collinear():
    """Float rounding would misjudge these; the exact fallback decides like GEOS's exact predicate."""
    ax, ay, bx, by = np.array([0.1]), np.array([0.1]), np.array([0.7]), np.array([0.7])
    on = pm._orientation(ax, ay, bx, by, np.array([0.3]), np.array([0.3]))
    from fractions import Fraction as Fr
    exact = (Fr(0.7) - Fr(0.1)) * (Fr(0.3) - Fr(0.1)) - (Fr(0.7) - Fr(0.1)) * (Fr(0.3) - Fr(0.1))
    assert on.tolist() == [0] and exact == 0
    tiny = np.nextafter(0.3, 1.0)  # one ulp above the line y = x: strictly left of a->b
    assert pm._orientation(ax, ay, bx, by, np.array([0.3]), np.array([tiny])).tolist() == [1]
    assert pm._orientation(np.array([0.0]), np.array([0.0]), np.array([3.0]), np.array([1.0]),
                           np.array([1.5]), np.array([0.5])).tolist() == [0]
