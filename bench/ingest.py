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

``python -m bench.ingest TREE ...`` compares builds the same way: the baseline, obsv
run from each TREE (a checkout, e.g. ``git archive f7c830a | tar -x -C /tmp/old``)
and obsv from this tree, all serving at once and measured in alternating slices. On a
shared machine that is how a change of a few µs per request can be told from the load.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import (
    ROOT,
    Delivery,
    LoadResult,
    closed_loop,
    comparison_rows,
    free_port,
    signed_deliveries,
    spawn,
    wait_http,
)

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


def _servers(tmp: str, uvloop: bool, trees: dict[str, Path] | None = None
             ) -> dict[str, tuple[subprocess.Popen[bytes], int]]:
    """The baseline, then obsv from each of ``trees`` (default: this one, as "obsv")."""
    base_port = free_port()
    baseline = spawn(["bench/baseline_server.py", str(base_port), str(Path(tmp, "base.jsonl")),
                      SECRET, *(["uvloop"] if uvloop else [])])
    servers = {"baseline": (baseline, base_port)}
    for name, tree in (trees or {"obsv": ROOT}).items():
        port = free_port()
        servers[name] = (spawn(["-c", _OBSV_ON_UVLOOP] if uvloop else ["-m", "obsv", "serve"],
                               cwd=tree, env={
            "OBSV_SENTRY_CLIENT_SECRET": SECRET, "OBSV_PORT": str(port),
            "OBSV_EVENT_LOG": str(Path(tmp, f"{name}.jsonl")),
            "OBSV_OUTBOX_DIR": str(Path(tmp, f"{name}-outbox")), "OBSV_LOG_FORMAT": "json",
            # Storm budget and cooldown keep the dry-run sink from writing a file
            # per alert, as in production.
        }), port)
    return servers


async def _measure(uvloop: bool, trees: dict[str, Path] | None,
                   order: Callable[[list[str]], list[str]]
                   ) -> tuple[dict[str, LoadResult], dict[str, float]]:
    """Serve the baseline and obsv (from each of ``trees``), warm each up, then measure
    one slice per name of ``order(names)``; each server's load joined over its slices,
    and its CPU seconds per request."""
    deliveries = signed_deliveries(SECRET, 2000)
    with tempfile.TemporaryDirectory(prefix="obsv-bench-") as tmp:
        servers = _servers(tmp, uvloop, trees)
        slices: dict[str, list[LoadResult]] = {name: [] for name in servers}
        cpu = dict.fromkeys(servers, 0.0)
        try:
            urls = {name: await _warmed(name, port, deliveries)
                    for name, (_proc, port) in servers.items()}
            for name in order(list(servers)):
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
    joined = {name: _joined(results) for name, results in slices.items()}
    return joined, {name: cpu[name] / joined[name].requests for name in joined}


async def run(uvloop: bool = False) -> dict[str, Any]:
    joined, cpu = await _measure(
        uvloop, None, lambda _names: ["baseline", "obsv", "obsv", "baseline"] * (SLICES // 2))
    base, ours = joined["baseline"], joined["obsv"]
    return {"name": "ingest on uvloop" if uvloop else "ingest",
            "rows": comparison_rows(base, ours, (cpu["baseline"], cpu["obsv"]))}


def _joined(results: list[LoadResult]) -> LoadResult:
    statuses: dict[int, int] = {}
    for result in results:
        for status, count in result.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
    return LoadResult(sum(r.requests for r in results), sum(r.seconds for r in results),
                      [latency for r in results for latency in r.latencies], statuses)


async def paired(trees: dict[str, Path], rounds: int = SLICES) -> dict[str, Any]:
    """The baseline and obsv from each of ``trees``, measured alike: every round runs
    one slice of each, in turn forward then backward, so that load from elsewhere
    falls on all of them."""
    joined, cpu = await _measure(False, trees, lambda names: [
        name for turn in range(rounds) for name in (names if turn % 2 == 0 else names[::-1])])
    base = joined["baseline"]
    return {"name": "ingest, paired builds", "rows": [
        (name, f"{result.rate:,.0f} req/s, ratio {result.rate / base.rate:.2f}, "
               f"{cpu[name] * 1e6:.1f} µs CPU per request, "
               f"p99 {result.percentile(99) * 1e3:.1f} ms, {result.statuses}")
        for name, result in joined.items()]}


async def _warmed(name: str, port: int, deliveries: list[Delivery]) -> str:
    """Wait for a server to be ready and warm it up; its webhook URL."""
    ready = "/healthz" if name == "baseline" else "/readyz"  # the baseline has no fold
    await wait_http(f"http://127.0.0.1:{port}{ready}")
    url = f"http://127.0.0.1:{port}/webhooks/sentry"
    await closed_loop(url, deliveries, CONCURRENCY, WARMUP)
    return url


def main() -> dict[str, Any]:
    return asyncio.run(run())


def main_uvloop() -> dict[str, Any]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {"name": "ingest on uvloop",
                "rows": [("skipped", "uvloop is not installed (pip install uvloop)")]}
    return asyncio.run(run(uvloop=True))


if __name__ == "__main__":
    import sys

    if not sys.argv[1:]:
        print("usage: python -m bench.ingest TREE ...  (obsv from each TREE, e.g. an older "
              "git archive, against obsv from this tree)", file=sys.stderr)
        raise SystemExit(2)
    chosen = {Path(tree).resolve().name: Path(tree).resolve() for tree in sys.argv[1:]}
    result = asyncio.run(paired({**chosen, "this tree": ROOT}))
    print(f"## {result['name']}")
    for label, value in result["rows"]:
        print(f"  {label:<12}  {value}")
