"""Replay: `obsv replay --json`, the table and `--verify` vs a plain orjson parse of
every line of the same file, in the same run, on two logs: 100k records with Sentry's
documented sample bodies (large lines, the raw body dominates) and 100k records with
small bodies (where per-record work dominates). Target: `--json` at >= 0.5 of the parse
rate on both. The parse is timed twice: in-process (a loop, no start-up) and as a
program of its own (Python starting, importing orjson, parsing), which is how the
commands are timed; both ratios are printed.

Also the codec alone, in-process: decoding a line into its record (with and without the
alert bodies) and encoding an ``alert.received`` (the record ingest encodes per
delivery), in µs; and where each kind of replay's time goes, per record, from timing
its phases in-process one after the other (process time, best of 3): `--json` reads the
recorded answers (obsv/ledger.py), the table and `--verify` fold the log (obsv/audit.py).
"""

from __future__ import annotations

import gc
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import orjson

from bench.gen import write_log
from obsv.audit import Audit, _fold, row_json
from obsv.auditcli import json_printable
from obsv.core.codec import decode_line_without_bodies, summaries
from obsv.core.events import AlertReceived, Envelope
from obsv.core.policy import State, apply
from obsv.eventlog import decode_line, encode_line
from obsv.ledger import recorded_rows

RECORDS = 100_000


def _lines(path: Path) -> list[bytes]:
    with open(path, "rb") as f:
        return list(f)


def _parse_all(path: Path) -> int:
    count = 0
    with open(path, "rb", buffering=1 << 20) as f:  # as obsv and the parse program read
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


# The same parse as a program of its own: a Python that starts, imports orjson and parses
# every line, as `obsv replay` is a program that starts, imports and replays.
_PARSE_PROGRAM = ("import sys, orjson\n"
                  "with open(sys.argv[1], 'rb', buffering=1 << 20) as f:\n"
                  "    for line in f:\n"
                  "        orjson.loads(line)\n")


def _parse_process(path: Path) -> None:
    subprocess.run([sys.executable, "-c", _PARSE_PROGRAM, str(path)], check=True)


def _replay_rows(path: Path, records: int, label: str) -> list[tuple[str, str]]:
    """The commands against the parse, in one run: best of 3 of each, alternating."""
    size = path.stat().st_size
    _parse_all(path)  # warm the page cache for everyone
    runs: dict[str, Callable[[], object]] = {
        "parse": lambda: _parse_all(path), "parse process": lambda: _parse_process(path),
        "json": lambda: _cli(str(path), "--json"), "table": lambda: _cli(str(path)),
        "verify": lambda: _cli(str(path), "--verify")}
    took = dict.fromkeys(runs, float("inf"))
    for _ in range(3):
        for name, run in runs.items():
            took[name] = min(took[name], _timed(run))
    parse, process = took["parse"], took["parse process"]

    def row(name: str, key: str, target: str = "") -> tuple[str, str]:
        seconds = took[key]
        return (f"{label}: {name}", f"{records / seconds:,.0f} records/s  ({seconds:.2f} s), "
                                    f"ratio {parse / seconds:.2f} in-process / "
                                    f"{process / seconds:.2f} as a process{target}")

    return [
        (f"{label}: log", f"{records:,} records, {size / 1e6:,.0f} MB"),
        (f"{label}: orjson parse (limit)", f"{records / parse:,.0f} records/s  ({parse:.2f} s "
                                           f"in-process, {process:.2f} s as a process)"),
        row("obsv replay --json", "json",
            "  (target >= 0.5, as a process: a command starts Python too)"),
        row("obsv replay (table)", "table"),
        row("obsv replay --verify", "verify"),
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
    def parse() -> None:
        with open(path, "rb", buffering=1 << 20) as f:
            for line in f:
                orjson.loads(line)

    def summarised() -> None:  # each dropped at once
        with open(path, "rb", buffering=1 << 20) as f:
            for _ in summaries(f):
                pass

    kept: list[Audit] = []  # freed apart: a replay frees what it kept as it returns

    def recorded() -> None:
        with open(path, "rb", buffering=1 << 20) as f:
            answer = recorded_rows(f)
        assert answer is not None
        kept.append(answer)

    def output() -> None:
        encode_lines = msgspec.json.Encoder().encode_lines
        rows = list(kept[0].rows.values())
        for start in range(0, len(rows), 1000):  # as obsv/auditcli.py prints them
            json_printable(encode_lines([row_json(kept[0], row)
                                         for row in rows[start:start + 1000]]))

    def free() -> None:
        kept.pop()

    def read() -> None:  # each record dropped at once, as a replay drops what it folded
        with open(path, "rb", buffering=1 << 20) as f:
            for line in f:
                decode_line_without_bodies(line)

    with open(path, "rb", buffering=1 << 20) as f:
        envelopes = [decode_line_without_bodies(line) for line in f]

    def fold_only() -> None:
        state = State()
        for envelope in envelopes:
            apply(state, envelope)

    def fold() -> None:
        kept.append(Audit(state=State()))
        for envelope in envelopes:
            _fold(kept[-1], envelope, None)
        kept.pop()

    one = path.with_suffix(".one")
    with open(path, "rb") as f:
        one.write_bytes(f.readline())
    start = min(_timed(lambda: _cli(str(one), "--json")) for _ in range(3))
    one.unlink()
    phases = {"orjson parse (the limit)": parse,
              "--json: read + summaries": summarised, "--json: the rows": recorded,
              "--json: output": output, "--json: freeing the rows (not in the command)": free,
              "fold: read + decode": read, "fold: policy.apply": fold_only,
              "fold: the audit's own": fold}
    took = {name: _best_process_time(fn) for name, fn in phases.items()}
    took["--json: the rows"] -= took["--json: read + summaries"]
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
