"""Helpers for tests of several ``obsv serve`` replicas on one PostgreSQL database."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from collections.abc import Callable
from typing import Any

import aiohttp
import asyncpg
import orjson

from .conftest import alert_body, sentry_bytes, signed_headers
from .process import ServeProcess

Records = list[dict[str, Any]]
_QUICK = aiohttp.ClientTimeout(total=1)


async def db_records(url: str) -> Records:
    """Every record in the database, in seq order, as the dicts a JSONL log would hold."""
    connection = await asyncpg.connect(url, timeout=5)
    try:
        rows = await connection.fetch("SELECT line FROM obsv_events ORDER BY seq", timeout=10)
    finally:
        await connection.close()
    return [orjson.loads(row["line"]) for row in rows]


async def wait_records(url: str, predicate: Callable[[Records], bool],
                       timeout: float = 20.0) -> Records:
    """The records once ``predicate`` holds for them; fails after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        records = await db_records(url)
        if predicate(records):
            return records
        if asyncio.get_running_loop().time() > deadline:
            kinds = [r["type"] for r in records[-20:]]
            why = getattr(predicate, "missing", "")
            raise AssertionError(f"records not as expected within {timeout}s ({why}); "
                                 f"last: {kinds}")
        await asyncio.sleep(0.1)


async def role(process: ServeProcess) -> str | None:
    """The role ``/readyz`` names (None when the replica does not answer 200 quickly)."""
    try:
        async with aiohttp.ClientSession(timeout=_QUICK) as session, \
                session.get(process.url + "/readyz") as answer:
            if answer.status != 200:
                return None
            found: str = (await answer.json())["role"]
            return found
    except (aiohttp.ClientError, TimeoutError):
        return None


async def wait_role(process: ServeProcess, wanted: str, timeout: float = 20.0) -> None:
    """Wait until ``process`` reports ``wanted``; fails after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (found := await role(process)) != wanted:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{process.url} is {found}, not {wanted}, after {timeout}s")
        await asyncio.sleep(0.05)


async def leader_of(processes: list[ServeProcess], timeout: float = 20.0) -> ServeProcess:
    """The one replica of ``processes`` that reports ``leader``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        roles = [await role(process) for process in processes]
        if roles.count("leader") == 1:
            return processes[roles.index("leader")]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no single leader after {timeout}s: {roles}")
        await asyncio.sleep(0.05)


def delivery(event_id: str, issue_id: str | None = None) -> tuple[bytes, dict[str, str]]:
    """A signed event_alert for its own Sentry issue (so each one opens an issue)."""
    issue = issue_id or event_id[:12]
    raw = sentry_bytes(alert_body(event_id=event_id, issue_id=issue, hashes=[issue]))
    return raw, signed_headers(raw, request_id=f"req-{event_id}")


async def deliver(url: str, event_id: str) -> int:
    """POST one delivery; asserts the 202 and returns the seq it was recorded at."""
    raw, headers = delivery(event_id)
    async with aiohttp.ClientSession() as session, \
            session.post(url + "/webhooks/sentry", data=raw, headers=headers) as answer:
        assert answer.status == 202, await answer.text()
        seq: int = (await answer.json())["seq"]
        return seq


async def get_text(url: str) -> str:
    """The body of a GET."""
    async with aiohttp.ClientSession() as session, session.get(url) as answer:
        return await answer.text()


def freeze(process: ServeProcess) -> None:
    """SIGSTOP: the process stops dead, connections open, as a paused VM would."""
    assert process.proc is not None
    process.proc.send_signal(signal.SIGSTOP)


def thaw(process: ServeProcess) -> None:
    """SIGCONT: it runs on as if nothing happened, unaware of the time it lost."""
    assert process.proc is not None
    process.proc.send_signal(signal.SIGCONT)


def stop_quietly(process: ServeProcess) -> None:
    """Make sure a replica is gone at the end of a test, whatever state it is in."""
    if process.proc is None or process.proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.proc.send_signal(signal.SIGCONT)
        process.proc.send_signal(signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.proc.wait(timeout=10)
