"""diffpose register: on the real PoseTrack18 fixture (../shared/fixtures/posetrack18) and on tmp
folders with a broken layout. The fixture is read-only; register must write nothing under a root."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from diffpose import cli
from diffpose.data import register as reg
from diffpose.provenance import annotations_version

SEQUENCES = ("003418_mpii_test", "009473_mpii_test", "012834_mpii_test")


@pytest.fixture(autouse=True)
def _no_tracking(monkeypatch):
    monkeypatch.setenv("DIFFPOSE_TRACKING", "off")


def run(args: list[str], capsys) -> tuple[int, str, str]:
    rc = cli.main(["register", *args, "--no-progress"])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("diffpose register: error: ")
    return lines[0]


def listing(root: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


@pytest.fixture
def copy(posetrack18_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the fixture's val split (annotations and frames)."""
    root = tmp_path / "pt18"
    shutil.copytree(posetrack18_dir / "annotations" / "val", root / "annotations" / "val")
    shutil.copytree(posetrack18_dir / "images" / "val", root / "images" / "val")
    return root


def test_the_posetrack18_fixture_is_counted_and_recorded(posetrack18_dir, tmp_path, capsys):
    before = listing(posetrack18_dir)
    out_file = tmp_path / "registered" / "posetrack18.json"
    rc, out, err = run(["--dataset", "posetrack18", "--root", str(posetrack18_dir), "--splits", "val",
                        "--out", str(out_file)], capsys)
    assert rc == 0, err
    record = json.loads(out_file.read_text())
    assert record["dataset"] == record["label_version"] == "posetrack18"
    assert record["root"] == str(posetrack18_dir.resolve())
    assert record["images"] == str((posetrack18_dir / "images").resolve())
    val = record["splits"]["val"]
    # the fixture's README: three val sequences trimmed to one labelled frame each, 14 people
    assert (val["sequences"], val["frames"], val["labelled_frames"], val["frames_on_disk"]) == (3, 3, 3, 3)
    assert val["persons"] == val["persons_with_keypoints"] == 14
    assert val["annotations_version"] == annotations_version(posetrack18_dir / "annotations" / "val")
    assert "3 sequences, 3 frames (3 labelled" in out
    assert listing(posetrack18_dir) == before  # nothing copied or written under the root
    # the same copy gives the same record, byte for byte
    again = tmp_path / "again.json"
    assert run(["--dataset", "posetrack18", "--root", str(posetrack18_dir), "--splits", "val", "--out", str(again)],
               capsys)[0] == 0
    assert again.read_bytes() == out_file.read_bytes()


def test_the_train_split_is_required_by_default(posetrack18_dir, tmp_path, capsys):
    rc, _, err = run(["--dataset", "posetrack18", "--root", str(posetrack18_dir), "--out", str(tmp_path / "r.json")],
                     capsys)
    assert rc == 2
    line = one_line_error(err)
    assert f"{posetrack18_dir / 'annotations' / 'train'}: missing" in line
    assert not (tmp_path / "r.json").exists()


def test_a_wrong_dataset_name_is_caught_from_the_labels(posetrack18_dir, tmp_path, capsys):
    for dataset, expected in (("posetrack21", "look like PoseTrack18"), ("posetrack17", "look like PoseTrack18")):
        rc, _, err = run(["--dataset", dataset, "--root", str(posetrack18_dir), "--splits", "val",
                          "--out", str(tmp_path / "r.json")], capsys)
        assert rc == 2 and expected in one_line_error(err)


def test_posetrack17_labels_are_detected(posetrack18_dir, tmp_path, capsys):
    root = tmp_path / "pt17"
    shutil.copytree(posetrack18_dir / "poseval_gt" / "posetrack17_format", root / "annotations" / "val")
    out_file = tmp_path / "r.json"
    rc, _, err = run(["--dataset", "posetrack17", "--root", str(root), "--splits", "val",
                      "--images", str(posetrack18_dir / "images"), "--out", str(out_file)], capsys)
    assert rc == 0, err
    record = json.loads(out_file.read_text())
    assert record["label_version"] == "posetrack17"
    assert record["splits"]["val"]["sequences"] == 3 and record["splits"]["val"]["labelled_frames"] == 3
    assert record["splits"]["val"]["persons_with_keypoints"] == 14
    rc, _, err = run(["--dataset", "posetrack18", "--root", str(root), "--splits", "val",
                      "--images", str(posetrack18_dir / "images"), "--out", str(out_file)], capsys)
    assert rc == 2 and "look like PoseTrack17 (an annolist file)" in err


def test_posetrack21_labels_in_the_release_layout(copy, tmp_path, capsys):
    data = copy.parent / "pt21"
    (data / "posetrack_data").mkdir(parents=True)
    for seq in SEQUENCES:
        obj = json.loads((copy / "annotations" / "val" / f"{seq}.json").read_text())
        for i, ann in enumerate(obj["annotations"]):
            ann["person_id"] = 1000 + i
        (data / "posetrack_data" / "val").mkdir(exist_ok=True)
        (data / "posetrack_data" / "val" / f"{seq}.json").write_text(json.dumps(obj))
    out_file = tmp_path / "r.json"
    rc, _, err = run(["--dataset", "posetrack21", "--root", str(data), "--splits", "val",
                      "--images", str(copy / "images"), "--out", str(out_file)], capsys)
    assert rc == 0, err
    record = json.loads(out_file.read_text())
    assert record["annotations"] == str((data / "posetrack_data").resolve())
    assert record["splits"]["val"]["persons"] == 14
    rc, _, err = run(["--dataset", "posetrack18", "--root", str(data), "--splits", "val",
                      "--annotations", "posetrack_data", "--images", str(copy / "images"), "--out", str(out_file)],
                     capsys)
    assert rc == 2 and "look like PoseTrack21 (people carry person_id)" in err


def test_a_missing_frame_is_named(copy, tmp_path, capsys):
    frame = copy / "images" / "val" / SEQUENCES[1] / "000000.jpg"
    frame.unlink()
    rc, _, err = run(["--dataset", "posetrack18", "--root", str(copy), "--splits", "val",
                      "--out", str(tmp_path / "r.json")], capsys)
    assert rc == 2
    line = one_line_error(err)
    assert f"{frame}: missing: a frame named by the annotations" in line


def test_a_frame_that_is_not_an_image_is_named(copy, tmp_path, capsys):
    frame = copy / "images" / "val" / SEQUENCES[0] / "000000.jpg"
    frame.write_bytes(b"<html>not a frame</html>")
    rc, _, err = run(["--dataset", "posetrack18", "--root", str(copy), "--splits", "val",
                      "--out", str(tmp_path / "r.json")], capsys)
    assert rc == 2 and f"{frame}: not a JPEG or PNG image" in one_line_error(err)


def test_a_malformed_sequence_file_is_named_with_its_line(copy, tmp_path, capsys):
    bad = copy / "annotations" / "val" / f"{SEQUENCES[2]}.json"
    bad.write_text('{"images": [\n  {"id": 1,\n')
    rc, _, err = run(["--dataset", "posetrack18", "--root", str(copy), "--splits", "val",
                      "--out", str(tmp_path / "r.json")], capsys)
    assert rc == 2 and f"{bad}: malformed JSON at line" in one_line_error(err)


def test_a_frame_name_that_leaves_the_images_folder_is_refused(copy, tmp_path, capsys):
    path = copy / "annotations" / "val" / f"{SEQUENCES[0]}.json"
    obj = json.loads(path.read_text())
    obj["images"][0]["file_name"] = "images/../../../etc/passwd"
    path.write_text(json.dumps(obj))
    rc, _, err = run(["--dataset", "posetrack18", "--root", str(copy), "--splits", "val",
                      "--out", str(tmp_path / "r.json")], capsys)
    assert rc == 2 and "leaves the target folder" in one_line_error(err)


@pytest.mark.parametrize("breakage,expected", [
    (lambda root: shutil.rmtree(root), "{root}: no such folder (--root)"),
    (lambda root: (shutil.rmtree(root), root.write_text("x")), "{root}: not a folder (--root)"),
    (lambda root: shutil.rmtree(root / "annotations"), "{root}: no annotations folder"),
    (lambda root: shutil.rmtree(root / "images"), "{root}/images: missing"),
    (lambda root: [p.unlink() for p in (root / "annotations" / "val").glob("*.json")],
     "{root}/annotations/val: no <sequence>.json files"),
])
def test_a_broken_layout_is_one_line_naming_the_path(copy, tmp_path, capsys, breakage, expected):
    breakage(copy)
    rc, _, err = run(["--dataset", "posetrack18", "--root", str(copy), "--splits", "val",
                      "--out", str(tmp_path / "r.json")], capsys)
    assert rc == 2
    assert expected.format(root=copy) in one_line_error(err)
    assert not (tmp_path / "r.json").exists()


def test_label_version_rules():
    assert reg.label_version({"annolist": []})[0] == "posetrack17"
    assert reg.label_version({"images": [], "annotations": [{"person_id": 3}]})[0] == "posetrack21"
    assert reg.label_version({"images": [{"has_labeled_person": True}], "annotations": []})[0] == "posetrack21"
    assert reg.label_version({"images": [{"id": 1}], "annotations": [{"track_id": 0}]})[0] == "posetrack18"
