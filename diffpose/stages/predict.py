"""``diffpose predict VIDEO``: run a checkpoint on any video, no annotations needed.

    diffpose predict street.mp4 --checkpoint models/diffpose/model.pt --detector hog --out results/street
    diffpose predict street.mp4 --checkpoint C --boxes boxes.json --out DIR
    diffpose predict street.mp4 --checkpoint C --detector synthetic --detector-checkpoint models/detector/detector.pt --out DIR

Boxes come from a file (COCO results: ``image_id`` = 0-based frame number, or ``file_name``
``<video stem>/%06d.jpg``) or from a detector of diffpose.detect run on every frame, with the
options of its ``detect.<backend>`` section of ``--params`` (defaults without it); the
``synthetic`` detector's checkpoint is ``--detector-checkpoint``, else that section's
``checkpoint``, else models/detector/detector.pt. Writes ``OUT/<stem>.json`` (PoseTrack18
predictions, every frame) and ``OUT/<stem>_overlay.mp4``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from diffpose.errors import ConfigError, DataError

DEFAULT_DETECTOR_CHECKPOINT = "models/detector/detector.pt"  # the train_detector stage's output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="input video (anything OpenCV decodes)")
    parser.add_argument("--checkpoint", required=True, help="model checkpoint (model.pt)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--boxes", help="person boxes file (COCO results)")
    group.add_argument("--detector", default="hog", help="detector backend from diffpose.detect (default hog)")
    parser.add_argument("--detector-checkpoint", default=None,
                        help="checkpoint of --detector synthetic (default detect.synthetic.checkpoint of --params, "
                             f"else {DEFAULT_DETECTOR_CHECKPOINT})")
    parser.add_argument("--params", default=None,
                        help="params file whose detect.<backend> section gives the detector's options (default: none, "
                             "the backend's defaults)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--steps", type=int, default=1, help="denoising steps (default 1)")
    parser.add_argument("--ensemble", type=int, default=1, help="noise starts averaged (default 1)")
    parser.add_argument("--flip-test", action="store_true", help="also predict mirrored crops and average (2x time)")
    parser.add_argument("--max-frames", type=int, default=0, help="only the first N frames (0 = all)")
    parser.add_argument("--score-threshold", type=float, default=0.2, help="minimum box score (default 0.2)")
    parser.add_argument("--draw-threshold", type=float, default=0.2, help="minimum joint score drawn (default 0.2)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def extract(video: Path, folder: Path, max_frames: int = 0) -> tuple[list[str], float]:
    """Decode ``video`` into ``folder/<stem>/%06d.jpg``; returns (relative names, fps)."""
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise DataError(f"{video}: cannot open video (missing file or unsupported format)")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    names: list[str] = []
    (folder / video.stem).mkdir(parents=True, exist_ok=True)
    try:
        while not max_frames or len(names) < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            name = f"{video.stem}/{len(names):06d}.jpg"
            cv2.imwrite(str(folder / name), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
            names.append(name)
    finally:
        cap.release()
    if not names:
        raise DataError(f"{video}: no frame could be decoded")
    return names, fps


def detector_options(detector: str, params_file: str | None = None, checkpoint: str | None = None) -> dict[str, Any]:
    """The options of ``detector``: its ``detect.<backend>`` section of ``params_file`` (none without
    one), with the synthetic backend's checkpoint from ``checkpoint``, that section, or the default."""
    from diffpose.detect.backends import BACKENDS

    if detector not in BACKENDS:
        raise ConfigError(f"--detector must be one of {', '.join(BACKENDS)}, got {detector!r}")
    if detector == "precomputed":
        raise ConfigError("--detector precomputed: give the boxes file with --boxes FILE instead")
    if checkpoint and detector != "synthetic":
        raise ConfigError(f"--detector-checkpoint is the synthetic detector's; --detector is {detector}")
    options: dict[str, Any] = {}
    if params_file:
        from diffpose.config import load_params, section

        options = dict(section(load_params(params_file), "detect", params_file).get(detector) or {})
    if detector == "synthetic":
        options["checkpoint"] = checkpoint or options.get("checkpoint") or DEFAULT_DETECTOR_CHECKPOINT
        if not Path(options["checkpoint"]).is_file():
            raise DataError(f"{options['checkpoint']}: detector checkpoint not found (train one: dvc repro "
                            "train_detector, or diffpose train-detector; or give --detector-checkpoint)")
    return options


def detect_boxes(detector_name: str, folder: Path, names: list[str], threshold: float, progress: bool,
                 options: dict[str, Any] | None = None) -> list:
    from diffpose.progress import track

    from diffpose.data.clips import Sample
    from diffpose.detect.backends import make_detector

    detector = make_detector(detector_name, options)
    samples = []
    for i, name in enumerate(track(names, f"detect ({detector_name})", "frame", enabled=progress)):
        image = cv2.imread(str(folder / name))
        for x, y, w, h, score in detector.detect([image], [name])[0]:
            if score >= threshold and w > 0 and h > 0:
                samples.append(Sample(0, i, (float(x), float(y), float(w), float(h)), float(score)))
    return samples


def run(*, video: str, checkpoint: str, out: str, boxes: str | None = None, detector: str = "hog",
        detector_checkpoint: str | None = None, params: str | None = None, steps: int = 1, ensemble: int = 1,
        flip_test: bool = False, max_frames: int = 0, score_threshold: float = 0.2,
        draw_threshold: float = 0.2, batch_size: int = 16, device: str = "auto", progress: bool = True) -> dict[str, Any]:
    from diffpose.data.clips import ClipDataset, Sequence
    from diffpose.data.codec import HeatmapCodec
    from diffpose.inference.boxes import detection_samples
    from diffpose.inference.overlay import draw_people, write_video
    from diffpose.inference.predictor import predict_dataset
    from diffpose.inference.writer import write_predictions
    from diffpose.stages.infer import geometry, load_model

    video_path = Path(video)
    out_dir = Path(out)
    options = None if boxes else detector_options(detector, params, detector_checkpoint)  # errors before any work
    model, payload = load_model(checkpoint, device)
    cfg = model.cfg
    box_enlarge, frame_stride = geometry(payload, None)
    with tempfile.TemporaryDirectory(prefix="diffpose-predict-") as tmp:
        folder = Path(tmp)
        names, fps = extract(video_path, folder, max_frames)
        seq = Sequence(video_path.stem, str(video_path), tuple(names), tuple(range(len(names))))
        if boxes:
            samples = detection_samples(boxes, [(seq, {})], score_threshold=score_threshold)
        else:
            samples = detect_boxes(detector, folder, names, score_threshold, progress, options)
        dataset = ClipDataset([seq], samples, folder, input_size=tuple(cfg.input_size), num_frames=cfg.num_frames,
                              frame_stride=frame_stride, box_enlarge=box_enlarge, cache_mb=256)
        codec = HeatmapCodec(input_size=tuple(cfg.input_size), heatmap_size=tuple(cfg.heatmap_size), sigma=cfg.sigma)
        preds = predict_dataset(model, dataset, codec, batch_size=batch_size, steps=steps, ensemble=ensemble,
                                flip_test=flip_test, progress=progress, desc="pose")
        write_predictions(out_dir, [seq], samples, preds.keypoints, preds.scores)
        by_frame: dict[int, list[int]] = {}
        for i, s in enumerate(samples):
            by_frame.setdefault(s.frame, []).append(i)

        def frames():
            for f, name in enumerate(names):
                people = [(preds.keypoints[i], preds.scores[i], np.asarray(samples[i].box)) for i in by_frame.get(f, [])]
                yield draw_people(cv2.imread(str(folder / name)), people, threshold=draw_threshold)

        overlay = out_dir / f"{video_path.stem}_overlay.mp4"
        count = write_video(overlay, frames(), fps)
    return {"frames": count, "people": len(samples), "predictions": str(out_dir / f"{video_path.stem}.json"),
            "overlay": str(overlay), "person_clips_per_second": round(preds.clips_per_second, 2)}


def main(args: argparse.Namespace) -> int:
    from diffpose.config import check_options

    check_options({"--steps": ("infer.steps", args.steps), "--ensemble": ("infer.ensemble", args.ensemble),
                   "--batch-size": ("infer.batch_size", args.batch_size),
                   "--score-threshold": ("detect.score_threshold", args.score_threshold),
                   "--draw-threshold": ({"type": "number"}, args.draw_threshold),
                   "--max-frames": ({"type": "integer", "minimum": 0}, args.max_frames)})
    result = run(video=args.video, checkpoint=args.checkpoint, out=args.out, boxes=args.boxes,
                 detector=args.detector, detector_checkpoint=args.detector_checkpoint, params=args.params,
                 steps=args.steps, ensemble=args.ensemble, flip_test=args.flip_test,
                 max_frames=args.max_frames,
                 score_threshold=args.score_threshold, draw_threshold=args.draw_threshold,
                 batch_size=args.batch_size, device=args.device, progress=not args.no_progress)
    print(f"predict: {result['people']} people in {result['frames']} frames -> {result['predictions']}, "
          f"{result['overlay']}")
    return 0
