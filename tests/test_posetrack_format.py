"""PoseTrack17/18 formats: reading, validation, conversion, writing, and the validate/convert CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from diffpose.cli import main as cli_main
from diffpose.data import keypoints as kp
from diffpose.data import posetrack as pt
from diffpose.errors import DataError

SEQS = ("003418_mpii_test", "009473_mpii_test", "012834_mpii_test")


def _read(path: Path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def gt18(posetrack18_dir):
    return {s: _read(posetrack18_dir / "annotations" / "val" / f"{s}.json") for s in SEQS}


@pytest.fixture(scope="module")
def gt17(posetrack18_dir):
    return {s: _read(posetrack18_dir / "poseval_gt" / "posetrack17_format" / f"{s}.json") for s in SEQS}


@pytest.mark.parametrize("seq", SEQS)
def test_18_to_17_matches_poseval_converter(gt18, gt17, seq):
    pt.validate_posetrack18(gt18[seq], seq)
    assert pt.posetrack18_to_17(gt18[seq]) == gt17[seq]


@pytest.mark.parametrize("seq", SEQS)
def test_18_to_17_to_18_preserves_people_and_regions(gt18, seq):
    src = gt18[seq]
    back = pt.posetrack17_to_18(pt.posetrack18_to_17(src))
    pt.validate_posetrack18(back, "roundtrip")
    assert [im["id"] for im in back["images"]] == [im["id"] for im in src["images"]]
    for a, b in zip(src["images"], back["images"]):
        assert b["file_name"] == a["file_name"]
        assert b["ignore_regions_x"] == a["ignore_regions_x"] and b["ignore_regions_y"] == a["ignore_regions_y"]
    assert len(back["annotations"]) == len(src["annotations"])
    for a, b in zip(src["annotations"], back["annotations"]):
        assert b["keypoints"] == a["keypoints"]  # every labelled keypoint, ears (0, 0, 0)
        assert b["bbox_head"] == a["bbox_head"]
        assert b["track_id"] == a["track_id"]
        assert b["image_id"] == a["image_id"] and b["id"] == a["id"]


@pytest.mark.parametrize("seq", SEQS)
def test_posetrack17_file_loads_as_the_same_people(posetrack18_dir, gt18, seq):
    loaded = pt.load_sequence(posetrack18_dir / "poseval_gt" / "posetrack17_format" / f"{seq}.json")
    kps = np.array([a["keypoints"] for a in loaded["annotations"]], dtype=float)
    ref = np.array([a["keypoints"] for a in gt18[seq]["annotations"]], dtype=float)
    assert np.array_equal(kps, ref)
    assert not kps.reshape(len(kps), -1, 3)[:, ~kp.LABELLED_IN_POSETRACK18].any()  # ears stay empty


def test_write_sequence_both_formats(tmp_path, gt18, gt17):
    seq = SEQS[2]
    pt.write_sequence(tmp_path / "a18.json", gt18[seq])
    pt.write_sequence(tmp_path / "a17.json", gt18[seq], fmt="17")
    assert _read(tmp_path / "a18.json") == gt18[seq]
    assert _read(tmp_path / "a17.json") == gt17[seq]
    assert pt.load_sequence(tmp_path / "a17.json")["annotations"][3]["keypoints"] == gt18[seq]["annotations"][3]["keypoints"]
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writer left nothing behind


def test_prediction_files_load_with_kind_pred(posetrack18_dir):
    path = posetrack18_dir / "poseval_cases" / "case_c_missing_fp_seed1" / "pred" / f"{SEQS[1]}.json"
    obj = pt.load_sequence(path, kind="pred")
    assert all(len(a["scores"]) == kp.NUM_KEYPOINTS for a in obj["annotations"])
    with pytest.raises(DataError, match="bbox_head"):  # as GT, a labelled person needs a head box
        pt.load_sequence(path, kind="gt")


def test_pred_17_roundtrip_keeps_scores(posetrack18_dir):
    path = posetrack18_dir / "poseval_cases" / "case_c_missing_fp_seed1" / "pred" / f"{SEQS[2]}.json"
    obj = pt.load_sequence(path, kind="pred")
    back = pt.posetrack17_to_18(pt.posetrack18_to_17(obj))
    pt.validate_posetrack18(back, "x", kind="pred")
    for a, b in zip(obj["annotations"], back["annotations"]):
        present = ~np.all(np.array(a["keypoints"]).reshape(-1, 3) == 0, axis=1) & kp.LABELLED_IN_POSETRACK18
        assert np.array_equal(np.array(a["scores"])[present], np.array(b["scores"])[present])
        assert b["keypoints"] == a["keypoints"]


# ---- corrupted copies: the message names the file, the frame or annotation and the field ----

def _set(path, value):
    def apply(obj):
        target = obj
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return apply


CORRUPTIONS18 = {
    "short keypoints": (_set(["annotations", 1, "keypoints"], [1.0] * 45), ["annotation #1", "'keypoints'", "51", "45"]),
    "string coordinate": (_set(["annotations", 0, "keypoints", 6], "12"), ["annotation #0", "head_top.x", "finite"]),
    "unknown image": (_set(["annotations", 2, "image_id"], 7), ["annotation #2", "'image_id' 7"]),
    "region lengths": (_set(["images", 0, "ignore_regions_y", 1], [1, 2]), ["frame #0", "000000.jpg", "ignore region 1"]),
    "no head box": (lambda o: o["annotations"][4].pop("bbox_head"), ["annotation #4", "'bbox_head'"]),
    "bad image id": (_set(["images", 0, "id"], "x"), ["frame #0", "'id' must be an integer"]),
    "bad track": (_set(["annotations", 3, "track_id"], None), ["annotation #3", "'track_id'"]),
    "bad scores": (_set(["annotations", 3, "scores"], [1.0] * 3), ["annotation #3", "'scores'"]),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS18))
def test_corrupted_posetrack18_copy_names_file_frame_field(tmp_path, gt18, name):
    mutate, needles = CORRUPTIONS18[name]
    obj = copy.deepcopy(gt18[SEQS[2]])
    mutate(obj)
    path = tmp_path / f"{SEQS[2]}.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(DataError) as info:
        pt.load_sequence(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_nan_coordinate_is_located(tmp_path, gt18):
    text = json.dumps(gt18[SEQS[1]]).replace("[750, 297.5,", "[NaN, 297.5,", 1)
    assert "NaN" in text
    path = tmp_path / "nan.json"
    path.write_text(text)
    with pytest.raises(DataError, match=r"nan\.json: annotation #0 \(id 1009473000000, image 10094730000 .*000000\.jpg\): 'keypoints'\[0\] \(nose\.x\) must be a finite number, got nan"):
        pt.load_sequence(path)


CORRUPTIONS17 = {
    "joint id": (_set(["annolist", 0, "annorect", 1, "annopoints", 0, "point", 0, "id"], [15]), ["person #1", "point #0", "0..14"]),
    "string x": (_set(["annolist", 0, "annorect", 0, "annopoints", 0, "point", 2, "x"], ["a"]), ["person #0", "point #2", "'x'"]),
    "no head box": (lambda o: o["annolist"][0]["annorect"][2].pop("x2"), ["person #2", "head box"]),
    "no image": (_set(["annolist", 0, "image"], []), ["frame #0", "'image'"]),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS17))
def test_corrupted_posetrack17_copy_names_file_frame_field(tmp_path, gt17, name):
    mutate, needles = CORRUPTIONS17[name]
    obj = copy.deepcopy(gt17[SEQS[2]])
    mutate(obj)
    path = tmp_path / "seq17.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(DataError) as info:
        pt.load_sequence(path)
    msg = str(info.value)
    assert "\n" not in msg and "seq17.json" in msg
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_not_a_sequence_file(posetrack18_dir):
    with pytest.raises(DataError, match="not a PoseTrack sequence file"):
        pt.load_sequence(posetrack18_dir / "annotations" / "test_posetrack18_human_detections.json")


# ---- CLI ----

def test_cli_validate_reports_good_and_bad(tmp_path, posetrack18_dir, gt18, capsys):
    bad = copy.deepcopy(gt18[SEQS[0]])
    bad["annotations"][0]["keypoints"] = bad["annotations"][0]["keypoints"][:-3]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert cli_main(["validate", str(posetrack18_dir / "annotations" / "val")]) == 0
    assert cli_main(["validate", str(posetrack18_dir / "poseval_gt" / "posetrack17_format"), str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "bad.json: annotation #0" in err and "'keypoints'" in err
    (tmp_path / "broken.json").write_text('{"images": [')
    assert cli_main(["validate", str(tmp_path / "broken.json")]) == 1
    assert "broken.json: malformed JSON at line 1" in capsys.readouterr().err


def test_cli_convert_folder_roundtrip(tmp_path, posetrack18_dir, gt17):
    src = posetrack18_dir / "annotations" / "val"
    assert cli_main(["convert", "--to", "17", str(src), str(tmp_path / "p17")]) == 0
    for seq in SEQS:
        assert _read(tmp_path / "p17" / f"{seq}.json") == gt17[seq]
    assert cli_main(["convert", "--to", "18", str(tmp_path / "p17" / f"{SEQS[1]}.json"), str(tmp_path / "one.json")]) == 0
    back = _read(tmp_path / "one.json")
    ref = _read(src / f"{SEQS[1]}.json")
    assert [a["keypoints"] for a in back["annotations"]] == [a["keypoints"] for a in ref["annotations"]]
    assert cli_main(["convert", "--to", "18", str(tmp_path / "missing"), str(tmp_path / "x")]) == 2
