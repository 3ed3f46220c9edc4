"""A hostile review of ``obsv replay --json`` reading the recorded answers (obsv/ledger.py):
where it must answer as the fold does, or leave the log to the fold, and never crash,
print part of an answer, or let a log drive the terminal (docs/reference.md §1)."""

from __future__ import annotations

import asyncio
import io
import json
import re
from contextlib import redirect_stdout
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from obsv.audit import Audit, audit, row_json
from obsv.auditcli import _print_rows
from obsv.core.codec import CodecError, decode_line
from obsv.core.events import ConfigApplied, Envelope, IssueOpened, Policy
from obsv.eventlog import encode_line
from obsv.ledger import recorded_rows

from . import test_lifecycle_properties as lifecycle
from .records import Log, seconds
from .test_audit_cli import obsv, three_alerts, write
from .test_ledger import decode_summary
from .test_pg_service import obsv as obsv_bytes

# Valid RFC 3339 times that UTC cannot hold: datetime.astimezone(UTC) overflows.
BEFORE_YEAR_1 = "0001-01-01T00:30:00+01:00"
AFTER_YEAR_9999 = "9999-12-31T23:59:59-01:00"


def log_lines(log: Log) -> list[bytes]:
    return [encode_line(envelope) for envelope in log.records]


def with_at(line: bytes, at: str) -> bytes:
    """``line`` with its own time replaced (the first ``"at"`` key is the line's)."""
    return re.sub(rb'"at":"[^"]*"', b'"at":"' + at.encode() + b'"', line, count=1)


def with_since(line: bytes, since: str) -> bytes:
    """An ``alert.decided`` line with a ``since`` added after its reason."""
    assert b'"type":"alert.decided"' in line
    return re.sub(rb'("reason":"[a-z_]+")', rb'\1,"since":"' + since.encode() + b'"', line,
                  count=1)


# -- finding 1: a time that UTC cannot hold -------------------------------------------------


@pytest.mark.parametrize("at", [BEFORE_YEAR_1, AFTER_YEAR_9999])
def test_an_alert_time_that_utc_cannot_hold_is_refused_not_a_crash(at: str) -> None:
    """decode_summary promised a CodecError for a line it cannot summarise; it raised
    OverflowError out of ``astimezone`` and ``obsv replay --json`` died with a traceback."""
    lines = log_lines(three_alerts())
    received = next(i for i, line in enumerate(lines) if b'"alert.received"' in line)
    lines[received] = with_at(lines[received], at)
    with pytest.raises(CodecError, match="out of range in UTC"):
        decode_summary(lines[received])
    assert recorded_rows(lines) is None  # the fold's to name


def test_a_decision_since_that_utc_cannot_hold_is_refused_when_read() -> None:
    """Else it is accepted and crashes ``format_time`` while the rows are printed."""
    lines = log_lines(three_alerts())
    decided = next(i for i, line in enumerate(lines) if b'"alert.decided"' in line)
    lines[decided] = with_since(lines[decided], BEFORE_YEAR_1)
    with pytest.raises(CodecError, match="out of range in UTC"):
        decode_summary(lines[decided])
    assert recorded_rows(lines) is None


@pytest.mark.parametrize("kind", ["config.applied", "issue.opened"])
def test_a_record_read_in_full_with_such_a_time_is_left_to_the_fold(kind: str) -> None:
    """The records the ledger reads in full (decode_line) raise OverflowError there too."""
    log = three_alerts()
    log.add(IssueOpened(2, "100", "o/r", 1, "https://github.com/o/r/issues/1", False))
    log.add(ConfigApplied(Policy(repo="o/r")))
    lines = log_lines(log)
    where = next(i for i, line in enumerate(lines) if f'"type":"{kind}"'.encode() in line)
    lines[where] = with_at(lines[where], AFTER_YEAR_9999)
    assert recorded_rows(lines) is None


offsets = st.builds(lambda minutes: timezone(timedelta(minutes=minutes)),
                    st.integers(-(24 * 60 - 1), 24 * 60 - 1))


@settings(max_examples=150, deadline=None)
@given(at=st.one_of(  # the first and last days, where an offset leaves UTC's calendar
    st.datetimes(max_value=datetime(1, 1, 1, 23, 59), timezones=offsets),
    st.datetimes(min_value=datetime(9999, 12, 31), timezones=offsets),
    st.datetimes(timezones=offsets)))
def test_any_alert_time_is_summarised_as_decode_line_reads_it_or_refused(at: datetime) -> None:
    """Never an exception other than CodecError; where both read the line, the same time."""
    line = with_at(log_lines(three_alerts())[1], at.isoformat())
    try:
        summarised = decode_summary(line)[2]
    except CodecError:
        return
    assert summarised == decode_line(line).at
    assert summarised is not None and summarised.tzinfo is UTC


def many_alerts(count: int) -> Log:
    log = Log()
    log.config()
    for n in range(count):
        log.alert(after=seconds(1), issue=str(100 + n % 3))
    return log


def test_nothing_partial_is_printed_for_a_bad_time_past_the_first_batch(tmp_path: Path) -> None:
    """Rows are encoded and written a thousand at a time: a row that failed to format
    after the first thousand left those on stdout before the traceback."""
    lines = log_lines(many_alerts(1001))
    lines[-1] = with_since(lines[-1], BEFORE_YEAR_1)
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(lines))
    result = obsv("replay", str(path), "--json")
    assert result.stdout == ""
    assert result.returncode != 0


@pytest.mark.parametrize("where", ["at", "since"])
def test_a_time_that_utc_cannot_hold_is_a_bad_line_not_a_traceback(tmp_path: Path,
                                                                  where: str) -> None:
    lines = log_lines(three_alerts())
    if where == "at":
        lines[1] = with_at(lines[1], BEFORE_YEAR_1)
    else:
        lines[2] = with_since(lines[2], BEFORE_YEAR_1)
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(lines))
    result = obsv("replay", str(path), "--json")
    assert (result.returncode, result.stdout) == (2, "")
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert "line " in result.stderr and "not a valid record" in result.stderr


# -- checked and sound: the rows under any reordering, terminal safety, the database ------

edits = st.lists(st.tuples(st.sampled_from(["move", "copy", "drop"]), st.integers(0, 10**6),
                           st.integers(0, 10**6)), min_size=1, max_size=4)


@settings(max_examples=100, deadline=None)
@given(script=lifecycle.steps, edits=edits)
def test_any_reordered_copied_or_dropped_record_gives_the_folds_rows_or_the_fold(
        script: list[tuple[object, ...]], edits: list[tuple[str, int, int]]) -> None:
    """Decisions before or long after their alerts, twice, or never; outcomes before
    their decisions or for nothing; configs moved: wherever the recorded answers answer,
    the fold reads every line and gives the same JSON rows."""
    records = list(lifecycle.build(script).records)
    for edit, source, target in edits:
        source, target = source % len(records), target % (len(records) + 1)
        if edit == "move":
            records.insert(min(target, len(records) - 1), records.pop(source))
        elif edit == "copy":
            records.insert(target, records[source])
        elif len(records) > 1:
            records.pop(source)
    lines = [encode_line(Envelope(seq, e.at, e.event)) for seq, e in enumerate(records, 1)]
    fast, full = recorded_rows(lines), audit(enumerate(lines))
    if fast is None:
        return
    assert full.unreadable is None and full.torn is None and not full.of_kind("gap")
    assert [row_json(fast, r) for r in fast.rows.values()] == [
        row_json(full, r) for r in full.rows.values()]


# -- terminal safety and the database path -------------------------------

# What the fold printed before the recorded answers (f7c830a): orjson, then every
# character of this class as \uXXXX.
_OLD_UNSAFE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printed_before(result: Audit) -> bytes:
    out = b""
    for row in result.rows.values():
        data = orjson.dumps(msgspec.to_builtins(row_json(result, row)))
        text = _OLD_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", data.decode())
        out += text.encode() + b"\n"
    return out


def printed_now(result: Audit) -> bytes:
    buffer = io.BytesIO()
    stdout = io.TextIOWrapper(buffer, encoding="utf-8")
    with redirect_stdout(stdout):
        _print_rows(result, list(result.rows.values()), as_json=True, current=False)
    stdout.detach()  # keeps the buffer open
    return buffer.getvalue()


# What a terminal acts on, often drawn, among any other characters (no surrogates: a
# line holding one is not JSON, and both decoders refuse it).
hostile_text = st.text(st.one_of(
    st.sampled_from("\x00\x1b\x07\n\r\t\x7f\x85\x9b\u061c\u200e\u2028\u2029\u202e\u2066"
                    "\ufeff\U000e0001\"\\"),
    st.characters(codec="utf-8")), max_size=40)


@settings(max_examples=150, deadline=None)
@given(title=hostile_text, environment=hostile_text, issue=hostile_text.filter(bool))
def test_hostile_titles_print_as_before_one_inert_line_per_row(
        title: str, environment: str, issue: str) -> None:
    """Any text (C0/C1 controls, DEL, U+2028, bidi overrides, NUL, astral): the recorded
    answers print the bytes the fold printed before, one line per row, nothing a
    terminal acts on, and the values read back."""
    log = Log()
    log.config()
    log.alert(issue=issue, title=title, environment=environment)
    log.alert(after=seconds(5), issue=issue, title=title, environment=environment)
    lines = log_lines(log)
    fast = recorded_rows(lines)
    assert fast is not None
    printed = printed_now(fast)
    assert printed == printed_now(audit(enumerate(lines))) == printed_before(fast)
    rows = printed.split(b"\n")
    assert rows[-1] == b"" and len(rows) == 3
    assert not _OLD_UNSAFE.search(printed.decode()[:-1].replace("\n", ""))
    assert [json.loads(row)["title"] for row in rows[:2]] == [title, title]


async def test_the_database_gives_the_files_answer_where_the_log_is_left_to_the_fold(
        pg_url: str, tmp_path: Path) -> None:
    """``--database-url`` reads the lines twice when the recorded answers give up at the
    end (an undecided last alert): the second pass must start from the first line."""
    log = many_alerts(5)
    log.alert(after=seconds(5), record=False, issue="200")
    path = write(tmp_path / "events.jsonl", log)
    loop = asyncio.get_running_loop()

    def offline() -> list[tuple[int, bytes, bytes]]:
        loaded = obsv_bytes("import", str(path), "--database-url", pg_url)
        assert loaded.returncode == 0, loaded.stderr
        answers = []
        for source in ([str(path)], ["--database-url", pg_url]):
            for extra in ([], ["--issue", "200"]):
                done = obsv_bytes("replay", *source, "--json", *extra)
                answers.append((done.returncode, done.stdout, done.stderr))
        return answers

    from_file, file_200, from_db, db_200 = await loop.run_in_executor(None, offline)
    assert from_db == from_file and db_200 == file_200
    rows = [json.loads(line) for line in from_db[1].splitlines()]
    assert len(rows) == 6 and rows[-1]["action"] is None  # derived, not recorded: the fold
    assert [json.loads(line)["seq"] for line in db_200[1].splitlines()] == [rows[-1]["seq"]]
