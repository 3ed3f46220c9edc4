"""Hostile review of the log writer's commit callback (obsv/eventlog.py ``_committed``):
the log thread hands each batch back to the loop, which settles it and sends the next.
Every rule of the module docstring must still hold on a real file, a real loop and a
real ``obsv serve``."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from obsv.cli import main
from obsv.core.events import Delivery, Envelope, HookReceived, LogCheckpoint, SilenceExpired
from obsv.eventlog import EventLog, LogWriteError, line_sha256, read_records

from .conftest import SECRET, assert_contiguous, fill
from .process import ServeProcess
from .test_crash import _load
from .test_eventlog import T0, hook
from .test_eventlog_contract import verify_chain

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


async def test_a_clock_that_raises_fails_its_batch_not_the_log_nor_close(
        tmp_path: Path) -> None:
    """A bug while stamping the batch the commit callback sends (here the clock) used to
    raise out of the callback with the batch taken off the queue: its appends, and
    close (the writer waited for an idle that never came), waited forever; a SIGTERMed
    service would never exit."""
    loop = asyncio.get_running_loop()
    failures: list[object] = []
    loop.set_exception_handler(lambda _loop, context: failures.append(context.get("exception")))
    calls: list[int] = []
    second: list[asyncio.Future[Envelope]] = []

    def clock() -> Any:
        calls.append(len(calls) + 1)
        if len(calls) == 1:  # batch 1 is stamped: append 2 is queued before it returns
            second.append(asyncio.ensure_future(log.append(hook(2))))
        if len(calls) == 2:  # stamping batch 2, in the callback that settles batch 1
            raise OverflowError("a bug in the clock")
        return T0

    path = tmp_path / "events.jsonl"
    log = EventLog.open(path, clock=clock)
    log.start()
    assert (await asyncio.wait_for(log.append(hook(1)), 10)).seq == 1
    with pytest.raises(LogWriteError, match="OverflowError"):
        await asyncio.wait_for(second[0], 10)
    assert (await asyncio.wait_for(log.append(hook(3)), 10)).seq == 2
    await asyncio.wait_for(log.close(), 10)
    assert [type(f) for f in failures] == [OverflowError]
    assert [e.event for _, e in read_records(path)] == [hook(1), hook(3)]


# -- what held --------------------------------------------------------------------------


async def test_thousands_of_appenders_and_a_listener_that_appends(tmp_path: Path) -> None:
    """Records keep each caller's order across batches, seqs run on by one, the chain
    holds, every checkpoint names the line before it, and the log's head, seq and size
    are up to date when listeners and waiters see a batch."""
    now = [T0]
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path, clock=lambda: now[0])
    loop = asyncio.get_running_loop()
    seen: list[int] = []
    replies: list[asyncio.Task[Envelope]] = []
    stale: list[str] = []

    def listener(batch: Sequence[Envelope]) -> None:
        seen.extend(e.seq for e in batch)
        if (log.last_seq, log.last_at) != (batch[-1].seq, batch[-1].at):
            stale.append(f"last_seq {log.last_seq} at batch ending {batch[-1].seq}")
        if log.size != os.stat(path).st_size:
            stale.append(f"size {log.size} of {os.stat(path).st_size} bytes")
        for e in batch:
            if isinstance(e.event, HookReceived) and e.event.action == "created":
                replies.append(loop.create_task(log.append(reply(e.seq))))

    log.add_listener(listener)
    log.start()

    async def caller(c: int) -> list[int]:
        seqs = []
        for i in range(3):
            now[0] += timedelta(seconds=1)
            envelope = await log.append(hook(c * 10 + i))
            assert log.last_seq >= envelope.seq
            seqs.append(envelope.seq)
        return seqs

    answered = await asyncio.wait_for(asyncio.gather(*(caller(c) for c in range(2000))), 120)
    await asyncio.wait_for(asyncio.gather(*replies), 60)
    await log.close()

    records = [e for _, e in read_records(path)]
    assert [e.seq for e in records] == list(range(1, len(records) + 1)) == seen
    assert stale == []
    assert all(seqs == sorted(seqs) for seqs in answered)
    by_seq = {e.seq: e for e in records}
    for c, seqs in enumerate(answered):
        assert [by_seq[s].event for s in seqs] == [hook(c * 10 + i) for i in range(3)]
    assert len(replies) == 6000
    assert {t.result().event for t in replies} == {reply(s) for seqs in answered for s in seqs}
    lines = lines_of(path)
    verify_chain(lines)
    checkpoints = [e for e in records if isinstance(e.event, LogCheckpoint)]
    assert checkpoints  # each wave of callers is a batch, a clock 2,000 s on
    for e in checkpoints:
        assert isinstance(e.event, LogCheckpoint)
        assert e.event == LogCheckpoint(e.seq - 1, line_sha256(lines[e.seq - 2]))


async def test_an_append_cancelled_in_flight_in_a_failed_batch(tiny_disk: Path) -> None:
    """ENOSPC on a batch one of whose callers went away while it was on the log thread:
    the others get LogWriteError, nothing is left unretrieved, and the next batch takes
    the seq and the chain head the failed one did not use (rules 4 and 9)."""
    loop = asyncio.get_running_loop()
    contexts: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: contexts.append(context))
    victims: list[asyncio.Future[Envelope]] = []

    def clock() -> Any:
        # Read as the batch is stamped: the cancel runs while it is on the log thread.
        for victim in victims:
            loop.call_soon(victim.cancel)
        victims.clear()
        return T0

    path = tiny_disk / "events.jsonl"
    log = EventLog.open(path, clock=clock)
    log.start()
    await log.append(hook(1))
    filler = fill(tiny_disk, 16 * 1024)
    gone = asyncio.ensure_future(log.append(hook(2)))
    big = asyncio.ensure_future(log.append(SilenceExpired("big", "x" * 64 * 1024)))
    victims.append(gone)
    with pytest.raises(LogWriteError):
        await asyncio.wait_for(big, 10)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(gone, 10)
    assert not log.writable
    filler.unlink()
    after = await asyncio.wait_for(log.append(hook(3)), 10)
    assert after.seq == 2 and log.writable
    await log.close()
    del gone, big
    gc.collect()
    assert contexts == []
    assert [e.event for _, e in read_records(path)] == [hook(1), hook(3)]
    verify_chain(lines_of(path))


_RUN_ENDS_IN_FLIGHT = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from obsv.core.events import Delivery, HookReceived
    from obsv.eventlog import EventLog

    answered = []

    async def main():
        log = EventLog.open(Path(sys.argv[1]))
        log.start()
        async def caller(c):
            for i in range(1000):
                event = HookReceived(Delivery(f"r{c}-{i}", "installation", None, "s"),
                                     "created", "{}")
                answered.append((await log.append(event)).seq)
        callers = [asyncio.ensure_future(caller(c)) for c in range(50)]
        while len(answered) < 500:
            await asyncio.sleep(0.001)
        # returns with appends queued and on the log thread, and never closes the log

    asyncio.run(main())
    print(max(answered))
""")


async def test_asyncio_run_ending_with_appends_in_flight_is_quiet_and_the_log_reopens(
        tmp_path: Path) -> None:
    """The loop cancels the writer and every caller and closes while a batch may be on
    the log thread: no traceback or warning reaches stderr, the process exits, and every
    answered append is in a log that reopens clean."""
    path = tmp_path / "events.jsonl"
    done = subprocess.run([sys.executable, "-c", _RUN_ENDS_IN_FLIGHT, str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)
    assert (done.returncode, done.stderr) == (0, "")
    log = EventLog.open(path)
    assert log.torn is None and log.last_seq >= int(done.stdout)
    following = log.last_seq + 1
    log.start()
    assert (await log.append(hook(0))).seq == following
    await log.close()
    assert [e.seq for _, e in read_records(path)] == list(range(1, following + 1))
    verify_chain(lines_of(path))


async def test_sigterm_under_load_exits_0_with_every_answered_delivery_written(
        tmp_path: Path) -> None:
    """A real ``obsv serve`` stopped while 16 clients post: it exits 0 without a
    traceback, every 202 is in the log with its seq, and it starts again on that log."""
    log_path = tmp_path / "events.jsonl"
    server = ServeProcess(tmp_path, {"OBSV_SENTRY_CLIENT_SECRET": SECRET,
                                     "OBSV_EVENT_LOG": str(log_path),
                                     "OBSV_OUTBOX_DIR": str(tmp_path / "outbox")})
    await server.start()
    acked: dict[str, int] = {}
    stop = asyncio.Event()
    load = asyncio.ensure_future(_load(server.url, "t", acked, stop, also=frozenset({503})))
    for _ in range(2000):  # up to 20 s for 200 answers
        if len(acked) >= 200:
            break
        await asyncio.sleep(0.01)
    code = await asyncio.to_thread(server.stop)  # SIGTERM while requests are in flight
    stop.set()
    await asyncio.wait_for(load, 30)
    assert code == 0
    stderr = server.stderr_path.read_text()
    for noise in ("Traceback", "never retrieved", "destroyed but it is pending"):
        assert noise not in stderr
    records = assert_contiguous(log_path)
    logged = {r["alert"]["event_id"]: r["seq"] for r in records
              if r["type"] == "alert.received"}
    assert len(acked) >= 200
    assert {e: s for e, s in acked.items() if logged.get(e) != s} == {}
    assert main(["replay", str(log_path), "--verify"]) == 0
    await server.start()  # reopens the log it left
    assert server.stop() == 0
