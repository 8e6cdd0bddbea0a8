"""PoseTrack mAP speed: the vectorised evaluator against a per-person Python loop of the same algorithm.

    python benchmarks/bench_evaluate.py [--sequences 50] [--frames 30] [--people 5] [--repeat 3]

Generates the speed-anchor workload of ../shared/docs/posetrack-eval.md in a temporary folder:
50 sequences x 30 labelled frames x 5 people, plus one false-positive person and four ignore
polygons per frame (PoseTrack18 files, GT and predictions). It prints the evaluation time split
into load (JSON parsing + validation + array building) and compute (ignore regions, assignment,
AP), people per second, and, measured in the same run, a straightforward per-person / per-point
Python loop implementation of the same algorithm (sharing the load step) as the baseline. The
official poseval is not installable here; its documented time on this workload (20-38 s on two
cores) is printed as the anchor. Both implementations must give the same APs (checked).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from diffpose.data import keypoints as kp
from diffpose.evaluation import posetrack_map as pm

OFFICIAL_SECONDS = (20.0, 38.0)  # poseval on this workload, 2 cores (docs/posetrack-eval.md)
LABELLED = np.flatnonzero(kp.LABELLED_IN_POSETRACK18)


# ---- workload -------------------------------------------------------------------------------

def _person(rng, cx, cy, scale):
    kps = np.zeros((kp.NUM_KEYPOINTS, 3))
    kps[LABELLED, 0] = cx + rng.normal(0, scale, len(LABELLED))
    kps[LABELLED, 1] = cy + rng.normal(0, 2 * scale, len(LABELLED))
    kps[LABELLED, 2] = 1
    kps[rng.random(kp.NUM_KEYPOINTS) < 0.1] = 0  # some joints unlabelled
    return kps


def _polygon(rng):
    n = int(rng.integers(6, 14))
    cx, cy, r = rng.uniform(0, 1920), rng.uniform(0, 1080), rng.uniform(40, 160)
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = r * rng.uniform(0.5, 1.0, n)
    return np.round(cx + rad * np.cos(ang)).tolist(), np.round(cy + rad * np.sin(ang)).tolist()


def write_workload(root: Path, n_seq: int, n_frames: int, n_people: int, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    gt_dir, pred_dir = root / "gt", root / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    for s in range(n_seq):
        name = f"{s:06d}_bench"
        gt = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "person", "keypoints": list(kp.KEYPOINT_NAMES)}]}
        pred = {"images": [], "annotations": []}
        for f in range(n_frames):
            image_id = int(f"1{s:06d}{f:04d}")
            polys = [_polygon(rng) for _ in range(4)]
            gt["images"].append({
                "id": image_id, "file_name": f"images/val/{name}/{f:06d}.jpg", "vid_id": f"{s:06d}",
                "frame_id": image_id, "nframes": n_frames, "is_labeled": True,
                "ignore_regions_x": [p[0] for p in polys], "ignore_regions_y": [p[1] for p in polys],
            })
            pred["images"].append({"id": image_id, "file_name": f"images/val/{name}/{f:06d}.jpg"})
            for p in range(n_people + 1):
                cx, cy = 150 + 330 * p + rng.uniform(-40, 40), rng.uniform(300, 700)
                scale = rng.uniform(15, 40)
                if p < n_people:
                    kps = _person(rng, cx, cy, scale)
                    head = [cx - scale, cy - 4 * scale, 1.5 * scale, 1.8 * scale]
                    gt["annotations"].append({
                        "id": image_id * 100 + p, "image_id": image_id, "track_id": p, "category_id": 1,
                        "keypoints": kps.ravel().tolist(), "bbox_head": [float(v) for v in head],
                        "bbox": [cx - 3 * scale, cy - 5 * scale, 6 * scale, 10 * scale], "scores": [],
                    })
                    present = ~(kps == 0).all(axis=1)
                    kps = kps.copy()
                    kps[present, :2] += rng.normal(0, 0.15 * scale, (present.sum(), 2))
                else:  # the false positive
                    kps = _person(rng, cx, cy, scale)
                kps[rng.random(kp.NUM_KEYPOINTS) < 0.05] = 0
                pred["annotations"].append({
                    "image_id": image_id, "track_id": p, "category_id": 1, "keypoints": kps.ravel().tolist(),
                    "scores": rng.uniform(0.05, 1.0, kp.NUM_KEYPOINTS).tolist(), "score": float(rng.uniform(0.2, 1)),
                })
        (gt_dir / f"{name}.json").write_text(json.dumps(gt))
        (pred_dir / f"{name}.json").write_text(json.dumps(pred))
    return gt_dir, pred_dir


# ---- baseline: the same algorithm as plain per-person Python loops ---------------------------

def _inside(x, y, xs, ys):
    """Strictly inside, even-odd rule; on an edge or vertex is outside."""
    n, inside = len(xs), False
    for i in range(n):
        x1, y1, x2, y2 = xs[i], ys[i], xs[(i + 1) % n], ys[(i + 1) % n]
        if (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1) == 0 and min(x1, x2) <= x <= max(x1, x2) and min(y1, y2) <= y <= max(y1, y2):
            return False
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def _points(a, polys):
    pts = {}
    for j, c in enumerate(kp.POSETRACK15_TO_COCO17):
        x, y, v = a["keypoints"][3 * c : 3 * c + 3]
        if (x == 0 and y == 0 and v == 0) or any(_inside(x, y, xs, ys) for xs, ys in polys):
            continue
        pts[j] = (x, y)
    return pts


def baseline_compute(pairs: list[pm.SequencePair]) -> np.ndarray:
    scores = [[] for _ in range(pm.J)]
    labels = [[] for _ in range(pm.J)]
    n_gt = np.zeros(pm.J)
    for pair in pairs:
        gt_by_image, pred_by_image = {}, {}
        for a in pair.gt["annotations"]:
            gt_by_image.setdefault(a["image_id"], []).append(a)
        for a in pair.pred["annotations"]:
            pred_by_image.setdefault(a["image_id"], []).append(a)
        for pos in pm.evaluated_frames(pair.gt):
            gim, pim = pair.gt["images"][pos], pair.pred["images"][pos]
            polys = list(zip(gim.get("ignore_regions_x") or [], gim.get("ignore_regions_y") or []))
            gts = []
            for a in gt_by_image.get(gim["id"], []):
                pts = _points(a, polys)
                if pts:
                    x, y, w, h = a["bbox_head"]
                    gts.append((pts, 0.6 * float(np.linalg.norm([x + w - x, y + h - y]))))
            preds = []
            for a in pred_by_image.get(pim["id"], []):
                pts = _points(a, polys)
                if pts:
                    s = [a["scores"][c] for c in kp.POSETRACK15_TO_COCO17] if a.get("scores") else [pm.MIN_SCORE] * pm.J
                    preds.append((pts, s))
            for pts, _ in gts:
                for j in pts:
                    n_gt[j] += 1
            match = [[{j for j, (x, y) in p.items() if j in g and np.hypot(x - g[j][0], y - g[j][1]) / hs <= 0.5}
                      for g, hs in gts] for p, _ in preds]
            pck = [[len(match[i][k]) / len(gts[k][0]) for k in range(len(gts))] for i in range(len(preds))]
            best = []
            for i in range(len(preds)):
                k = max(range(len(gts)), key=lambda k: (pck[i][k], -k)) if gts else None
                best.append(k)
            owner = {}
            for k in range(len(gts)):
                cands = [i for i in range(len(preds)) if best[i] == k and pck[i][k] > 0]
                if cands:
                    owner[max(cands, key=lambda i: (pck[i][k], -i))] = k
            for i, (p, s) in enumerate(preds):
                for j in p:
                    scores[j].append(s[j])
                    labels[j].append(i in owner and j in match[i][owner[i]])
    return np.array([pm.voc_ap(np.array(scores[j]), np.array(labels[j], bool), n_gt[j])[0] for j in range(pm.J)])


# ---- main -------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sequences", type=int, default=50)
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--people", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3, help="best of N timings of the vectorised evaluator")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_evaluate_") as tmp:
        t = time.perf_counter()
        gt_dir, pred_dir = write_workload(Path(tmp), args.sequences, args.frames, args.people)
        print(f"workload: {args.sequences} sequences x {args.frames} labelled frames x {args.people} people "
              f"+ 1 false positive + 4 ignore polygons per frame (written in {time.perf_counter() - t:.1f} s)")
        best = None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            pairs = pm.load_pairs(gt_dir, pred_dir)
            data = pm.prepare(pairs)
            t1 = time.perf_counter()
            result = pm.evaluate_data(data)
            t2 = time.perf_counter()
            if best is None or t2 - t0 < best[0] + best[1]:
                best = (t1 - t0, t2 - t1)
        load, compute = best
        n_people = len(data.gt.frame) + len(data.pred.frame)
        clean = pm.apply_ignore_regions(data)
        ignored = int(data.gt.has.sum() + data.pred.has.sum() - clean.gt.has.sum() - clean.pred.has.sum())
        print(f"people: {len(data.gt.frame)} GT, {len(data.pred.frame)} predicted; "
              f"{ignored} of {int(data.gt.has.sum() + data.pred.has.sum())} points inside ignore polygons; "
              f"Total mAP {result.table()['Total']:.4f}")
        print(f"diffpose (vectorised): {load + compute:.3f} s  = load {load:.3f} s + compute {compute:.3f} s  "
              f"({n_people / (load + compute):,.0f} people/s; compute alone {n_people / compute:,.0f} people/s)")

        t0 = time.perf_counter()
        base_ap = baseline_compute(pairs)
        t_base = time.perf_counter() - t0
        same = np.allclose(base_ap, result.ap, atol=1e-9, equal_nan=True)
        print(f"baseline (per-person Python loops, same load): {load + t_base:.3f} s = load {load:.3f} s + "
              f"compute {t_base:.3f} s; compute speed-up x{t_base / compute:.0f}, overall x{(load + t_base) / (load + compute):.1f}; "
              f"same APs: {'yes' if same else 'NO'}")
        lo, hi = OFFICIAL_SECONDS
        print(f"official poseval (documented anchor, not run here): {lo:.0f}-{hi:.0f} s -> "
              f"x{lo / (load + compute):.0f} to x{hi / (load + compute):.0f} faster")
        if not same:
            raise SystemExit("vectorised and loop implementations disagree")


if __name__ == "__main__":
    main()
