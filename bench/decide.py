"""Decision latency: from an alert's durable append to its decision's, at a steady
500 alerts/s (open loop). Both times are the server's own record times (`at`),
so the figure is what the consumer adds after the 202, not network or client noise."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.common import free_port, median, percentile, signed_deliveries, spawn, wait_http
from obsv.core.codec import parse_time

SECRET = "bench-secret"
RATE = 500
SECONDS = 6.0


async def _open_loop(url: str) -> list[float]:
    deliveries = signed_deliveries(SECRET, int(RATE * SECONDS), prefix="d")
    acks: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
        async def one(raw: bytes, headers: dict[str, str]) -> None:
            started = time.perf_counter()
            async with session.post(url, data=raw, headers=headers) as response:
                await response.read()
                assert response.status == 202, response.status
            acks.append(time.perf_counter() - started)

        tasks = []
        start = time.perf_counter()
        for n, (raw, headers) in enumerate(deliveries):
            delay = start + n / RATE - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(raw, headers)))
        await asyncio.gather(*tasks)
    return acks


def _decision_lags(log: Path) -> list[float]:
    received: dict[int, float] = {}
    lags = []
    with open(log, "rb") as f:
        for line in f:
            record = orjson.loads(line)
            if record["type"] == "alert.received":
                received[record["seq"]] = parse_time(record["at"]).timestamp()
            elif record["type"] == "alert.decided":
                lags.append(parse_time(record["at"]).timestamp() - received[record["alert_seq"]])
    return lags


async def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="obsv-bench-") as tmp:
        port = free_port()
        log = Path(tmp, "events.jsonl")
        proc = spawn(["-m", "obsv", "serve"], env={
            "OBSV_SENTRY_CLIENT_SECRET": SECRET, "OBSV_PORT": str(port),
            "OBSV_EVENT_LOG": str(log), "OBSV_OUTBOX_DIR": str(Path(tmp, "outbox")),
            "OBSV_LOG_FORMAT": "json"})
        try:
            await wait_http(f"http://127.0.0.1:{port}/readyz")
            acks = await _open_loop(f"http://127.0.0.1:{port}/webhooks/sentry")
            await asyncio.sleep(1.0)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        lags = _decision_lags(log)
    return {
        "name": "decide",
        "rows": [
            ("load", f"{len(acks):,} alerts at {RATE}/s (open loop)"),
            ("202 latency p50 / p99", f"{median(acks) * 1e3:.1f} / "
                                      f"{percentile(acks, 99) * 1e3:.1f} ms"),
            ("append -> decision p50 / p99", f"{median(lags) * 1e3:.1f} / "
                                             f"{percentile(lags, 99) * 1e3:.1f} ms"
                                             f"  ({len(lags):,} decisions)"),
        ],
    }


def main() -> dict[str, Any]:
    return asyncio.run(run())
