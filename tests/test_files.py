"""Files beside the log (obsv/files.py): never written through a link or into a FIFO."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from obsv.files import write_private


def planted(tmp_path: Path) -> Path:
    target = tmp_path / "someone-elses-file"
    target.write_bytes(b"precious\n")
    target.chmod(0o644)
    return target


def untouched(target: Path) -> bool:
    return (target.read_bytes() == b"precious\n"
            and stat.S_IMODE(target.stat().st_mode) == 0o644)


def test_append_refuses_a_symlink(tmp_path: Path) -> None:
    target = planted(tmp_path)
    outbox_file = tmp_path / "outbox" / "1.md"
    outbox_file.parent.mkdir()
    outbox_file.symlink_to(target)
    with pytest.raises(OSError):
        write_private(outbox_file, b"comment", how="append")
    assert untouched(target)


def test_replace_never_writes_through_a_planted_temp_link(tmp_path: Path) -> None:
    target = planted(tmp_path)
    snapshot = tmp_path / "events.jsonl.snapshot"
    snapshot.with_name(snapshot.name + ".tmp").symlink_to(target)
    write_private(snapshot, b"rows\n", how="replace")
    assert untouched(target)
    assert snapshot.read_bytes() == b"rows\n" and not snapshot.is_symlink()
    assert stat.S_IMODE(snapshot.stat().st_mode) == 0o600


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "1.md"
    os.mkfifo(fifo)
    with pytest.raises(OSError):
        write_private(fifo, b"comment", how="append")
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # now an open would not block
    try:
        with pytest.raises(OSError, match="not a regular file"):
            write_private(fifo, b"comment", how="append")
    finally:
        os.close(reader)


def test_create_refuses_an_existing_link(tmp_path: Path) -> None:
    target = planted(tmp_path)
    side = tmp_path / "events.jsonl.torn-1-1"
    side.symlink_to(target)
    with pytest.raises(FileExistsError):
        write_private(side, b"torn", how="create")
    assert untouched(target)
