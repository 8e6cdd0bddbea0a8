"""What MLflow tracking costs a stage execution: the same stage with tracking on and off.

    python benchmarks/bench_tracking.py [--repeats 5]

Runs `diffpose evaluate` (the shortest stage, so the overhead is most visible) on the tiny
synthetic benchmark as a whole process, alternating DIFFPOSE_TRACKING=off and the default
(a SQLite store in a temporary folder, created once before timing, as the first stage of a
pipeline creates it), and prints the median wall time of each and their difference, plus
`diffpose --help` start-up. Every tracked run is checked to be in the store as FINISHED.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    exe = [sys.executable, "-m", "diffpose"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = {**os.environ, "DIFFPOSE_TRACKING": "off"}
        subprocess.run([*exe, "synth", "--out", str(root / "synth"), "--preset", "tiny", "--no-progress"],
                       env=base, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        gt = root / "synth" / "annotations" / "val"
        cmd = [*exe, "evaluate", "--gt", str(gt), "--pred", str(gt), "--out", str(root / "m.json")]
        tracked = {**os.environ, "DIFFPOSE_TRACKING": "on", "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
        created = _run(cmd, tracked)  # the first tracked stage creates the store through MLflow
        help_times, off, on = [], [], []
        for _ in range(args.repeats):
            help_times.append(_run([*exe, "--help"], base))
            off.append(_run(cmd, base))
            on.append(_run(cmd, tracked))
        with sqlite3.connect(root / "mlflow.db") as db:
            finished = db.execute("SELECT COUNT(*) FROM runs WHERE status = 'FINISHED'").fetchone()[0]
    assert finished == args.repeats + 1, f"{finished} finished runs in the store, expected {args.repeats + 1}"
    m_off, m_on = statistics.median(off), statistics.median(on)
    print(f"diffpose --help: {statistics.median(help_times):.3f} s (median of {args.repeats})")
    print(f"first tracked run (creates the MLflow store): {created:.2f} s")
    print(f"evaluate, tracking off: {m_off:.3f} s; tracking on: {m_on:.3f} s (medians of {args.repeats})")
    print(f"tracking overhead per stage execution: {m_on - m_off:+.3f} s; {finished} runs FINISHED in the store")


if __name__ == "__main__":
    main()
