"""Shared fixtures: settings on tmp_path, signed requests, the real app."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import settings as hypothesis_settings

from obsv.core.signature import sign
from obsv.eventlog import iter_lines
from obsv.logs import configure as configure_logs
from obsv.server import create_app
from obsv.settings import Settings

from .pgserver import MISSING as PG_MISSING
from .pgserver import PgServer, find_bindir

SAMPLES = Path(__file__).parent / "samples"

# In CI (CI=true), property tests run a fixed sequence of examples: a red CI blocks a
# landing, so it must not depend on the draw of the day. Locally they keep exploring
# (and keep what they find in .hypothesis/).
hypothesis_settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

# Service logs go to the real stderr (shown by pytest on failure), never to the
# stdout that CLI tests read.
configure_logs("console", stream=sys.__stderr__, cache=False)
SECRET = "test-secret-0123456789"


def sample(name: str) -> dict[str, Any]:
    """A Sentry payload from tests/samples (copies of shared/fixtures)."""
    data: dict[str, Any] = json.loads((SAMPLES / name).read_text("utf-8"))
    return data


def sentry_bytes(body: object) -> bytes:
    """Serialise as Sentry does: compact separators, non-ASCII escaped."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def alert_body(event_id: str = "e" * 32, **event_fields: Any) -> dict[str, Any]:
    """The documented event_alert sample with a given event_id and overrides."""
    body = sample("event_alert-triggered.json")
    body["data"]["event"]["event_id"] = event_id
    body["data"]["event"].update(event_fields)
    return body


def signed_headers(raw: bytes, resource: str = "event_alert", secret: str = SECRET,
                   request_id: str = "req-1") -> dict[str, str]:
    """Headers Sentry sends with ``raw``."""
    return {
        "Content-Type": "application/json",
        "Request-ID": request_id,
        "Sentry-Hook-Resource": resource,
        "Sentry-Hook-Timestamp": "1566248778",
        "Sentry-Hook-Signature": sign(secret, raw),
    }


def read_log(path: Path) -> list[dict[str, Any]]:
    """Every whole line of a log as a dict, asserting each one parses."""
    if not path.exists():
        return []
    records = []
    for end, line in iter_lines(path):
        assert end > 0, f"unterminated line at the end of {path}: {line[:80]!r}"
        records.append(orjson.loads(line))
    return records


DELIVERY_TYPES = ("alert.received", "hook.received", "sentry.issue", "github.issue")


def deliveries(path: Path) -> list[dict[str, Any]]:
    """The records the receiver wrote (the consumer writes the others)."""
    return [r for r in read_log(path) if r["type"] in DELIVERY_TYPES]


def assert_contiguous(path: Path) -> list[dict[str, Any]]:
    """Every record of the log, after checking ``seq`` runs 1, 2, 3 … without a gap."""
    records = read_log(path)
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    return records


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Dry-run settings with every file under tmp_path."""
    return Settings(
        sentry_client_secret=SECRET,
        event_log=tmp_path / "var" / "events.jsonl",
        outbox_dir=tmp_path / "var" / "outbox",
    )


ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def make_client(aiohttp_client: Any, settings: Settings) -> ClientFactory:
    """Start the real app on a loopback port with ``settings`` (plus overrides)."""
    async def start(clock: Callable[[], datetime] | None = None,
                    **overrides: Any) -> TestClient[Any, Any]:
        app = create_app(replace(settings, **overrides), **({"clock": clock} if clock else {}))
        client: TestClient[Any, Any] = await aiohttp_client(app)
        await wait_ready(client)
        return client
    return start


async def wait_ready(client: TestClient[Any, Any], timeout: float = 10.0) -> None:
    """Wait for /readyz 200: the consumer has folded the log and accepts deliveries."""
    for _ in range(int(timeout / 0.01)):
        if (await client.get("/readyz")).status == 200:
            return
        await asyncio.sleep(0.01)
    answer = await (await client.get("/readyz")).text()
    raise AssertionError(f"not ready within {timeout}s: {answer}")


async def post_signed(client: TestClient[Any, Any], body: object,
                      resource: str = "event_alert", request_id: str = "req-1") -> Any:
    """POST a correctly signed delivery; returns the response."""
    raw = body if isinstance(body, bytes) else sentry_bytes(body)
    return await client.post("/webhooks/sentry", data=raw,
                             headers=signed_headers(raw, resource, request_id=request_id))


class FakeClock:
    """A settable clock for the app: record times, cooldowns and retries follow it.

    ``advance`` is time passing (the wall clock and elapsed time move together);
    ``step`` moves only the wall clock, as a bad NTP server or an operator would
    (obsv/clock.py trusts it only when elapsed time agrees)."""

    def __init__(self, start: datetime) -> None:
        self.now = start
        self.elapsed = 0.0

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        """Elapsed seconds: the monotonic clock paired with this wall clock."""
        return self.elapsed

    def advance(self, **delta: float) -> None:
        step = timedelta(**delta)
        self.now += step
        self.elapsed += step.total_seconds()

    def step(self, **delta: float) -> None:
        self.now += timedelta(**delta)


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until true; fail with a clear message after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)


def records_of(path: Path, kind: str) -> list[dict[str, Any]]:
    """Every record of one type."""
    return [r for r in read_log(path) if r["type"] == kind]


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs mounted under tmp_path (needs root; CI runs as root)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path, leave_bytes: int) -> Path:
    """Fill ``disk`` with one file until about ``leave_bytes`` are free."""
    filler = disk / "filler"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    filler.write_bytes(b"\0" * max(0, free - leave_bytes))
    return filler


@pytest.fixture
async def github() -> AsyncIterator[Any]:
    """The fake GitHub over HTTP on 127.0.0.1 (tests/fakes.py), for one test."""
    from .fakes import FakeGitHub  # fakes imports this module: imported late

    fake = FakeGitHub()
    await fake.start()
    yield fake
    await fake.close()


# -- PostgreSQL (docs/reference.md §12): a private server per session (tests/pgserver.py)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's PostgreSQL; skips (loudly, below) when it is not installed. A test
    may ``stop()`` it: the next ``pg_url`` starts it again."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(PG_MISSING)
    server = PgServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.destroy()


_databases = itertools.count(1)


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """The URL of a fresh, empty database for this test."""
    if not pg_server.running:
        pg_server.start()
    return pg_server.create_database(f"obsv_test_{os.getpid()}_{next(_databases)}")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say loudly, at the end of the run, which tests skipped for want of PostgreSQL."""
    skipped = [report for report in terminalreporter.stats.get("skipped", [])
               if PG_MISSING in str(getattr(report, "longrepr", ""))]
    if not skipped:
        return
    terminalreporter.section("POSTGRESQL TESTS SKIPPED", sep="!", red=True, bold=True)
    terminalreporter.write_line(f"{len(skipped)} test(s) did not run: {PG_MISSING}.",
                                red=True, bold=True)
    for report in skipped:
        terminalreporter.write_line(f"  skipped: {report.nodeid}")
    terminalreporter.write_line("Install it (Debian/Ubuntu: `apt-get install postgresql`) and "
                                "run `make test` again; .ci/run installs it by itself.",
                                red=True, bold=True)
