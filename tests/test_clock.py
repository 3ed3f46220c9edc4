"""Trusted time (obsv/clock.py): a wall clock step never holds decisions hostage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from structlog.testing import capture_logs

from obsv.clock import TrustedClock
from obsv.core.codec import parse_time
from obsv.metrics import Metrics
from obsv.settings import Settings

from .conftest import (
    ClientFactory,
    FakeClock,
    alert_body,
    post_signed,
    read_log,
    records_of,
    wait_until,
)

START = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


async def send(client: Any, event_id: str, issue: str) -> int:
    response = await post_signed(client, alert_body(event_id=event_id, issue_id=issue,
                                                    hashes=[f"h{issue}"]))
    assert response.status == 202, await response.text()
    seq: int = (await response.json())["seq"]
    return seq


async def test_a_one_reading_wall_clock_glitch_changes_no_decision(
        make_client: ClientFactory, settings: Settings) -> None:
    """The wall clock jumps 30 days ahead for one delivery and comes back: later alerts
    are decided as if it never happened (the cooldown ends, the storm hour rolls)."""
    clock = FakeClock(START)
    client = await make_client(clock=clock, cooldown_seconds=600, max_issues_per_hour=1)
    log = settings.event_log
    with capture_logs() as logs:
        first = await send(client, "a" * 32, "1")
        clock.step(days=30)
        during = await send(client, "b" * 32, "2")
        clock.step(days=-30)
        clock.advance(minutes=15)
        recurred = await send(client, "c" * 32, "1")
        held = await send(client, "d" * 32, "1")
        clock.advance(hours=1)
        fresh = await send(client, "e" * 32, "3")
        await wait_until(lambda: len(records_of(log, "alert.decided")) == 5)
        metrics = await (await client.get("/metrics")).text()
    decided = {r["alert_seq"]: (r["action"], r["reason"]) for r in records_of(log, "alert.decided")}
    assert decided == {
        first: ("open", "new_issue"),
        during: ("suppress", "storm_budget"),  # one open already in the hour: no time passed
        recurred: ("comment", "recurrence"),   # 15 minutes later: the cooldown (10) is over
        held: ("suppress", "cooldown"),
        fresh: ("open", "new_issue"),          # 75 minutes later: the storm hour rolled
    }
    times = {r["seq"]: parse_time(r["at"]) for r in read_log(log)}
    assert max(times.values()) < START + timedelta(days=1)  # the glitch never reached the log
    assert times[fresh] == START + timedelta(minutes=75)
    [stepped] = [e for e in logs if e["event"] == "clock.stepped"]
    assert (stepped["log_level"], stepped["direction"]) == ("error", "forward")
    assert stepped["seconds"] == 30 * 86400
    assert 'obsv_clock_steps_total{direction="forward"} 1.0' in metrics


def test_small_differences_follow_the_wall_clock() -> None:
    clock = FakeClock(START)
    trusted = TrustedClock(clock)
    assert trusted() == START
    clock.advance(seconds=10)
    clock.step(seconds=0.5)  # an NTP slew: within the tolerance
    assert trusted() == START + timedelta(seconds=10.5)


def test_a_step_forward_is_adopted_only_once_it_has_held_for_a_minute() -> None:
    clock, metrics = FakeClock(START), Metrics()
    trusted = TrustedClock(clock, metrics=metrics)
    trusted()
    clock.step(hours=2)
    with capture_logs() as logs:
        assert trusted() == START
        clock.advance(seconds=59)
        assert trusted() == START + timedelta(seconds=59)
        clock.advance(seconds=1)
        assert trusted() == START + timedelta(hours=2, seconds=60)
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("clock.stepped", "error"), ("clock.adopted", "error")]
    assert metrics.clock_steps.labels("forward")._value.get() == 1


def test_a_step_that_comes_back_before_the_minute_is_never_adopted() -> None:
    clock = FakeClock(START)
    trusted = TrustedClock(clock)
    trusted()
    clock.step(days=30)
    clock.advance(seconds=30)
    assert trusted() == START + timedelta(seconds=30)
    clock.step(days=-30)
    clock.advance(seconds=40)  # 70 s after the step, but the wall clock agreed meanwhile
    assert trusted() == START + timedelta(seconds=70)
    clock.step(days=30)
    clock.advance(seconds=30)
    assert trusted() == START + timedelta(seconds=100)  # a new step: watched afresh


def test_a_step_back_keeps_real_elapsed_time_and_logs_once() -> None:
    clock, metrics = FakeClock(START), Metrics()
    trusted = TrustedClock(clock, metrics=metrics)
    trusted()
    clock.step(hours=-1)
    with capture_logs() as logs:
        clock.advance(seconds=5)
        assert trusted() == START + timedelta(seconds=5)
        clock.advance(minutes=10)
        assert trusted() == START + timedelta(minutes=10, seconds=5)
    assert [(e["event"], e["direction"]) for e in logs] == [("clock.stepped", "back")]
    assert metrics.clock_offset._value.get() == -3600


def test_at_start_the_last_record_time_is_a_floor() -> None:
    clock = FakeClock(START)
    trusted = TrustedClock(clock)
    trusted.not_before(START + timedelta(minutes=5))
    with capture_logs() as logs:
        assert trusted() == START + timedelta(minutes=5)
        clock.advance(seconds=1)
        assert trusted() == START + timedelta(minutes=5, seconds=1)
    assert [e["direction"] for e in logs if e["event"] == "clock.stepped"] == ["back"]
    # A log last written yesterday says nothing about a wall clock that reads today.
    later = TrustedClock(clock)
    later.not_before(START - timedelta(days=1))
    assert later() == START + timedelta(seconds=1)
