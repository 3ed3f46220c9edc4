"""Rule 7's pruning is skipped while nothing can have expired (``State.prune_due``): a
fold that skips it must keep and decide exactly what a fold that prunes at every record
does, whatever the records' times do (jump past the windows, go back, leave UTC)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from obsv.core.alert import Alert
from obsv.core.events import (
    AlertReceived,
    ConfigApplied,
    Delivery,
    Envelope,
    Policy,
    SilenceAdded,
    SilenceExpired,
)
from obsv.core.policy import State, apply
from obsv.core.snapshot import state_to_dict

from .records import make_alert
from .test_policy_properties import build, logs
from .test_routes_properties import POLICIES, STEPS, T0
from .test_routes_properties import Log as RoutedLog

# Seconds from BASE: within the hour, the day, and beyond both windows; BASE is two
# days before Berlin's clocks go back (2026-10-25), where a day of wall-clock time in
# that zone is 25 hours.
BASE = datetime(2026, 10, 23, 12, tzinfo=UTC)
OFFSETS = st.integers(0, 3 * 86400) | st.sampled_from([3599, 3600, 3601, 86400, 86401])
ZONES = st.sampled_from([UTC, UTC, UTC, timezone(timedelta(hours=2)),
                         ZoneInfo("Europe/Berlin")])


def _retimed(records: list[Envelope], data: st.DataObject) -> list[Envelope]:
    """The same records at random times: forward, back, or in another zone."""
    retimed = []
    for envelope in records:
        if data.draw(st.booleans()):  # keep its time: long monotonic runs too
            retimed.append(envelope)
            continue
        at = (BASE + timedelta(seconds=data.draw(OFFSETS))).astimezone(data.draw(ZONES))
        event = envelope.event
        if isinstance(event, SilenceAdded):
            event = SilenceAdded(event.id, event.matchers, at, at + (event.ends_at -
                                 event.starts_at), event.comment, event.created_by)
        retimed.append(Envelope(envelope.seq, at, event, envelope.prev))
    return retimed


def _fold_both_ways(records: list[Envelope]) -> None:
    lazy, eager = State(), State()
    for envelope in records:
        eager.prune_due = None  # forget what it knows: prune at every record
        assert apply(lazy, envelope) == apply(eager, envelope), envelope
        assert state_to_dict(lazy) == state_to_dict(eager), envelope
        assert (lazy.silences, lazy.storms) == (eager.silences, eager.storms), envelope


@settings(max_examples=200, deadline=None)
@given(steps=logs, data=st.data())
def test_skipping_the_prune_changes_no_decision_and_no_state(
        steps: list[tuple[object, ...]], data: st.DataObject) -> None:
    _fold_both_ways(_retimed(build(steps), data))


@settings(max_examples=150, deadline=None)
@given(first=POLICIES, steps=STEPS, data=st.data())
def test_with_routes_silences_and_storms_too(first: object, steps: list[tuple[object, ...]],
                                            data: st.DataObject) -> None:
    log = RoutedLog()
    log.add(ConfigApplied(first))  # type: ignore[arg-type]
    for n, step in enumerate(steps):
        kind = step[0]
        if kind == "alert":
            log.now += timedelta(seconds=data.draw(st.sampled_from([1, 600, 3600, 90000])))
            log.alert(step[1], n)  # type: ignore[arg-type]
        elif kind == "config":
            log.add(ConfigApplied(step[1]))  # type: ignore[arg-type]
        elif kind == "silence":
            log.silences.append(f"s{n}")
            log.add(SilenceAdded(f"s{n}", tuple(step[1]), log.now,  # type: ignore[arg-type]
                                 log.now + timedelta(seconds=int(step[2])),  # type: ignore[call-overload]
                                 "why", "ana"))
        elif kind == "expire" and log.silences:
            log.add(SilenceExpired(log.silences[int(step[1]) % len(log.silences)], "bo"))  # type: ignore[call-overload]
        elif kind == "sink":
            log.sink(bool(step[1]))
    _fold_both_ways(log.records)
    _fold_both_ways(_retimed(log.records, data))


def test_a_storm_whose_time_went_back_ends_an_hour_after_that_time() -> None:
    """An alert older than the storm's last suppression (a clock stepped back) moves the
    storm's end earlier; the next prune must still come in time to end it."""
    delivery = Delivery("r", "event_alert", None, "s")

    def alert(seq: int, minutes: int, level: str = "error") -> Envelope:
        return Envelope(seq, T0 + timedelta(minutes=minutes), AlertReceived(
            delivery, make_alert(str(seq), f"ev{seq}", level), "{}"))

    # Each error is a storm_budget suppression; the debug alert is not, so only the
    # prune can end the storm before it (75 minutes after the last suppression).
    _fold_both_ways([Envelope(1, T0, ConfigApplied(Policy(max_issues_per_hour=0))),
                     alert(2, 0), alert(3, -30), alert(4, 45, "debug"), alert(5, 50)])


def test_a_time_kept_in_a_zone_with_summer_time_is_pruned_on_the_exact_day() -> None:
    """Adding a day in Berlin's zone across the end of summer time gives 25 hours; an
    event id kept from such a time is still forgotten 24 hours after it, whether its
    expiry was worked out as it was kept or by a prune after it."""
    since = datetime(2026, 10, 24, 12, tzinfo=UTC)
    delivery = Delivery("r", "event_alert", None, "s")
    quiet = make_alert("1", "ev1", "debug")  # below_min_level: only the event id is kept

    def received(seq: int, at: datetime, alert: Alert) -> Envelope:
        return Envelope(seq, at, AlertReceived(delivery, alert, "{}"))

    redelivered = received(5, since + timedelta(hours=24, minutes=30), quiet)
    kept_then_pruned = [
        Envelope(1, since, ConfigApplied(Policy())),
        received(2, since.astimezone(ZoneInfo("Europe/Berlin")), quiet),
        received(3, since + timedelta(minutes=1), make_alert("2", "ev2")),  # an open
        received(4, since + timedelta(hours=2), make_alert("3", "ev3", "debug")),  # a prune
        redelivered]
    just_kept = [*kept_then_pruned[:2], redelivered]
    for records in (kept_then_pruned, just_kept):
        _fold_both_ways(records)
        state = State()
        decisions = [apply(state, envelope) for envelope in records]
        assert decisions[-1] is not None and decisions[-1].reason == "below_min_level"
