"""The event log on a real file: seq, time, group commit, torn tails, corruption."""

from __future__ import annotations

import asyncio
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from obsv.core.alert import Alert
from obsv.core.events import AlertReceived, Delivery, HookReceived
from obsv.eventlog import EventLog, LogCorrupt, LogInUse, LogWriteError, read_records

from .conftest import read_log

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def hook(n: int) -> HookReceived:
    return HookReceived(Delivery(f"r{n}", "installation", None, "sig"), "created", f'{{"n":{n}}}')


def alert_event(event_id: str) -> AlertReceived:
    alert = Alert("1", event_id, "error", "k", "p", None, "t", "c", None)
    return AlertReceived(Delivery("r", "event_alert", None, "sig"), alert, '{"é":"\\u00e9"}')


async def test_appends_are_contiguous_and_durable(tmp_path: Path) -> None:
    log = EventLog.open(tmp_path / "events.jsonl")
    log.start()
    first = await log.append(hook(1))
    rest = await asyncio.gather(*(log.append(hook(n)) for n in range(2, 51)))
    await log.close()
    assert [first.seq, *[r.seq for r in rest]] == list(range(1, 51))
    assert [r["seq"] for r in read_log(tmp_path / "events.jsonl")] == list(range(1, 51))
    assert stat.S_IMODE(os.stat(tmp_path / "events.jsonl").st_mode) == 0o600


async def test_records_round_trip(tmp_path: Path) -> None:
    log = EventLog.open(tmp_path / "events.jsonl")
    log.start()
    written = [await log.append(alert_event("a")), await log.append(hook(2))]
    await log.close()
    assert [record for _, record in read_records(tmp_path / "events.jsonl")] == written


async def test_time_never_goes_backwards(tmp_path: Path) -> None:
    times = iter([T0, T0 - timedelta(hours=1), T0 + timedelta(seconds=1)])
    log = EventLog.open(tmp_path / "events.jsonl", clock=lambda: next(times))
    log.start()
    stamps = [(await log.append(hook(n))).at for n in range(3)]
    await log.close()
    assert stamps == [T0, T0, T0 + timedelta(seconds=1)]


async def test_reopen_continues_seq(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    for round_ in range(3):
        log = EventLog.open(path)
        log.start()
        await log.append(hook(round_))
        await log.close()
    assert [r["seq"] for r in read_log(path)] == [1, 2, 3]


@pytest.mark.parametrize("torn", [b'{"seq":3,"at":"2026-', b"\x00\x00\x00\x00", b"{"])
async def test_torn_tail_is_set_aside(tmp_path: Path, torn: bytes) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path)
    log.start()
    await log.append(hook(1))
    await log.append(hook(2))
    await log.close()
    whole = path.read_bytes()
    with open(path, "ab") as f:
        f.write(torn)

    log = EventLog.open(path)
    assert log.torn is not None and log.torn.size == len(torn)
    assert log.torn.side_file.read_bytes() == torn
    assert stat.S_IMODE(os.stat(log.torn.side_file).st_mode) == 0o600
    assert path.read_bytes() == whole
    log.start()
    assert (await log.append(hook(3))).seq == 3
    await log.close()
    assert [r["seq"] for r in read_log(path)] == [1, 2, 3]


async def test_a_log_that_is_only_a_torn_line_starts_at_one(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"seq":1,"at"')
    log = EventLog.open(path)
    assert log.torn is not None and log.last_seq == 0
    log.start()
    assert (await log.append(hook(1))).seq == 1
    await log.close()


async def test_long_last_line_is_found(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path)
    log.start()
    await log.append(hook(1))
    big = HookReceived(Delivery("r", "x", None, "s"), None, "y" * 300_000)
    await log.append(big)
    await log.close()
    reopened = EventLog.open(path)
    assert reopened.last_seq == 2 and reopened.torn is None
    reopened.start()
    await reopened.close()


async def test_corrupt_middle_line_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog.open(path)
    log.start()
    for n in range(3):
        await log.append(hook(n))
    await log.close()
    lines = path.read_bytes().split(b"\n")
    lines[1] = b'{"seq": 2, "broken'
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(LogCorrupt) as caught:
        list(read_records(path))
    assert caught.value.line == 2
    assert "line 2" in str(caught.value)


async def test_corrupt_last_whole_line_stops_open(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"not a record\n")
    with pytest.raises(LogCorrupt):
        EventLog.open(path)


async def test_close_flushes_queued_appends(tmp_path: Path) -> None:
    log = EventLog.open(tmp_path / "events.jsonl")
    log.start()
    pending = [asyncio.ensure_future(log.append(hook(n))) for n in range(20)]
    await asyncio.sleep(0)
    await log.close()
    assert [r.seq for r in await asyncio.gather(*pending)] == list(range(1, 21))
    with pytest.raises(LogWriteError):
        await log.append(hook(99))


async def test_a_listener_that_raises_does_not_stop_the_log(tmp_path: Path) -> None:
    """A bug in a listener (the consumer's) is reported by the loop, and the appends
    that follow are still written and answered: the writer used to die with it, after
    which every append waited forever (every delivery until Sentry gave up)."""
    log = EventLog.open(tmp_path / "events.jsonl")
    seen: list[int] = []
    failures: list[object] = []
    asyncio.get_running_loop().set_exception_handler(
        lambda _loop, context: failures.append(context.get("exception")))

    def listener(batch: object) -> None:
        seen.append(len(batch))  # type: ignore[arg-type]
        if len(seen) == 1:
            raise RuntimeError("a bug in a listener")

    log.add_listener(listener)
    log.start()
    first = await log.append(hook(1))
    later = await asyncio.wait_for(log.append_many([hook(2), hook(3)]), 10)
    await log.close()
    assert [first.seq, *(e.seq for e in later)] == [1, 2, 3]
    assert [type(f) for f in failures] == [RuntimeError] and seen == [1, 2]
    assert [e.seq for _, e in read_records(tmp_path / "events.jsonl")] == [1, 2, 3]


async def test_a_log_has_one_writer(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    first = EventLog.open(path)
    with pytest.raises(LogInUse, match="in use by another obsv process"):
        EventLog.open(path)
    first.start()
    await first.close()
    second = EventLog.open(path)  # released on close
    second.start()
    await second.close()
