"""One contract for the event-log port (obsv/logstore.py), run against every
implementation (STYLE habit 9): the JSONL file and PostgreSQL (docs/reference.md §4,
§11, §12)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from obsv.core.codec import GENESIS
from obsv.core.events import (
    AlertReceived,
    Delivery,
    Envelope,
    LeaderElected,
    LogCheckpoint,
    SilenceExpired,
)
from obsv.eventlog import EventLog, LogInUse, LogWriteError, chain, encode_line, line_sha256
from obsv.logstore import EventStore, LeadershipLost, SharedEventStore
from obsv.pglog import PgEventLog

from .conftest import fill
from .records import make_alert

T0 = datetime(2026, 1, 1, tzinfo=UTC)



class Opener:
    """Opens handles on the log under test (each call a new handle on the same
    storage), started; closes what is still open at the end of the test."""

    def __init__(self, open_one: Callable[[], Awaitable[EventStore]]) -> None:
        self._open_one = open_one
        self.opened: list[EventStore] = []

    async def __call__(self) -> EventStore:
        log = await self._open_one()
        self.opened.append(log)
        return log

    async def close(self, log: EventStore) -> None:
        """Close one handle now (a restart)."""
        self.opened.remove(log)
        await log.close()


def event(n: int) -> SilenceExpired:
    """A small record whose content says which append it was."""
    return SilenceExpired(f"silence-{n}", f"writer-{n}")


@pytest.fixture(params=["jsonl", "postgres"])
async def open_log(request: pytest.FixtureRequest, tmp_path: Path
                   ) -> AsyncIterator[Opener]:
    """The log under test, by implementation."""
    async def open_jsonl() -> EventStore:
        log = EventLog.open(tmp_path / "events.jsonl", clock=lambda: T0)
        log.start()
        return log

    async def open_postgres() -> EventStore:
        pg = await PgEventLog.open(url, clock=lambda: T0)
        pg.start()
        return pg

    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
    openers: dict[str, Callable[[], Awaitable[EventStore]]] = {
        "jsonl": open_jsonl, "postgres": open_postgres}
    opener = Opener(openers[request.param])
    yield opener
    for log in opener.opened:
        await log.close()


async def read_all(log: EventStore, start: int = 0) -> list[tuple[int, Envelope]]:
    """Every record after ``start``, read off the loop as the port asks."""
    return await asyncio.get_running_loop().run_in_executor(None, lambda: list(log.read(start)))


async def test_appends_get_gapless_seqs_and_read_back_in_order(open_log: Opener) -> None:
    log = await open_log()
    first = await log.append(event(1))
    rest = await log.append_many([event(2), event(3)])
    assert [first.seq, *(e.seq for e in rest)] == [1, 2, 3]
    read = await read_all(log)
    assert [e.event for _, e in read] == [event(1), event(2), event(3)]
    assert [e.seq for _, e in read] == [1, 2, 3]
    assert log.last_seq == 3 and log.position == read[-1][0]


async def test_reading_from_a_position_yields_only_what_follows(open_log: Opener) -> None:
    log = await open_log()
    await log.append_many([event(1), event(2)])
    middle = log.position
    await log.append_many([event(3), event(4)])
    after = await read_all(log, middle)
    assert [e.seq for _, e in after] == [3, 4]
    line = await asyncio.get_running_loop().run_in_executor(None, log.line_at, middle)
    assert line is not None and b'"seq":2' in line


async def test_listeners_see_every_record_once_in_order(open_log: Opener) -> None:
    log = await open_log()
    await log.append(event(0))
    seen: list[Envelope] = []
    log.add_listener(lambda batch: seen.extend(batch))
    await asyncio.gather(*(log.append(event(n)) for n in range(1, 21)))
    await log.append_many([event(21), event(22)])
    deadline = asyncio.get_running_loop().time() + 10
    while len(seen) < 22 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    assert [e.seq for e in seen] == list(range(2, 24))


async def test_lines_carry_the_same_prev_chain_as_the_jsonl_writer(open_log: Opener) -> None:
    log = await open_log()
    records = await log.append_many([event(1), event(2), LogCheckpoint(2, "a" * 64)])
    lines = [line for _, line in await lines_of(log)]
    pieces, head = chain([encode_line(r) for r in records], GENESIS)
    assert b"".join(lines) == b"".join(pieces)
    assert log.head_sha256 == head == line_sha256(lines[-1])


async def lines_of(log: EventStore) -> list[tuple[int, bytes]]:
    """Every line of the log through ``line_at`` at the positions ``read`` yields."""
    def collect() -> list[tuple[int, bytes]]:
        out = []
        for position, _ in log.read(0):
            line = log.line_at(position)
            assert line is not None
            out.append((position, line))
        return out
    return await asyncio.get_running_loop().run_in_executor(None, collect)


async def test_a_reopened_log_continues_the_seq_and_the_chain(open_log: Opener) -> None:
    log = await open_log()
    await log.append_many([event(1), event(2)])
    head = log.head_sha256
    await open_log.close(log)
    again = await open_log()
    assert (again.last_seq, again.head_sha256) == (2, head)
    third = await again.append(event(3))
    assert third.seq == 3
    lines = await lines_of(again)
    assert f'"prev":"{head}"'.encode() in lines[-1][1]


async def test_snapshot_store_round_trips_bytes(open_log: Opener) -> None:
    log = await open_log()
    store = log.snapshot_store()
    loop = asyncio.get_running_loop()

    def write_then_read(chunks: Sequence[bytes]) -> Any:
        store.write(iter(chunks))
        opened = store.open()
        assert opened is not None
        with opened as f:
            return f.read()

    assert await loop.run_in_executor(None, write_then_read, [b"one\n", b"two\n"]) == (
        b"one\ntwo\n")
    assert await loop.run_in_executor(None, write_then_read, [b"three\n"]) == b"three\n"



def verify_chain(lines: Sequence[bytes]) -> None:
    """Each line's ``prev`` is the hash of the line before it (docs/reference.md §11)."""
    prev = GENESIS
    for line in lines:
        assert line.startswith(f'{{"prev":"{prev}",'.encode()), line[:120]
        prev = line_sha256(line)


def start_writer(url: str, name: str, count: int) -> subprocess.Popen[str]:
    """Another process appending ``count`` records to the PostgreSQL log at ``url``."""
    return subprocess.Popen([sys.executable, "-m", "tests.pgappend", url, name, str(count)],
                            cwd=Path(__file__).parent.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


async def test_two_processes_append_with_gapless_seqs_and_listeners_see_all(
        open_log: Opener, request: pytest.FixtureRequest) -> None:
    log = await open_log()
    if not isinstance(log, SharedEventStore):
        # A file has one writer: a second process is refused before it writes anything.
        with pytest.raises(LogInUse):
            EventLog.open(Path(log.location))
        return
    seen: list[Envelope] = []
    log.add_listener(lambda batch: seen.extend(batch))
    await log.append(event(0))
    url = request.getfixturevalue("pg_url")
    writers = [start_writer(url, name, 300) for name in ("a", "b")]
    mine = await asyncio.gather(*(log.append(event(n)) for n in range(1, 101)))
    for writer in writers:
        try:
            out, err = await asyncio.get_running_loop().run_in_executor(
                None, lambda w=writer: w.communicate(timeout=60))
        finally:
            writer.kill()  # a no-op once it has exited; never left behind
        assert writer.returncode == 0, err
        assert out.strip() == "300"
    appended = 1 + 100 + 600
    deadline = asyncio.get_running_loop().time() + 20
    while (sum(not isinstance(e.event, LogCheckpoint) for e in seen) < appended
           and asyncio.get_running_loop().time() < deadline):
        await asyncio.sleep(0.02)
    # This log's clock is fixed at T0 and the writers' is the real one: a batch of ours
    # committed after one of theirs is stamped with their later time (a record's time
    # never goes back), which is past our checkpoint's due time, and so is led by a
    # log.checkpoint (rule 10). Whether that happens depends on how the three interleave.
    records = await read_all(log)
    total = len(records)
    assert total - sum(isinstance(e.event, LogCheckpoint) for _, e in records) == appended
    assert [e.seq for e in seen] == list(range(1, total + 1))
    assert [e.seq for _, e in records] == list(range(1, total + 1))
    ids = [e.event.id for _, e in records if isinstance(e.event, SilenceExpired)]
    assert sorted(ids) == sorted([f"silence-{n}" for n in range(101)]
                                 + [f"{w}-{i}" for w in "ab" for i in range(300)])
    assert {e.seq for e in mine} <= set(range(1, total + 1))
    verify_chain([line for _, line in await lines_of(log)])


async def test_a_failed_write_records_nothing_and_the_log_stays_usable(
        open_log: Opener, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    log = await open_log()
    await log.append(event(1))
    if isinstance(log, SharedEventStore):
        server = request.getfixturevalue("pg_server")
        server.stop("immediate")
        try:
            with pytest.raises(LogWriteError):
                await log.append_many([event(2), event(3)])
            assert not log.writable
        finally:
            server.start()
    else:
        await open_log.close(log)
        disk = request.getfixturevalue("tiny_disk")
        moved = disk / "events.jsonl"
        moved.write_bytes((tmp_path / "events.jsonl").read_bytes())
        (tmp_path / "events.jsonl").unlink()
        (tmp_path / "events.jsonl").symlink_to(moved)  # refused: open the real path
        log = EventLog.open(moved, clock=lambda: T0)
        log.start()
        open_log.opened.append(log)
        filler = fill(disk, 16 * 1024)
        with pytest.raises(LogWriteError):  # a batch larger than the space left
            await log.append_many([event(2), SilenceExpired("big", "x" * 64 * 1024)])
        assert not log.writable
        filler.unlink()
    fourth = await log.append(event(4))
    assert fourth.seq == 2 and log.writable
    records = await read_all(log)
    assert [e.event for _, e in records] == [event(1), event(4)]
    verify_chain([line for _, line in await lines_of(log)])


async def test_an_append_with_a_stale_epoch_is_refused_and_records_nothing(
        open_log: Opener) -> None:
    old = await open_log()
    if not isinstance(old, SharedEventStore):
        # One writer (flock): nobody can take over, so any epoch is accepted and ignored.
        assert (await old.append(event(1), epoch=7)).seq == 1
        assert [e.seq for e in await old.append_many([event(2)], epoch=3)] == [2]
        return
    new = await open_log()
    assert isinstance(new, SharedEventStore)
    first = await old.take_leadership("old")
    await old.append(event(1), epoch=first)
    second = await new.take_leadership("new")
    assert (first, second) == (1, 2)
    with pytest.raises(LeadershipLost) as lost:
        await old.append_many([event(2), event(3)], epoch=first)
    assert (lost.value.epoch, lost.value.current) == (1, 2)
    assert old.epoch == 2
    accepted = await old.append(event(4))  # a delivery needs no epoch: any replica takes it
    decided = await new.append(event(5), epoch=second)
    assert (accepted.seq, decided.seq) == (4, 5)
    records = await read_all(new)
    assert [e.event for _, e in records] == [
        LeaderElected(1, "old"), event(1), LeaderElected(2, "new"), event(4), event(5)]


async def test_a_batch_of_large_records_reads_back_whole_and_chained(open_log: Opener) -> None:
    log = await open_log()
    big = [SilenceExpired(f"big-{n}", chr(0x41 + n) * 300_000) for n in range(4)]
    records = await log.append_many([event(0), *big])  # chained off the loop (> 1 MB)
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert [e.event for _, e in await read_all(log)] == [event(0), *big]
    lines = [line for _, line in await lines_of(log)]
    verify_chain(lines)
    pieces, head = chain([encode_line(r) for r in records], GENESIS)
    assert b"".join(lines) == b"".join(pieces) and log.head_sha256 == head


async def test_the_fold_may_read_without_bodies_and_whole_gives_them_back(
        open_log: Opener) -> None:
    log = await open_log()
    raw = '{"data":{"event":{"event_id":"e1"}},"pad":"' + "x" * 5000 + '"}'
    received = AlertReceived(Delivery("r1", "event_alert", None, "sig"), make_alert("7", "e1"),
                             raw)
    await log.append_many([event(1), received, event(2)])
    light = [e.event for _, e in await asyncio.get_running_loop().run_in_executor(
        None, lambda: list(log.read(0, bodies=False)))]
    assert light[0] == event(1) and light[2] == event(2)
    folded = light[1]
    assert isinstance(folded, AlertReceived) and folded.alert == received.alert
    # The file reads it whole anyway; the database leaves the body out, naming its hash.
    if isinstance(log, SharedEventStore):
        assert folded.raw is None
        assert folded.raw_sha256 == hashlib.sha256(raw.encode()).hexdigest()
    else:
        assert folded == received
    whole = await asyncio.get_running_loop().run_in_executor(None, log.whole, [2, 3])
    assert whole[2].event == received and whole[3].event == event(2) and set(whole) == {2, 3}


async def test_a_cancelled_close_lets_the_queue_finish_and_a_later_close_completes(
        open_log: Opener) -> None:
    """A caller that gives up on close (a shutdown with a deadline) leaves the writer to
    finish what was queued; closing again completes, and a new handle appends after."""
    log = await open_log()
    await log.append(event(1))
    queued = asyncio.ensure_future(log.append(event(2)))
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(log.close())
    await asyncio.sleep(0)
    closing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await closing
    await asyncio.wait_for(open_log.close(log), 30)
    assert (await asyncio.wait_for(queued, 30)).seq == 2
    again = await open_log()
    assert (await again.append(event(3))).seq == 3
    assert [e.event for _, e in await read_all(again)] == [event(1), event(2), event(3)]
