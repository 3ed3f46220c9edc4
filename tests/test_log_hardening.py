"""The event log against hostile files: symlinks, wide modes, huge torn tails, copied lines."""

from __future__ import annotations

import os
import stat
import tracemalloc
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from obsv.core.events import Delivery, HookReceived
from obsv.eventlog import EventLog, LogCorrupt
from obsv.settings import Settings

from .conftest import SECRET, ClientFactory, alert_body, assert_contiguous, post_signed
from .process import ServeProcess

MiB = 1 << 20


def hook(n: int) -> HookReceived:
    return HookReceived(Delivery(f"r{n}", "installation", None, "sig"), "created", f'{{"n":{n}}}')


async def write_hooks(path: Path, count: int) -> None:
    log = EventLog.open(path)
    log.start()
    for n in range(count):
        await log.append(hook(n))
    await log.close()


async def serve_refuses(tmp_path: Path, log_path: Path) -> list[str]:
    """Run ``obsv serve`` on ``log_path``; it must exit 2. Returns the lines it printed
    that are not JSON log lines (the one-line message of the CLI)."""
    server = ServeProcess(tmp_path, {"OBSV_SENTRY_CLIENT_SECRET": SECRET,
                                     "OBSV_EVENT_LOG": str(log_path),
                                     "OBSV_OUTBOX_DIR": str(tmp_path / "outbox")})
    try:
        with pytest.raises(RuntimeError, match="obsv serve exited"):
            await server.start()
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.kill()
    assert server.proc is not None and server.proc.returncode == 2
    return [line for line in server.stderr_path.read_text().splitlines()
            if not line.startswith("{")]


# -- item 11: never follow a symlink, never chmod what obsv did not create ---------------

async def test_a_log_path_that_is_a_symlink_is_refused_and_its_target_untouched(
        tmp_path: Path) -> None:
    target = tmp_path / "someone-elses-file"
    target.write_bytes(b"precious\n")
    target.chmod(0o644)
    link = tmp_path / "events.jsonl"
    link.symlink_to(target)
    [message] = await serve_refuses(tmp_path, link)
    assert message.startswith(f"obsv: {link} is a symbolic link")
    assert "OBSV_EVENT_LOG" in message
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert target.read_bytes() == b"precious\n"


async def test_a_log_path_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "events.jsonl"
    os.mkfifo(fifo, 0o644)
    [message] = await serve_refuses(tmp_path, fifo)
    assert message.startswith(f"obsv: {fifo} is not a regular file")
    assert stat.S_IMODE(fifo.stat().st_mode) == 0o644


async def test_an_existing_log_with_a_wide_mode_is_warned_about_not_changed(
        make_client: ClientFactory, settings: Settings) -> None:
    await write_hooks(settings.event_log, 1)
    settings.event_log.chmod(0o644)
    with capture_logs() as logs:
        client = await make_client()
        await client.close()
    assert stat.S_IMODE(settings.event_log.stat().st_mode) == 0o644
    [warning] = [e for e in logs if e["event"] == "log.mode_too_wide"]
    assert warning["mode"] == "0o644" and warning["log_level"] == "warning"


# -- item 8: a huge torn tail is set aside in linear time and bounded memory -------------

async def test_a_big_nul_tail_is_set_aside_whole_without_reading_it_into_memory(
        tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    await write_hooks(path, 2)
    whole = path.read_bytes()
    size = 32 * MiB
    with open(path, "ab") as f:
        f.truncate(len(whole) + size)  # a NUL-filled tail without a newline, as after a crash
    tracemalloc.start()
    try:
        log = EventLog.open(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The old code held the tail (and copies of it) in memory: 64 MiB and more.
    assert peak < 4 * MiB, f"opening held {peak / MiB:.1f} MiB"
    assert log.torn is not None and log.torn.size == size and log.last_seq == 2
    assert path.read_bytes() == whole
    side = log.torn.side_file
    assert side.stat().st_size == size
    with open(side, "rb") as f:
        while chunk := f.read(MiB):
            assert not chunk.strip(b"\0")
    log.start()
    assert (await log.append(hook(3))).seq == 3
    await log.close()


async def test_the_server_starts_after_a_big_nul_tail(make_client: ClientFactory,
                                                      settings: Settings) -> None:
    path = settings.event_log
    await write_hooks(path, 2)
    with open(path, "ab") as f:
        f.truncate(path.stat().st_size + 16 * MiB)
    client = await make_client()
    response = await post_signed(client, alert_body())
    assert response.status == 202 and (await response.json())["seq"] == 4  # 3: config.applied
    await client.close()
    [side] = path.parent.glob("events.jsonl.torn-*")
    assert side.name == "events.jsonl.torn-2-1" and side.stat().st_size == 16 * MiB
    assert_contiguous(path)


# -- item 12: the last seqs must increase by one -----------------------------------------

async def test_a_copied_old_line_at_the_end_is_refused_naming_its_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    await write_hooks(path, 3)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines) + lines[0])
    with pytest.raises(LogCorrupt) as caught:
        EventLog.open(path)
    assert caught.value.line == 4
    [message] = await serve_refuses(tmp_path, path)
    assert message.startswith(f"obsv: {path}: line 4 ")
    assert "seq 1 after seq 3" in message
    assert len(path.read_bytes().splitlines()) == 4  # nothing was appended


async def test_a_gap_far_from_the_end_stops_the_start_up_fold(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    await write_hooks(path, 60)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:19] + lines[20:]))  # seq 20 is gone: line 20 holds 21
    [message] = await serve_refuses(tmp_path, path)
    assert message.startswith(f"obsv: {path}: line 20 ")
    assert "seq 21 where 20 was due" in message

