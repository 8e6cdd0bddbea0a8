"""Detection stage: box helpers, frame enumeration, precomputed boxes, HOG on real footage, box AP."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from diffpose.detect.backends import BACKENDS, make_detector
from diffpose.detect.base import Detector, iou_matrix, nms
from diffpose.detect.box_ap import box_ap
from diffpose.detect.frames import frame_key, read_split
from diffpose.detect.hog import HogDetector
from diffpose.detect.torchvision_backend import torchvision_available
from diffpose.errors import ConfigError, DataError
from diffpose.stages.detect import DEFAULTS, run

SEQ_11 = "012834_mpii_test"  # the fixture frame with 11 labelled people


def params(**changes):
    p = copy.deepcopy(DEFAULTS)
    for key, value in changes.items():
        p[key] = value
    return p


def draw(image: np.ndarray, boxes: np.ndarray, path: Path, color=(0, 255, 0)) -> None:
    out = image.copy()
    for x, y, w, h, s in boxes:
        cv2.rectangle(out, (int(x), int(y)), (int(x + w), int(y + h)), color, 2)
        cv2.putText(out, f"{s:.2f}", (int(x), max(int(y) - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 255), 1)
    cv2.imwrite(str(path), out)


# -- helpers -----------------------------------------------------------------------------------

def test_iou_and_nms():
    a = np.array([[0, 0, 10, 10, 0.9]], np.float32)
    b = np.array([[5, 0, 10, 10, 0.8], [20, 20, 5, 5, 0.7], [0, 0, 10, 10, 0.1]], np.float32)
    np.testing.assert_allclose(iou_matrix(a, b)[0], [50 / 150, 0.0, 1.0])
    kept = nms(np.concatenate([a, b]), 0.3)
    assert kept[:, 4].tolist() == pytest.approx([0.9, 0.7])  # the 0.8 (IoU .33) and the duplicate go
    inner = np.array([[0, 0, 40, 80, 0.9], [5, 5, 20, 30, 0.8]], np.float32)  # IoU .19, fully inside
    assert len(nms(inner, 0.3)) == 2
    assert len(nms(inner, 0.3, inside_threshold=0.6)) == 1


@pytest.mark.parametrize("name", [
    "images/val/000342_mpii_test/000012.jpg",
    "/data/PoseTrack2018/images/val/000342_mpii_test/00000012.jpg",
    "val\\000342_mpii_test\\000012.png",
])
def test_frame_key_ignores_prefix_padding_and_extension(name):
    assert frame_key(name) == ("000342_mpii_test", 12)


def test_backends_are_a_plain_dict_and_unknown_names_fail():
    assert set(BACKENDS) == {"precomputed", "hog", "synthetic", "torchvision"}
    with pytest.raises(ConfigError, match="detect.backend must be one of"):
        make_detector("yolo", {})
    with pytest.raises(ConfigError, match="detect.hog: .*winstride"):
        make_detector("hog", {"winstride": 8})
    assert isinstance(make_detector("hog", {}), Detector)


# -- frames and ground truth ---------------------------------------------------------------

def test_read_split_on_real_posetrack18(posetrack18_dir):
    frames, truth = read_split(posetrack18_dir / "annotations" / "val")
    assert len(frames) == 3 and all(f.labelled for f in frames)
    assert sum(len(t.boxes) for t in truth.values()) == 14
    assert [len(t.regions) for t in truth.values()] == [9, 2, 4]


def test_read_split_labelled_or_all_frames(tmp_path, posetrack18_dir):
    seq = json.loads((posetrack18_dir / "annotations" / "val" / f"{SEQ_11}.json").read_text())
    first = seq["images"][0]
    extra = dict(first, id=first["id"] + 1, file_name=first["file_name"].replace("000000", "000001"), is_labeled=False)
    seq["images"].append(extra)
    (tmp_path / "a.json").write_text(json.dumps(seq))
    labelled, truth = read_split(tmp_path)
    everything, _ = read_split(tmp_path, frames="all")
    assert [f.image_id for f in labelled] == [first["id"]]
    assert [f.image_id for f in everything] == [first["id"], first["id"] + 1]
    assert list(truth) == [first["id"]]  # unlabelled frames are never scored
    (tmp_path / "b.json").write_text(json.dumps(seq))
    with pytest.raises(DataError, match=r"b.json: image id .* also used by .*a.json"):
        read_split(tmp_path)


# -- box AP ----------------------------------------------------------------------------------

def test_box_ap_perfect_noisy_and_ignore_regions(posetrack18_dir):
    _, truth = read_split(posetrack18_dir / "annotations" / "val")
    perfect = [{"image_id": k, "bbox": b.tolist(), "score": 0.9} for k, t in truth.items() for b in t.boxes]
    m = box_ap(perfect, truth)
    assert m["AP"] == pytest.approx(1.0) and m["recall50"] == 1.0 and m["gt_persons"] == 14
    rng = np.random.default_rng(0)
    shifted = [dict(d, bbox=(np.array(d["bbox"]) + rng.normal(0, 0.15, 4) * d["bbox"][3]).tolist()) for d in perfect]
    assert box_ap(shifted, truth)["AP"] < 0.9
    # a false positive scoring above every person: inside an ignore polygon it costs nothing
    image_id, frame = next((k, t) for k, t in truth.items() if t.regions)
    poly = frame.regions[0]
    (x0, y0), (x1, y1) = poly.min(axis=0), poly.max(axis=0)
    inside = {"image_id": image_id, "bbox": [x0, y0, (x1 - x0) / 2, (y1 - y0) / 2], "score": 1.0}
    assert (frame.boxes.size == 0) or iou_matrix(np.array([inside["bbox"]]), frame.boxes).max() < 0.1
    assert box_ap(perfect + [inside], truth)["AP"] == pytest.approx(1.0)
    far = dict(inside, bbox=[-500.0, -500.0, 50.0, 100.0])
    assert box_ap(perfect + [far], truth)["AP"] < 1.0


# -- precomputed ------------------------------------------------------------------------------

def test_precomputed_coco_results_on_real_posetrack18(tmp_path, posetrack18_dir):
    dets_file = posetrack18_dir / "annotations" / "test_posetrack18_human_detections.json"
    out, metrics_file = tmp_path / "dets.json", tmp_path / "ap.json"
    m = run(annotations=str(posetrack18_dir / "annotations" / "val"), images=str(posetrack18_dir), out=str(out),
            params=params(backend="precomputed", precomputed={"boxes": str(dets_file)}), metrics_out=str(metrics_file),
            progress=False)
    source = json.loads(dets_file.read_text())
    dets = json.loads(out.read_text())
    assert len(dets) == sum(d["score"] >= 0.2 for d in source)  # threshold 0.2, no NMS
    assert {d["file_name"] for d in dets} == {f"images/val/{s}/000000.jpg" for s in
                                              ("003418_mpii_test", "009473_mpii_test", SEQ_11)}
    assert all(d["category_id"] == 1 and len(d["bbox"]) == 4 for d in dets)
    assert json.loads(metrics_file.read_text()) == m
    ap = m["box_ap"]
    print(f"\nprecomputed (mmpose fixture boxes, thr 0.2): {ap}")
    assert 0.0 < ap["AP"] < 1.0 and ap["recall50"] > 0.8
    # box_ap: COCO protocol over every box; box_ap_kept: the boxes written (>= 0.2)
    assert ap["detections_scored"] == len(source) > len(dets) == m["box_ap_kept"]["detections_scored"]
    assert m["box_ap_kept"] == box_ap(dets, read_split(posetrack18_dir / "annotations" / "val")[1])


def test_precomputed_dcpose_layout_with_foreign_prefixes(tmp_path, posetrack18_dir):
    """DCPose's val_boxes.json names images with other roots and padding; they still match."""
    source = json.loads((posetrack18_dir / "annotations" / "test_posetrack18_human_detections.json").read_text())
    frames, _ = read_split(posetrack18_dir / "annotations" / "val")
    names = {f.image_id: f.file_name for f in frames}
    dcpose = []
    for d in source:
        seq, frame = Path(names[d["image_id"]]).parts[-2:]
        dcpose.append({"image_name": f"/mnt/PoseTrack/images/val/{seq}/0000{frame}", "bbox": d["bbox"],
                       "score": d["score"], "category_id": 1, "nframes": 140, "frame_id": d["image_id"]})
    dcpose.append({"image_name": "images/val/x/000000.jpg", "bbox": [0, 0, 5, 5], "score": 0.9, "category_id": 2})
    boxes_file = tmp_path / "val_boxes.json"
    boxes_file.write_text(json.dumps(dcpose))
    out = tmp_path / "dets.json"
    run(annotations=str(posetrack18_dir / "annotations" / "val"), images=str(posetrack18_dir), out=str(out),
        params=params(backend="precomputed", score_threshold=0.0, precomputed={"boxes": str(boxes_file)}),
        progress=False)
    dets = json.loads(out.read_text())
    assert len(dets) == len(source)  # every person box kept, the other category dropped
    assert {d["image_id"] for d in dets} == {d["image_id"] for d in source}


def test_precomputed_boxes_of_unlabelled_frames_are_not_unmatched(tmp_path, posetrack18_dir):
    """A DCPose file covers every frame; detecting on labelled frames only must not reject it."""
    seq = json.loads((posetrack18_dir / "annotations" / "val" / f"{SEQ_11}.json").read_text())
    first = seq["images"][0]
    seq["images"].append(dict(first, id=first["id"] + 1, file_name=first["file_name"].replace("000000", "000001"),
                              is_labeled=False))
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / f"{SEQ_11}.json").write_text(json.dumps(seq))
    boxes = [{"image_name": f"images/val/{SEQ_11}/00000{i}.jpg", "bbox": [10, 10, 50, 100], "score": 0.9}
             for i in (0, 1)]
    (tmp_path / "b.json").write_text(json.dumps(boxes))
    for frames, expected in (("labelled", {first["id"]}), ("all", {first["id"], first["id"] + 1})):
        out = tmp_path / f"{frames}.json"
        run(annotations=str(tmp_path / "ann"), images=str(posetrack18_dir), out=str(out), progress=False,
            params=params(backend="precomputed", frames=frames, precomputed={"boxes": str(tmp_path / "b.json")}))
        assert {d["image_id"] for d in json.loads(out.read_text())} == expected


def test_precomputed_unmatched_images_are_named(tmp_path, posetrack18_dir):
    wrong = [{"image_name": f"images/val/999999_mpii_test/{i:06d}.jpg", "bbox": [0, 0, 9, 9], "score": 1.0}
             for i in range(8)]
    boxes_file = tmp_path / "val_boxes.json"
    boxes_file.write_text(json.dumps(wrong))
    with pytest.raises(DataError, match=r"val_boxes.json: 8 image\(s\) are not frames .*999999_mpii_test/000000.jpg.* and 3 more"):
        run(annotations=str(posetrack18_dir / "annotations" / "val"), images=str(posetrack18_dir),
            out=str(tmp_path / "d.json"), params=params(backend="precomputed", precomputed={"boxes": str(boxes_file)}),
            progress=False)
    assert not (tmp_path / "d.json").exists()


# -- HOG on real footage ------------------------------------------------------------------------

VTEST_EVERY = 25  # the background median uses every 25th frame; the HOG picks are among them


@pytest.fixture(scope="module")
def vtest(videos_dir) -> dict[int, np.ndarray]:
    """Every 25th frame of vtest.avi by index (32 of its 795 frames: the others are only grabbed,
    never converted or kept, ~30 MB instead of ~1 GB)."""
    cap = cv2.VideoCapture(str(videos_dir / "vtest.avi"))
    frames, index = {}, 0
    while cap.grab():
        if index % VTEST_EVERY == 0:
            ok, frame = cap.retrieve()
            assert ok, f"vtest.avi: frame {index} grabbed but not decoded"
            frames[index] = frame
        index += 1
    cap.release()
    assert index > 700 and len(frames) == -(-index // VTEST_EVERY)
    return frames


def test_hog_finds_the_walkers_in_vtest(vtest, tmp_path):
    """No GT here: a confident box must sit on something that moves (differs from the median
    background of the clip, every 25th frame); random boxes of the same size almost never do."""
    background = np.median(np.stack(list(vtest.values())), axis=0).astype(np.int16)
    picks = [100, 300, 500, 700]
    found = {}
    for resize in (2.0, 1.0):
        boxes = HogDetector(resize=resize).detect([vtest[i] for i in picks])
        on_walkers = 0
        confident_total = 0
        for i, b in zip(picks, boxes):
            moving = np.abs(vtest[i].astype(np.int16) - background).max(axis=2) > 40
            confident = b[b[:, 4] >= 0.5]
            share = [moving[int(y):int(y + h), int(x):int(x + w)].mean() for x, y, w, h, _ in confident]
            on_walkers += sum(s > 0.15 for s in share)
            confident_total += len(confident)
            if resize == 2.0:
                draw(vtest[i], b, tmp_path / f"vtest_{i:03d}.png")
                assert sum(s > 0.15 for s in share) >= 3, f"frame {i}: walkers found {share}"
                assert all(40 < h < 200 for *_, h, _ in confident)  # walkers are ~50-120 px tall
        found[resize] = on_walkers
        if resize == 2.0:
            assert on_walkers >= 0.75 * confident_total
    print(f"\nvtest walkers found (4 frames): upscaled 2x {found[2.0]}, native {found[1.0]}; overlays in {tmp_path}")
    assert found[2.0] > found[1.0]


def test_hog_on_real_posetrack18_frames(tmp_path, posetrack18_dir):
    out = tmp_path / "hog.json"
    m = run(annotations=str(posetrack18_dir / "annotations" / "val"), images=str(posetrack18_dir), out=str(out),
            params=params(backend="hog", score_threshold=0.0, hog=dict(DEFAULTS["hog"], resize=1.0)), progress=False)
    frames, truth = read_split(posetrack18_dir / "annotations" / "val")
    dets = json.loads(out.read_text())
    frame = next(f for f in frames if SEQ_11 in f.file_name)
    mine = np.array([d["bbox"] + [d["score"]] for d in dets if d["image_id"] == frame.image_id])
    people = truth[frame.image_id].boxes
    image = cv2.imread(str(posetrack18_dir / frame.file_name))
    draw(image, np.c_[people, np.ones(len(people))], tmp_path / "gt.png", color=(255, 0, 0))
    draw(cv2.imread(str(tmp_path / "gt.png")), mine, tmp_path / f"hog_{SEQ_11}.png")
    matched = int((iou_matrix(people, mine).max(axis=1) >= 0.5).sum()) if len(mine) else 0
    print(f"\nHOG on real PoseTrack18 frames: {m['box_ap']}; {matched}/11 matched on {SEQ_11}; "
          f"{m['frames_per_second']:.1f} frames/s")
    assert matched >= 1
    assert m["box_ap"]["AP50"] > 0.05


# -- stage behaviour -----------------------------------------------------------------------

def test_undecodable_frames_are_named_and_fail_the_stage(tmp_path, posetrack18_dir):
    root = tmp_path / "root"
    for seq in ("003418_mpii_test", "009473_mpii_test", SEQ_11):
        (root / "images" / "val" / seq).mkdir(parents=True)
        src = posetrack18_dir / "images" / "val" / seq / "000000.jpg"
        data = src.read_bytes() if seq != "009473_mpii_test" else b"not a jpeg"
        (root / "images" / "val" / seq / "000000.jpg").write_bytes(data)
    out = tmp_path / "d.json"
    # HOG on half-size frames: this is about the failed frame, not the boxes (2x on 1080p took 12 s)
    fast = tmp_path / "params.yaml"
    fast.write_text(yaml.safe_dump({"detect": params(hog=dict(DEFAULTS["hog"], resize=0.5))}))
    proc = subprocess.run(
        [sys.executable, "-m", "diffpose", "detect", "--annotations", str(posetrack18_dir / "annotations" / "val"),
         "--images", str(root), "--out", str(out), "--metrics", str(tmp_path / "m.json"), "--backend", "hog",
         "--params", str(fast), "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("diffpose detect: error:") and "1 of 3 frames could not be decoded" in last
    assert "images/val/009473_mpii_test/000000.jpg" in last
    dets = json.loads(out.read_text())  # the others were still detected and written
    assert {d["image_id"] for d in dets} <= {10034180000, 10128340000}
    assert json.loads((tmp_path / "m.json").read_text())["frames_failed"] == 1


def test_missing_annotations_is_one_line_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "diffpose", "detect", "--annotations", str(tmp_path / "nope"), "--images", str(tmp_path),
         "--out", str(tmp_path / "d.json"), "--backend", "hog"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"diffpose detect: error: {tmp_path / 'nope'}: annotation folder not found"


@pytest.mark.skipif(torchvision_available(), reason="torchvision is installed: the missing-extra message does not apply")
def test_torchvision_backend_without_torchvision_says_how_to_install():
    with pytest.raises(ConfigError, match=r"pip install 'diffpose\[torchvision\]'"):
        make_detector("torchvision", {"weights": "w.pth"})


def test_torchvision_backend_with_torchvision():
    pytest.importorskip("torchvision", reason="optional extra diffpose[torchvision] not installed")
    with pytest.raises(DataError, match="weights file not found"):
        make_detector("torchvision", {"weights": "/nonexistent/w.pth"})


def test_defaults_match_params_yaml_and_schema():
    """Running without --params must mean what params.yaml says."""
    from dataclasses import asdict

    from diffpose.config import load_params
    from diffpose.detect.train import TrainConfig
    from diffpose.stages.detect import resolve_params

    repo = Path(__file__).resolve().parents[1]
    section = load_params(repo / "params.yaml")["detect"]
    # detect.input is the pipeline's dependency on the backend's file (dvc.yaml), not an option
    assert section["input"] == section["synthetic"]["checkpoint"]
    assert {k: v for k, v in section.items() if k not in ("train", "input")} == DEFAULTS
    assert section["train"] == asdict(TrainConfig())
    before = copy.deepcopy(DEFAULTS)
    resolved = resolve_params(None, backend="hog", boxes="b.json", checkpoint="c.pt", fill_gaps=False)
    assert resolved["backend"] == "hog" and resolved["precomputed"]["boxes"] == "b.json"
    assert resolved["synthetic"]["checkpoint"] == "c.pt" and resolved["fill_gaps"]["enabled"] is False
    assert DEFAULTS == before  # resolve_params copies: the defaults are untouched


def test_detect_input_must_be_the_file_the_backend_reads(tmp_path):
    """dvc.yaml's dependency of the detect stage is detect.input: it must follow the backend."""
    from diffpose.errors import ConfigError
    from diffpose.stages.detect import resolve_params

    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    path = tmp_path / "params.yaml"

    def write(**detect):
        params["detect"].update(detect)
        path.write_text(yaml.safe_dump(params))
        return str(path)

    assert resolve_params(write())["input"] == "models/detector/detector.pt"
    with pytest.raises(ConfigError, match="detect.input .* backend precomputed reads detect.precomputed.boxes"):
        resolve_params(write(backend="precomputed", precomputed={"boxes": "boxes.json", "ignore_unmatched": False}))
    assert resolve_params(write(input="boxes.json"))["precomputed"]["boxes"] == "boxes.json"
    assert resolve_params(write(backend="hog", input="diffpose/detect/hog.py"))["backend"] == "hog"
    # a command-line file override is the user's explicit choice outside the pipeline
    assert resolve_params(write(backend="synthetic"), checkpoint="other.pt")["synthetic"]["checkpoint"] == "other.pt"
