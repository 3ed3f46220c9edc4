"""Writing the files beside the log that hold alert data (outbox, snapshot, torn tails).

All of them: mode 0600 (they hold alert contents), fsync'd before this returns.
``replace`` writes a temp file and renames it, so a reader sees the old file or the
new one, never half of one; ``append`` adds at the end; ``create`` refuses to
overwrite.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

MODE = 0o600
_FLAGS = {
    "replace": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    "append": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
    "create": os.O_WRONLY | os.O_CREAT | os.O_EXCL,
}


def write_private(path: Path, data: bytes | Iterable[bytes], *,
                  how: Literal["replace", "append", "create"]) -> None:
    """Write ``data`` (bytes, or chunks written as they come) to ``path`` durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    target = path.with_name(path.name + ".tmp") if how == "replace" else path
    fd = os.open(target, _FLAGS[how] | os.O_CLOEXEC, MODE)
    try:
        for chunk in [data] if isinstance(data, bytes) else data:
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    if how == "replace":
        os.replace(target, path)
