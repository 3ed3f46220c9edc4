"""Writing the files beside the log that hold alert data (outbox, snapshot, torn tails),
and reading the snapshot back.

All of them: mode 0600 (they hold alert contents), fsync'd before this returns.
``replace`` writes a fresh temp file and renames it, so a reader sees the old file or
the new one, never half of one; ``append`` adds at the end; ``create`` refuses to
overwrite.

A write that fails part-way (ENOSPC, EIO) leaves the path as it was: the file it
created is removed, an append is cut back to the old end. Half a torn tail would pass
for the whole one, and half an outbox section (its marker written, its text not)
would make the retry skip it.

No write follows a symlink or lands in anything but a regular file: a link planted
at an outbox file or at a temp name would otherwise make obsv write (and truncate)
whatever it points at. Opening is non-blocking so a FIFO put there cannot hang the
writer; it is then refused like any other non-regular file (``OSError``, which the
callers already record as a failed write).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO, Literal

MODE = 0o600
_READ_BUFFER = 1 << 20
_SAFE = os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
_FLAGS = {
    # The temp file is always created afresh (O_EXCL) after removing any leftover, so
    # a link or file planted under that name is never written through.
    "replace": _SAFE | os.O_CREAT | os.O_EXCL,
    "append": _SAFE | os.O_CREAT | os.O_APPEND,
    "create": _SAFE | os.O_CREAT | os.O_EXCL,
}


def write_private(path: Path, data: bytes | Iterable[bytes], *,
                  how: Literal["replace", "append", "create"]) -> None:
    """Write ``data`` (bytes, or chunks written as they come) to ``path`` durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    target = path.with_name(path.name + ".tmp") if how == "replace" else path
    if how == "replace":
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)  # a leftover of a crash (or a planted link: unlinked, not followed)
    fd = os.open(target, _FLAGS[how], MODE)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(target))
        try:
            _write_all(fd, data)
        except BaseException:
            _undo(fd, target, how, info.st_size)
            raise
    finally:
        os.close(fd)
    if how == "replace":
        os.replace(target, path)


def _write_all(fd: int, data: bytes | Iterable[bytes]) -> None:
    for chunk in [data] if isinstance(data, bytes) else data:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view):]
    os.fsync(fd)


def _undo(fd: int, target: Path, how: str, old_size: int) -> None:
    """Put ``target`` back as it was before a failed write (best effort: the write's
    own error is the one reported)."""
    with contextlib.suppress(OSError):
        if how == "append":
            os.ftruncate(fd, old_size)
            os.fsync(fd)
        else:  # created by this call (O_EXCL): nobody else's file
            os.unlink(target)


class FileSnapshotStore:
    """A snapshot kept in one file beside the log (``<log>.snapshot``), written with
    ``replace`` and read without following a symlink or blocking on a FIFO."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def location(self) -> str:
        """The file's path, for messages."""
        return str(self.path)

    def write(self, chunks: Iterable[bytes]) -> None:
        """Replace the file atomically with ``chunks``."""
        write_private(self.path, chunks, how="replace")

    def open(self) -> BinaryIO | None:
        """The file to read, or None when there is none."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "not a regular file", str(self.path))
            return os.fdopen(fd, "rb", buffering=_READ_BUFFER)
        except BaseException:
            os.close(fd)
            raise
