"""A write cut short by a full disk leaves nothing half-written beside the log
(obsv/files.py): no partial torn-tail side file, no half outbox section, no temp file."""

from __future__ import annotations

from pathlib import Path

import pytest

from obsv.eventlog import EventLog
from obsv.files import write_private

from .conftest import fill
from .test_cli import serve_once

RECORD = ('{"seq":1,"at":"2026-01-01T00:00:00.000000Z","type":"config.applied","v":1,'
          '"policy":{"min_level":"error","environments":[],"cooldown_seconds":1,'
          '"max_issues_per_hour":1,"repo":null,"labels":["agent:builder"]}}\n')


async def test_a_torn_tail_on_a_full_disk_leaves_no_partial_side_file(tiny_disk: Path) -> None:
    log = tiny_disk / "events.jsonl"
    log.write_bytes(RECORD.encode() + b'{"seq":2,"raw":"' + b"x" * 100_000)
    before = log.read_bytes()
    filler = fill(tiny_disk, leave_bytes=8 * 1024)  # room for part of the tail, not all

    result = serve_once(tiny_disk, OBSV_EVENT_LOG=str(log),
                        OBSV_OUTBOX_DIR=str(tiny_disk / "outbox"))

    assert result.returncode == 2, result.stderr
    assert log.read_bytes() == before
    # A partial copy would pass for the torn tail, and the next start would write the
    # whole one as torn-1-2 beside it.
    assert sorted(p.name for p in tiny_disk.glob("events.jsonl.*")) == []
    filler.unlink()
    opened = EventLog.open(log)  # space again: the next start sets the tail aside
    assert opened.torn is not None and opened.last_seq == 1
    [side] = tiny_disk.glob("events.jsonl.torn-*")
    assert side.name == "events.jsonl.torn-1-1"
    assert side.read_bytes() == before[len(RECORD):]
    assert log.read_bytes() == RECORD.encode()
    await opened.close()


@pytest.mark.parametrize("how", ["create", "replace", "append"])
def test_a_write_cut_by_a_full_disk_leaves_the_file_as_it_was(tiny_disk: Path,
                                                               how: str) -> None:
    target = tiny_disk / "outbox" / "1.md"
    target.parent.mkdir()
    if how != "create":
        target.write_bytes(b"# an issue\n")
    fill(tiny_disk, leave_bytes=8 * 1024)
    with pytest.raises(OSError, match="No space left"):
        write_private(target, [b"## Comment\n", b"y" * 100_000], how=how)  # type: ignore[arg-type]
    names = sorted(p.name for p in target.parent.iterdir())
    if how == "create":
        assert names == []
    else:
        assert names == ["1.md"]
        assert target.read_bytes() == b"# an issue\n"
