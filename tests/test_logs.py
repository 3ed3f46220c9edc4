"""Logging: JSON lines, secrets redacted, and a dead stderr never fails a delivery."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
import structlog.testing

from obsv import logs as obsv_logs
from obsv.logs import configure

from .conftest import SECRET, alert_body, post_signed, sentry_bytes, signed_headers
from .process import free_port


def test_json_lines_with_credentials_redacted() -> None:
    out = io.BytesIO()
    stream = io.TextIOWrapper(out, write_through=True)
    try:
        configure("json", stream=stream, cache=False)
        structlog.get_logger("t").info("hello", github_token="ghp_x", client_secret="s",
                                       seq=3)
        line = json.loads(out.getvalue().decode().splitlines()[-1])
    finally:
        configure("console", stream=sys.__stderr__, cache=False)
    assert line["event"] == "hello" and line["seq"] == 3 and line["level"] == "info"
    assert line["github_token"] == "<redacted>" and line["client_secret"] == "<redacted>"
    assert line["timestamp"].endswith("Z")


def test_closed_stderr_does_not_fail_a_delivery(tmp_path: Path) -> None:
    """A log shipper that goes away must not turn accepted deliveries into 500s."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "obsv", "serve"], cwd=tmp_path, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, env={**os.environ, "OBSV_SENTRY_CLIENT_SECRET": SECRET,
                                     "OBSV_PORT": str(port), "OBSV_LOG_FORMAT": "json",
                                     "OBSV_EVENT_LOG": str(tmp_path / "events.jsonl")})
    url = f"http://127.0.0.1:{port}"
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # wait until the consumer is ready
            if b"consumer.ready" in line:
                break
        proc.stderr.close()  # every later log write now fails with EPIPE
        statuses = []
        for n in range(2):
            raw = sentry_bytes(alert_body(event_id=f"{n:032x}"))
            request = urllib.request.Request(url + "/webhooks/sentry", data=raw,
                                             headers=signed_headers(raw))
            with urllib.request.urlopen(request, timeout=10) as response:
                statuses.append(response.status)
        assert statuses == [202, 202]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


async def test_log_context_does_not_leak_between_requests(make_client: Any) -> None:
    """Two deliveries on one keep-alive connection: the second's lines carry its own
    request id and no seq from the first (aiohttp runs each request in its own task,
    so the context bound by one never labels the next)."""
    client = await make_client()
    with structlog.testing.capture_logs(
            processors=[structlog.contextvars.merge_contextvars]) as logs:
        await post_signed(client, alert_body(), request_id="first")
        bad = await client.post("/webhooks/sentry", data=b"{}", headers={
            "Request-ID": "second", "Sentry-Hook-Resource": "event_alert"})
        assert bad.status == 401
    [accepted] = [e for e in logs if e["event"] == "alert.received"]
    [rejected] = [e for e in logs if e["event"] == "delivery.rejected"]
    assert accepted["request_id"] == "first" and isinstance(accepted["seq"], int)
    assert rejected["request_id"] == "second" and "seq" not in rejected


def test_timestamps_are_rfc3339_utc_with_microseconds() -> None:
    out = io.BytesIO()
    stream = io.TextIOWrapper(out, write_through=True)
    try:
        configure("json", stream=stream, cache=False)
        before = datetime.now(UTC)
        structlog.get_logger("t").info("one")
        structlog.get_logger("t").info("two")
        after = datetime.now(UTC)
        lines = [json.loads(line) for line in out.getvalue().decode().splitlines()[-2:]]
    finally:
        configure("console", stream=sys.__stderr__, cache=False)
    for line in lines:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", line["timestamp"])
        at = datetime.fromisoformat(line["timestamp"])
        assert before - timedelta(milliseconds=1) <= at <= after + timedelta(milliseconds=1)
    assert lines[0]["timestamp"] <= lines[1]["timestamp"]


async def test_per_delivery_lines_in_json_name_the_delivery(make_client: Any) -> None:
    """With JSON lines (what ``obsv serve`` configures off a terminal), the lines written
    once per delivery skip structlog's bound logger (obsv/logs.py ``info``): each still
    names its request, resource and seq, and is the line structlog writes for the same
    call, credentials redacted."""
    out = io.BytesIO()
    stream = io.TextIOWrapper(out, write_through=True)
    try:
        configure("json", stream=stream, cache=False)
        client = await make_client()
        accepted = await post_signed(client, alert_body(), request_id="req-7")
        hook = await post_signed(client, {"action": "created", "data": {}},
                                 resource="installation", request_id="req-8")
        probe = structlog.get_logger("t")
        obsv_logs.info(probe, "probe", seq=1, api_token="ghp_x", request_id=None)
        probe.info("probe", seq=1, api_token="ghp_x", request_id=None)
    finally:
        configure("console", stream=sys.__stderr__, cache=False)
    lines = [json.loads(line) for line in out.getvalue().decode().splitlines()]
    [received] = [line for line in lines if line["event"] == "alert.received"]
    assert accepted.status == 202 and received["seq"] == (await accepted.json())["seq"]
    assert received["request_id"] == "req-7" and received["resource"] == "event_alert"
    assert received["level"] == "info" and received["body_stored"] is True
    assert received["sentry_issue_id"] == alert_body()["data"]["event"]["issue_id"]
    [recorded] = [line for line in lines if line["event"] == "hook.received"]
    assert hook.status == 200 and recorded["request_id"] == "req-8"
    assert recorded["resource"] == "installation" and recorded["action"] == "created"
    hot, through_structlog = [line for line in lines if line["event"] == "probe"]
    assert hot.pop("timestamp").endswith("Z") and through_structlog.pop("timestamp")
    assert hot == through_structlog and hot["api_token"] == "<redacted>"


@contextlib.contextmanager
def json_lines_into(binary: io.FileIO) -> Iterator[None]:
    """``configure("json")`` writing into ``binary`` while the block runs; after it,
    console lines on stderr again and ``binary`` closed."""
    stream = io.TextIOWrapper(binary, write_through=True)  # type: ignore[type-var]
    try:
        configure("json", stream=stream, cache=False)
        yield
    finally:
        configure("console", stream=sys.__stderr__, cache=False)
        binary.close()


class _CountedWrites(io.FileIO):
    """A real file that counts the writes made to it."""

    writes = 0

    def write(self, data: Any) -> int:
        self.writes += 1
        return super().write(data)


async def test_the_lines_of_one_loop_turn_go_out_in_order_in_one_write(tmp_path: Path) -> None:
    """Held lines are written at the start of the next turn, once, in the order made; a
    line another thread makes meanwhile joins them after the lines made before it (it
    used to be written at once, ahead of them: a worker's ``consumer.restored`` came
    out before the ``serving`` the loop had made first), and none is lost."""
    path = tmp_path / "stderr"
    binary = _CountedWrites(path, "w")
    with json_lines_into(binary):
        log = structlog.get_logger("t")
        for n in range(3):
            obsv_logs.info(log, "hot", n=n)
            log.info("through_structlog", n=n)
        held = path.read_bytes()
        thread = threading.Thread(target=lambda: log.info("from_a_thread"))
        thread.start()
        thread.join()  # in this same turn, while the loop holds its lines
        from_thread = path.read_bytes()
        await asyncio.sleep(0)  # the next turn
        after_turn = path.read_bytes()
        writes = binary.writes
    assert held == b"" and from_thread == b""  # nothing written during the turn
    events = [(line["event"], line.get("n")) for line in map(json.loads, after_turn.splitlines())]
    assert events == [(event, n) for n in range(3) for event in ("hot", "through_structlog")
                      ] + [("from_a_thread", None)]
    assert writes == 1  # the seven lines together


def test_lines_held_by_a_loop_that_stopped_do_not_wait_for_exit(tmp_path: Path) -> None:
    """A loop that stops in the turn that made a line never writes it; the next line of
    the thread (no loop now: written at once) brings it out first, and a later loop of
    the same thread writes its own turns (both stayed held until exit before)."""
    path = tmp_path / "stderr"
    binary = io.FileIO(path, "w")
    with json_lines_into(binary):
        log = structlog.get_logger("t")
        first = asyncio.new_event_loop()

        def last() -> None:
            log.info("said_last")
            first.stop()  # the turn that would have written the line never comes

        first.call_soon(last)
        first.run_forever()
        first.close()
        log.info("no_loop_now")
        after_close = path.read_bytes()

        async def later() -> None:
            log.info("in_a_later_loop")
            await asyncio.sleep(0)

        second = asyncio.new_event_loop()
        second.run_until_complete(later())
        second.close()
        after_second = path.read_bytes()
    assert [json.loads(line)["event"] for line in after_close.splitlines()] == [
        "said_last", "no_loop_now"]
    assert [json.loads(line)["event"] for line in after_second.splitlines()] == [
        "said_last", "no_loop_now", "in_a_later_loop"]


HELD_AT_FORK = """
import asyncio, os, sys, structlog
from obsv.logs import configure
configure("json")

async def main():
    structlog.get_logger("t").info("before_fork")
    pid = os.fork()
    if pid == 0:
        sys.exit(0)  # a normal exit: the child's loop and atexit run
    os.waitpid(pid, 0)

asyncio.run(main())
"""


def test_a_forked_child_does_not_write_its_parents_held_lines() -> None:
    done = subprocess.run([sys.executable, "-c", HELD_AT_FORK], capture_output=True,
                          timeout=60, check=True)
    assert [json.loads(line)["event"] for line in done.stderr.decode().splitlines()] == [
        "before_fork"]


HELD_AT_EXIT = """
import asyncio, structlog
from obsv.logs import configure
configure("json")
loop = asyncio.new_event_loop()

def last():
    structlog.get_logger("t").info("said_last")
    loop.stop()  # this is the last turn: the one that would write the line never comes

loop.call_soon(last)
loop.run_forever()
loop.close()
"""


def test_lines_held_when_the_loop_closes_are_written_at_exit() -> None:
    done = subprocess.run([sys.executable, "-c", HELD_AT_EXIT], capture_output=True,
                          timeout=60, check=True)
    [line] = done.stderr.decode().splitlines()
    assert json.loads(line)["event"] == "said_last"


LOGGED_DURING_A_WRITE = """
import asyncio, gc, io, sys, structlog
from obsv.logs import configure

class Unclosed:  # as an aiohttp session left open: its finalizer logs
    def __del__(self):
        structlog.get_logger("t").info("finalizer")

class Stderr(io.FileIO):
    collected = False

    def write(self, data):
        if self.collected:
            return super().write(data)
        self.collected = True
        cycle = Unclosed()
        cycle.me = cycle
        del cycle
        gc.collect()  # what an allocation may set off while a write is under way
        return super().write(data)

stream = io.TextIOWrapper(Stderr(2, "w", closefd=False), write_through=True)  # kept open
configure("json", stream=stream)

async def main():
    structlog.get_logger("t").info("first")
    await asyncio.sleep(0)

asyncio.run(main())
structlog.get_logger("t").info("no_loop")
"""


def test_a_line_logged_while_a_write_is_under_way_does_not_hang() -> None:
    """A finalizer the collector runs in the middle of a write logs on the same thread."""
    done = subprocess.run([sys.executable, "-c", LOGGED_DURING_A_WRITE], capture_output=True,
                          timeout=60, check=True)
    events = [json.loads(line)["event"] for line in done.stderr.decode().splitlines()]
    assert sorted(events) == ["finalizer", "first", "no_loop"]


def test_loops_in_two_threads_lose_no_line_and_keep_each_ones_order(tmp_path: Path) -> None:
    """Two threads each run a loop that logs, some turns past the 1024-line bound: every
    line is written once, and each thread's lines in the order it made them."""
    path = tmp_path / "stderr"
    binary = io.FileIO(path, "w")
    log = structlog.get_logger("t")

    async def talk(who: str) -> None:
        for n in range(3000):
            log.info("line", who=who, n=n)
            if n % 1100 == 1099 or n % 7 == 0:
                await asyncio.sleep(0)

    with json_lines_into(binary):
        threads = [threading.Thread(target=asyncio.run, args=(talk(who),)) for who in "ab"]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        written = path.read_bytes()
    lines = [json.loads(line) for line in written.splitlines()]
    for who in "ab":
        assert [line["n"] for line in lines if line["who"] == who] == list(range(3000))


async def test_a_thread_that_floods_during_one_turn_is_not_held_without_bound(
        tmp_path: Path) -> None:
    """Another thread's lines join the loop's held ones up to the bound, and the thread
    that reaches it writes them (the loop, blocked here, cannot): memory stays bounded,
    and every line is written once, in the order made."""
    path = tmp_path / "stderr"
    binary = io.FileIO(path, "w")
    with json_lines_into(binary):
        log = structlog.get_logger("t")
        log.info("on_the_loop")

        def flood() -> None:
            for n in range(3000):
                log.info("from_a_thread", n=n)

        thread = threading.Thread(target=flood)
        thread.start()
        thread.join()  # the loop's turn lasts as long as the flood
        during_turn = path.read_bytes()
        await asyncio.sleep(0)
        after_turn = path.read_bytes()
    assert during_turn.count(b"\n") >= 3000 - 1024
    lines = [json.loads(line) for line in after_turn.splitlines()]
    assert [line["event"] for line in lines] == ["on_the_loop"] + ["from_a_thread"] * 3000
    assert [line["n"] for line in lines[1:]] == list(range(3000))


CACHED_BEFORE_A_RECONFIGURE = """
import asyncio, structlog
from obsv.logs import configure
configure("json")
log = structlog.get_logger("t")
log.info("first")  # structlog caches this logger with the first configure's writer
configure("json")
loop = asyncio.new_event_loop()

def last():
    log.info("said_last")
    loop.stop()

loop.call_soon(last)
loop.run_forever()
loop.close()
"""


def test_lines_a_cached_logger_holds_after_a_reconfigure_are_written_at_exit() -> None:
    done = subprocess.run([sys.executable, "-c", CACHED_BEFORE_A_RECONFIGURE],
                          capture_output=True, timeout=60, check=True)
    assert [json.loads(line)["event"] for line in done.stderr.decode().splitlines()] == [
        "first", "said_last"]
