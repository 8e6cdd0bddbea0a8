"""PoseTrack21 and PoseTrack17 fields in the readers, GT-box inference and the two evaluation
protocols (poseval's rules and the PoseTrack21 kit's), on small hand-built sequence files and on
the real PoseTrack18 fixture converted to the PoseTrack21 layout."""

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
from diffpose.data.clips import load_sequences, person_samples
from diffpose.data.posetrack import has_keypoints, load_sequence, write_sequence
from diffpose.errors import DataError
from diffpose.evaluation import posetrack_map as pm
from diffpose.inference.boxes import gt_samples
from diffpose.inference.writer import write_predictions

LABELLED = np.flatnonzero(kp.LABELLED_IN_POSETRACK18)  # the 15 PoseTrack joints among the 17
SEQ = "000342_mpii_test"
CASES = ("case_a_gt_exact", "case_b_gauss5pct_seed0", "case_c_missing_fp_seed1")
# The PoseTrack21 kit's own pose mAP (eval/posetrack21 of github.com/anDoer/PoseTrack21, commit
# 3e61960e05d84999bce7a06fc3bf411f5ee5f7eb, scripts/run_pose_estimation.py; run in poseval's venv
# with numpy's removed aliases np.int/np.float/np.bool set back to the builtins) on case c's
# predictions against the fixture in the PoseTrack21 layout of _to_posetrack21 (cases a and b: 100).
KIT_CASE_C = {
    "nose": 72.11538461538463, "head_bottom": 69.48051948051948, "head_top": 61.53846153846154,
    "left_shoulder": 78.57142857142857, "right_shoulder": 54.285714285714285, "left_elbow": 77.77777777777779,
    "right_elbow": 76.17382617382617, "left_wrist": 67.5, "right_wrist": 45.45454545454545,
    "left_hip": 63.4065934065934, "right_hip": 50.427350427350426, "left_knee": 35.714285714285715,
    "right_knee": 48.333333333333336, "left_ankle": 70.0, "right_ankle": 61.33333333333333,
}
KIT_CASE_C_TOTAL = 62.14083694083695


@pytest.fixture(autouse=True)
def _no_tracking(monkeypatch):
    monkeypatch.setenv("DIFFPOSE_TRACKING", "off")


def _image_id(frame: int) -> int:
    return 10003420000 + frame


def _frame(frame: int, labelled: bool, **extra) -> dict:
    image_id = _image_id(frame)
    return {"is_labeled": labelled, "has_labeled_person": True, "nframes": 4, "frame_id": image_id,
            "image_id": image_id, "id": image_id, "vid_id": "000342",
            "file_name": f"images/val/{SEQ}/{frame:06d}.jpg", "ignore_regions_x": [], "ignore_regions_y": [], **extra}


def _pose(x0: float, y0: float) -> list[float]:
    """The 15 PoseTrack joints labelled (ears (0, 0, 0)), spread over a 100 x 200 px person."""
    kps = np.zeros((kp.NUM_KEYPOINTS, 3))
    kps[LABELLED, 0] = x0 + np.linspace(0, 100, len(LABELLED))
    kps[LABELLED, 1] = y0 + np.linspace(0, 200, len(LABELLED))
    kps[LABELLED, 2] = 1
    return kps.ravel().tolist()


def _person(frame: int, track: int, person_id: int, x0: float, *, box_only: bool = False) -> dict:
    return {"bbox": [x0 - 10, 90.0, 120.0, 220.0], "bbox_head": [x0, 100.0, 40.0, 40.0], "category_id": 1,
            "image_id": _image_id(frame), "id": _image_id(frame) * 100 + track,
            "keypoints": [0.0] * 51 if box_only else _pose(x0, 100.0), "person_id": person_id, "track_id": track}


def _pt21_sequence() -> dict:
    """Four frames as PoseTrack21 writes them: 0 unlabelled with a box-only person alone; 1 labelled
    with a posed person and a box-only one; 2 unlabelled and empty; 3 labelled with two people."""
    images = [_frame(0, False), _frame(1, True), _frame(2, False, has_labeled_person=False), _frame(3, True)]
    anns = [
        _person(0, 5, 1205, 600.0, box_only=True),
        _person(1, 0, 1200, 100.0),
        _person(1, 5, 1205, 600.0, box_only=True),
        _person(3, 0, 1200, 110.0),
        _person(3, 1, 1201, 400.0),
    ]
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}


def _write(path: Path, obj: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


# ------------------------------------------------------------------------------------------
# readers


def test_posetrack21_fields_are_read_and_kept(tmp_path):
    obj = load_sequence(_write(tmp_path / f"{SEQ}.json", _pt21_sequence()))
    assert [im["id"] for im in obj["images"]] == [_image_id(f) for f in range(4)]
    assert [im["has_labeled_person"] for im in obj["images"]] == [True, True, False, True]
    assert [a["person_id"] for a in obj["annotations"]] == [1205, 1200, 1205, 1200, 1201]
    assert [a["track_id"] for a in obj["annotations"]] == [5, 0, 5, 0, 1]  # track_id wins over person_id
    assert [has_keypoints(a) for a in obj["annotations"]] == [False, True, False, True, True]


def test_box_only_people_need_no_head_box_but_posed_ones_do(tmp_path):
    seq = _pt21_sequence()
    for a in seq["annotations"]:
        if not any(a["keypoints"]):
            del a["bbox_head"]
    obj = load_sequence(_write(tmp_path / f"{SEQ}.json", seq))
    assert sum("bbox_head" not in a for a in obj["annotations"]) == 2
    del seq["annotations"][1]["bbox_head"]
    with pytest.raises(DataError, match=r"annotation #1 .*'bbox_head' \[x, y, w, h\] is required on a labelled person"):
        load_sequence(_write(tmp_path / f"{SEQ}.json", seq))


@pytest.mark.parametrize("spelling", ["image_id", "frame_id"])
def test_frame_id_comes_from_image_id_or_frame_id_unchanged(tmp_path, spelling):
    seq = _pt21_sequence()
    for im in seq["images"]:
        del im["id"]
        if spelling == "frame_id":
            del im["image_id"]
    obj = load_sequence(_write(tmp_path / f"{SEQ}.json", seq))
    assert [im["id"] for im in obj["images"]] == [_image_id(f) for f in range(4)]
    sequences = load_sequences(tmp_path)
    assert sequences[0][0].image_ids == tuple(_image_id(f) for f in range(4))


def test_track_id_falls_back_to_person_id(tmp_path):
    seq = _pt21_sequence()
    for a in seq["annotations"]:
        del a["track_id"]
    obj = load_sequence(_write(tmp_path / f"{SEQ}.json", seq), kind="pred")
    assert [a["track_id"] for a in obj["annotations"]] == [1205, 1200, 1205, 1200, 1201]


@pytest.mark.parametrize("where, value, message", [
    ("image", ("has_labeled_person", "yes"), r"frame #0 .*'has_labeled_person' must be a boolean, got 'yes'"),
    ("image", ("image_id", "10003420000"), r"frame #0 .*'image_id' must be an integer"),
    ("person", ("person_id", 1.5), r"annotation #0 .*'person_id' must be an integer, got 1.5"),
])
def test_bad_posetrack21_fields_are_one_line_errors(tmp_path, where, value, message):
    seq = _pt21_sequence()
    key, bad = value
    (seq["images"][0] if where == "image" else seq["annotations"][0])[key] = bad
    with pytest.raises(DataError, match=message):
        load_sequence(_write(tmp_path / f"{SEQ}.json", seq))


def test_posetrack17_frame_names_give_poseval_image_ids(tmp_path):
    def annolist(folder: str, names: list[str]) -> dict:
        return {"annolist": [{"image": [{"name": f"images/{folder}/{n}"}], "annorect": [], "is_labeled": [0]}
                             for n in names]}

    cases = {
        "bonn": (annolist("bonn_5sec/000342_bonn", ["00000001.jpg", "00000002.jpg"]), [20003420001, 20003420002]),
        "mpii": (annolist("val/000342_mpii_test", ["000000.jpg", "000001.jpg"]), [10003420000, 10003420001]),
        "mpiinew": (annolist("val/000522_mpiinew_test", ["000007.jpg"]), [30005220007]),
        "suffix": (annolist("mpii_5sec/024158_mpii", ["00000012_x.jpg"]), [10241580012]),
        "no numbers": (annolist("misc/clip", ["a.jpg", "b.jpg"]), [0, 1]),
    }
    for name, (seq, ids) in cases.items():
        obj = load_sequence(_write(tmp_path / f"{name}.json", seq))
        assert [im["id"] for im in obj["images"]] == ids, name
        assert [im["frame_id"] for im in obj["images"]] == ids, name


def test_posetrack17_keeps_the_is_labeled_flag_of_box_only_frames(tmp_path):
    obj = load_sequence(_write(tmp_path / f"{SEQ}.json", _pt21_sequence()))
    write_sequence(tmp_path / "17" / f"{SEQ}.json", obj, fmt="17")
    back = load_sequence(tmp_path / "17" / f"{SEQ}.json")
    assert [im["is_labeled"] for im in back["images"]] == [False, True, False, True]
    assert [im["id"] for im in back["images"]] == [im["id"] for im in obj["images"]]
    assert [has_keypoints(a) for a in back["annotations"]] == [False, True, False, True, True]


# ------------------------------------------------------------------------------------------
# inference on GT boxes and the written predictions


def _gt_as_prediction(tmp_path: Path, gt_dir: Path, samples) -> Path:
    """Predictions written by the writer for ``samples``: the GT pose of the person when it has one
    (joint score 0.9), else a pose inside its box (what a model would output for a box-only person)
    scoring 1.0, so that it ranks before the true poses whatever the tie rule."""
    sequences = load_sequences(gt_dir)
    by_key = {(s, a["image_id"], a["track_id"]): a for s, (_, obj) in enumerate(sequences) for a in obj["annotations"]}
    keypoints, scores = [], []
    for sample in samples:
        seq = sequences[sample.seq][0]
        ann = by_key[(sample.seq, seq.image_ids[sample.frame], sample.track_id)]
        pose = np.array(ann["keypoints"] if has_keypoints(ann) else _pose(sample.box[0] + 10, 100.0)).reshape(-1, 3)
        keypoints.append(pose[:, :2])
        scores.append(np.full(kp.NUM_KEYPOINTS, 0.9 if has_keypoints(ann) else 1.0))
    out = tmp_path / "pred"
    write_predictions(out, [s for s, _ in sequences], samples, np.array(keypoints).reshape(-1, kp.NUM_KEYPOINTS, 2),
                      np.array(scores).reshape(-1, kp.NUM_KEYPOINTS))
    return out


def test_gt_samples_skip_box_only_people_and_unlabelled_frames(tmp_path):
    _write(tmp_path / "gt" / f"{SEQ}.json", _pt21_sequence())
    sequences = load_sequences(tmp_path / "gt")
    samples = gt_samples(sequences)
    assert [(s.frame, s.track_id) for s in samples] == [(1, 0), (3, 0), (3, 1)]
    assert len(person_samples(sequences, labelled_only=False)) == 5  # every boxed person, as before


def test_predictions_keep_gt_image_ids_and_unique_track_ids(tmp_path):
    seq = _pt21_sequence()
    seq["annotations"].append(_person(3, 7, 1207, 800.0))  # a third person on frame 3
    _write(tmp_path / "gt" / f"{SEQ}.json", seq)
    pred = load_sequence(_gt_as_prediction(tmp_path, tmp_path / "gt", gt_samples(load_sequences(tmp_path / "gt")))
                         / f"{SEQ}.json", kind="pred")
    assert [im["id"] for im in pred["images"]] == [im["id"] for im in seq["images"]]
    assert {a["image_id"] for a in pred["annotations"]} == {_image_id(1), _image_id(3)}
    for image_id in (_image_id(1), _image_id(3)):
        tracks = [a["track_id"] for a in pred["annotations"] if a["image_id"] == image_id]
        assert len(tracks) == len(set(tracks)) > 0


def test_box_only_probe_scores_100_under_both_protocols(tmp_path):
    """Frame 0 (unlabelled) holds a box-only person alone. A pose written for it is a false positive
    ranked before the true ones under poseval (which evaluates the frame: it has a person annotation)
    and ignored under the kit's rule (frames by is_labeled); gt_samples writes none, so both are 100."""
    gt_dir = tmp_path / "gt"
    seq = _pt21_sequence()
    seq["images"] = seq["images"][:2]  # frames 0 and 1: one FP candidate, one true person
    seq["annotations"] = [a for a in seq["annotations"] if a["image_id"] in {_image_id(0), _image_id(1)}]
    seq["annotations"] = [a for a in seq["annotations"] if has_keypoints(a) or a["image_id"] == _image_id(0)]
    _write(gt_dir / f"{SEQ}.json", seq)
    sequences = load_sequences(gt_dir)

    every_box = person_samples(sequences, labelled_only=False)  # what gt_samples returned before
    old = _gt_as_prediction(tmp_path / "old", gt_dir, every_box)
    assert pm.evaluate_folders(gt_dir, old, protocol="poseval")["Total"] == pytest.approx(50.0)
    assert pm.evaluate_folders(gt_dir, old, protocol="posetrack21")["Total"] == pytest.approx(100.0)

    new = _gt_as_prediction(tmp_path / "new", gt_dir, gt_samples(sequences))
    for protocol in pm.PROTOCOLS:
        assert pm.evaluate_folders(gt_dir, new, protocol=protocol)["Total"] == pytest.approx(100.0), protocol


def test_frames_pair_by_image_id_when_the_order_differs(tmp_path):
    """The loader orders frames by frame_id and the writer writes them so; a GT file listing them in
    another order still evaluates as GT-as-prediction = 100 (frames paired by id)."""
    seq = _pt21_sequence()
    seq["images"] = seq["images"][::-1]
    _write(tmp_path / "gt" / f"{SEQ}.json", seq)
    pred_dir = _gt_as_prediction(tmp_path, tmp_path / "gt", gt_samples(load_sequences(tmp_path / "gt")))
    pred = json.loads((pred_dir / f"{SEQ}.json").read_text())
    assert [im["id"] for im in pred["images"]] == sorted(im["id"] for im in seq["images"])
    for protocol in pm.PROTOCOLS:
        assert pm.evaluate_folders(tmp_path / "gt", pred_dir, protocol=protocol)["Total"] == pytest.approx(100.0)


# ------------------------------------------------------------------------------------------
# the two protocols


def _one_person_case(tmp_path: Path, gt_kps: list[float], pred_kps: list[float]) -> tuple[Path, Path]:
    seq = _pt21_sequence()
    seq["images"], seq["annotations"] = seq["images"][1:2], [seq["annotations"][1]]
    seq["annotations"][0]["keypoints"] = gt_kps
    pred = {"images": [{"id": im["id"], "file_name": im["file_name"]} for im in seq["images"]],
            "annotations": [{"image_id": _image_id(1), "track_id": 0, "keypoints": pred_kps,
                             "scores": [1.0] * kp.NUM_KEYPOINTS}]}
    return _write(tmp_path / "gt" / f"{SEQ}.json", seq).parent, _write(tmp_path / "pred" / f"{SEQ}.json", pred).parent


def test_kit_rule_a_keypoint_needs_x_and_y_above_zero(tmp_path):
    j = kp.KEYPOINT_NAMES.index("left_ankle")
    gt = np.array(_pose(100.0, 100.0)).reshape(-1, 3)
    gt[j] = [0.0, 150.0, 1.0]  # on the left image border: annotated for poseval, absent for the kit
    gt_dir, pred_dir = _one_person_case(tmp_path, gt.ravel().tolist(), gt.ravel().tolist())
    poseval = pm.evaluate_folders(gt_dir, pred_dir, protocol="poseval")
    kit = pm.evaluate_folders(gt_dir, pred_dir, protocol="posetrack21")
    assert poseval["per_joint"]["left_ankle"] == pytest.approx(100.0)
    assert kit["per_joint"]["left_ankle"] == 0.0  # no GT, no prediction: AP 0
    assert kit["Total"] == pytest.approx(14 * 100.0 / 15)


def test_kit_rule_a_joint_without_gt_scores_0_not_nan(tmp_path):
    j = kp.KEYPOINT_NAMES.index("left_ankle")
    gt = np.array(_pose(100.0, 100.0)).reshape(-1, 3)
    pred = gt.copy()
    gt[j] = 0.0  # not annotated; the prediction has it
    gt_dir, pred_dir = _one_person_case(tmp_path, gt.ravel().tolist(), pred.ravel().tolist())
    poseval = pm.evaluate_folders(gt_dir, pred_dir, protocol="poseval")
    kit = pm.evaluate_folders(gt_dir, pred_dir, protocol="posetrack21")
    assert math.isnan(poseval["per_joint"]["left_ankle"]) and poseval["Total"] == pytest.approx(100.0)
    assert kit["per_joint"]["left_ankle"] == 0.0 and kit["Total"] == pytest.approx(14 * 100.0 / 15)


def test_frames_by_is_labeled_under_the_kit_rule(tmp_path):
    """A posed person on a frame flagged unlabelled: poseval evaluates it (missed: recall 1/2), the
    kit does not look at the frame."""
    seq = _pt21_sequence()
    seq["images"] = seq["images"][:2]
    seq["annotations"] = [_person(0, 3, 1203, 300.0), _person(1, 0, 1200, 100.0)]
    gt_dir = _write(tmp_path / "gt" / f"{SEQ}.json", seq).parent
    pred = {"images": [{"id": im["id"], "file_name": im["file_name"]} for im in seq["images"]],
            "annotations": [{"image_id": _image_id(1), "track_id": 0, "keypoints": seq["annotations"][1]["keypoints"],
                             "scores": [1.0] * kp.NUM_KEYPOINTS}]}
    pred_dir = _write(tmp_path / "pred" / f"{SEQ}.json", pred).parent
    assert pm.evaluate_folders(gt_dir, pred_dir, protocol="poseval")["Total"] == pytest.approx(50.0)
    assert pm.evaluate_folders(gt_dir, pred_dir, protocol="posetrack21")["Total"] == pytest.approx(100.0)
    assert pm.evaluated_frames(load_sequence(gt_dir / f"{SEQ}.json"), protocol="posetrack21") == [1]


def test_cli_protocol_is_named_in_the_metrics_json(tmp_path, capsys):
    gt_dir, pred_dir = _one_person_case(tmp_path, _pose(100.0, 100.0), _pose(100.0, 100.0))
    for protocol in (None, "posetrack21"):
        out = tmp_path / f"{protocol}.json"
        args = ["evaluate", "--gt", str(gt_dir), "--pred", str(pred_dir), "--out", str(out), "--no-track",
                "--per-sequence", str(tmp_path / f"seq-{protocol}")]
        assert cli_main(args + (["--protocol", protocol] if protocol else [])) == 0
        metrics = json.loads(out.read_text())
        per_seq = json.loads((tmp_path / f"seq-{protocol}" / f"{SEQ}.json").read_text())
        assert metrics["Total"] == pytest.approx(100.0)
        # named when not the default: a file without "protocol" is poseval's, as before the option
        assert metrics.get("protocol") == protocol and per_seq.get("protocol") == protocol
    with pytest.raises(SystemExit):
        cli_main(["evaluate", "--gt", str(gt_dir), "--pred", str(pred_dir), "--protocol", "coco"])
    capsys.readouterr()


# ------------------------------------------------------------------------------------------
# the real PoseTrack18 fixture in the PoseTrack21 layout


def _to_posetrack21(gt: dict, box_only_frame: bool) -> dict:
    """The same people as PoseTrack21 files them: ``image_id`` and ``has_labeled_person`` on frames,
    ``person_id`` on people, a box-only person beside the first labelled one and, with
    ``box_only_frame``, an unlabelled frame appended with a box-only person alone."""
    pt21 = copy.deepcopy(gt)
    for im in pt21["images"]:
        im["image_id"] = im["id"]
        im["has_labeled_person"] = any(a["image_id"] == im["id"] for a in gt["annotations"])
    for a in pt21["annotations"]:
        a["person_id"] = 5000 + a["track_id"]
    first = pt21["annotations"][0]
    box_only = {**copy.deepcopy(first), "keypoints": [0] * 51, "num_keypoints": 0, "track_id": 90, "person_id": 5090,
                "id": first["id"] + 90}
    pt21["annotations"].append(box_only)
    if box_only_frame:
        last = pt21["images"][-1]
        frame_id = last["id"] + 1
        name = last["file_name"].rsplit("/", 1)[0] + f"/{frame_id % 10000:06d}.jpg"
        pt21["images"].append({**copy.deepcopy(last), "id": frame_id, "image_id": frame_id, "frame_id": frame_id,
                               "file_name": name, "is_labeled": False, "has_labeled_person": True,
                               "ignore_regions_x": [], "ignore_regions_y": []})
        pt21["annotations"].append({**copy.deepcopy(box_only), "image_id": frame_id, "id": frame_id * 100 + 90})
    return pt21


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-9)


@pytest.mark.parametrize("case", CASES)
def test_posetrack21_layout_gives_the_posetrack18_numbers_under_poseval(posetrack18_dir, tmp_path, case):
    gt18 = posetrack18_dir / "poseval_gt" / "posetrack18_format"
    pred18 = posetrack18_dir / "poseval_cases" / case / "pred"
    gt21, pred21 = tmp_path / "gt21", tmp_path / "pred21"
    gt21.mkdir()
    pred21.mkdir()
    for k, path in enumerate(sorted(gt18.glob("*.json"))):
        with_frame = k == 0  # one sequence also gets an unlabelled frame (predictions: the frame, nobody)
        _write(gt21 / path.name, _to_posetrack21(json.loads(path.read_text()), with_frame))
        pred = json.loads((pred18 / path.name).read_text())
        if with_frame:
            frame = json.loads((gt21 / path.name).read_text())["images"][-1]
            pred["images"].append({"id": frame["id"], "file_name": frame["file_name"]})
        _write(pred21 / path.name, pred)
    assert sum(not has_keypoints(a) for p in gt21.glob("*.json") for a in load_sequence(p)["annotations"]) == 4

    want = pm.evaluate_pairs(pm.load_pairs(gt18, pred18), per_sequence=True, protocol="poseval")
    got = pm.evaluate_pairs(pm.load_pairs(gt21, pred21), per_sequence=True, protocol="poseval")
    for a, b in zip(got.ap, want.ap):
        assert _same(a, b)
    assert got.table() == pytest.approx(want.table(), nan_ok=True)
    for name in want.per_sequence:
        for a, b in zip(got.per_sequence[name].ap, want.per_sequence[name].ap):
            assert _same(a, b), name
    official = json.loads((posetrack18_dir / "poseval_cases" / "expected_summary.json").read_text())["cases"][case]
    for col, value in official["group_ap_full_precision"].items():
        assert got.table()[col] == pytest.approx(value, abs=1e-6), col

    # the kit's rule reads the same people in both layouts the same way too, and gives the kit's numbers
    kit18 = pm.evaluate_pairs(pm.load_pairs(gt18, pred18), protocol="posetrack21")
    kit21 = pm.evaluate_pairs(pm.load_pairs(gt21, pred21), protocol="posetrack21").metrics()
    assert {k: kit21[k] for k in pm.TABLE_COLUMNS} == pytest.approx(kit18.table())
    if case == "case_c_missing_fp_seed1":
        # one GT head_top above the frame (y < 0) and false-positive joints with y < 0: absent for the kit
        assert kit21["per_joint"] == pytest.approx(KIT_CASE_C, abs=1e-9)
        assert kit21["Total"] == pytest.approx(KIT_CASE_C_TOTAL, abs=1e-9) != got.table()["Total"]
    else:
        assert kit21["Total"] == pytest.approx(100.0)


def test_fixture_gt_boxes_give_a_pose_to_every_labelled_person_only(posetrack18_dir, tmp_path):
    gt21 = tmp_path / "gt21"
    for path in sorted((posetrack18_dir / "poseval_gt" / "posetrack18_format").glob("*.json")):
        _write(gt21 / path.name, _to_posetrack21(json.loads(path.read_text()), True))
    samples = gt_samples(load_sequences(gt21))
    assert len(samples) == 14  # the fixture's 14 people; none of the 6 box-only ones
    shutil.rmtree(gt21)
