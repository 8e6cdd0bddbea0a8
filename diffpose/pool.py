"""A process pool that stops with its parent: the workers of ``frames`` and ``synth``.

``concurrent.futures.ProcessPoolExecutor`` on its own keeps going after Ctrl-C (every worker
gets the KeyboardInterrupt for its current job, then takes the next one from the queue while the
parent waits in ``shutdown(wait=True)``), and its workers outlive a parent killed with SIGKILL,
holding the caller's stdout/stderr pipes open. :func:`worker_pool` fixes both:

- the workers ignore SIGINT; on any exception in the parent (KeyboardInterrupt, the
  ``StageTerminated`` that :func:`diffpose.tracking.stage_run` raises on SIGTERM, an error) the
  queued jobs are cancelled and the workers are terminated, so the parent exits within a second
  or two; an interrupted job leaves only temporary files, which its stage sweeps at the next run;
- each worker dies when its parent dies: ``PR_SET_PDEATHSIG`` on Linux, and everywhere a thread
  that polls ``os.getppid()``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

PARENT_POLL_SECONDS = 0.5
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _exit_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the polling thread below still covers it
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(PARENT_POLL_SECONDS)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _init_worker(parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _exit_with_parent(parent_pid)


def stop(pool: ProcessPoolExecutor, timeout: float = 2.0) -> None:
    """Cancel the queued jobs and end the workers now (SIGTERM, then SIGKILL after ``timeout``)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public accessor
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        with contextlib.suppress(Exception):
            proc.terminate()
    deadline = time.monotonic() + timeout
    for proc in processes:
        with contextlib.suppress(Exception):
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A spawn-context process pool of ``workers`` processes, stopped at once (see :func:`stop`)
    when the body raises, shut down normally (waiting for its jobs) otherwise."""
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(os.getpid(),)
    )
    try:
        yield pool
    except BaseException:
        stop(pool)
        raise
    pool.shutdown(wait=True)
