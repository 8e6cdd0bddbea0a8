"""Decode videos into PoseTrack-layout JPEG frames: ``images/{split}/<seq>/%06d.jpg``.

Resumable and kill-safe:
- every frame is written under a temporary name and renamed, so a killed process never leaves a
  half-written JPEG under a final name (leftover temporaries are swept at the next start);
- a sequence is complete when its marker ``.done/{split}/<seq>.json`` exists and records the
  same video content (sha256) and settings; complete sequences are skipped on the next run;
- folders of sequences whose video has gone are removed, so the output mirrors the input.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from concurrent.futures import as_completed
from dataclasses import dataclass
from pathlib import Path

import cv2

from diffpose.errors import DataError
from diffpose.io import atomic_path, write_json
from diffpose.pool import worker_pool

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")
MARKERS = ".done"
FRAME_PATTERN = "{:06d}.jpg"


@dataclass(frozen=True)
class VideoJob:
    video: Path
    split: str  # "" for videos directly in the videos folder
    seq: str

    def frame_dir(self, out: Path) -> Path:
        return out / "images" / self.split / self.seq if self.split else out / "images" / self.seq

    def marker(self, out: Path) -> Path:
        return out / MARKERS / (self.split or "_") / f"{self.seq}.json"


@dataclass(frozen=True)
class VideoResult:
    job: VideoJob
    frames: int = 0
    skipped: bool = False
    error: str | None = None
    seconds: float = 0.0


def find_videos(videos_dir: str | os.PathLike) -> list[VideoJob]:
    """Videos as ``{split}/<seq>.<ext>`` (PoseTrack layout) or ``<seq>.<ext>`` directly."""
    root = Path(videos_dir)
    if not root.is_dir():
        raise DataError(f"{root}: videos folder not found")
    jobs = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in VIDEO_SUFFIXES or not path.is_file():
            continue
        rel = path.relative_to(root)
        if len(rel.parts) > 2:
            raise DataError(f"{path}: expected videos as <split>/<seq>{path.suffix} or <seq>{path.suffix}")
        split = rel.parts[0] if len(rel.parts) == 2 else ""
        jobs.append(VideoJob(video=path, split=split, seq=path.stem))
    return jobs


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _is_complete(job: VideoJob, out: Path, settings: dict) -> bool:
    marker = job.marker(out)
    if not marker.exists():
        return False
    try:
        done = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if done.get("sha256") != file_sha256(job.video) or done.get("settings") != settings:
        return False
    frame_dir = job.frame_dir(out)
    return all((frame_dir / FRAME_PATTERN.format(i)).exists() for i in range(done.get("frames", -1)))


def extract_video(job: VideoJob, out: Path, jpeg_quality: int) -> VideoResult:
    """Decode one video into its frame folder; returns a result instead of raising."""
    cv2.setNumThreads(1)
    start = time.perf_counter()
    settings = {"jpeg_quality": jpeg_quality}
    try:
        if _is_complete(job, out, settings):
            done = json.loads(job.marker(out).read_text())
            return VideoResult(job, frames=done["frames"], skipped=True)
        job.marker(out).unlink(missing_ok=True)
        frame_dir = job.frame_dir(out)
        frame_dir.mkdir(parents=True, exist_ok=True)
        for stale in frame_dir.glob(".*.tmp*"):
            stale.unlink(missing_ok=True)
        cap = cv2.VideoCapture(str(job.video))
        if not cap.isOpened():
            return VideoResult(job, error=f"{job.video}: cannot open video (unsupported or corrupt file)")
        expected = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
        n = 0
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                with atomic_path(frame_dir / FRAME_PATTERN.format(n)) as tmp:
                    if not cv2.imwrite(str(tmp), frame, params):
                        raise OSError(f"cannot write {tmp}")
                n += 1
        finally:
            cap.release()
        if n == 0:
            return VideoResult(job, error=f"{job.video}: no frame could be decoded (corrupt or empty video)")
        for extra in frame_dir.glob("*.jpg"):  # frames of an older, longer version of the video
            if extra.stem.isdigit() and int(extra.stem) >= n:
                extra.unlink()
        if expected and n < expected:  # truncated or corrupt: no marker, so the next run retries it
            return VideoResult(
                job, frames=n,
                error=f"{job.video}: only {n} of the {expected} frames the container announces could be decoded "
                      f"(truncated or corrupt video)",
            )
        write_json(
            job.marker(out),
            {"video": str(job.video), "sha256": file_sha256(job.video), "frames": n,
             "announced_frames": expected, "settings": settings},
        )
        return VideoResult(job, frames=n, seconds=time.perf_counter() - start)
    except OSError as err:
        return VideoResult(job, error=f"{job.video}: {err}")


def remove_stale(out: Path, jobs: list[VideoJob]) -> list[str]:
    """Delete frame folders (and markers) of sequences that no longer have a video."""
    keep = {(j.split or "_", j.seq) for j in jobs}
    removed = []
    markers = out / MARKERS
    if not markers.is_dir():
        return removed
    for marker in sorted(markers.glob("*/*.json")):
        split, seq = marker.parent.name, marker.stem
        if (split, seq) in keep:
            continue
        job = VideoJob(video=Path(), split="" if split == "_" else split, seq=seq)
        shutil.rmtree(job.frame_dir(out), ignore_errors=True)
        marker.unlink()
        removed.append(f"{split}/{seq}")
    return removed


def extract_all(
    videos_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    jpeg_quality: int = 95,
    workers: int = 0,
    progress: bool = True,
) -> list[VideoResult]:
    """Extract every video under ``videos_dir``, one process per worker (0 = one per core)."""
    from diffpose.progress import progress_bar

    out = Path(out)
    jobs = find_videos(videos_dir)
    if not jobs:
        raise DataError(f"{videos_dir}: no videos found ({', '.join(VIDEO_SUFFIXES)})")
    for gone in remove_stale(out, jobs):
        log.info("removed frames of %s (its video is gone)", gone)
    workers = workers or os.cpu_count() or 1
    workers = max(1, min(workers, len(jobs)))
    results: list[VideoResult] = []
    bar = progress_bar(len(jobs), "frames", "video", enabled=progress)
    frames_done = 0
    start = time.perf_counter()

    def record(res: VideoResult) -> None:
        nonlocal frames_done
        results.append(res)  # a failure is reported once, by the stage, at the end
        frames_done += 0 if res.skipped else res.frames
        bar.update(1)
        bar.set_postfix(frames=frames_done, fps=f"{frames_done / max(time.perf_counter() - start, 1e-9):.0f}")

    if workers == 1:
        for job in jobs:
            record(extract_video(job, out, jpeg_quality))
    else:
        with worker_pool(workers) as pool:  # Ctrl-C / SIGTERM stop it at once
            futures = [pool.submit(extract_video, job, out, jpeg_quality) for job in jobs]
            for fut in as_completed(futures):
                record(fut.result())
    bar.close()
    order = {job: i for i, job in enumerate(jobs)}
    return sorted(results, key=lambda r: order[r.job])
