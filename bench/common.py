"""Helpers shared by the benchmarks: load generation, percentiles, processes."""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.conftest import alert_body, sentry_bytes, signed_headers
from tests.process import free_port

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    latencies: list[float]
    statuses: dict[int, int]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, p: float) -> float:
        return percentile(self.latencies, p)


def comparison_rows(base: LoadResult, ours: LoadResult,
                    cpu: tuple[float, float] | None = None) -> list[tuple[str, str]]:
    """The rows of an ingest benchmark: both servers' rates, the ratio against its
    target, latencies, CPU per request (seconds, baseline then obsv) when measured, and
    the answers' statuses."""
    return [
        ("baseline req/s", f"{base.rate:,.0f}"),
        ("obsv req/s", f"{ours.rate:,.0f}"),
        ("ratio obsv/baseline", f"{ours.rate / base.rate:.2f}  (target >= 0.8)"),
        ("baseline p50 / p99", p50_p99(base)),
        ("obsv p50 / p99", p50_p99(ours) + "  (target p99 <= 30 ms)"),
        *([("server CPU per request", f"baseline {cpu[0] * 1e6:.0f} µs, "
                                      f"obsv {cpu[1] * 1e6:.0f} µs")] if cpu else []),
        ("statuses", f"baseline {base.statuses} obsv {ours.statuses}"),
    ]


def p50_p99(result: LoadResult) -> str:
    """The median and 99th percentile latency, in ms."""
    return f"{result.percentile(50) * 1e3:.1f} / {result.percentile(99) * 1e3:.1f} ms"


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100), nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered)) - 1))
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


Delivery = tuple[bytes, dict[str, str]]


def signed_deliveries(secret: str, count: int, prefix: str = "b") -> list[Delivery]:
    """``count`` distinct signed event_alert deliveries, prepared before timing."""
    out = []
    for n in range(count):
        issue = 1000 + n % 50
        raw = sentry_bytes(alert_body(event_id=f"{prefix}{n:031x}"[:32], issue_id=str(issue),
                                      hashes=[f"{issue:032x}"]))
        out.append((raw, signed_headers(raw, secret=secret, request_id=f"r{n}")))
    return out


async def closed_loop(url: str, deliveries: list[Delivery],
                      concurrency: int, seconds: float) -> LoadResult:
    """``concurrency`` connections each sending back to back for ``seconds``."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker() -> None:
            nonlocal counter
            while time.perf_counter() < deadline:
                raw, headers = deliveries[counter % len(deliveries)]
                counter += 1
                started = time.perf_counter()
                async with session.post(url, data=raw, headers=headers) as response:
                    await response.read()
                latencies.append(time.perf_counter() - started)
                statuses[response.status] = statuses.get(response.status, 0) + 1
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return LoadResult(len(latencies), elapsed, latencies, statuses)


async def wait_http(url: str, timeout: float = 30.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(interval)
    raise RuntimeError(f"{url} did not come up")


def spawn(args: list[str], env: dict[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, *args], env={**os.environ, **(env or {})},
                            cwd=cwd or ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{platform.node()} · {os.cpu_count()} cores · {cpu} · Python "
            f"{platform.python_version()} · {platform.system()} {platform.release()}")


__all__ = ["LoadResult", "closed_loop", "free_port", "machine", "median", "percentile",
           "signed_deliveries", "spawn", "wait_http"]
