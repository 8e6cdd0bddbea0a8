"""Contact sheet: labelled frames of a sequence with the ground truth drawn on, as one PNG.

    python -m diffpose.data.synthetic.preview --data data/synth --split val --out sheet.png

Skeletons are green (red when the person is marked ``degraded``), joints are dots (left side
orange, right side blue), the head box cyan, the person box yellow and ignore regions magenta.
Works for any PoseTrack18 sequence whose video sits at ``DATA/videos/{split}/<seq>.mp4``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import cv2
import numpy as np

from diffpose.data.keypoints import KEYPOINT_NAMES, NUM_KEYPOINTS, SKELETON
from diffpose.errors import DataError
from diffpose.io import atomic_path, read_json


def draw_truth(image: np.ndarray, gt_image: dict, anns: list[dict], scale: int = 2) -> np.ndarray:
    """The frame enlarged ``scale`` times with the ground truth of ``anns`` drawn on."""
    img = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    for xs, ys in zip(gt_image.get("ignore_regions_x", []), gt_image.get("ignore_regions_y", [])):
        poly = (np.array([xs, ys]).T * scale).astype(np.int32)
        cv2.polylines(img, [poly], True, (255, 0, 255), 1, cv2.LINE_AA)
    for a in anns:
        k = np.array(a["keypoints"], dtype=np.float64).reshape(NUM_KEYPOINTS, 3)
        colour = (0, 0, 255) if a.get("degraded") else (0, 220, 0)
        for i, j in SKELETON:
            if k[i, 2] > 0 and k[j, 2] > 0:
                cv2.line(
                    img,
                    tuple((k[i, :2] * scale).astype(int)),
                    tuple((k[j, :2] * scale).astype(int)),
                    colour,
                    1,
                    cv2.LINE_AA,
                )
        for j in range(NUM_KEYPOINTS):
            if k[j, 2] > 0:
                name = KEYPOINT_NAMES[j]
                dot = (
                    (0, 140, 255)
                    if name.startswith("left")
                    else (255, 120, 0)
                    if name.startswith("right")
                    else (255, 255, 255)
                )
                cv2.circle(img, tuple((k[j, :2] * scale).astype(int)), 2, dot, -1, cv2.LINE_AA)
        for key, col in (("bbox", (0, 230, 230)), ("bbox_head", (230, 230, 0))):
            x, y, w, h = (np.array(a[key]) * scale).astype(int)
            cv2.rectangle(img, (x, y), (x + w, y + h), col, 1)
        cv2.putText(
            img,
            str(a["track_id"]),
            (int(a["bbox"][0] * scale) + 2, int(a["bbox"][1] * scale) + 12),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4,
            (0, 230, 230),
            1,
            cv2.LINE_AA,
        )
    return img


def contact_sheet(
    video: str | os.PathLike,
    annotation: str | os.PathLike,
    out: str | os.PathLike,
    *,
    frames: int = 8,
    columns: int = 4,
    scale: int = 2,
) -> Path:
    """Write a PNG grid of up to ``frames`` labelled frames (evenly spread) with the GT drawn on."""
    gt = read_json(annotation)
    labelled = [i for i, im in enumerate(gt["images"]) if im.get("is_labeled")]
    if not labelled:
        raise DataError(f"{annotation}: no labelled frame to preview")
    pick = sorted(
        {labelled[int(round(k))] for k in np.linspace(0, len(labelled) - 1, min(frames, len(labelled)))}
    )
    by_image: dict[int, list[dict]] = {}
    for a in gt["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise DataError(f"{video}: cannot open video")
    tiles, index = [], 0
    try:
        while pick and index <= pick[-1]:
            ok, frame = cap.read()
            if not ok:
                raise DataError(f"{video}: frame {index} cannot be decoded ({len(gt['images'])} annotated)")
            if index in pick:
                im = gt["images"][index]
                tile = draw_truth(frame, im, by_image.get(im["id"], []), scale)
                cv2.putText(
                    tile,
                    f"frame {index}",
                    (4, tile.shape[0] - 6),
                    cv2.FONT_HERSHEY_SIMPLEX,
                    0.45,
                    (255, 255, 255),
                    1,
                    cv2.LINE_AA,
                )
                tiles.append(tile)
            index += 1
    finally:
        cap.release()
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    sheet = np.vstack([np.hstack(tiles[r : r + columns]) for r in range(0, len(tiles), columns)])
    out = Path(out)
    with atomic_path(out) as tmp:
        if not cv2.imwrite(str(tmp), sheet):
            raise DataError(f"{out}: cannot write PNG")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m diffpose.data.synthetic.preview", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--data", required=True, help="benchmark root with videos/ and annotations/")
    parser.add_argument("--split", default="val")
    parser.add_argument("--seq", help="sequence name (default: the first)")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--frames", type=int, default=8)
    args = parser.parse_args(argv)
    root = Path(args.data)
    anns = sorted((root / "annotations" / args.split).glob(f"{args.seq or '*'}.json"))
    if not anns:
        raise SystemExit(f"preview: error: no annotation file under {root / 'annotations' / args.split}")
    seq = anns[0].stem
    path = contact_sheet(root / "videos" / args.split / f"{seq}.mp4", anns[0], args.out, frames=args.frames)
    print(f"preview: {seq} -> {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
