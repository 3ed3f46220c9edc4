"""``prev`` and ``log.checkpoint`` in the codec (docs/reference.md §11): records round-trip
with their ``prev``, the writer's chained line is the codec's line, a bad ``prev`` is an
error naming it, and the lines written before the chain still decode."""

from __future__ import annotations

import hashlib
from datetime import datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from obsv.core.codec import GENESIS, CodecError, decode, encode
from obsv.core.events import Envelope, Event, LeaderElected, LogCheckpoint
from obsv.eventlog import chain, decode_line, encode_line

from .test_codec import GOLDEN, _lifecycle_events, _times

_hashes = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
_events = (_lifecycle_events | st.builds(LogCheckpoint, st.integers(1, 10**12), _hashes)
           | st.builds(LeaderElected, st.integers(1, 10**12), st.text(max_size=40)))


@given(event=_events, seq=st.integers(1, 10**12), at=_times, prev=st.none() | _hashes)
def test_records_round_trip_with_their_prev(event: Event, seq: int, at: datetime,
                                            prev: str | None) -> None:
    envelope = Envelope(seq, at, event, prev)
    decoded = decode(orjson.loads(orjson.dumps(encode(envelope))))
    assert decoded == envelope and decoded.prev == prev


@given(events=st.lists(_events, min_size=1, max_size=5), at=_times, prev=_hashes)
def test_the_writers_chained_lines_are_the_codecs_lines(events: list[Event], at: datetime,
                                                        prev: str) -> None:
    """What the log thread splices (obsv/eventlog.py rule 9) is exactly what ``encode``
    gives a record with that ``prev``, and each link is the hash of the line before."""
    envelopes = [Envelope(seq, at, event) for seq, event in enumerate(events, 1)]
    pieces, head = chain([encode_line(e) for e in envelopes], prev)
    lines = b"".join(pieces).splitlines(keepends=True)
    for envelope, line in zip(envelopes, lines, strict=True):
        assert line == encode_line(Envelope(envelope.seq, at, envelope.event, prev))
        assert decode_line(line).prev == prev
        prev = hashlib.sha256(line[:-1]).hexdigest()
    assert head == prev


@pytest.mark.parametrize("prev", ["0" * 63, "A" * 64, "g" * 64, 7, ""])
def test_a_bad_prev_is_an_error(prev: object) -> None:
    record = {**orjson.loads(GOLDEN[0][1]), "prev": prev}
    with pytest.raises(CodecError, match=r"at `\$\.prev`"):  # named by the typed decode
        decode(record)


def test_a_bad_checkpoint_head_is_an_error() -> None:
    line = encode_line(Envelope(3, golden_time(), LogCheckpoint(2, GENESIS)))
    record = {**orjson.loads(line), "head_sha256": "x"}
    with pytest.raises(CodecError, match="head_sha256"):
        decode(record)


def golden_time() -> datetime:
    return decode(orjson.loads(GOLDEN[0][1])).at


@pytest.mark.parametrize(("event", "line"), GOLDEN, ids=lambda v: type(v).__name__)
def test_the_golden_lines_written_before_the_chain_still_decode(event: Event,
                                                                line: str) -> None:
    envelope = decode_line(line.encode())
    assert envelope.event == event and envelope.prev is None
    assert encode_line(envelope) == line.encode() + b"\n"  # and are written as they were
