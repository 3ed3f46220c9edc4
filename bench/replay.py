"""Replay: `obsv replay` and `--verify` over a 100k-record log vs a plain orjson parse
of every line of the same file, in the same run. Target: >= 0.5 of the parse rate."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.gen import write_log

RECORDS = 100_000


def _parse_all(path: Path) -> int:
    count = 0
    with open(path, "rb") as f:
        for line in f:
            orjson.loads(line)
            count += 1
    return count


def _timed(fn: Any) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "obsv", "replay", *args], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="obsv-bench-") as tmp:
        path = Path(tmp, "events.jsonl")
        records = write_log(path, RECORDS, distinct_issues=5_000, full_body=True)
        size = path.stat().st_size
        _parse_all(path)  # warm the page cache for everyone
        parse = min(_timed(lambda: _parse_all(path)) for _ in range(2))
        replay = min(_timed(lambda: _cli(str(path), "--json")) for _ in range(2))
        verify = min(_timed(lambda: _cli(str(path), "--verify")) for _ in range(2))
    rate = records / parse
    return {
        "name": "replay",
        "rows": [
            ("log", f"{records:,} records, {size / 1e6:,.0f} MB (docs sample bodies)"),
            ("orjson parse (limit)", f"{rate:,.0f} records/s  ({parse:.2f} s)"),
            ("obsv replay --json", f"{records / replay:,.0f} records/s  ({replay:.2f} s), "
                                   f"ratio {parse / replay:.2f}  (target >= 0.5)"),
            ("obsv replay --verify", f"{records / verify:,.0f} records/s  ({verify:.2f} s), "
                                     f"ratio {parse / verify:.2f}"),
        ],
    }
