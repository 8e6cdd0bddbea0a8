"""Progress of long work: a tqdm bar on a terminal, timed lines with an ETA everywhere else.

Under ``dvc repro``, Snakemake or a Slurm job, stderr is not a terminal and a redrawn bar turns
into hundreds of fragments. There the same calls print one line at most every
``DIFFPOSE_PROGRESS_SECONDS`` seconds (default 15) and one when the work ends::

    train diffpose: 1216/2496 batch (49%), 2.1 batch/s, 9m40s elapsed, ETA 10m05s, loss 0.0312

``progress_bar(total, desc, unit, enabled)`` returns an object with tqdm's ``update``,
``set_postfix``, ``write`` and ``close``; ``enabled=False`` (``--no-progress``) prints nothing.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

INTERVAL_ENV = "DIFFPOSE_PROGRESS_SECONDS"


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class LineProgress:
    """tqdm's calls, printed as plain timed lines (for logs, not terminals)."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", *, file: IO[str] | None = None,
                 interval: float | None = None, initial: int = 0) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.file = file or sys.stderr
        if interval is None:
            try:
                interval = float(os.environ.get(INTERVAL_ENV, "15"))
            except ValueError:
                interval = 15.0
        self.interval = interval
        self.n = initial
        self._initial = initial
        self._start = time.perf_counter()
        self._last = self._start
        self._postfix: dict[str, Any] = {}
        self._closed = False
        self._emitted = initial

    def line(self) -> str:
        elapsed = time.perf_counter() - self._start
        done = self.n - self._initial
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"]
        if self.total:
            parts[0] += f" ({100.0 * self.n / self.total:.0f}%)"
        parts.append(f"{rate:.3g} {self.unit}/s")
        parts.append(f"{_duration(elapsed)} elapsed")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"ETA {_duration((self.total - self.n) / rate)}")
        parts += [f"{k} {v}" for k, v in self._postfix.items()]
        return f"{self.desc}: " + ", ".join(parts)

    def _emit(self) -> None:
        print(self.line(), file=self.file, flush=True)
        self._last = time.perf_counter()
        self._emitted = self.n

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.perf_counter() - self._last >= self.interval:
            self._emit()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        self._postfix.update(ordered_dict or {}, **kwargs)

    def write(self, text: str) -> None:
        print(text, file=self.file, flush=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.n != self._emitted:  # the final count, unless the last line already said it
                self._emit()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Silent:
    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def write(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        pass

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def progress_bar(total: int | None, desc: str, unit: str = "it", *, enabled: bool = True,
                 file: IO[str] | None = None, initial: int = 0) -> Any:
    """A tqdm bar on a terminal, timed lines elsewhere, nothing when ``enabled`` is False."""
    if not enabled:
        return _Silent()
    stream = file or sys.stderr
    if stream.isatty():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=stream, dynamic_ncols=True, mininterval=0.5,
                    initial=initial)
    return LineProgress(total, desc, unit, file=stream, initial=initial)


def track(items: Iterable, desc: str, unit: str = "it", *, total: int | None = None, enabled: bool = True) -> Iterator:
    """Iterate ``items`` with progress (tqdm(items) for terminals and logs alike)."""
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    bar = progress_bar(total, desc, unit, enabled=enabled)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()
