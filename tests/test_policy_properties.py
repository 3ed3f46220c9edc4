"""Properties of the fold: replay reproduces decisions wherever their records landed,
and folding through a snapshot equals folding in one go."""

from __future__ import annotations

import json
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from obsv.core.events import (
    AlertDecided,
    AlertReceived,
    ConfigApplied,
    Delivery,
    Envelope,
    Event,
    IssueFailed,
    IssueOpened,
    Policy,
)
from obsv.core.policy import State, apply
from obsv.core.snapshot import state_from_dict, state_to_dict

from .records import T0, make_alert

alert_steps = st.tuples(
    st.just("alert"),
    st.sampled_from(["1", "2", "3", "4"]),
    st.sampled_from(["debug", "warning", "error", "fatal", "odd"]),
    st.sampled_from(["prod", "staging", None]),
    st.integers(0, 2400),          # seconds after the previous alert
    st.integers(0, 3),             # records until its decision is recorded
    st.booleans(),                 # reuse the previous event_id (a redelivery)
    st.sampled_from(["k1", "k2", None]),  # shared custom fingerprint, or per issue
)
config_steps = st.tuples(
    st.just("config"),
    st.sampled_from(["warning", "error"]),
    st.sampled_from([(), ("prod",)]),
    st.sampled_from([0, 600, 3600]),
    st.integers(0, 3),
)
outcome_steps = st.tuples(st.just("outcome"), st.integers(0, 5),
                          st.sampled_from(["opened", "retry", "permanent"]))
logs = st.lists(st.one_of(alert_steps, config_steps, outcome_steps), max_size=60)


def build(steps: list[tuple[object, ...]]) -> list[Envelope]:
    """A log as the service would write it, with decisions recorded after random delays."""
    live = State()
    records: list[Envelope] = []
    waiting: list[list[object]] = []
    now = T0
    last_event = "ev0"

    def add(event: Event) -> AlertDecided | None:
        envelope = Envelope(len(records) + 1, now, event)
        records.append(envelope)
        return apply(live, envelope)

    def tick() -> None:
        for item in waiting:
            item[0] = int(item[0]) - 1  # type: ignore[call-overload]
        for item in [i for i in waiting if int(i[0]) < 0]:  # type: ignore[call-overload]
            waiting.remove(item)
            add(item[1])  # type: ignore[arg-type]

    for n, step in enumerate(steps):
        if step[0] == "alert":
            _, issue, level, env, dt, delay, redeliver, key = step
            now += timedelta(seconds=int(dt))  # type: ignore[call-overload]
            event_id = last_event if redeliver else f"ev{n}"
            last_event = event_id
            alert = make_alert(str(issue), event_id, str(level),
                               f"p:fp:{key}" if key else None, env)  # type: ignore[arg-type]
            decision = add(AlertReceived(Delivery("r", "event_alert", None, "s"), alert, "{}"))
            waiting.append([delay, decision])
        elif step[0] == "config":
            _, level, envs, cooldown, budget = step
            add(ConfigApplied(Policy(str(level), envs, cooldown, budget)))  # type: ignore[arg-type]
        else:
            _, pick, kind = step
            recorded = [i for i in live.intents.values() if i.recorded and i.action == "open"]
            if recorded:
                intent = recorded[int(pick) % len(recorded)]  # type: ignore[call-overload]
                if kind == "opened":
                    add(IssueOpened(intent.alert_seq, "x", "o/r", intent.alert_seq, "u", False))
                else:
                    add(IssueFailed(intent.alert_seq, 3, 502, "e", kind == "retry",
                                    now + timedelta(seconds=30) if kind == "retry" else None))
        tick()
    for item in waiting:
        add(item[1])  # type: ignore[arg-type]
    return records


def replay(records: list[Envelope], state: State | None = None) -> tuple[State, list[str]]:
    """Fold records; return the state and every mismatch between derived and recorded."""
    state = state or State()
    mismatches = []
    for envelope in records:
        event = envelope.event
        if isinstance(event, AlertDecided):
            derived = state.unrecorded.get(event.alert_seq)
            if derived != event:
                mismatches.append(f"{event.alert_seq}: recorded {event}, derived {derived}")
        apply(state, envelope)
    return state, mismatches


@settings(max_examples=300, deadline=None)
@given(steps=logs)
def test_replay_reproduces_every_recorded_decision(steps: list[tuple[object, ...]]) -> None:
    records = build(steps)
    state, mismatches = replay(records)
    assert mismatches == []
    assert state.unrecorded == {}


@settings(max_examples=200, deadline=None)
@given(steps=logs, data=st.data())
def test_snapshot_halves_equal_one_fold(steps: list[tuple[object, ...]],
                                       data: st.DataObject) -> None:
    records = build(steps)
    cut = data.draw(st.integers(0, len(records)))
    whole, _ = replay(records)
    first, _ = replay(records[:cut])
    restored = state_from_dict(json.loads(json.dumps(state_to_dict(first))))
    assert state_to_dict(restored) == state_to_dict(first)
    assert (restored.links_by_issue, restored.links_by_key) == (
        first.links_by_issue, first.links_by_key)
    second, mismatches = replay(records[cut:], restored)
    assert mismatches == []
    assert state_to_dict(second) == state_to_dict(whole)
    assert (second.links_by_issue, second.links_by_key) == (
        whole.links_by_issue, whole.links_by_key)
