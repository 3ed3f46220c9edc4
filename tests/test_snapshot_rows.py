"""The snapshot's rows (obsv/core/snapshot.py): column blocks that load back to the very
state the fold built, sharing what the fold shares."""

from __future__ import annotations

import json
from collections import deque
from typing import Any

import pytest

from obsv.core import snapshot
from obsv.core.policy import State
from obsv.core.snapshot import state_from_dict, state_to_dict

from .records import Log, seconds


def folded() -> tuple[Log, dict[str, int]]:
    """Eight issues opened by their first alert, one whose first alert was below the
    minimum level (so first seen is not the open), recurrences, and one never opened."""
    log = Log()
    log.config(max_issues_per_hour=1000, cooldown_seconds=60)
    opened: dict[str, int] = {}
    for n in range(8):
        decision = log.alert(seconds(1), issue=f"i{n}")
        log.opened(decision.alert_seq, number=n + 1, repo="o/r")
        opened[f"i{n}"] = decision.alert_seq
    log.alert(seconds(1), issue="late", level="warning")
    decision = log.alert(seconds(1), issue="late")
    log.opened(decision.alert_seq, number=99, repo="o/r")
    opened["late"] = decision.alert_seq
    for n in range(8):
        log.alert(seconds(120), issue=f"i{n}")  # comments after the cooldown
    log.alert(seconds(1), issue="never", level="info")
    log.record_pending()
    return log, opened


def round_trip(state: State) -> State:
    return state_from_dict(json.loads(json.dumps(state_to_dict(state))))


def test_a_state_in_several_blocks_loads_back_equal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot, "BLOCK", 3)
    state = folded()[0].state
    rows = state_to_dict(state)["rows"]
    assert [row[0] for row in rows].count("L") == 3  # 9 links, 3 a row
    assert [row[0] for row in rows].count("F") == 4  # 10 issues seen
    restored = round_trip(state)
    assert state_to_dict(restored) == state_to_dict(state)
    assert restored.links == state.links and list(restored.links) == list(state.links)
    assert restored.first_seen == state.first_seen
    assert list(restored.event_ids.items()) == list(state.event_ids.items())
    assert restored.event_order == state.event_order == deque(state.event_ids)
    assert (restored.links_by_issue, restored.links_by_key, restored.links_by_number) == (
        state.links_by_issue, state.links_by_key, state.links_by_number)


def test_event_ids_are_written_as_the_text_received(monkeypatch: pytest.MonkeyPatch) -> None:
    # Blocks of two: the first holds only Sentry ids (loaded in one pass), the others not.
    monkeypatch.setattr(snapshot, "BLOCK", 2)
    log = Log()
    log.config(min_level="fatal")
    received = ["f" * 32, "0" * 32, "F" * 32, "e" * 31, "not-hex-" * 4, "7"]
    for event_id in received:
        log.alert(seconds(1), issue="1", event_id=event_id)
    rows: list[Any] = state_to_dict(log.state)["rows"]
    assert [row[1] for row in rows if row[0] == "E"] == [received[:2], received[2:4],
                                                          received[4:]]
    restored = round_trip(log.state)
    assert list(restored.event_ids.items()) == list(log.state.event_ids.items())
    assert list(restored.event_ids)[:2] == [int("f" * 32, 16), 0]
    assert state_to_dict(restored) == state_to_dict(log.state)


def test_loading_shares_what_the_fold_shares() -> None:
    log, opened = folded()
    state = log.state
    rows: list[Any] = state_to_dict(state)["rows"]
    [first_seen] = [row for row in rows if row[0] == "F"]
    ids, times = first_seen[1], first_seen[2]
    # Written as null where the issue's link opened at its first alert, else the time.
    assert {i for i, t in zip(ids, times, strict=True) if t is not None} == {"late", "never"}
    assert state.first_seen["late"] < state.links[opened["late"]].opened_at

    restored = round_trip(state)
    for issue, seq in opened.items():
        link = restored.links[seq]
        [key] = [k for k in restored.first_seen if k == issue]
        assert key is link.sentry_issue_id
        if issue != "late":
            assert restored.first_seen[issue] is link.opened_at
    first, second = restored.links[opened["i0"]], restored.links[opened["i1"]]
    assert first.status is second.status and first.repo is second.repo
    assert first.state is second.state
    # Every link opened and was last notified by an alert of the last day: its times
    # are written as indexes of those event ids and loaded as their very objects.
    [links] = [row for row in rows if row[0] == "L"]
    opened_column = links[1 + snapshot._LINK_FIELDS.index("opened_at")]
    notified_column = links[1 + snapshot._LINK_FIELDS.index("last_notified_at")]
    assert all(type(index) is int for index in opened_column)
    # "late" was not notified since its open: null, as before.
    assert sorted(map(type, notified_column), key=str) == [type(None)] + [int] * 8
    event_times = {id(at) for at in restored.event_ids.values()}
    for link in restored.links.values():
        assert id(link.opened_at) in event_times and id(link.last_notified_at) in event_times


def test_another_version_is_refused_by_name() -> None:
    rows = state_to_dict(folded()[0].state)["rows"]
    rows[0][1] = 9
    with pytest.raises(snapshot.UnsupportedSnapshot, match="snapshot version 9, this obsv "
                       f"reads version {snapshot.SNAPSHOT_VERSION}"):
        state_from_dict({"rows": rows})


@pytest.mark.parametrize("index", [-1, 10**6])
def test_a_link_time_naming_no_remembered_event_is_refused(index: int) -> None:
    rows = state_to_dict(folded()[0].state)["rows"]
    [links] = [row for row in rows if row[0] == "L"]
    links[1 + snapshot._LINK_FIELDS.index("opened_at")][0] = index
    with pytest.raises((ValueError, IndexError)):
        state_from_dict({"rows": rows})


def test_an_event_id_written_twice_is_refused() -> None:
    rows = state_to_dict(folded()[0].state)["rows"]
    [events] = [row for row in rows if row[0] == "E"]
    events[1][1] = events[1][0]
    with pytest.raises(ValueError, match="twice"):
        state_from_dict({"rows": rows})
