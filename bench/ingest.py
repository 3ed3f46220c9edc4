"""Ingest: the real `obsv serve` against the minimal durable receiver, same run.

32 concurrent connections send signed event_alert deliveries back to back; each
server group-commits and fsyncs before answering. Reported: req/s of both, the
ratio obsv / baseline, and p50/p99 latency. Targets: ratio >= 0.8 (0.9 beyond issue
12), p99 <= 30 ms. ``ingest-uvloop`` runs both servers on uvloop's event loop instead
of asyncio's (obsv does not use it; this is how that choice is measured).
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


# obsv serve on uvloop's loop, as the baseline runs with its "uvloop" argument.
_OBSV_ON_UVLOOP = ("import asyncio, sys, uvloop; "
                   "asyncio.set_event_loop_policy(uvloop.EventLoopPolicy()); "
                   "from obsv.cli import main; sys.exit(main(['serve']))")


async def run(uvloop: bool = False) -> dict[str, Any]:
    deliveries = signed_deliveries(SECRET, 2000)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="obsv-bench-") as tmp:
        for name in ("baseline", "obsv"):
            port = free_port()
            if name == "baseline":
                proc = spawn(["bench/baseline_server.py", str(port), str(Path(tmp, "base.jsonl")),
                              SECRET, *(["uvloop"] if uvloop else [])])
            else:
                proc = spawn(["-c", _OBSV_ON_UVLOOP] if uvloop else ["-m", "obsv", "serve"], env={
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
        "name": "ingest on uvloop" if uvloop else "ingest",
        "rows": [
            ("baseline req/s", f"{base.rate:,.0f}"),
            ("obsv req/s", f"{ours.rate:,.0f}"),
            ("ratio obsv/baseline", f"{ours.rate / base.rate:.2f}  (target >= 0.8)"),
            ("baseline p50 / p99", _p50_p99(base)),
            ("obsv p50 / p99", _p50_p99(ours) + "  (target p99 <= 30 ms)"),
            ("statuses", f"baseline {base.statuses} obsv {ours.statuses}"),
        ],
    }


def _p50_p99(result: LoadResult) -> str:
    return f"{result.percentile(50) * 1e3:.1f} / {result.percentile(99) * 1e3:.1f} ms"


def main() -> dict[str, Any]:
    return asyncio.run(run())


def main_uvloop() -> dict[str, Any]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {"name": "ingest on uvloop",
                "rows": [("skipped", "uvloop is not installed (pip install uvloop)")]}
    return asyncio.run(run(uvloop=True))
