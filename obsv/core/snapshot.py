"""State <-> rows of JSON-ready values, for the snapshot written beside the log.

A snapshot is only a cache of the fold: it is ignored whenever it does not match
the log (see ``consumer.py``), and folding from it must give exactly the state a
fold from ``seq`` 1 gives (a property test checks that). It is a sequence of small
rows, not one document, so that writing and reading a state of 100 000 issues
never holds a second copy of it in memory: the shell writes one JSON line per row.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from typing import Any

from obsv.core.codec import Json, decode_policy, encode, encode_policy, format_time, parse_time
from obsv.core.codec import decode as decode_record
from obsv.core.events import AlertDecided, AlertReceived, Envelope, Event
from obsv.core.policy import Intent, Link, State

SNAPSHOT_VERSION = 3
_EPOCH = parse_time("1970-01-01T00:00:00Z")
Row = list[Any]


def _t(value: Any) -> Any:
    return None if value is None else format_time(value)


def _pt(value: Any) -> Any:
    return None if value is None else parse_time(value)


def _record(event: Event) -> Json:
    # Reuse the record codec; the wrapper's seq and at are not used.
    return encode(Envelope(0, _EPOCH, event))


def _event(record: Json) -> Event:
    return decode_record(record).event


def snapshot_rows(state: State) -> Iterator[Row]:
    """Everything in ``state`` except the ``--policy current`` override, row by row."""
    policy = None if state.policy is None else encode_policy(state.policy)
    yield ["v", SNAPSHOT_VERSION, state.last_seq, policy]
    for event_id, at in state.event_ids.items():
        yield ["e", event_id, format_time(at)]
    for at in state.recent_opens:
        yield ["o", format_time(at)]
    for link in state.links.values():
        yield ["l", link.alert_seq, link.sentry_issue_id, link.fingerprint_key,
               format_time(link.opened_at), format_time(link.last_notified_at), link.status,
               link.number, link.url, link.suppressed, _t(link.suppressed_first),
               _t(link.suppressed_last)]
    # links_by_issue and links_by_key are not written: every live link is in both,
    # under its own Sentry issue id and key (an open happens only when neither is
    # linked, and an unlink removes both), so loading rebuilds them and shares the
    # strings with the links instead of holding second copies.
    for i in state.intents.values():
        yield ["i", i.alert_seq, i.action, i.link_seq, format_time(i.at), _record(i.received),
               _record(i.decision), i.recorded, i.attempts, _t(i.next_attempt_at)]
    for decision in state.unrecorded.values():
        yield ["u", _record(decision)]


def state_from_rows(rows: Iterable[Row]) -> State:
    """Inverse of ``snapshot_rows``; ``ValueError`` for an unknown version or row."""
    iterator = iter(rows)
    header = next(iterator, None)
    if not header or header[0] != "v" or header[1] != SNAPSHOT_VERSION:
        raise ValueError(f"unsupported snapshot header {header!r:.80}")
    state = State(last_seq=int(header[2]),
                  policy=None if header[3] is None else decode_policy(header[3]))
    event_ids: OrderedDict[str, Any] = OrderedDict()
    opens: deque[Any] = deque()
    for row in iterator:
        _load_row(state, row, event_ids, opens)
    state.event_ids, state.recent_opens = event_ids, opens
    return state


def _load_row(state: State, row: Row, event_ids: OrderedDict[str, Any],
              opens: deque[Any]) -> None:
    match row[0]:
        case "e":
            event_ids[row[1]] = parse_time(row[2])
        case "o":
            opens.append(parse_time(row[1]))
        case "l":
            opened = parse_time(row[4])
            notified = opened if row[5] == row[4] else parse_time(row[5])
            link = Link(row[1], row[2], row[3], opened, notified, row[6], row[7], row[8],
                        row[9], _pt(row[10]), _pt(row[11]))
            state.links[link.alert_seq] = link
            state.links_by_issue[link.sentry_issue_id] = link.alert_seq
            state.links_by_key[link.fingerprint_key] = link.alert_seq
        case "i":
            received, decision = _event(row[5]), _event(row[6])
            if not isinstance(received, AlertReceived) or not isinstance(decision, AlertDecided):
                raise ValueError(f"bad intent row for alert {row[1]}")
            state.intents[row[1]] = Intent(row[1], row[2], row[3], parse_time(row[4]), received,
                                           decision, row[7], row[8], _pt(row[9]))
        case "u":
            decision = _event(row[1])
            if not isinstance(decision, AlertDecided):
                raise ValueError("bad unrecorded decision row")
            state.unrecorded[decision.alert_seq] = decision
        case _:
            raise ValueError(f"unknown snapshot row {row[0]!r}")


def state_to_dict(state: State) -> Json:
    """The whole snapshot as one value (tests compare states with it)."""
    return {"rows": list(snapshot_rows(state))}


def state_from_dict(data: Json) -> State:
    """Inverse of ``state_to_dict``."""
    return state_from_rows(data["rows"])
