"""Hostile review of the log writer's commit callback (obsv/eventlog.py ``_committed``):
the log thread hands each batch back to the loop, which settles it and sends the next.
Every rule of the module docstring must still hold on a real file, a real loop and a
real ``obsv serve``."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from obsv.core.events import Delivery, Envelope, HookReceived, LogCheckpoint
from obsv.eventlog import EventLog, LogWriteError, line_sha256, read_records

from .test_eventlog import T0, hook

REPO = Path(__file__).parent.parent


def reply(n: int) -> HookReceived:
    """What a listener appends in answer to record ``n`` (as the consumer does)."""
    return HookReceived(Delivery(f"reply-{n}", "installation", None, "sig"), "reply", "{}")


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


# -- defects found --------------------------------------------------------------------


async def test_a_listener_that_raises_costs_the_others_no_batch_and_rule_10_no_checkpoint(
        tmp_path: Path) -> None:
    """The callback survived a raising listener, but the listeners after it never saw
    that batch (the consumer would miss records) and the checkpoint it made due was
    never queued (rule 10)."""
    now = [T0]
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path, clock=lambda: now[0])
    failures: list[object] = []
    asyncio.get_running_loop().set_exception_handler(
        lambda _loop, context: failures.append(context.get("exception")))

    def broken(batch: Sequence[Envelope]) -> None:
        if batch[-1].seq == 2:
            raise RuntimeError("a bug in the first listener")

    seen: list[int] = []
    log.add_listener(broken)
    log.add_listener(lambda batch: seen.extend(e.seq for e in batch))
    log.start()
    await log.append(hook(1))  # the first batch since open: a checkpoint is due 60 s on
    now[0] = T0 + timedelta(seconds=61)
    await asyncio.wait_for(log.append(hook(2)), 10)  # makes it due; the first listener raises
    await asyncio.wait_for(log.close(), 10)

    records = [e for _, e in read_records(path)]
    assert [type(e.event) for e in records] == [HookReceived, HookReceived, LogCheckpoint]
    assert records[2].event == LogCheckpoint(2, line_sha256(lines_of(path)[1]))
    assert seen == [1, 2, 3]
    assert [type(f) for f in failures] == [RuntimeError]


async def test_closing_twice_or_at_once_closes_the_file_once(tmp_path: Path) -> None:
    """A second close (at once, or later) called ``os.close`` on the log's number again:
    EBADF, or worse, closing whatever file had reused the number meanwhile."""
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path)
    log.start()
    queued = asyncio.ensure_future(log.append(hook(1)))
    await asyncio.sleep(0)  # queued, not yet written
    await asyncio.wait_for(asyncio.gather(log.close(), log.close()), 10)
    other = os.open(tmp_path / "other", os.O_WRONLY | os.O_CREAT, 0o600)  # reuses the number
    try:
        await asyncio.wait_for(log.close(), 10)
        assert os.write(other, b"still open") == 10
    finally:
        os.close(other)
    assert (await queued).seq == 1
    with pytest.raises(LogWriteError):
        await log.append(hook(2))
    assert [e.seq for _, e in read_records(path)] == [1]


async def test_a_cancelled_close_lets_the_queue_finish_and_a_later_close_completes(
        tmp_path: Path) -> None:
    """Cancelling close cancelled the writer task it awaited; every later close then
    raised CancelledError at once and the file was never closed (nor its lock freed)."""
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path)
    log.start()
    await log.append(hook(1))
    queued = asyncio.ensure_future(log.append(hook(2)))
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(log.close())
    await asyncio.sleep(0)
    closing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await closing
    await asyncio.wait_for(log.close(), 10)
    assert (await asyncio.wait_for(queued, 10)).seq == 2
    again = EventLog.open(path)  # LogInUse while the first still held the file
    again.start()
    assert (await again.append(hook(3))).seq == 3
    await again.close()
    assert [e.seq for _, e in read_records(path)] == [1, 2, 3]
