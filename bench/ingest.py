"""Ingest: the real `obsv serve` against the minimal durable receiver, same run.

32 concurrent connections send signed event_alert deliveries back to back; each
server group-commits and fsyncs before answering. Reported: req/s of both, the
ratio obsv / baseline, p50/p99 latency, and each server's CPU time per request.
Targets: ratio >= 0.8 (0.9 beyond issue 12), p99 <= 30 ms.

Both servers run for the whole benchmark and are measured in alternating slices
(baseline, obsv, obsv, baseline, ...), so that load from elsewhere on a shared
machine falls on both alike: measured one after the other, the ratio of one
version of obsv ranged from 0.37 to 0.92 within ten minutes.
``ingest-uvloop`` runs both servers on uvloop's event loop instead of asyncio's
(obsv does not use it; this is how that choice is measured).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.common import LoadResult, closed_loop, free_port, signed_deliveries, spawn, wait_http

SECRET = "bench-secret"
CONCURRENCY = 32
SLICES = 4  # per server, alternating: B O O B B O O B
SLICE_SECONDS = 2.0
WARMUP = 1.5

# obsv serve on uvloop's loop, as the baseline runs with its "uvloop" argument.
_OBSV_ON_UVLOOP = ("import asyncio, sys, uvloop; "
                   "asyncio.set_event_loop_policy(uvloop.EventLoopPolicy()); "
                   "from obsv.cli import main; sys.exit(main(['serve']))")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _servers(tmp: str, uvloop: bool) -> dict[str, tuple[subprocess.Popen[bytes], int]]:
    base_port, obsv_port = free_port(), free_port()
    baseline = spawn(["bench/baseline_server.py", str(base_port), str(Path(tmp, "base.jsonl")),
                      SECRET, *(["uvloop"] if uvloop else [])])
    obsv = spawn(["-c", _OBSV_ON_UVLOOP] if uvloop else ["-m", "obsv", "serve"], env={
        "OBSV_SENTRY_CLIENT_SECRET": SECRET, "OBSV_PORT": str(obsv_port),
        "OBSV_EVENT_LOG": str(Path(tmp, "events.jsonl")),
        "OBSV_OUTBOX_DIR": str(Path(tmp, "outbox")), "OBSV_LOG_FORMAT": "json",
        # Storm budget and cooldown keep the dry-run sink from writing a file
        # per alert, as in production.
    })
    return {"baseline": (baseline, base_port), "obsv": (obsv, obsv_port)}


async def run(uvloop: bool = False) -> dict[str, Any]:
    deliveries = signed_deliveries(SECRET, 2000)
    slices: dict[str, list[LoadResult]] = {"baseline": [], "obsv": []}
    cpu = dict.fromkeys(slices, 0.0)
    with tempfile.TemporaryDirectory(prefix="obsv-bench-") as tmp:
        servers = _servers(tmp, uvloop)
        try:
            urls = {}
            for name, (_proc, port) in servers.items():
                ready = "/readyz" if name == "obsv" else "/healthz"  # the baseline has no fold
                await wait_http(f"http://127.0.0.1:{port}{ready}")
                urls[name] = f"http://127.0.0.1:{port}/webhooks/sentry"
                await closed_loop(urls[name], deliveries, CONCURRENCY, WARMUP)
            order = ["baseline", "obsv", "obsv", "baseline"] * (SLICES // 2)
            for name in order:
                pid = servers[name][0].pid
                before = _cpu_seconds(pid)
                slices[name].append(await closed_loop(urls[name], deliveries, CONCURRENCY,
                                                      SLICE_SECONDS))
                cpu[name] += _cpu_seconds(pid) - before
        finally:
            for proc, _port in servers.values():
                proc.terminate()
            for proc, _port in servers.values():
                proc.wait(timeout=30)
    base, ours = _joined(slices["baseline"]), _joined(slices["obsv"])
    return {
        "name": "ingest on uvloop" if uvloop else "ingest",
        "rows": [
            ("baseline req/s", f"{base.rate:,.0f}"),
            ("obsv req/s", f"{ours.rate:,.0f}"),
            ("ratio obsv/baseline", f"{ours.rate / base.rate:.2f}  (target >= 0.8)"),
            ("baseline p50 / p99", _p50_p99(base)),
            ("obsv p50 / p99", _p50_p99(ours) + "  (target p99 <= 30 ms)"),
            ("server CPU per request", f"baseline {cpu['baseline'] / base.requests * 1e6:.0f} µs, "
                                       f"obsv {cpu['obsv'] / ours.requests * 1e6:.0f} µs"),
            ("statuses", f"baseline {base.statuses} obsv {ours.statuses}"),
        ],
    }


def _joined(results: list[LoadResult]) -> LoadResult:
    statuses: dict[int, int] = {}
    for result in results:
        for status, count in result.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
    return LoadResult(sum(r.requests for r in results), sum(r.seconds for r in results),
                      [latency for r in results for latency in r.latencies], statuses)


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
