"""`make bench`: run every benchmark and print one compact table."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from bench import append, decide, endtoend, ingest, pgingest, render, replay, restart, takeover
from bench.common import machine

BENCHMARKS: dict[str, Callable[[], dict[str, Any]]] = {
    "ingest": ingest.main,
    "ingest-uvloop": ingest.main_uvloop,
    "pgingest": pgingest.main,
    "decide": decide.main,
    "endtoend": endtoend.main,
    "replay": replay.main,
    "restart": restart.main,
    "render": render.main,
    "append": append.main,
    "takeover": takeover.main,  # PostgreSQL replicas (docs/replicas.md)
}


def main(argv: list[str]) -> int:
    chosen = argv or list(BENCHMARKS)
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        print(f"bench: unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}",
              file=sys.stderr)
        return 2
    print(f"obsv benchmarks · {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(machine())
    for name in chosen:
        started = time.perf_counter()
        result = BENCHMARKS[name]()
        print(f"\n## {result['name']}  ({time.perf_counter() - started:.0f} s)")
        width = max(len(label) for label, _ in result["rows"])
        for label, value in result["rows"]:
            print(f"  {label:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
