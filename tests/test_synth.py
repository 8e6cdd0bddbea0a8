"""The synthetic PoseTrack18 benchmark (tiny preset): layout, decodable videos, determinism, and the
ground-truth rules (labelling patterns, ears, boxes, ignore regions, tracks, degraded, occlusion)."""

from __future__ import annotations

import hashlib
import itertools
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from diffpose.cli import main as cli_main
from diffpose.data import posetrack
from diffpose.data.keypoints import NAME_TO_INDEX, NUM_KEYPOINTS
from diffpose.data.synthetic import PRESETS, generate
from diffpose.data.synthetic.annotate import labelled_mask
from diffpose.data.synthetic.preview import contact_sheet
from diffpose.data.synthetic.sequence import SequenceSpec, build_scene, frame_annotations, render_frame
from diffpose.io import read_json

TINY = PRESETS["tiny"]
EARS = [NAME_TO_INDEX["left_ear"], NAME_TO_INDEX["right_ear"]]


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(out, preset="tiny", seed=0, workers=1, progress=False)
    return out


def _sequences(root: Path) -> list[tuple[str, Path, dict]]:
    return [(p.parent.name, p, read_json(p)) for p in sorted((root / "annotations").glob("*/*.json"))]


def _kps(ann: dict) -> np.ndarray:
    return np.array(ann["keypoints"], dtype=np.float64).reshape(NUM_KEYPOINTS, 3)


def _digests(root: Path, sub: str) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((root / sub).rglob("*"))
        if p.is_file()
    }


def test_layout_names_and_image_records(synth: Path) -> None:
    seqs = _sequences(synth)
    assert len(seqs) == TINY.train_sequences + TINY.val_sequences
    for split, path, gt in seqs:
        seq = path.stem
        assert re.fullmatch(r"\d{6}_mpii_" + ("train" if split == "train" else "test"), seq)
        assert (synth / "videos" / split / f"{seq}.mp4").is_file()
        vid = seq[:6]
        n = TINY.train_frames if split == "train" else TINY.val_frames
        assert len(gt["images"]) == n
        for i, im in enumerate(gt["images"]):
            assert im["file_name"] == f"images/{split}/{seq}/{i:06d}.jpg"
            assert im["id"] == im["frame_id"] == int(f"1{vid}{i:04d}")
            assert (im["vid_id"], im["nframes"], im["width"], im["height"]) == (
                vid,
                n,
                TINY.width,
                TINY.height,
            )
        assert gt["categories"][0]["keypoints"][NAME_TO_INDEX["head_top"]] == "head_top"
    assert sorted(p.name for p in (synth / "videos").glob("*/*")) == sorted(
        f"{p.stem}.mp4" for _, p, _ in seqs
    )


def test_files_pass_the_posetrack18_validator(synth: Path) -> None:
    for _, path, gt in _sequences(synth):
        posetrack.validate_posetrack18(gt, path)


def test_videos_decode_with_the_annotated_frame_count_and_size(synth: Path) -> None:
    for split, path, gt in _sequences(synth):
        cap = cv2.VideoCapture(str(synth / "videos" / split / f"{path.stem}.mp4"))
        frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
        cap.release()
        assert len(frames) == gt["images"][0]["nframes"]
        assert frames[0].shape == (TINY.height, TINY.width, 3)
        assert np.std(frames[0]) > 10  # a picture, not a blank frame


def test_same_seed_same_bytes_any_worker_count_other_seed_differs(synth: Path, tmp_path: Path) -> None:
    generate(tmp_path / "again", preset="tiny", seed=0, workers=2, progress=False)
    assert _digests(tmp_path / "again", "annotations") == _digests(synth, "annotations")
    assert _digests(tmp_path / "again", "videos") == _digests(synth, "videos")
    generate(tmp_path / "other", preset="tiny", seed=1, workers=1, progress=False)
    other = _digests(tmp_path / "other", "annotations")
    assert other.keys() == _digests(synth, "annotations").keys()
    assert all(other[k] != v for k, v in _digests(synth, "annotations").items())


def test_is_labeled_patterns(synth: Path) -> None:
    for split, _, gt in _sequences(synth):
        flags = np.array([im["is_labeled"] for im in gt["images"]])
        labelled_ids = {im["id"] for im in gt["images"] if im["is_labeled"]}
        assert {a["image_id"] for a in gt["annotations"]} <= labelled_ids
        if split == "train":  # one dense segment
            idx = np.flatnonzero(flags)
            assert len(idx) == min(TINY.train_labelled, len(flags))
            assert np.all(np.diff(idx) == 1)
        else:
            assert np.array_equal(flags, np.arange(len(flags)) % TINY.val_every == 0)


def test_keypoints_rule_ears_frame_and_boxes(synth: Path) -> None:
    count = 0
    for _, _, gt in _sequences(synth):
        for a in gt["annotations"]:
            k = _kps(a)
            assert np.all(k[EARS] == 0)
            assert set(np.unique(k[:, 2])) <= {0.0, 1.0}
            lab = k[:, 2] == 1
            assert np.all(k[~lab, :2] == 0)
            assert a["num_keypoints"] == lab.sum() >= 4
            assert np.all((k[lab, 0] >= 0) & (k[lab, 0] <= TINY.width - 1))
            assert np.all((k[lab, 1] >= 0) & (k[lab, 1] <= TINY.height - 1))
            x, y, w, h = a["bbox"]
            assert np.all((k[lab, 0] >= x) & (k[lab, 0] <= x + w) & (k[lab, 1] >= y) & (k[lab, 1] <= y + h))
            assert x >= 0 and y >= 0 and x + w <= TINY.width and y + h <= TINY.height
            assert a["category_id"] == 1 and a["scores"] == [] and a["iscrowd"] is False
            count += 1
    assert count > 20


def test_head_box_size_is_plausible_for_the_body(synth: Path) -> None:
    ratios = []
    for _, _, gt in _sequences(synth):
        for a in gt["annotations"]:
            k = _kps(a)
            top, neck = k[NAME_TO_INDEX["head_top"]], k[NAME_TO_INDEX["head_bottom"]]
            ankles = k[[NAME_TO_INDEX["left_ankle"], NAME_TO_INDEX["right_ankle"]]]
            x, y, w, h = a["bbox_head"]
            if top[2] and neck[2]:  # the head box spans crown to neck
                assert x - 1 <= top[0] <= x + w + 1 and y - 1 <= top[1] <= y + h + 1
                assert x - 1 <= neck[0] <= x + w + 1 and y - 1 <= neck[1] <= y + h + 1
            if top[2] and ankles[:, 2].all():
                height = np.linalg.norm(ankles[:, :2].mean(0) - top[:2])
                ratios.append(0.6 * np.hypot(w, h) / height)
    # poseval's head size / person height: ~0.15-0.22 on real PoseTrack18 GT
    assert len(ratios) > 10
    assert 0.12 < np.median(ratios) < 0.22
    assert np.all((np.array(ratios) > 0.08) & (np.array(ratios) < 0.4))


def test_ignore_regions_exist_and_hold_no_gt_joint(synth: Path) -> None:
    regions = 0
    for _, _, gt in _sequences(synth):
        by_image: dict[int, list[dict]] = {}
        for a in gt["annotations"]:
            by_image.setdefault(a["image_id"], []).append(a)
        for im in gt["images"]:
            if not im["is_labeled"]:
                assert im["ignore_regions_x"] == [] and im["ignore_regions_y"] == []
            for xs, ys in zip(im["ignore_regions_x"], im["ignore_regions_y"]):
                regions += 1
                poly = np.array([xs, ys], dtype=np.float32).T.reshape(-1, 1, 2)
                for a in by_image.get(im["id"], []):
                    for x, y, v in _kps(a):
                        if v:
                            assert cv2.pointPolygonTest(poly, (float(x), float(y)), False) < 0
    assert regions > 0


def test_track_ids_are_consistent_over_frames(synth: Path) -> None:
    for _, _, gt in _sequences(synth):
        ids = [a["id"] for a in gt["annotations"]]
        assert len(ids) == len(set(ids))
        frame_of = {im["id"]: i for i, im in enumerate(gt["images"])}
        tracks: dict[int, list[tuple[int, np.ndarray, float]]] = {}
        seen = set()
        for a in gt["annotations"]:
            assert 0 <= a["track_id"] < TINY.max_people
            assert (a["image_id"], a["track_id"]) not in seen
            seen.add((a["image_id"], a["track_id"]))
            tracks.setdefault(a["track_id"], []).append((frame_of[a["image_id"]], _kps(a), a["bbox"][3]))
        for track in tracks.values():
            track.sort(key=lambda r: r[0])
            for (f0, k0, h0), (f1, k1, _) in itertools.pairwise(track):
                both = (k0[:, 2] == 1) & (k1[:, 2] == 1)
                if (
                    both.sum() >= 4
                ):  # the same person: joints move a little per frame, not a jump to someone else
                    step = np.median(np.linalg.norm(k1[both, :2] - k0[both, :2], axis=1))
                    assert step <= 0.12 * h0 * (f1 - f0)


def test_some_people_are_degraded_and_some_are_clean(synth: Path) -> None:
    flags = [a["degraded"] for _, _, gt in _sequences(synth) for a in gt["annotations"]]
    assert all(isinstance(f, bool) for f in flags)
    assert 0 < sum(flags) < len(flags)


def test_people_cross_and_occlude_each_other(synth: Path) -> None:
    found = False
    for _, _, gt in _sequences(synth):
        if len({a["track_id"] for a in gt["annotations"]}) < 2:
            continue
        by_key = {(a["image_id"], a["track_id"]): a for a in gt["annotations"]}
        for a in gt["annotations"]:
            for other in a["occluded_by"]:
                assert other != a["track_id"]
                b = by_key.get((a["image_id"], other))
                if b is None:
                    continue
                ax, ay, aw, ah = a["bbox"]
                bx, by, bw, bh = b["bbox"]
                assert min(ax + aw, bx + bw) > max(ax, bx) and min(ay + ah, by + bh) > max(ay, by)
                found = True
    assert found


def test_occluded_joints_stay_labelled_at_their_true_position() -> None:
    """THE rule: inside the frame => labelled (v=1) at the true position, hidden or not."""
    spec = SequenceSpec("train", 0, 0, TINY)
    sc = build_scene(spec, spec.rng())
    noise = np.random.default_rng(0)
    hidden_labelled = 0
    for t in range(spec.nframes):
        _, truth = render_frame(sc, t, noise)
        anns, _ = frame_annotations(sc, t, truth)
        for a in anns:
            pts = truth.keypoints[a["track_id"]]
            lab = labelled_mask(pts, TINY.width, TINY.height)
            k = _kps(a)
            assert np.array_equal(k[:, 2] == 1, lab)
            assert np.allclose(k[lab, :2], pts[lab], atol=0.006)
            hidden_labelled += a["occluded_joints"]
    assert hidden_labelled > 0


def test_rerun_removes_stale_sequences(synth: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    stale = [
        out / "videos/train/999999_mpii_train.mp4",
        out / "annotations/val/999999_mpii_test.json",
        out / "videos/val/.500001_mpii_test.mp4.abc.tmp.mp4",
        out / "videos/old/000001_mpii_train.mp4",
    ]
    for p in stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"old")
    generate(out, preset="tiny", seed=0, workers=1, progress=False)
    assert not any(p.exists() for p in stale)
    assert not (out / "videos/old").exists()
    assert _digests(out, "annotations") == _digests(synth, "annotations")


def test_cli_runs_and_rejects_a_bad_seed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        cli_main(["synth", "--out", str(tmp_path / "s"), "--preset", "tiny", "--seed", "-1", "--no-progress"])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("diffpose synth: error:") and "--seed" in err[-1]
    assert (
        cli_main(
            ["synth", "--out", str(tmp_path / "s"), "--preset", "tiny", "--workers", "1", "--no-progress"]
        )
        == 0
    )
    assert "labelled person instances" in capsys.readouterr().out


def test_preview_draws_a_contact_sheet(synth: Path, tmp_path: Path) -> None:
    seq = "500001_mpii_test"
    png = contact_sheet(
        synth / "videos/val" / f"{seq}.mp4",
        synth / "annotations/val" / f"{seq}.json",
        tmp_path / "sheet.png",
        frames=4,
        columns=2,
        scale=2,
    )
    sheet = cv2.imread(str(png))
    assert sheet.shape == (2 * 2 * TINY.height, 2 * 2 * TINY.width, 3)


def test_body_model_left_right_and_rigid_bones() -> None:
    """Facing the camera, the person's left is on the image's right (and the reverse from behind);
    bones keep their length through a gait cycle."""
    from diffpose.data.synthetic.motion import gait_pose, sample_gait
    from diffpose.data.synthetic.skeleton import Body, Camera, forward_kinematics

    rng = np.random.default_rng(0)
    cam = Camera(focal=600.0, cx=160.0, horizon=100.0, height=0.6)
    n = 25
    for yaw, left_is_right in ((0.0, True), (np.pi, False)):
        pose = gait_pose(rng, n, 25.0, np.full(n, yaw), sample_gait(rng, "walk"), "walk")
        world = forward_kinematics(Body(), pose, np.tile([0.0, 0.0, 5.0], (n, 1)))
        xy, depth = cam.project(world["keypoints"])
        for part in ("shoulder", "hip"):
            left, right = xy[:, NAME_TO_INDEX[f"left_{part}"], 0], xy[:, NAME_TO_INDEX[f"right_{part}"], 0]
            assert np.all((left > right) == left_is_right)
        nose_nearer = depth[:, NAME_TO_INDEX["nose"]] < world["head_centre"][:, 2]
        assert np.all(nose_nearer == left_is_right)
        assert np.all(xy[:, NAME_TO_INDEX["head_top"], 1] < xy[:, NAME_TO_INDEX["head_bottom"], 1])
        kp3 = world["keypoints"]
        for a, b in (("left_hip", "left_knee"), ("right_knee", "right_ankle"), ("left_elbow", "left_wrist")):
            length = np.linalg.norm(kp3[:, NAME_TO_INDEX[a]] - kp3[:, NAME_TO_INDEX[b]], axis=1)
            assert np.ptp(length) < 1e-9
        ankles = kp3[:, [NAME_TO_INDEX["left_ankle"], NAME_TO_INDEX["right_ankle"]], 1]
        assert np.allclose(ankles.min(1), ankles.min())  # one foot always on the ground


def test_frames_stage_writes_exactly_the_annotated_file_names(synth: Path, tmp_path: Path) -> None:
    """``diffpose frames`` on the videos produces one JPEG per annotated image, at its file_name."""
    from diffpose.data.frames import extract_all

    results = extract_all(synth / "videos", tmp_path, workers=1, progress=False)
    assert not [r.error for r in results if r.error]
    written = {p.relative_to(tmp_path).as_posix() for p in (tmp_path / "images").rglob("*.jpg")}
    annotated = {im["file_name"] for _, _, gt in _sequences(synth) for im in gt["images"]}
    assert written == annotated
