"""Clip dataset and crop geometry (diffpose.data.clips, diffpose.data.transforms).

``make_tiny_dataset`` writes a small PoseTrack18-format dataset with JPEG frames; the training and
inference tests import it from here.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from diffpose.data import keypoints as kp
from diffpose.data import transforms as tf
from diffpose.data.clips import ClipDataset, load_sequences, make_loader, training_samples
from diffpose.data.codec import HeatmapCodec

INPUT = (64, 48)  # H, W
HEATMAP = (16, 12)

# A standing person (x, y) in a 48x64 box; ears unlabelled as in PoseTrack18.
_POSE = np.array([
    [24, 8], [24, 12], [24, 2], [0, 0], [0, 0], [16, 16], [32, 16], [13, 27], [35, 27], [12, 37],
    [36, 37], [19, 38], [29, 38], [18, 50], [30, 50], [18, 61], [30, 61],
], dtype=np.float64)


def make_tiny_dataset(root: Path, *, sequences: int = 2, frames: int = 6, split: str = "train",
                      size: tuple[int, int] = (96, 128), seed: int = 0,
                      empty_frames: tuple[int, ...] = ()) -> tuple[Path, Path]:
    """Write ``root/annotations/<split>/seqN.json`` and ``root/images/<split>/seqN/%06d.jpg``:
    one person per frame drifting right, each joint a coloured dot; frames in ``empty_frames``
    have no annotation. Returns (annotations, root)."""
    rng = np.random.default_rng(seed)
    h, w = size
    ann_dir = root / "annotations" / split
    ann_dir.mkdir(parents=True, exist_ok=True)
    colours = rng.integers(60, 255, size=(kp.NUM_KEYPOINTS, 3))
    for s in range(sequences):
        seq = f"seq{s}"
        images, anns = [], []
        for f in range(frames):
            origin = np.array([20.0 + 4 * f + 10 * s, 20.0 + 3 * s])
            pts = _POSE + origin
            vis = np.ones(kp.NUM_KEYPOINTS)
            vis[[3, 4]] = 0
            if (f + s) % 3 == 2:
                vis[9] = 0  # an unlabelled left wrist now and then
            img = np.full((h, w, 3), 30, np.uint8)
            for j in range(kp.NUM_KEYPOINTS):
                if vis[j] or j not in (3, 4):
                    cv2.circle(img, (int(round(pts[j, 0])), int(round(pts[j, 1]))), 2, colours[j].tolist(), -1)
            name = f"images/{split}/{seq}/{f:06d}.jpg"
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / name), img)
            image_id = 10000 * (s + 1) + f
            images.append({"id": image_id, "file_name": name, "frame_id": image_id, "vid_id": seq,
                           "nframes": frames, "is_labeled": True})
            kpts = np.concatenate([np.where(vis[:, None] > 0, pts, 0.0), vis[:, None]], axis=1)
            if f in empty_frames:
                continue
            anns.append({
                "id": len(anns), "image_id": image_id, "track_id": 0, "category_id": 1,
                "bbox": [float(origin[0]), float(origin[1]), 48.0, 64.0],
                "bbox_head": [float(origin[0] + 18), float(origin[1]), 12.0, 14.0],
                "keypoints": [float(v) for v in kpts.reshape(-1)],
            })
        (ann_dir / f"{seq}.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                          "categories": [{"id": 1, "name": "person"}]}))
    return ann_dir, root


def _dataset(root: Path, **kwargs) -> ClipDataset:
    seqs = load_sequences(root / "annotations" / "train")
    samples = training_samples(seqs)
    defaults = dict(input_size=INPUT, num_frames=3, codec=HeatmapCodec(input_size=INPUT, heatmap_size=HEATMAP, sigma=2.0))
    defaults.update(kwargs)
    return ClipDataset([s for s, _ in seqs], samples, root, **defaults)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    _, root = make_tiny_dataset(tmp_path_factory.mktemp("tiny"))
    return root


@pytest.mark.parametrize("rotation,flip", [(0.0, False), (30.0, False), (-20.0, True)])
def test_keypoint_maps_into_crop_and_back_exactly(rotation, flip):
    center, size = tf.box_to_center_size([40, 30, 48, 64], INPUT[1] / INPUT[0], 1.25)
    m = tf.crop_affine(center, size, INPUT, rotation=rotation, flip=flip)
    pts = np.array([[50.0, 40.0], [64.0, 62.0], [80.5, 91.25]])
    crop = tf.apply_affine(pts, m)
    assert np.all((crop >= 0) & (crop <= [INPUT[1], INPUT[0]]))
    np.testing.assert_allclose(tf.apply_affine(crop, tf.invert_affine(m)), pts, atol=1e-9)
    # the centre of the box lands in the centre of the crop whatever the rotation or flip
    np.testing.assert_allclose(tf.apply_affine(center, m), [INPUT[1] / 2, INPUT[0] / 2], atol=1e-9)


@pytest.mark.parametrize("rotation,flip", [(0.0, False), (25.0, True)])
def test_image_content_follows_the_keypoint(rotation, flip):
    img = np.zeros((120, 100, 3), np.uint8)
    img[70, 41] = 255  # one bright pixel at x=41, y=70
    m = tf.crop_affine((50, 60), (60, 80), (128, 96), rotation=rotation, flip=flip)
    crop = tf.warp(img, m, (128, 96)).sum(axis=2)
    y, x = np.unravel_index(np.argmax(crop), crop.shape)
    expected = tf.apply_affine([41.0, 70.0], m)
    assert abs(x - expected[0]) <= 1 and abs(y - expected[1]) <= 1


def test_box_keeps_aspect_and_covers_the_box():
    center, size = tf.box_to_center_size([10, 20, 100, 50], 0.75, 1.25)
    assert size[0] / size[1] == pytest.approx(0.75)
    assert size[0] >= 100 * 1.25 - 1e-9 and size[1] >= 50 * 1.25 - 1e-9
    np.testing.assert_allclose(center, [60, 45])


def test_flip_swaps_left_and_right():
    kpts = np.concatenate([_POSE + 30, np.ones((kp.NUM_KEYPOINTS, 1))], axis=1)
    center, size = tf.box_to_center_size([30, 30, 48, 64], 0.75, 1.25)
    plain = tf.crop_keypoints(kpts, tf.crop_affine(center, size, INPUT), False, INPUT)
    flipped = tf.crop_keypoints(kpts, tf.crop_affine(center, size, INPUT, flip=True), True, INPUT)
    left_wrist, right_wrist = kp.NAME_TO_INDEX["left_wrist"], kp.NAME_TO_INDEX["right_wrist"]
    # the joint labelled right_wrist after the flip is the mirrored left wrist
    assert flipped[right_wrist, 0] == pytest.approx(INPUT[1] - plain[left_wrist, 0])
    assert flipped[right_wrist, 1] == pytest.approx(plain[left_wrist, 1])
    np.testing.assert_allclose(flipped[kp.FLIP_INDEX, 0], INPUT[1] - plain[:, 0])


def test_boundary_and_missing_frames_replicate_the_key_frame(tiny, tmp_path):
    ds = _dataset(tiny)
    first = next(i for i, s in enumerate(ds.samples) if s.frame == 0)
    frames = ds[first]["frames"]
    assert frames.shape == (3, 3, *INPUT) and frames.dtype == torch.uint8
    assert torch.equal(frames[0], frames[1]) and not torch.equal(frames[1], frames[2])
    last = next(i for i, s in enumerate(ds.samples) if s.frame == 5 and s.seq == 0)
    frames = ds[last]["frames"]
    assert torch.equal(frames[2], frames[1]) and not torch.equal(frames[0], frames[1])

    _, root = make_tiny_dataset(tmp_path)
    (root / "images/train/seq0/000003.jpg").unlink()
    ds = _dataset(root)
    assert ds.missing_frames == 1
    mid = next(i for i, s in enumerate(ds.samples) if s.frame == 2 and s.seq == 0)
    frames = ds[mid]["frames"]
    assert torch.equal(frames[2], frames[1]) and not torch.equal(frames[0], frames[1])


def test_missing_key_frame_names_the_file(tmp_path):
    from diffpose.errors import DataError

    _, root = make_tiny_dataset(tmp_path, sequences=1)
    (root / "images/train/seq0/000002.jpg").unlink()
    ds = _dataset(root)
    with pytest.raises(DataError, match="000002.jpg: key frame missing"):
        ds[2]


def test_targets_weights_zero_for_invisible_and_cropped_out_joints(tiny):
    ds = _dataset(tiny)
    for i, sample in enumerate(ds.samples):
        item = ds[i]
        assert item["target"].shape == (kp.NUM_KEYPOINTS, *HEATMAP)
        weight = item["target_weight"].numpy()
        np.testing.assert_array_equal(weight > 0, sample.keypoints[:, 2] > 0)
        # the peak of a visible joint's heatmap sits where the joint maps (heatmap = crop / 4)
        j = kp.NAME_TO_INDEX["left_knee"]
        crop_pt = tf.apply_affine(sample.keypoints[j, :2], item["matrix"].numpy()) / 4.0
        y, x = np.unravel_index(int(item["target"][j].argmax()), HEATMAP)
        assert abs(x - crop_pt[0]) <= 1.0 and abs(y - crop_pt[1]) <= 1.0
    # a box far off the person: every joint leaves the crop and loses its weight
    s = ds.samples[0]
    off = type(s)(s.seq, s.frame, (1000.0, 1000.0, 48.0, 64.0), 1.0, s.keypoints)
    ds.samples[0] = off
    assert float(ds[0]["target_weight"].sum()) == 0.0


def test_augmentation_depends_only_on_seed_epoch_index(tiny):
    ds = _dataset(tiny, train=True, augmentation=tf.Augmentation(), seed=3)
    n = len(ds)
    a, b = ds[n + 4], ds[n + 4]
    assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["target"], b["target"])
    epochs = [ds[e * n + 4]["matrix"] for e in range(4)]
    assert any(not torch.equal(epochs[0], m) for m in epochs[1:])
    other_seed = _dataset(tiny, train=True, augmentation=tf.Augmentation(), seed=4)
    assert not torch.equal(other_seed[n + 4]["matrix"], a["matrix"])


def test_loader_batches_identical_with_and_without_workers(tiny):
    def batches(workers):
        ds = _dataset(tiny, train=True, augmentation=tf.Augmentation(), seed=1)
        loader, sampler = make_loader(ds, batch_size=4, shuffle=True, seed=1, workers=workers)
        sampler.set_epoch(2)
        return [(b["index"], b["target"]) for b in loader]

    serial, parallel = batches(0), batches(2)
    assert len(serial) == 3
    for (i0, t0), (i1, t1) in zip(serial, parallel):
        assert torch.equal(i0, i1) and torch.equal(t0, t1)


def test_distributed_shards_cover_the_dataset_once(tiny):
    ds = _dataset(tiny)
    seen = []
    for rank in range(2):
        loader, sampler = make_loader(ds, batch_size=5, shuffle=True, seed=0, rank=rank, world_size=2)
        sampler.set_epoch(1)
        seen += [int(i) for b in loader for i in b["index"]]
    assert sorted(seen) == list(range(len(ds)))


def test_frame_cache_evicts_least_recently_used_within_its_memory(tiny):
    from diffpose.data.clips import FrameCache

    paths = [str(tiny / f"images/train/seq0/{f:06d}.jpg") for f in range(3)]
    one = cv2.imread(paths[0]).nbytes
    cache = FrameCache(2.5 * one / 1e6)  # room for two frames
    for p in (paths[0], paths[1], paths[0], paths[2]):  # paths[1] is the least recently used
        cache.get(p)
    assert (cache.hits, cache.misses) == (1, 3)
    cache.get(paths[0])
    cache.get(paths[1])
    assert (cache.hits, cache.misses) == (2, 4) and cache.used <= 2.5 * one
    assert cache.get(str(tiny / "images/train/seq0/999999.jpg")) is None
