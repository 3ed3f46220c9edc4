"""Append: the cost of one record through ``EventLog`` itself, without HTTP.

Appends ``RECORDS`` signed-size alert records in concurrent batches of ``BATCH``
(as the receiver does under load) to a log in a temporary directory and reports
records/s and CPU microseconds per record (loop and log thread together). A small,
quick measurement of what the writer adds per record (encoding, and since the
chain, hashing): ``make bench``'s ingest measures the whole service.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from obsv.core.alert import Alert
from obsv.core.events import AlertReceived, Delivery
from obsv.eventlog import EventLog

RECORDS = 20_000
BATCH = 32
ROUNDS = 3


def _record(n: int) -> AlertReceived:
    alert = Alert(str(n % 500), f"{n:032x}", "error", f"p:hash:{n % 500}", "p", "prod",
                  "ZeroDivisionError: division by zero", "app.views.checkout", None)
    raw = ('{"action":"triggered","data":{"event":{"event_id":"' + f"{n:032x}"
           + '","title":"' + "x" * 1500 + '"}}}')
    return AlertReceived(Delivery(f"req-{n}", "event_alert", "1700000000", "a" * 64), alert,
                         raw)


async def _append_all(path: Path, events: list[AlertReceived]) -> None:
    log = EventLog.open(path)
    log.start()
    try:
        pending = [log.append_many(events[i:i + BATCH]) for i in range(0, len(events), BATCH)]
        await asyncio.gather(*pending)
    finally:
        await log.close()


def run() -> dict[str, Any]:
    events = [_record(n) for n in range(RECORDS)]
    best_wall, best_cpu = float("inf"), float("inf")
    for _ in range(ROUNDS):
        with tempfile.TemporaryDirectory(prefix="obsv-bench-") as tmp:
            wall, cpu = time.perf_counter(), time.process_time()
            asyncio.run(_append_all(Path(tmp, "events.jsonl"), events))
            best_wall = min(best_wall, time.perf_counter() - wall)
            best_cpu = min(best_cpu, time.process_time() - cpu)
    return {
        "name": "append",
        "rows": [
            ("records", f"{RECORDS:,} in concurrent batches of {BATCH}, best of {ROUNDS}"),
            ("records/s", f"{RECORDS / best_wall:,.0f}"),
            ("CPU per record", f"{best_cpu / RECORDS * 1e6:.1f} µs"),
        ],
    }


def main() -> dict[str, Any]:
    """The benchmark's figures."""
    return run()
