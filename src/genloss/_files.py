"""Atomic file writes with the usual permissions: the one helper every writer of genloss uses.

A file is written to a temporary file in the target's folder and renamed over the target, so a
reader (or a kill -9 at any moment) sees the old or the new file, never half of one. Unlike
``tempfile.mkstemp``, which creates its file with mode 0600, the temporary file is created with
``0o666`` and the process' umask applies, as for ``open(path, "w")``: a new file gets the usual
mode (``-rw-r--r--`` under the common umask 022). Replacing an existing file keeps that file's mode.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def create_temporary(target: str | os.PathLike, suffix: str = ".tmp") -> tuple[int, Path]:
    """A new, empty file ``.{name}.{random}{suffix}`` next to ``target``, opened for writing.

    Returns its descriptor and path. It is created exclusively with mode ``0o666`` minus the umask
    (not mkstemp's 0600), so once renamed over ``target`` it has the mode ``open()`` would give.
    """
    target = Path(target)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}{suffix}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file next to {target}")  # pragma: no cover


def replace(tmp: str | os.PathLike, target: str | os.PathLike) -> None:
    """``os.replace(tmp, target)``; when ``target`` exists, ``tmp`` gets its mode first."""
    with contextlib.suppress(FileNotFoundError):
        os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
    os.replace(tmp, target)


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make a rename in ``folder`` durable (best effort: not every platform can open a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, fsync: bool = False, suffix: str = ".tmp",
                 encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` for writing; on success rename it to ``path``.

    ``mode`` is ``"wb"`` or ``"w"`` (text, ``encoding`` default UTF-8). With ``fsync`` the data and
    the rename are flushed to disk. On an exception the temporary file is removed and ``path`` is
    left as it was. Parent folders are created. The file gets the usual mode (see the module).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temporary(path, suffix)
    try:
        text = {"encoding": encoding or "utf-8"} if mode == "w" else {}
        with os.fdopen(fd, mode, **text) as fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    if fsync:
        fsync_folder(path.parent)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically with the usual mode; returns the path."""
    with atomic_write(path, "w") as fh:
        fh.write(text)
    return Path(path)


__all__ = ["atomic_write", "create_temporary", "fsync_folder", "replace", "write_text"]
