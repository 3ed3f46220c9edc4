"""Hostile review of the log writer's commit callback (obsv/eventlog.py ``_committed``):
the log thread hands each batch back to the loop, which settles it and sends the next.
Every rule of the module docstring must still hold on a real file, a real loop and a
real ``obsv serve``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from obsv.core.events import Delivery, Envelope, HookReceived, LogCheckpoint
from obsv.eventlog import EventLog, line_sha256, read_records

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
