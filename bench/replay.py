"""Replay: `obsv replay --json` and `--verify` vs a plain orjson parse of every line of the
same file, in the same run, on two logs: 100k records with Sentry's documented sample
bodies (large lines, the raw body dominates) and 100k records with small bodies (where
per-record work dominates). Target: >= 0.5 of the parse rate on both.

Also the codec alone, in-process: decoding a line into its record (with and without the
alert bodies) and encoding an ``alert.received`` (the record ingest encodes per
delivery), in µs; and where a replay's time goes, per record, from timing its phases
in-process one after the other (process time, best of 3)."""

from __future__ import annotations

import gc
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench.gen import write_log
from obsv.audit import Audit, _fold, row_json
from obsv.auditcli import json_printable
from obsv.core.codec import decode_line_without_bodies
from obsv.core.events import AlertReceived, Envelope
from obsv.core.policy import State, apply
from obsv.eventlog import decode_line, encode_line

RECORDS = 100_000


def _lines(path: Path) -> list[bytes]:
    with open(path, "rb") as f:
        return list(f)


def _parse_all(path: Path) -> int:
    count = 0
    with open(path, "rb") as f:
        for line in f:
            orjson.loads(line)
            count += 1
    return count


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "obsv", "replay", *args], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _per_item_us(fn: Callable[[Any], object], items: list[Any]) -> float:
    """Best of 3 of ``fn`` over ``items``, in µs per item; results are dropped at once,
    as a replay drops each parsed line (keeping them would time the allocator)."""
    def run() -> None:
        for item in items:
            fn(item)
    return min(_timed(run) for _ in range(3)) / len(items) * 1e6


def _codec_rows(path: Path, label: str) -> list[tuple[str, str]]:
    """µs per line: orjson.loads alone, and the codec's decode_line; µs per encode."""
    lines = _lines(path)[:20_000]
    loads = _per_item_us(orjson.loads, lines)
    decode = _per_item_us(decode_line, lines)
    bodyless = _per_item_us(decode_line_without_bodies, lines)
    # As ingest stamps them: a clock time, with microseconds (the bench log has whole
    # seconds, which take format_time's slower way).
    received = [Envelope(r.seq, r.at.replace(microsecond=123_456), r.event)
                for r in map(decode_line, lines) if isinstance(r.event, AlertReceived)]
    encode = _per_item_us(encode_line, received)
    return [
        (f"{label}: decode_line", f"{decode:.2f} µs/line ({loads / decode:.2f}x the "
                                  f"orjson.loads rate, {loads:.2f} µs)"),
        (f"{label}: decode_line_without_bodies",
         f"{bodyless:.2f} µs/line ({loads / bodyless:.2f}x the orjson.loads rate)"),
        (f"{label}: encode alert.received", f"{encode:.2f} µs/record"),
    ]


def _replay_rows(path: Path, records: int, label: str) -> list[tuple[str, str]]:
    size = path.stat().st_size
    _parse_all(path)  # warm the page cache for everyone
    parse = min(_timed(lambda: _parse_all(path)) for _ in range(2))
    replay = min(_timed(lambda: _cli(str(path), "--json")) for _ in range(2))
    verify = min(_timed(lambda: _cli(str(path), "--verify")) for _ in range(2))
    return [
        (f"{label}: log", f"{records:,} records, {size / 1e6:,.0f} MB"),
        (f"{label}: orjson parse (limit)", f"{records / parse:,.0f} records/s  ({parse:.2f} s)"),
        (f"{label}: obsv replay --json", f"{records / replay:,.0f} records/s  "
                                         f"({replay:.2f} s), ratio {parse / replay:.2f}  "
                                         "(target >= 0.5)"),
        (f"{label}: obsv replay --verify", f"{records / verify:,.0f} records/s  "
                                           f"({verify:.2f} s), ratio {parse / verify:.2f}"),
    ]


def _best_process_time(fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return best


def _split_rows(path: Path, records: int, label: str) -> list[tuple[str, str]]:
    """A replay --json's phases, one after the other, in µs per record: what the parse
    costs, reading and decoding, policy.apply, the audit's own fold (less apply), the
    --json rows, freeing the rows and maps the audit kept, and starting the command (a
    replay of a one-line log). The collector is off, as in a replay."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _phases(path, records, label)
    finally:
        if collecting:
            gc.enable()


def _phases(path: Path, records: int, label: str) -> list[tuple[str, str]]:
    def read() -> None:  # each record dropped at once, as a replay drops what it folded
        with open(path, "rb", buffering=1 << 20) as f:
            for line in f:
                decode_line_without_bodies(line)

    def parse() -> None:
        with open(path, "rb", buffering=1 << 20) as f:
            for line in f:
                orjson.loads(line)

    with open(path, "rb", buffering=1 << 20) as f:
        envelopes = [decode_line_without_bodies(line) for line in f]

    def fold_only() -> None:
        state = State()
        for envelope in envelopes:
            apply(state, envelope)

    kept: list[Audit] = []  # freed apart: a replay frees what it kept as it returns

    def audit() -> None:
        kept.append(Audit(state=State()))
        for envelope in envelopes:
            _fold(kept[-1], envelope, None)

    def rows() -> None:
        for row in kept[0].rows.values():
            json_printable(orjson.dumps(row_json(kept[0], row)))

    def free() -> None:
        kept.pop()

    one = path.with_suffix(".one")
    with open(path, "rb") as f:
        one.write_bytes(f.readline())
    start = min(_timed(lambda: _cli(str(one), "--json")) for _ in range(3))
    one.unlink()
    phases = {"orjson parse (the limit)": parse, "read + decode": read,
              "fold: policy.apply": fold_only, "fold: the audit's own": audit,
              "--json output": rows, "freeing what the audit kept": free}
    took = {name: _best_process_time(fn) for name, fn in phases.items()}
    took["fold: the audit's own"] -= took["fold: policy.apply"]
    return [(f"{label}: {name}", f"{seconds / records * 1e6:.2f} µs/record")
            for name, seconds in took.items()] + [
        (f"{label}: start (python + imports)", f"{start:.3f} s, "
                                               f"{start / records * 1e6:.2f} µs/record")]


def main() -> dict[str, Any]:
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="obsv-bench-") as tmp:
        for label, full_body in (("sample bodies", True), ("small bodies", False)):
            path = Path(tmp, f"events-{int(full_body)}.jsonl")
            records = write_log(path, RECORDS, distinct_issues=5_000, full_body=full_body)
            rows += _replay_rows(path, records, label)
            rows += _codec_rows(path, label)
            rows += _split_rows(path, records, label)
            path.unlink()
    return {"name": "replay", "rows": rows}
