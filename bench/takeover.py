"""Takeover: seconds from losing the leader to the new leader's first decision, with
1M records in the PostgreSQL log (docs/reference.md §12, docs/replicas.md).

Two `obsv serve` replicas share a private PostgreSQL (tests/pgserver.py) holding a
1M-record log (bench/gen.py, loaded with `obsv import`). Both fold it at start (the
follower stays caught up from then on). The leader is SIGKILLed (its connection, and
the lock, go at once) and, in a second round, a leader is SIGSTOPped (the server ends
its idle session after idle_session_timeout, 3 s); right after, one alert is delivered
to the follower, and the clock stops when its `alert.decided` is committed.
Target: <= 5 s at 1M records."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

from bench.common import ROOT, free_port, wait_http
from bench.gen import write_log
from tests.conftest import alert_body, sentry_bytes, signed_headers
from tests.pgserver import MISSING, PgServer, find_bindir

RECORDS = 1_000_000
SECRET = "bench"


class Replica:
    """One `obsv serve` on the shared database."""

    def __init__(self, url: str, workdir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "obsv", "serve"], cwd=ROOT, stdout=subprocess.DEVNULL,
            stderr=open(workdir / f"serve-{self.port}.log", "wb"),  # noqa: SIM115
            env={**os.environ, "OBSV_SENTRY_CLIENT_SECRET": SECRET,
                 "OBSV_PORT": str(self.port), "OBSV_DATABASE_URL": url,
                 "OBSV_OUTBOX_DIR": str(workdir / f"outbox-{self.port}"),
                 "OBSV_LOG_FORMAT": "json", "OBSV_GITHUB_POLL_SECONDS": "0",
                 # The generated log's policy: no config.applied at takeover.
                 "OBSV_MAX_ISSUES_PER_HOUR": "1000000", "OBSV_COOLDOWN_SECONDS": "3600"})

    async def role(self, session: aiohttp.ClientSession) -> str | None:
        try:
            async with session.get(self.base + "/readyz") as answer:
                return (await answer.json())["role"] if answer.status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            return None

    def end(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=60)


async def _wait_role(replica: Replica, wanted: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
        while await replica.role(session) != wanted:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{replica.base} not {wanted} within {timeout}s")
            await asyncio.sleep(0.02)


async def _takeover(url: str, old: Replica, new: Replica, how: signal.Signals, n: int) -> float:
    """Seconds from ``how`` sent to ``old`` to the decision of an alert sent to ``new``."""
    raw = sentry_bytes(alert_body(event_id=f"{n:032x}", issue_id=f"takeover-{n}",
                                  hashes=[f"takeover-{n}"]))
    connection = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        old.proc.send_signal(how)
        async with aiohttp.ClientSession() as session, session.post(
                new.base + "/webhooks/sentry", data=raw, headers=signed_headers(
                    raw, secret=SECRET)) as answer:
            assert answer.status == 202, await answer.text()
            seq = (await answer.json())["seq"]
        while True:
            lines = await connection.fetch(
                "SELECT line FROM obsv_events WHERE seq > $1 AND type = 'alert.decided'", seq)
            if any(orjson.loads(row["line"])["alert_seq"] == seq for row in lines):
                return time.perf_counter() - started
            if time.perf_counter() - started > 120:
                raise RuntimeError("no decision within 120 s")
            await asyncio.sleep(0.01)
    finally:
        await connection.close()


async def _rounds(url: str, workdir: Path) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    first = Replica(url, workdir)
    replicas = [first]
    try:
        started = time.perf_counter()
        await wait_http(first.base + "/readyz", timeout=900, interval=0.05)
        rows.append((f"first replica ready (fold of {RECORDS // 1000:,}k records)",
                     f"{time.perf_counter() - started:.1f} s"))
        await _wait_role(first, "leader", 30)
        second = Replica(url, workdir)
        replicas.append(second)
        await wait_http(second.base + "/readyz", timeout=900, interval=0.05)
        await _wait_role(second, "follower", 5)
        killed = await _takeover(url, first, second, signal.SIGKILL, 1)
        rows.append(("leader SIGKILLed -> first decision of the new leader", f"{killed:.2f} s"))

        third = Replica(url, workdir)
        replicas.append(third)
        await wait_http(third.base + "/readyz", timeout=900, interval=0.05)
        await _wait_role(third, "follower", 5)
        frozen = await _takeover(url, second, third, signal.SIGSTOP, 2)
        rows.append(("leader SIGSTOPped -> first decision of the new leader", f"{frozen:.2f} s"))
    finally:
        for replica in replicas:
            replica.end()
    return rows


def main() -> dict[str, Any]:
    bindir = find_bindir()
    if bindir is None:
        return {"name": "takeover", "rows": [("skipped", MISSING)]}
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="obsv-bench-") as tmp:
        server = PgServer(bindir)
        try:
            server.start()
            url = server.create_database("obsv_takeover")
            log = Path(tmp, "events.jsonl")
            write_log(log, RECORDS, distinct_issues=100_000, max_issues_per_hour=1_000_000)
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "obsv", "import", str(log),
                            "--database-url", url], cwd=ROOT, check=True,
                           stdout=subprocess.DEVNULL)
            rows.append((f"{RECORDS // 1000:,}k records imported",
                         f"{time.perf_counter() - started:.0f} s"))
            os.unlink(log)
            rows += asyncio.run(_rounds(url, Path(tmp)))
        finally:
            server.destroy()
    rows.append(("target", "<= 5 s from losing the leader to its successor's first decision"))
    return {"name": "takeover", "rows": rows}
