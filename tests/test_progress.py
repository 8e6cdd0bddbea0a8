"""Progress outside a terminal: timed lines with rate and ETA, a last line, nothing when disabled."""

from __future__ import annotations

import io

from diffpose import progress


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_carry_count_rate_and_eta(monkeypatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    out = io.StringIO()
    bar = progress.progress_bar(100, "train diffpose", "batch", file=out)
    assert isinstance(bar, progress.LineProgress)  # StringIO is not a terminal
    bar.interval = 10
    for _ in range(20):
        clock.now += 1.0
        bar.update(1)
        bar.set_postfix(loss="0.5")
    bar.close()
    lines = out.getvalue().splitlines()
    # one line every 10 s (at 10 and 20 s) plus the closing one
    assert lines[0] == "train diffpose: 10/100 batch (10%), 1 batch/s, 10s elapsed, ETA 1m30s, loss 0.5"
    assert lines[1].startswith("train diffpose: 20/100 batch (20%), 1 batch/s, 20s elapsed, ETA 1m20s")
    assert len(lines) == 2  # the last line already gave the final count


def test_resumed_work_counts_the_rate_of_this_run_only(monkeypatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    out = io.StringIO()
    bar = progress.progress_bar(300, "train", "batch", file=out, initial=200)
    clock.now += 50
    bar.update(100)
    bar.close()
    assert out.getvalue().strip() == "train: 300/300 batch (100%), 2 batch/s, 50s elapsed"


def test_disabled_prints_nothing_and_track_yields_everything(capsys) -> None:
    bar = progress.progress_bar(5, "x", enabled=False)
    bar.update(5)
    bar.close()
    assert list(progress.track(range(4), "y", enabled=False)) == [0, 1, 2, 3]
    assert capsys.readouterr().err == ""


def test_duration_format() -> None:
    assert [progress._duration(s) for s in (5, 75, 3725)] == ["5s", "1m15s", "1h02m"]
