"""Inference stage: GT-perfect heatmaps through the whole chain give ~100 mAP; file layout."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import torch

from diffpose.data import keypoints as kp
from diffpose.data import transforms as tf
from diffpose.data.clips import load_sequences
from diffpose.inference.boxes import gt_samples
from diffpose.stages import infer
from tests.test_clips import HEATMAP, INPUT, HeatmapCodec, make_tiny_dataset

SETTINGS = {"steps": 1, "ensemble": 1, "boxes": "gt", "batch_size": 4, "seed": 0}


class OracleModel(torch.nn.Module):
    """Returns the ground-truth heatmaps of the samples in dataset order: whatever comes out of
    the evaluator then measures only the decode -> inverse affine -> writer -> evaluator chain."""

    def __init__(self, annotations, num_frames: int = 3) -> None:
        super().__init__()
        self.cfg = SimpleNamespace(input_size=INPUT, heatmap_size=HEATMAP, sigma=1.5, num_frames=num_frames,
                                   num_joints=kp.NUM_KEYPOINTS, to_dict=lambda: {})
        self.weight = torch.nn.Parameter(torch.zeros(1))
        codec = HeatmapCodec(input_size=INPUT, heatmap_size=HEATMAP, sigma=1.5)
        sequences = load_sequences(annotations)
        position = {}
        for seq, obj in sequences:
            for ann in obj["annotations"]:
                position[(seq.name, ann["image_id"])] = np.asarray(ann["keypoints"], float).reshape(-1, 3)
        self.targets = []
        for sample in gt_samples(sequences):
            seq = sequences[sample.seq][0]
            kpts = position[(seq.name, seq.image_ids[sample.frame])].copy()
            center, size = tf.box_to_center_size(sample.box, INPUT[1] / INPUT[0], 1.25)
            kpts[:, :2] = tf.apply_affine(kpts[:, :2], tf.crop_affine(center, size, INPUT))
            self.targets.append(torch.as_tensor(codec.encode(kpts.astype(np.float32))[0]))
        self.calls = []

    def predict(self, frames, *, steps=1, ensemble=1, generator=None, eta=1.0, combine_rule="mean_heatmap"):
        self.calls.append((tuple(frames.shape), steps, ensemble))
        done = sum(c[0][0] for c in self.calls[:-1])
        return torch.stack(self.targets[done : done + frames.shape[0]])


def test_gt_heatmaps_give_full_map_and_every_frame_is_written(tmp_path):
    from diffpose.evaluation.posetrack_map import evaluate_folders

    ann_dir, root = make_tiny_dataset(tmp_path / "data", split="val", sequences=2, frames=6, empty_frames=(4,))
    model = OracleModel(ann_dir)
    out = tmp_path / "pred"
    (out).mkdir()
    (out / "stale.json").write_text("{}")
    metrics = infer.run(checkpoint="x/model.pt", annotations=str(ann_dir), images=str(root), out=str(out),
                        settings=dict(SETTINGS, steps=3, ensemble=2), model=model, payload={}, progress=False)
    assert metrics["person_clips"] == 2 * 5 and metrics["steps"] == 3
    assert {c[1:] for c in model.calls} == {(3, 2)}
    assert all(c[0][1:] == (3, 3, *INPUT) for c in model.calls)
    assert sorted(p.name for p in out.glob("*.json")) == ["seq0.json", "seq1.json"]
    for name in ("seq0", "seq1"):
        gt = json.loads((ann_dir / f"{name}.json").read_text())
        pred = json.loads((out / f"{name}.json").read_text())
        assert [im["id"] for im in pred["images"]] == [im["id"] for im in gt["images"]]
        assert all(isinstance(a["track_id"], int) for a in pred["annotations"])
        assert not [a for a in pred["annotations"] if a["image_id"] == gt["images"][4]["id"]]
    result = evaluate_folders(ann_dir, out)
    assert result["Total"] > 99.0, result


def test_shifted_heatmaps_lower_the_map(tmp_path):
    """The same chain must be able to fail: heatmaps rolled by 3 cells miss most joints."""
    from diffpose.evaluation.posetrack_map import evaluate_folders

    ann_dir, root = make_tiny_dataset(tmp_path / "data", split="val", sequences=1, frames=4)
    model = OracleModel(ann_dir)
    model.targets = [torch.roll(t, shifts=3, dims=2) for t in model.targets]
    out = tmp_path / "pred"
    infer.run(checkpoint="x/model.pt", annotations=str(ann_dir), images=str(root), out=str(out),
              settings=SETTINGS, model=model, payload={}, progress=False)
    assert evaluate_folders(ann_dir, out)["Total"] < 50.0


def test_detection_boxes_are_used_as_written_with_their_scores(tmp_path):
    """One box-score threshold, the detect stage's: infer takes every box of the file."""
    ann_dir, root = make_tiny_dataset(tmp_path / "data", split="val", sequences=1, frames=4)
    gt = json.loads((ann_dir / "seq0.json").read_text())
    dets = [{"image_id": a["image_id"], "bbox": a["bbox"], "score": 0.9, "category_id": 1} for a in gt["annotations"]]
    dets.append({"image_id": gt["images"][0]["id"], "bbox": [0, 0, 20, 20], "score": 0.1, "category_id": 1})
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps(dets))
    model = OracleModel(ann_dir)
    model.targets.append(model.targets[0])  # a heatmap for the fifth box
    out = tmp_path / "pred"
    metrics = infer.run(checkpoint="x/model.pt", annotations=str(ann_dir), images=str(root), out=str(out),
                        settings=dict(SETTINGS, boxes=str(boxes)), model=model, payload={}, progress=False)
    assert metrics["person_clips"] == 5  # the 0.1 box too (the detect stage wrote it, so it passed its threshold)
    pred = json.loads((out / "seq0.json").read_text())
    scores = np.array([a["scores"] for a in pred["annotations"]])
    peaks = np.array([a["keypoints"][2::3] for a in pred["annotations"]])
    np.testing.assert_allclose(scores, peaks, atol=1e-3)
    assert scores.max() <= 0.9 + 1e-6 and scores.max() > 0.8  # peak (~1) x box score 0.9


def test_cli_overrides_replace_params():
    params = {"infer": dict(SETTINGS)}
    s = infer.infer_settings(params, steps=4, ensemble=None)
    assert (s["steps"], s["ensemble"]) == (4, 1)


class MirrorOracle(OracleModel):
    """A perfect, mirror-aware model: on the mirrored crops of a batch (the predictor's second call)
    it returns the mirrored ground truth with left and right swapped, as a real model would."""

    def __init__(self, annotations) -> None:
        super().__init__(annotations)
        self.done, self.last, self.mirrored_calls = 0, None, 0

    def predict(self, frames, *, steps=1, ensemble=1, generator=None, eta=1.0, combine_rule="mean_heatmap"):
        mirrored = self.last is not None and torch.equal(frames, self.last.flip(-1))
        self.last = None if mirrored else frames
        if mirrored:
            self.mirrored_calls += 1
            return self.batch.flip(-1)[:, torch.as_tensor(kp.FLIP_INDEX)]
        self.batch = torch.stack(self.targets[self.done : self.done + frames.shape[0]])
        self.done += frames.shape[0]
        return self.batch


def test_flip_test_keeps_a_perfect_mirror_aware_model_perfect(tmp_path):
    from diffpose.evaluation.posetrack_map import evaluate_folders

    ann_dir, root = make_tiny_dataset(tmp_path / "data", split="val", sequences=1, frames=6)
    model = MirrorOracle(ann_dir)
    out = tmp_path / "pred"
    metrics = infer.run(checkpoint="x/model.pt", annotations=str(ann_dir), images=str(root), out=str(out),
                        settings=dict(SETTINGS, flip_test=True), model=model, payload={}, progress=False)
    assert metrics["flip_test"] is True and model.mirrored_calls == model.done // SETTINGS["batch_size"] + (
        model.done % SETTINGS["batch_size"] > 0)
    assert evaluate_folders(ann_dir, out)["Total"] > 99.0


def test_unflip_moves_columns_and_swaps_left_and_right():
    """A peak the model puts on the mirrored crop's left wrist at column c is the unmirrored crop's
    right wrist at column w - 1 - c; centre-line joints only move."""
    from diffpose.inference.predictor import unflip_heatmaps

    j, h, w = kp.NUM_KEYPOINTS, 8, 6
    mirrored = torch.zeros(1, j, h, w)
    lw, rw, nose = kp.NAME_TO_INDEX["left_wrist"], kp.NAME_TO_INDEX["right_wrist"], kp.NAME_TO_INDEX["nose"]
    mirrored[0, lw, 3, 1] = 1.0
    mirrored[0, nose, 2, 0] = 1.0
    back = unflip_heatmaps(mirrored)
    assert back[0, rw, 3, w - 2] == 1.0 and back[0, lw].sum() == 0
    assert back[0, nose, 2, w - 1] == 1.0
    assert torch.equal(unflip_heatmaps(back), mirrored)


def test_flip_test_is_off_unless_asked():
    assert infer.infer_settings({"infer": dict(SETTINGS)}).get("flip_test", False) is False
    assert infer.infer_settings({"infer": dict(SETTINGS)}, flip_test=True)["flip_test"] is True
