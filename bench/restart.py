"""Restart: seconds from `obsv serve` to /readyz 200, with and without the snapshot,
on 100k and 1M records; peak RSS with 100k distinct Sentry issues; and after a crash
left a 128 MiB NUL-filled tail without a newline (set aside on open: it used to take
minutes, the scan being quadratic).
Targets: ready <= 1 s on 1M records with a snapshot; <= 150 MB at 100k issues."""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import free_port, spawn, wait_http
from bench.gen import write_log


def _memory_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _start_to_ready(log: Path, snapshot_every: int = 10_000) -> tuple[float, str]:
    """(seconds to ready, "RSS / peak RSS"); the clean stop writes a snapshot."""
    port = free_port()
    started = time.perf_counter()
    proc = spawn(["-m", "obsv", "serve"], env={
        "OBSV_SENTRY_CLIENT_SECRET": "bench", "OBSV_PORT": str(port), "OBSV_EVENT_LOG": str(log),
        "OBSV_OUTBOX_DIR": str(log.parent / "outbox"), "OBSV_LOG_FORMAT": "json",
        "OBSV_SNAPSHOT_EVERY": str(snapshot_every),
        # Same policy as the generated log, so no config.applied is needed.
        "OBSV_MAX_ISSUES_PER_HOUR": "1000000", "OBSV_COOLDOWN_SECONDS": "3600"})
    try:
        asyncio.run(wait_http(f"http://127.0.0.1:{port}/readyz", timeout=600, interval=0.01))
        elapsed = time.perf_counter() - started
        rss = (f"RSS {_memory_mb(proc.pid, 'VmRSS'):.0f} MB, "
               f"peak {_memory_mb(proc.pid, 'VmHWM'):.0f} MB")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=600)
    return elapsed, rss


def _case(tmp: str, records: int, issues: int) -> list[tuple[str, str]]:
    log = Path(tmp, f"events-{records}.jsonl")
    write_log(log, records, distinct_issues=issues, max_issues_per_hour=1_000_000)
    # The generator does not fsync: without this the kernel writes the log back (600 MB
    # at 1M records) while the starts are timed, which once doubled a warm start.
    os.sync()
    snapshot = log.with_name(log.name + ".snapshot")
    cold, cold_rss = _start_to_ready(log)          # full fold; the stop writes a snapshot
    warm, warm_rss = _start_to_ready(log)          # snapshot + nothing to fold
    size = log.stat().st_size / 1e6
    snap = snapshot.stat().st_size / 1e6 if snapshot.exists() else 0
    os.unlink(log)
    label = f"{records // 1000:,}k records, {issues // 1000:,}k issues"
    return [
        (f"{label}: log / snapshot", f"{size:,.0f} MB / {snap:,.1f} MB"),
        (f"{label}: ready, no snapshot", f"{cold:.2f} s ({cold_rss})"),
        (f"{label}: ready, snapshot", f"{warm:.2f} s ({warm_rss})"),
    ]


def _torn_tail_case(tmp: str, tail_mib: int = 128) -> list[tuple[str, str]]:
    log = Path(tmp, "events-torn.jsonl")
    write_log(log, 1_000, distinct_issues=100, max_issues_per_hour=1_000_000)
    with open(log, "ab") as f:
        f.truncate(log.stat().st_size + tail_mib * (1 << 20))  # NULs, as after a crash
    ready, rss = _start_to_ready(log)
    for side in log.parent.glob(log.name + ".torn-*"):
        os.unlink(side)
    os.unlink(log)
    return [(f"1k records + {tail_mib} MiB NUL tail: ready", f"{ready:.2f} s ({rss})")]


def main() -> dict[str, Any]:
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="obsv-bench-") as tmp:
        rows += _case(tmp, 100_000, 100_000 // 3)
        rows += _case(tmp, 1_000_000, 100_000)
        rows += _torn_tail_case(tmp)
    rows.append(("targets", "ready <= 1 s on 1M with snapshot; peak RSS <= 150 MB at 100k issues"))
    return {"name": "restart", "rows": rows}
