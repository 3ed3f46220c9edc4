"""``obsv replay --json`` reads the recorded answers (obsv/ledger.py): the same rows the
full fold gives, wherever it answers, and the full fold wherever it cannot."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import astuple

from obsv.audit import Audit, audit, row_json
from obsv.core.codec import (
    AlertSummary,
    CodecError,
    DecidedSummary,
    ReceivedSummary,
    decode_line,
    summaries,
)
from obsv.core.events import (
    AlertDecided,
    AlertReceived,
    Envelope,
    IssueOpened,
    StormDecided,
)
from obsv.eventlog import encode_line
from obsv.ledger import recorded_rows

from . import test_lifecycle_properties as lifecycle
from . import test_policy_properties as policy
from .records import Log, seconds
from .test_audit_cli import obsv, three_alerts, write

GOLDEN = Path(__file__).parent / "golden" / "records.jsonl"


def decode_summary(line: bytes) -> tuple[str, int, datetime | None, Any]:
    """One line's summary (``summaries``) as its type, seq, the time (UTC) and
    ``AlertSummary`` of an ``alert.received`` or the decision of an ``alert.decided``,
    and None for what a type does not have."""
    summary = next(summaries((line if line.endswith(b"\n") else line + b"\n",)))
    kind = type(summary)
    if kind is ReceivedSummary:
        return AlertReceived.TYPE, summary.seq, summary.at, summary.alert
    return summary.TYPE, summary.seq, None, summary if kind is DecidedSummary else None


def lines_of(records: list[Envelope]) -> list[bytes]:
    return [encode_line(envelope) for envelope in records]


def json_rows(result: Audit) -> list[bytes]:
    return [msgspec.json.encode(row_json(result, row)) for row in result.rows.values()]


def the_fold(lines: list[bytes]) -> Audit:
    return audit(enumerate(lines))


def why_it_must_fold(records: list[Envelope]) -> str | None:
    """Why the recorded answers cannot be the fold's for these well-formed logs."""
    decided = {e.event.alert_seq for e in records if isinstance(e.event, AlertDecided)}
    if any(isinstance(e.event, AlertReceived) and e.seq not in decided for e in records):
        return "an alert with no recorded decision"
    if any(isinstance(e.event, StormDecided) for e in records):
        return "a storm digest"
    return None


def assert_same_answer(records: list[Envelope]) -> None:
    lines = lines_of(records)
    fast, full = recorded_rows(lines), the_fold(lines)
    if fast is None:
        assert why_it_must_fold(records) is not None
        return
    assert why_it_must_fold(records) is None
    assert json_rows(fast) == json_rows(full)
    assert fast.records == full.records == len(records)


@settings(max_examples=300, deadline=None)
@given(steps=policy.logs)
def test_the_recorded_rows_are_the_folds_rows(steps: list[tuple[object, ...]]) -> None:
    """Configs, redeliveries, decisions recorded late and out of their alerts' order,
    opens, retryable and permanent failures."""
    assert_same_answer(policy.build(steps))


@settings(max_examples=200, deadline=None)
@given(script=lifecycle.steps)
def test_the_recorded_rows_are_the_folds_rows_through_the_lifecycle(
        script: list[tuple[object, ...]]) -> None:
    """Closes, reopens, regressions, won't fix, Sentry resolves, reports and sync
    decisions between the alerts."""
    assert_same_answer(lifecycle.build(script).records)


def test_an_undecided_alert_is_left_to_the_fold(tmp_path: Path) -> None:
    """The fold derives what the service will decide; the row says it is not recorded."""
    log = three_alerts()
    log.alert(after=seconds(5), record=False, issue="200")
    path = write(tmp_path / "events.jsonl", log)
    lines = path.read_bytes().splitlines(keepends=True)
    assert recorded_rows(lines) is None
    result = obsv("replay", str(path), "--json")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 0
    assert rows[-1]["sentry_issue_id"] == "200"
    assert (rows[-1]["action"], rows[-1]["reason"]) == (None, None)
    assert len(rows) == 4


@pytest.mark.parametrize("cut", [b'{"seq":8,"at":', b"garbage\n", b'{"seq":99,"type":"x"}\n'],
                         ids=["torn", "not-json", "unknown-type"])
def test_a_line_it_cannot_summarise_is_left_to_the_fold(tmp_path: Path, cut: bytes) -> None:
    """What the fold names: a torn tail (a note, exit 0), a bad line (exit 2, nothing
    on stdout)."""
    path = write(tmp_path / "events.jsonl", three_alerts())
    with open(path, "ab") as f:
        f.write(cut)
    assert recorded_rows(path.read_bytes().splitlines(keepends=True)) is None
    result = obsv("replay", str(path), "--json")
    if cut.endswith(b"\n"):
        assert (result.returncode, result.stdout) == (2, "")
        assert "line 8 is not a valid record" in result.stderr
    else:
        assert result.returncode == 0 and len(result.stdout.splitlines()) == 3
        assert "torn last line" in result.stderr


def test_a_gap_and_a_stray_decision_are_left_to_the_fold(tmp_path: Path) -> None:
    log = three_alerts()
    records = log.records
    stray = Envelope(len(records) + 1, records[-1].at, AlertDecided(
        999, "100", "p:hash:100", "suppress", "cooldown"))
    assert recorded_rows(lines_of([*records, stray])) is None
    gap = Envelope(len(records) + 2, records[-1].at, records[0].event)
    assert recorded_rows(lines_of([*records, gap])) is None
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(lines_of([*records, stray])))
    result = obsv("replay", str(path), "--json")
    assert result.returncode == 1
    assert "decision for alert 999 with no alert.received" in result.stderr or \
        "differ" in result.stderr


def test_a_hand_edited_decision_shows_as_recorded_and_verify_finds_it(tmp_path: Path) -> None:
    """The JSON rows are what was recorded; re-deriving is --verify's (and the table's)."""
    path = write(tmp_path / "events.jsonl", three_alerts())
    text = path.read_text()
    assert '"reason":"cooldown"' in text
    path.write_text(text.replace('"reason":"cooldown"', '"reason":"recurrence"', 1))
    as_json = obsv("replay", str(path), "--json")
    assert as_json.returncode == 0
    assert "recurrence" in [json.loads(line)["reason"] for line in as_json.stdout.splitlines()]
    table = obsv("replay", str(path))
    assert table.returncode == 1 and "differ from the recorded ones" in table.stderr
    verify = obsv("replay", str(path), "--verify")
    assert verify.returncode == 1 and "recorded suppress (recurrence)" in verify.stdout


def test_issue_and_since_choose_the_same_rows_as_before(tmp_path: Path) -> None:
    log = three_alerts("100")
    log.alert(after=seconds(60), issue="200")
    log.alert(after=seconds(60), issue="100")
    path = write(tmp_path / "events.jsonl", log)
    rows = [json.loads(line) for line in obsv("replay", str(path), "--json").stdout.splitlines()]
    assert [r["sentry_issue_id"] for r in rows] == ["100", "100", "100", "200", "100"]
    of_100 = obsv("replay", str(path), "--json", "--issue", "100").stdout.splitlines()
    assert [json.loads(line) for line in of_100] == [r for r in rows
                                                     if r["sentry_issue_id"] == "100"]
    since = rows[3]["at"]
    later = obsv("replay", str(path), "--json", "--since", since).stdout.splitlines()
    assert [json.loads(line) for line in later] == rows[3:]


def test_a_summary_is_what_the_full_decoder_reads() -> None:
    """Every golden line (each record type, older versions, other offsets): the same
    type, seq, time, alert and decision as decode_line, or a CodecError where the
    summary leaves a line to decode_line (older versions)."""
    summarised = 0
    for line in GOLDEN.read_bytes().splitlines():
        envelope = decode_line(line)
        try:
            kind, seq, at, summary = decode_summary(line)
        except CodecError:
            assert b'"v":1,' not in line
            continue
        summarised += 1
        event = envelope.event
        assert (kind, seq) == (event.TYPE, envelope.seq)
        assert at == (envelope.at if isinstance(event, AlertReceived) else None)
        if isinstance(event, AlertReceived):
            shown = AlertSummary.__struct_fields__
            assert summary == AlertSummary(*(getattr(event.alert, f) for f in shown))
        elif isinstance(event, AlertDecided):  # the decision itself, seq and time after it
            assert isinstance(summary, AlertDecided)
            assert astuple(summary)[:len(event.__struct_fields__)] == astuple(event)
        else:
            assert summary is None
    assert summarised >= 40


def test_an_outcome_before_its_decision_is_left_to_the_fold() -> None:
    log = Log()
    log.config()
    log.alert(record=False)
    alert_seq = log.records[-1].seq
    log.add(IssueOpened(alert_seq, "100", "o/r", 1, "u", False))
    decision = log.state.unrecorded[alert_seq]
    log.add(decision)
    assert recorded_rows(lines_of(log.records)) is None


GOLDEN_LINES = GOLDEN.read_bytes().splitlines(keepends=True)
HOSTILE = [
    b'{"seq":1,"at":"2026-01-01T00:00:00Z","type":"leader.elected","v":1,"x":'
    + b"[" * 100_000 + b"]" * 100_000 + b"}\n",  # deeper than msgspec goes
    b"[1]\n", b"{}\n", b"null\n", b'{"type":"alert.received"}\n', b"\xff\n",
    b'{"seq":' + b"9" * 5000 + b',"type":"leader.elected","v":1}\n',
]


@st.composite
def mutated_lines(draw: st.DrawFn, source: list[bytes] = GOLDEN_LINES) -> bytes:
    """A line of ``source`` with a few bytes changed, cut, or put in: still JSON, often."""
    line = bytearray(draw(st.sampled_from(source)).rstrip(b"\n"))
    for _ in range(draw(st.integers(1, 2))):
        at = draw(st.integers(0, len(line) - 1))
        match draw(st.sampled_from(["set", "cut", "put"])):
            case "set":
                line[at] = draw(st.sampled_from(b'0123456789"{}[],:-.eEZTtfn\\ \xc3\x80'))
            case "cut":
                del line[at:at + draw(st.integers(1, 20))]
            case "put":
                line[at:at] = draw(st.sampled_from([b'"', b",", b'"x":1,', b"\\u0000",
                                                    b'"type":"issue.opened",']))
    return bytes(line) + b"\n"


def agree(line: bytes) -> None:
    """decode_summary says CodecError or what the full decoder reads of the same line."""
    try:
        kind, seq, at, summary = decode_summary(line)
    except CodecError:
        return
    try:
        envelope = decode_line(line)
    except CodecError:
        return  # bad only where a summary does not read: the fold names the line
    event = envelope.event
    assert (kind, seq) == (event.TYPE, envelope.seq)
    if isinstance(event, AlertReceived):
        shown = AlertSummary.__struct_fields__
        assert at == envelope.at
        assert summary == AlertSummary(*(getattr(event.alert, f) for f in shown))
    elif isinstance(event, AlertDecided):
        assert astuple(summary)[:len(event.__struct_fields__)] == astuple(event)


@pytest.mark.parametrize("line", HOSTILE)
def test_a_hostile_line_is_not_summarised_and_never_a_crash(line: bytes) -> None:
    with pytest.raises(CodecError):
        decode_summary(line)
    assert recorded_rows([line]) is None


@settings(max_examples=400, deadline=None)
@given(line=mutated_lines())
def test_a_changed_line_is_summarised_as_read_or_refused(line: bytes) -> None:
    agree(line)


SMALL_LOG = lines_of(lifecycle.build([
    ("alert", "1", 10, 0, "own"), ("sink", 0, "ok"), ("alert", "1", 700, 0, "own"),
    ("sink", 0, "ok"), ("alert", "2", 5, 0, "shared"), ("sink", 0, "retry")]).records)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_log_with_a_changed_line_is_the_folds_answer_or_left_to_it(
        data: st.DataObject) -> None:
    """Never a crash; and when the fold reads every line and the recorded answers are
    complete, both give the same rows (the JSON shows what was recorded, both ways)."""
    lines = list(SMALL_LOG)
    where = data.draw(st.integers(0, len(lines) - 1))
    lines[where] = data.draw(mutated_lines([lines[where]]))
    fast = recorded_rows(lines)
    full = the_fold(lines)
    if fast is not None and full.unreadable is None and full.torn is None:
        assert json_rows(fast) == json_rows(full)


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_log_path_that_is_not_a_file_is_named_as_such(tmp_path: Path, kind: str) -> None:
    import os

    path = tmp_path / "events.jsonl"
    if kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(path)
    result = obsv("replay", str(path), "--json")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (f"obsv: {path} is not a regular file (a directory, a FIFO, a "
                             "device); pass the log's path (obsv replay LOG, obsv why ID "
                             "--log LOG)\n")


def test_the_command_ends_itself_only_once_every_row_and_note_is_out(tmp_path: Path) -> None:
    """``obsv`` ends a replay with ``os._exit`` and its rows still held (cli.entry): the
    rows buffered for stdout and the note for stderr are written first, and the exit
    code is the answer's."""
    log = Log()
    log.config()
    for i in range(3000):
        log.alert(after=seconds(1), issue=str(100 + i % 7))
    path = write(tmp_path / "events.jsonl", log)
    whole = obsv("replay", str(path), "--json")
    rows = [json.loads(line) for line in whole.stdout.splitlines()]
    assert whole.returncode == 0 and len(rows) == 3000
    assert rows[-1]["seq"] == len(log.records) - 1  # the last alert; its decision follows
    table = obsv("replay", str(path))  # printed line by line, not flushed by its printer
    assert table.returncode == 0 and len(table.stdout.splitlines()) == 3001
    assert table.stdout.splitlines()[-1].startswith(str(rows[-1]["seq"]))
    with open(path, "ab") as f:
        f.write(b'{"seq":')  # torn: the fold answers, with a note
    torn = obsv("replay", str(path), "--json")
    assert torn.returncode == 0 and torn.stdout == whole.stdout
    assert "torn last line" in torn.stderr
