"""Atomic file output and careful JSON input.

Every stage writes its outputs through these helpers, so a killed process never leaves a
half-written file under the final name: data goes to a temporary file in the same folder, is
flushed to disk, then renamed over the target (``os.replace`` is atomic on POSIX).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from diffpose.errors import DataError


def _umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``.

    ``suffix`` keeps the extension for writers that look at it (``cv2.imwrite``). On an exception
    the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; the final file gets what open() would give
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """``open()`` for writing that only replaces ``path`` once the block completes."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = None) -> None:
    """Write ``obj`` as JSON atomically. NaN/inf are refused (they are not JSON)."""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=indent, allow_nan=False)
        fh.write("\n")


def _reject_constant(token: str) -> float:
    raise ValueError(f"non-standard JSON constant {token}")


def read_json(path: str | os.PathLike, *, allow_nan: bool = False) -> Any:
    """Read a JSON file; errors name the file and the line and column of the problem."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read file ({err})") from None
    try:
        if allow_nan:
            return json.loads(text)
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: malformed JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    except ValueError as err:
        raise DataError(f"{path}: {err}") from None


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_writable(path: str | os.PathLike, kind: str = "file") -> None:
    """Raise the OSError that writing ``path`` would raise, before any work is done.

    ``kind`` is ``file`` (written through :func:`atomic_path`), ``dir`` (created if missing, files
    written into it) or ``any`` (a file, or a folder that receives files). Missing parent folders
    are fine (they will be created); the nearest existing one must be a folder we may write to. A
    stage that trains for an hour checks its outputs first, so a typo does not cost the run.
    """
    path = Path(path)
    if path.is_dir():
        if kind == "file":
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        folder = path
    elif path.exists() or path.is_symlink():
        if kind == "dir":
            raise FileExistsError(errno.EEXIST, "exists and is not a folder", str(path))
        folder = path.parent
    else:
        folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{os.strerror(errno.ENOTDIR)} ({folder} is a file)", str(path))
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, f"{os.strerror(errno.EACCES)} (cannot write in {folder})", str(path))
