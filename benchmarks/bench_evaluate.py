"""PoseTrack mAP speed: `diffpose evaluate` against the official poseval, both as whole processes.

    python benchmarks/bench_evaluate.py [--sequences 50] [--frames 30] [--people 5] [--repeat 3]
                                        [--poseval POSEVAL_DIR --poseval-python PYTHON]

Generates the speed-anchor workload of ../shared/docs/posetrack-eval.md in a temporary folder:
50 sequences x 30 labelled frames x 5 people, plus one false-positive person and four ignore
polygons per frame (PoseTrack18 files, GT and predictions, named as poseval expects).

In-process, it prints the evaluator's own time split into read (JSON parsing, validation, array
building; files streamed as the stage does) and compute (ignore regions, assignment, AP), and a
straightforward per-person / per-point Python loop of the same algorithm on the loaded files as
a baseline; both must give the same APs (checked).

With ``--poseval`` (a checkout of the official evaluator, see docs/evaluation.md) it then times,
on the same files and in the same run, whole processes as a user starts them, alternating so that
both see the same machine load: the official ``python -m poseval.evaluate ...
--evalPoseEstimation``, ``diffpose evaluate --gt .. --pred .. --out ..`` with MLflow tracking at
its default (into a temporary SQLite store), and the same with ``DIFFPOSE_TRACKING=off``. One
untimed run of each comes first: it writes the bytecode caches (kept in the temporary folder) and
creates the store, as a user's installation and the project's store already exist. It prints
the median wall time (and CPU time) of ``--repeat`` runs of each, the ratios, and checks that poseval and diffpose
report the same per-joint APs and Total mAP (to 1e-6). ``--poseval-python`` is the interpreter of
poseval's own environment (numpy, shapely, click, tqdm, motmetrics, pandas, scipy); it defaults to
$POSEVAL_PYTHON, then to this interpreter. Without ``--poseval``, poseval's documented time on
this workload is printed instead.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from diffpose.data import keypoints as kp
from diffpose.evaluation import posetrack_map as pm

DOCUMENTED_POSEVAL_SECONDS = (20.0, 38.0)  # fallback text only: docs/posetrack-eval.md, 2 cores
LABELLED = np.flatnonzero(kp.LABELLED_IN_POSETRACK18)
TOLERANCE = 1e-6  # AP points


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
        name = f"{s:06d}_mpii_test"  # poseval parses the sequence type (mpii/bonn/mpiinew) from the name
        categories = [{"id": 1, "name": "person", "keypoints": list(kp.KEYPOINT_NAMES)}]  # poseval needs them on both
        gt = {"images": [], "annotations": [], "categories": categories}
        pred = {"images": [], "annotations": [], "categories": categories}
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


# ---- in-process: the evaluator alone, and the loop baseline ----------------------------------

def in_process(gt_dir: Path, pred_dir: Path, repeat: int) -> float:
    """Time the evaluator in this process (as the stage runs it: files streamed into arrays, then
    computed) and the loop baseline; return the Total mAP."""
    best = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        data = pm.prepare(pm.iter_pairs(gt_dir, pred_dir))
        t1 = time.perf_counter()
        result = pm.evaluate_data(data)
        t2 = time.perf_counter()
        if best is None or t2 - t0 < best[0] + best[1]:
            best = (t1 - t0, t2 - t1)
    read, compute = best
    n_people = len(data.gt.frame) + len(data.pred.frame)
    clean = pm.apply_ignore_regions(data)
    ignored = int(data.gt.has.sum() + data.pred.has.sum() - clean.gt.has.sum() - clean.pred.has.sum())
    print(f"people: {len(data.gt.frame)} GT, {len(data.pred.frame)} predicted; "
          f"{ignored} of {int(data.gt.has.sum() + data.pred.has.sum())} points inside ignore polygons; "
          f"Total mAP {result.table()['Total']:.4f}")
    print(f"in-process, best of {repeat}: {read + compute:.3f} s = read {read:.3f} s (JSON parsing, validation, "
          f"arrays) + compute {compute:.3f} s ({n_people / (read + compute):,.0f} people/s; compute alone "
          f"{n_people / compute:,.0f} people/s)")

    t0 = time.perf_counter()
    pairs = pm.load_pairs(gt_dir, pred_dir)
    t1 = time.perf_counter()
    base_ap = baseline_compute(pairs)
    t2 = time.perf_counter()
    load, t_base = t1 - t0, t2 - t1
    same = np.allclose(base_ap, result.ap, atol=1e-9, equal_nan=True)
    print(f"baseline (per-person Python loops on the loaded files): {load + t_base:.3f} s = load {load:.3f} s + "
          f"compute {t_base:.3f} s; x{(load + t_base) / (read + compute):.1f} the evaluator's time; "
          f"same APs: {'yes' if same else 'NO'}")
    if not same:
        raise SystemExit("vectorised and loop implementations disagree")
    return result.table()["Total"]


# ---- whole processes, side by side with the official poseval ---------------------------------

def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one whole process; its failure stops the benchmark with its stderr."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}: {tail}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def side_by_side(gt_dir: Path, pred_dir: Path, tmp: Path, poseval: Path, python: str, repeat: int) -> None:
    if not (poseval / "poseval" / "evaluate.py").is_file():
        raise SystemExit(f"{poseval}: not a poseval checkout (no poseval/evaluate.py); see docs/evaluation.md")
    # Both tools run as in a normal installation: bytecode cached (in a temporary folder, so neither
    # checkout is touched), tracking settings and PYTHONPATH from this shell not inherited.
    unset = ("DIFFPOSE_TRACKING", "DIFFPOSE_EXPERIMENT", "MLFLOW_TRACKING_URI", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE")
    base = {k: v for k, v in os.environ.items() if k not in unset}
    base["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    runs: dict[str, tuple[list[str], dict[str, str]]] = {
        "official poseval": (
            [python, "-m", "poseval.evaluate", "--groundTruth", f"{gt_dir}/", "--predictions", f"{pred_dir}/",
             "--evalPoseEstimation", "--outputDir", str(tmp / "poseval_out")],
            {**base, "PYTHONPATH": str(poseval)},
        ),
        "diffpose evaluate, tracking default": (
            [sys.executable, "-m", "diffpose", "evaluate", "--gt", str(gt_dir), "--pred", str(pred_dir),
             "--out", str(tmp / "diffpose_metrics.json")],
            {**base, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow' / 'mlflow.db'}"},
        ),
        "diffpose evaluate, DIFFPOSE_TRACKING=off": (
            [sys.executable, "-m", "diffpose", "evaluate", "--gt", str(gt_dir), "--pred", str(pred_dir),
             "--out", str(tmp / "diffpose_metrics_off.json")],
            {**base, "DIFFPOSE_TRACKING": "off"},
        ),
    }
    (tmp / "mlflow").mkdir()
    # Untimed first runs: they write the bytecode caches and create the MLflow store (the
    # project's own store exists once any stage has run; a new one takes seconds, once).
    first = {name: timed(cmd, env, tmp)[0] for name, (cmd, env) in runs.items()}
    print("untimed first runs (bytecode caches, MLflow store): " + ", ".join(f"{n} {w:.2f} s" for n, w in first.items()))
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for r in range(repeat):
        for name, (cmd, env) in runs.items():
            times[name].append(timed(cmd, env, tmp))
        print(f"  round {r + 1}/{repeat}: " + ", ".join(f"{name} {times[name][-1][0]:.2f} s" for name in runs))

    official = json.loads((tmp / "poseval_out" / "total_AP_metrics.json").read_text())["ap"]
    ours = json.loads((tmp / "diffpose_metrics.json").read_text())
    ours_ap = [ours["per_joint"][name] for name in kp.POSETRACK15_NAMES] + [ours["Total"]]
    off = json.loads((tmp / "diffpose_metrics_off.json").read_text())
    same = (np.allclose(ours_ap, official, atol=TOLERANCE, rtol=0, equal_nan=True)
            and off["Total"] == ours["Total"])

    median = {name: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t)) for name, t in times.items()}
    print(f"whole processes, median of {repeat} (wall, CPU = user + sys):")
    for name in runs:
        wall, cpu = median[name]
        print(f"  {name:42s} {wall:7.2f} s   CPU {cpu:6.2f} s")
    official_wall, official_cpu = median["official poseval"]
    for name in list(runs)[1:]:
        wall, cpu = median[name]
        print(f"  poseval / {name}: x{official_wall / wall:.1f} wall, x{official_cpu / cpu:.1f} CPU")
    print(f"same APs as poseval (15 joints + Total, to {TOLERANCE:g}): {'yes' if same else 'NO'} "
          f"(Total mAP: poseval {official[-1]:.6f}, diffpose {ours['Total']:.6f})")
    if not same:
        raise SystemExit("diffpose and the official poseval disagree")


# ---- main -------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sequences", type=int, default=50)
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--people", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each timing (best in-process, median of whole processes)")
    ap.add_argument("--poseval", type=Path, metavar="DIR", help="a checkout of the official poseval: time it side by side")
    ap.add_argument("--poseval-python", default=os.environ.get("POSEVAL_PYTHON", sys.executable), metavar="PYTHON",
                    help="the Python of poseval's environment (default: $POSEVAL_PYTHON, else this one)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_evaluate_") as tmp:
        t = time.perf_counter()
        gt_dir, pred_dir = write_workload(Path(tmp), args.sequences, args.frames, args.people)
        print(f"workload: {args.sequences} sequences x {args.frames} labelled frames x {args.people} people "
              f"+ 1 false positive + 4 ignore polygons per frame (written in {time.perf_counter() - t:.1f} s)")
        in_process(gt_dir, pred_dir, args.repeat)
        if args.poseval is not None:
            side_by_side(gt_dir, pred_dir, Path(tmp), args.poseval.resolve(), args.poseval_python, args.repeat)
        else:
            lo, hi = DOCUMENTED_POSEVAL_SECONDS
            print(f"official poseval: not run (give --poseval DIR); its documented time on this workload is "
                  f"{lo:.0f}-{hi:.0f} s on 2 cores")


if __name__ == "__main__":
    main()
