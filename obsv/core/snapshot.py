"""State <-> rows of JSON-ready values, for the snapshot written beside the log.

A snapshot is only a cache of the fold: it is ignored whenever it does not match
the log (see ``consumer.py``), and folding from it must give exactly the state a
fold from ``seq`` 1 gives (a property test checks that). It is a sequence of small
rows, not one document, so that writing and reading a state of 100 000 issues
never holds a second copy of it in memory: the shell writes one JSON line per row.

The tables that grow with the number of Sentry issues (links, first-seen times,
remembered event ids) are written in columns, ``BLOCK`` entries to a row: reading
one is then a few loops over lists instead of a row per entry, which made a restart
at 100 000 issues spend most of its second here. Loading also shares what a fold
shares: a first-seen time equal to its issue's link's ``opened_at`` is written as
``null`` and loaded as that very object, the id strings of first-seen times are
those of the links, and the few distinct statuses, states, repositories and labels
are one object each rather than one per link (about 25 MB at 100 000 issues). A
link's time equal to the time of a remembered event id (a link notified by an alert
of the last day: its ``last_notified_at`` is that alert's time) is written as the
index of that event id and loaded as the very same object, as the fold has it (4 MB
at 100 000 issues and an alert a second).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from itertools import islice, repeat
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
from obsv.core.policy import (
    HEX_DIGITS,
    EventKey,
    Intent,
    Link,
    State,
    Storm,
    event_id_of,
    event_key,
)
from obsv.core.silences import Silence, parse_matchers

# 5: first_seen rows; 6: silence rows; 8: storm rows; 9: links, first-seen times and
# event ids in column blocks; 11: link times as event id indexes; 12: links without
# their issue URL
SNAPSHOT_VERSION = 12
BLOCK = 4096  # entries per column row: bounded rows, few of them
_EPOCH = parse_time("1970-01-01T00:00:00Z")
Row = list[Any]
# A link row's columns, in ``Link``'s field order (checked below), then what it holds.
_LINK_FIELDS = ("alert_seq", "sentry_issue_id", "fingerprint_key", "opened_at",
                "last_notified_at", "status", "number", "suppressed",
                "suppressed_first", "suppressed_last", "repo", "sentry_org", "state",
                "state_reason", "closed_at", "labels", "stale_before", "sentry_resolved",
                "resolved_since", "resolve_echo_due")
_LINK_TIMES = frozenset({"opened_at", "last_notified_at", "suppressed_first", "suppressed_last",
                         "closed_at", "stale_before", "resolved_since"})
# Columns with few distinct values, loaded as one object per value.
_LINK_SHARED = frozenset({"status", "repo", "sentry_org", "state", "state_reason"})
assert tuple(f.name for f in fields(Link)) == _LINK_FIELDS, "update the snapshot's link columns"
# _new_links fills every field itself, which is all Link's __init__ would do.
assert not hasattr(Link, "__post_init__"), "build links through Link(...) again"


class UnsupportedSnapshot(ValueError):
    """A snapshot of another version (an older or newer obsv wrote it)."""


def _t(value: Any) -> Any:
    return None if value is None else format_time(value)


def _pt(value: Any) -> Any:
    return None if value is None else parse_time(value)


def _time(text: str) -> datetime:
    # format_time always writes "...Z", which fromisoformat reads as UTC itself; any
    # other offset goes the long way.
    at = datetime.fromisoformat(text)
    return at if at.tzinfo is UTC else parse_time(text)


def _times(column: Sequence[Any]) -> list[Any]:
    """A column of times (or nulls). One without nulls, the common case, is parsed in
    one C loop; its times are then checked to be UTC all at once."""
    if None in column:
        return [None if text is None else _time(text) for text in column]
    times = list(map(datetime.fromisoformat, column))
    if {at.tzinfo for at in times} - {UTC}:
        return list(map(_time, column))
    return times


def _event_keys(ids: list[str]) -> Iterable[EventKey]:
    """``map(event_key, ids)``; a column of Sentry ids only, the common case, is
    checked and converted in C loops (0.04 s less at 86 400 ids)."""
    if set(map(len, ids)) <= {32} and not "".join(ids).strip(HEX_DIGITS):
        return map(int, ids, repeat(16))
    return map(event_key, ids)


def _record(event: Event) -> Json:
    # Reuse the record codec; the wrapper's seq and at are not used.
    return encode(Envelope(0, _EPOCH, event))


def _event(record: Json) -> Event:
    return decode_record(record).event


def _new_links(columns: Sequence[Sequence[Any]]) -> list[Link]:
    """``[Link(*values) for values in zip(*columns)]`` in half the time: a frozen
    dataclass's ``__init__`` sets each field through ``object.__setattr__`` from
    Python, 21 calls a link; here each field's slot is set for the whole column in
    one C loop (at 100 000 issues: 0.10 s instead of 0.19 s of a 0.5 s load)."""
    links = [Link.__new__(Link) for _ in columns[0]]
    for name, column in zip(_LINK_FIELDS, columns, strict=True):
        deque(map(getattr(Link, name).__set__, links, column), maxlen=0)
    return links


def _blocks(items: Iterable[Any]) -> Iterator[list[Any]]:
    iterator = iter(items)
    while block := list(islice(iterator, BLOCK)):
        yield block


def snapshot_rows(state: State) -> Iterator[Row]:
    """Everything in ``state`` except the ``--policy current`` override, row by row."""
    policy = None if state.policy is None else encode_policy(state.policy)
    yield ["v", SNAPSHOT_VERSION, state.last_seq, policy]
    for block in _blocks(state.event_ids.items()):
        yield ["E", [event_id_of(key) for key, _ in block], [format_time(at) for _, at in block]]
    for at in state.recent_opens:
        yield ["o", format_time(at)]
    for key, opens in state.route_opens.items():
        for at in opens:
            yield ["r", key, format_time(at)]
    # Where each remembered event's time is (the last of equal ones): link times equal
    # to one are written as that index. Equal times load as one UTC object anyway.
    event_times = {at: index for index, at in enumerate(state.event_ids.values())}
    for links in _blocks(state.links.values()):
        yield ["L", *_link_columns(state, links, event_times)]
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
    for block in _blocks(state.first_seen.items()):
        yield ["F", [sentry_issue_id for sentry_issue_id, _ in block],
               [_first_seen(state, sentry_issue_id, at) for sentry_issue_id, at in block]]
    for s in state.silences.values():
        yield ["s", s.id, [str(m) for m in s.matchers], format_time(s.starts_at),
               format_time(s.ends_at), s.comment, s.created_by, _t(s.expired_at), s.expired_by]
    for key, storm in state.storms.items():
        yield ["t", key, format_time(storm.window_start), format_time(storm.last_suppressed_at),
               format_time(storm.last_post_at), storm.digest_seq, sorted(storm.listed),
               [_storm_issue(i) for i in storm.pending]]
    for decision, digest_seq in state.storm_unrecorded.values():
        yield ["w", _record(decision), digest_seq]


def _link_columns(state: State, links: list[Link],
                  event_times: dict[datetime, int]) -> list[list[Any]]:
    columns: list[list[Any]] = []
    for name in _LINK_FIELDS:
        values: list[Any] = [getattr(link, name) for link in links]
        if name == "last_notified_at":  # null: never notified since the open
            values = [None if at == link.opened_at else _time_ref(at, event_times)
                      for link, at in zip(links, values, strict=True)]
        elif name in _LINK_TIMES:
            values = [None if at is None else _time_ref(at, event_times) for at in values]
        elif name == "labels":
            values = [None if labels is None else list(labels) for labels in values]
        columns.append(values)
    columns.append([_held(state, link) for link in links])
    return columns


def _time_ref(at: datetime, event_times: dict[datetime, int]) -> str | int:
    """The index of a remembered event of that time, else the time."""
    index = event_times.get(at)
    return format_time(at) if index is None else index


def _first_seen(state: State, sentry_issue_id: str, at: datetime) -> str | None:
    """``null`` when ``at`` is the ``opened_at`` of the issue's link (an issue opened
    by its first alert: the usual case), else the time."""
    link_seq = state.links_by_issue.get(sentry_issue_id)
    link = None if link_seq is None else state.links.get(link_seq)
    shared = (link is not None and link.sentry_issue_id == sentry_issue_id
              and link.opened_at == at)
    return None if shared else format_time(at)


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
            link.repo, link.number) == link.alert_seq:
        held |= 4
    return held


def state_from_rows(rows: Iterable[Row]) -> State:
    """Inverse of ``snapshot_rows``; ``UnsupportedSnapshot`` for another version,
    ``ValueError`` for a row that does not fit."""
    iterator = iter(rows)
    header = next(iterator, None)
    if not header or header[0] != "v":
        raise ValueError(f"unsupported snapshot header {header!r:.80}")
    if header[1] != SNAPSHOT_VERSION:
        raise UnsupportedSnapshot(f"snapshot version {header[1]!r:.20}, this obsv reads "
                                  f"version {SNAPSHOT_VERSION}")
    state = State(last_seq=int(header[2]),
                  policy=None if header[3] is None else decode_policy(header[3]))
    loader = _Loader(state)
    for row in iterator:
        loader.load(row)
    if len(state.event_ids) != len(state.event_order):
        raise ValueError("an event id is written twice")
    state.recent_opens = loader.opens
    return state


class _Loader:
    """Rows -> ``state``, with the objects shared across rows (see the module's doc)."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.event_times: list[datetime] = []  # by index, for link times (_link_times)
        self.opens: deque[datetime] = deque()
        self._shared: dict[Any, Any] = {}

    def _share(self, column: Sequence[Any]) -> list[Any]:
        return list(map(self._shared.setdefault, column, column))

    def _labels(self, column: Sequence[Any]) -> list[Any]:
        share: Callable[[Any, Any], Any] = self._shared.setdefault
        out: list[Any] = []
        for labels in column:
            if labels is not None:
                labels = tuple(map(share, labels, labels))
                labels = share(labels, labels)
            out.append(labels)
        return out

    def load(self, row: Row) -> None:
        state = self.state
        match row[0]:
            case "E":
                keys, times = list(_event_keys(row[1])), _times(row[2])
                state.event_ids.update(zip(keys, times, strict=True))
                state.event_order.extend(keys)
                self.event_times += times
            case "L":
                self._links(row[1:])
            case "F":
                self._first_seen(row[1], row[2])
            case "g":
                state.github_deliveries[row[1]] = parse_time(row[2])
            case "n":
                state.unlinked_numbers.add((row[1], row[2]))
            case "x":
                state.resolve_echoes.add(row[1])
            case "o":
                self.opens.append(parse_time(row[1]))
            case "r":
                state.route_opens.setdefault(row[1], deque()).append(parse_time(row[2]))
            case "s":
                state.silences[row[1]] = Silence(row[1], parse_matchers(row[2]),
                                                 parse_time(row[3]), parse_time(row[4]),
                                                 row[5], row[6], _pt(row[7]), row[8])
            case "i":
                _load_intent(state, row)
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

    def _links(self, columns: list[list[Any]]) -> None:
        if len(columns) != len(_LINK_FIELDS) + 1 or len({len(c) for c in columns}) != 1:
            raise ValueError("bad link row")
        *values, held = columns
        for index, name in enumerate(_LINK_FIELDS):
            if name in _LINK_TIMES:
                values[index] = self._link_times(values[index])
            elif name in _LINK_SHARED:
                values[index] = self._share(values[index])
            elif name == "labels":
                values[index] = self._labels(values[index])
        column = dict(zip(_LINK_FIELDS, values, strict=True))
        opened, notified = column["opened_at"], column["last_notified_at"]
        values[_LINK_FIELDS.index("last_notified_at")] = [
            o if n is None else n for o, n in zip(opened, notified, strict=True)]
        state = self.state
        seqs, issue_ids, keys, numbers, repos = (
            column["alert_seq"], column["sentry_issue_id"], column["fingerprint_key"],
            column["number"], column["repo"])
        state.links.update(zip(seqs, _new_links(values), strict=True))
        state.links_by_issue.update(
            (issue_id, seq) for issue_id, seq, flags in zip(issue_ids, seqs, held, strict=True)
            if flags & 1)
        state.links_by_key.update(
            (key, seq) for key, seq, flags in zip(keys, seqs, held, strict=True) if flags & 2)
        by_number = state.links_by_number
        for repo, number, seq, flags in zip(repos, numbers, seqs, held, strict=True):
            if flags & 4 and repo is not None and number is not None:
                by_number.put(repo, number, seq)

    def _link_times(self, column: list[Any]) -> list[Any]:
        """Times, nulls, and indexes of remembered events' times (see the module's doc)."""
        kinds = set(map(type, column))
        if int not in kinds:
            return _times(column)
        if min(value for value in column if type(value) is int) < 0:
            raise ValueError("bad event time index in a link row")
        if kinds == {int}:
            return list(map(self.event_times.__getitem__, column))
        events = self.event_times
        return [events[value] if type(value) is int else None if value is None
                else _time(value) for value in column]

    def _first_seen(self, ids: list[str], times: list[str | None]) -> None:
        state = self.state
        for sentry_issue_id, text in zip(ids, times, strict=True):
            link_seq = state.links_by_issue.get(sentry_issue_id)
            link = None if link_seq is None else state.links[link_seq]
            if link is not None:
                sentry_issue_id = link.sentry_issue_id  # one string for both
            if text is not None:
                state.first_seen[sentry_issue_id] = _time(text)
            elif link is not None:
                state.first_seen[sentry_issue_id] = link.opened_at
            else:
                raise ValueError(f"first seen of {sentry_issue_id!r:.40} names no link")


def _load_intent(state: State, row: Row) -> None:
    received, decision = _event(row[5]), _event(row[6])
    if not isinstance(received, AlertReceived | SentryIssueChanged | GitHubIssueObserved
                      | StormDecided) or not isinstance(
                          decision, AlertDecided | SyncDecided | StormDecided):
        raise ValueError(f"bad intent row for record {row[1]}")
    state.intents[row[1]] = Intent(row[1], row[2], row[3], parse_time(row[4]), received,
                                   decision, row[7], row[8], _pt(row[9]), row[10])


def state_to_dict(state: State) -> Json:
    """The whole snapshot as one value (tests compare states with it)."""
    return {"rows": list(snapshot_rows(state))}


def state_from_dict(data: Json) -> State:
    """Inverse of ``state_to_dict``."""
    return state_from_rows(data["rows"])
