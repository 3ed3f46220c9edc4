"""Ingest: the real `obsv serve` against the minimal durable receiver, same run.

32 concurrent connections send signed event_alert deliveries back to back; each
server group-commits and fsyncs before answering. Reported: req/s of both, the
ratio obsv / baseline, and p50/p99 latency. Targets: ratio >= 0.9, p99 <= 30 ms.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from bench.common import LoadResult, closed_loop, free_port, signed_deliveries, spawn, wait_http

SECRET = "bench-secret"
CONCURRENCY = 32
SECONDS = 8.0
WARMUP = 1.5


async def _measure(url: str, deliveries: list[tuple[bytes, dict[str, str]]]) -> Any:
    await closed_loop(url, deliveries, CONCURRENCY, WARMUP)
    return await closed_loop(url, deliveries, CONCURRENCY, SECONDS)


async def run() -> dict[str, Any]:
    deliveries = signed_deliveries(SECRET, 2000)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="obsv-bench-") as tmp:
        for name in ("baseline", "obsv"):
            port = free_port()
            if name == "baseline":
                proc = spawn(["bench/baseline_server.py", str(port), str(Path(tmp, "base.jsonl")),
                              SECRET])
            else:
                proc = spawn(["-m", "obsv", "serve"], env={
                    "OBSV_SENTRY_CLIENT_SECRET": SECRET, "OBSV_PORT": str(port),
                    "OBSV_EVENT_LOG": str(Path(tmp, "events.jsonl")),
                    "OBSV_OUTBOX_DIR": str(Path(tmp, "outbox")), "OBSV_LOG_FORMAT": "json",
                    # Storm budget and cooldown keep the dry-run sink from writing a file
                    # per alert, as in production.
                })
            try:
                await wait_http(f"http://127.0.0.1:{port}/healthz")
                results[name] = await _measure(f"http://127.0.0.1:{port}/webhooks/sentry",
                                               deliveries)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    base, ours = results["baseline"], results["obsv"]
    return {
        "name": "ingest",
        "rows": [
            ("baseline req/s", f"{base.rate:,.0f}"),
            ("obsv req/s", f"{ours.rate:,.0f}"),
            ("ratio obsv/baseline", f"{ours.rate / base.rate:.2f}  (target >= 0.9)"),
            ("baseline p50 / p99", _p50_p99(base)),
            ("obsv p50 / p99", _p50_p99(ours) + "  (target p99 <= 30 ms)"),
            ("statuses", f"baseline {base.statuses} obsv {ours.statuses}"),
        ],
    }


def _p50_p99(result: LoadResult) -> str:
    return f"{result.percentile(50) * 1e3:.1f} / {result.percentile(99) * 1e3:.1f} ms"


def main() -> dict[str, Any]:
    return asyncio.run(run())
