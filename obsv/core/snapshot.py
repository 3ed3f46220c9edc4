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
from obsv.core.events import (
    AlertDecided,
    AlertReceived,
    Envelope,
    Event,
    GitHubIssueObserved,
    SentryIssueChanged,
    StormDecided,
    StormIssue,
    SyncDecided,
)
from obsv.core.policy import Intent, Link, State, Storm
from obsv.core.silences import Silence, parse_matchers

SNAPSHOT_VERSION = 8  # 5: first_seen rows; 6: silence rows; 8: storm rows
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
    for key, opens in state.route_opens.items():
        for at in opens:
            yield ["r", key, format_time(at)]
    for link in state.links.values():
        yield ["l", link.alert_seq, link.sentry_issue_id, link.fingerprint_key,
               format_time(link.opened_at), format_time(link.last_notified_at), link.status,
               link.number, link.url, link.suppressed, _t(link.suppressed_first),
               _t(link.suppressed_last), link.repo, link.web_url, link.state,
               link.state_reason, _t(link.closed_at),
               None if link.labels is None else list(link.labels), _t(link.stale_before),
               link.sentry_resolved, _t(link.resolved_since), link.resolve_echo_due,
               _held(state, link)]
    # The indexes are not written out: a link nearly always holds the entries of its
    # own Sentry issue id and key (an open claims both, an unlink drops those pointing
    # to it), so loading rebuilds them from the links, sharing their strings instead of
    # holding second copies. Only an open/regression can take an entry from another
    # live link, hence the flags of what each link holds.
    for event_id, at in state.github_deliveries.items():
        yield ["g", event_id, format_time(at)]
    for repo, number in sorted(state.unlinked_numbers):
        yield ["n", repo, number]
    for sentry_issue_id in sorted(state.resolve_echoes):
        yield ["x", sentry_issue_id]
    for i in state.intents.values():
        yield ["i", i.alert_seq, i.action, i.link_seq, format_time(i.at), _record(i.received),
               _record(i.decision), i.recorded, i.attempts, _t(i.next_attempt_at), i.reopened]
    for decision in state.unrecorded.values():
        yield ["u", _record(decision)]
    for sentry_issue_id, at in state.first_seen.items():
        yield ["f", sentry_issue_id, format_time(at)]
    for s in state.silences.values():
        yield ["s", s.id, [str(m) for m in s.matchers], format_time(s.starts_at),
               format_time(s.ends_at), s.comment, s.created_by, _t(s.expired_at), s.expired_by]
    for key, storm in state.storms.items():
        yield ["t", key, format_time(storm.window_start), format_time(storm.last_suppressed_at),
               format_time(storm.last_post_at), storm.digest_seq, sorted(storm.listed),
               [_storm_issue(i) for i in storm.pending]]
    for decision, digest_seq in state.storm_unrecorded.values():
        yield ["w", _record(decision), digest_seq]


def _storm_issue(issue: StormIssue) -> list[str | None]:
    return [issue.sentry_issue_id, issue.title, issue.level, issue.web_url]


def _held(state: State, link: Link) -> int:
    """Which index entries of its own the link holds: 1 its Sentry issue id, 2 its
    fingerprint key, 4 its (repo, number)."""
    held = 0
    if state.links_by_issue.get(link.sentry_issue_id) == link.alert_seq:
        held |= 1
    if state.links_by_key.get(link.fingerprint_key) == link.alert_seq:
        held |= 2
    if link.repo is not None and link.number is not None and state.links_by_number.get(
            (link.repo, link.number)) == link.alert_seq:
        held |= 4
    return held


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
        case "g":
            state.github_deliveries[row[1]] = parse_time(row[2])
        case "n":
            state.unlinked_numbers.add((row[1], row[2]))
        case "x":
            state.resolve_echoes.add(row[1])
        case "o":
            opens.append(parse_time(row[1]))
        case "r":
            state.route_opens.setdefault(row[1], deque()).append(parse_time(row[2]))
        case "f":
            state.first_seen[row[1]] = parse_time(row[2])
        case "l":
            _load_link(state, row)
        case "s":
            state.silences[row[1]] = Silence(row[1], parse_matchers(row[2]), parse_time(row[3]),
                                             parse_time(row[4]), row[5], row[6], _pt(row[7]),
                                             row[8])
        case "i":
            received, decision = _event(row[5]), _event(row[6])
            if not isinstance(received, AlertReceived | SentryIssueChanged | GitHubIssueObserved
                              | StormDecided) or not isinstance(
                                  decision, AlertDecided | SyncDecided | StormDecided):
                raise ValueError(f"bad intent row for record {row[1]}")
            state.intents[row[1]] = Intent(row[1], row[2], row[3], parse_time(row[4]), received,
                                           decision, row[7], row[8], _pt(row[9]), row[10])
        case "u":
            decision = _event(row[1])
            if isinstance(decision, AlertDecided):
                state.unrecorded[decision.alert_seq] = decision
            elif isinstance(decision, SyncDecided):
                state.unrecorded[decision.cause_seq] = decision
            else:
                raise ValueError("bad unrecorded decision row")
        case "t":
            state.storms[row[1]] = Storm(parse_time(row[2]), parse_time(row[3]),
                                         parse_time(row[4]), row[5], set(row[6]),
                                         [StormIssue(*i) for i in row[7]])
        case "w":
            storm = _event(row[1])
            if not isinstance(storm, StormDecided):
                raise ValueError("bad unrecorded storm decision row")
            state.storm_unrecorded[storm.alert_seq] = (storm, row[2])
        case _:
            raise ValueError(f"unknown snapshot row {row[0]!r}")


def _load_link(state: State, row: Row) -> None:
    opened = parse_time(row[4])
    notified = opened if row[5] == row[4] else parse_time(row[5])
    link = Link(row[1], row[2], row[3], opened, notified, row[6], row[7], row[8], row[9],
                _pt(row[10]), _pt(row[11]), repo=row[12], web_url=row[13], state=row[14],
                state_reason=row[15], closed_at=_pt(row[16]),
                labels=None if row[17] is None else tuple(row[17]),
                stale_before=_pt(row[18]), sentry_resolved=row[19],
                resolved_since=_pt(row[20]), resolve_echo_due=row[21])
    state.links[link.alert_seq] = link
    held = row[22]
    if held & 1:
        state.links_by_issue[link.sentry_issue_id] = link.alert_seq
    if held & 2:
        state.links_by_key[link.fingerprint_key] = link.alert_seq
    if held & 4 and link.repo is not None and link.number is not None:
        state.links_by_number[(link.repo, link.number)] = link.alert_seq


def state_to_dict(state: State) -> Json:
    """The whole snapshot as one value (tests compare states with it)."""
    return {"rows": list(snapshot_rows(state))}


def state_from_dict(data: Json) -> State:
    """Inverse of ``state_to_dict``."""
    return state_from_rows(data["rows"])
