"""State <-> JSON-ready dict, for the snapshot written beside the log.

A snapshot is only a cache of the fold: it is ignored whenever it does not match
the log (see ``consumer.py``), and folding from it must give exactly the state a
fold from ``seq`` 1 gives (a property test checks that).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

from obsv.core.codec import Json, decode_policy, encode, encode_policy, format_time, parse_time
from obsv.core.codec import decode as decode_record
from obsv.core.events import AlertDecided, AlertReceived, Envelope, Event
from obsv.core.policy import Intent, Link, State

SNAPSHOT_VERSION = 1
_EPOCH = parse_time("1970-01-01T00:00:00Z")


def _t(value: Any) -> Any:
    return None if value is None else format_time(value)


def _pt(value: Any) -> Any:
    return None if value is None else parse_time(value)


def state_to_dict(state: State) -> Json:
    """Everything in ``state`` except the ``--policy current`` override."""
    return {
        "version": SNAPSHOT_VERSION,
        "last_seq": state.last_seq,
        "policy": None if state.policy is None else encode_policy(state.policy),
        "event_ids": [[event_id, format_time(at)] for event_id, at in state.event_ids.items()],
        "links": [_link(link) for link in state.links.values()],
        "links_by_issue": state.links_by_issue,
        "links_by_key": state.links_by_key,
        "recent_opens": [format_time(at) for at in state.recent_opens],
        "intents": [_intent(intent) for intent in state.intents.values()],
        "unrecorded": [_record(d) for d in state.unrecorded.values()],
    }


def _link(link: Link) -> list[Any]:
    return [link.alert_seq, link.sentry_issue_id, link.fingerprint_key,
            format_time(link.opened_at), format_time(link.last_notified_at), link.status,
            link.number, link.url, link.suppressed, _t(link.suppressed_first),
            _t(link.suppressed_last)]


def _intent(intent: Intent) -> list[Any]:
    return [intent.alert_seq, intent.action, intent.link_seq, format_time(intent.at),
            _record(intent.received), _record(intent.decision), intent.recorded,
            intent.attempts, _t(intent.next_attempt_at), intent.last_error]


def _record(event: Event) -> Json:
    # Reuse the record codec; the wrapper's seq and at are not used.
    return encode(Envelope(0, _EPOCH, event))


def _event(record: Json) -> Event:
    return decode_record(record).event


def state_from_dict(data: Json) -> State:
    """Inverse of ``state_to_dict``; ``ValueError`` for an unknown snapshot version."""
    if data.get("version") != SNAPSHOT_VERSION:
        raise ValueError(f"unsupported snapshot version {data.get('version')!r}")
    policy = None if data["policy"] is None else decode_policy(data["policy"])
    state = State(last_seq=data["last_seq"], policy=policy)
    state.event_ids = OrderedDict((eid, parse_time(at)) for eid, at in data["event_ids"])
    for row in data["links"]:
        link = Link(row[0], row[1], row[2], parse_time(row[3]), parse_time(row[4]), row[5],
                    row[6], row[7], row[8], _pt(row[9]), _pt(row[10]))
        state.links[link.alert_seq] = link
    state.links_by_issue = {k: int(v) for k, v in data["links_by_issue"].items()}
    state.links_by_key = {k: int(v) for k, v in data["links_by_key"].items()}
    state.recent_opens = deque(parse_time(at) for at in data["recent_opens"])
    for row in data["intents"]:
        received, decision = _event(row[4]), _event(row[5])
        assert isinstance(received, AlertReceived) and isinstance(decision, AlertDecided)
        intent = Intent(row[0], row[1], row[2], parse_time(row[3]), received, decision,
                        row[6], row[7], _pt(row[8]), row[9])
        state.intents[intent.alert_seq] = intent
    for record in data["unrecorded"]:
        decision = _event(record)
        assert isinstance(decision, AlertDecided)
        state.unrecorded[decision.alert_seq] = decision
    return state
