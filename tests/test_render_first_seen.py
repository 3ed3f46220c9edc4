"""'First seen' in an issue body is the first alert of its Sentry issue in the log, not
this event's time (docs/reference.md §6, summary): the fold keeps it, snapshots too."""

from __future__ import annotations

from datetime import UTC, datetime

from obsv.core.snapshot import state_from_dict, state_to_dict
from obsv.settings import Settings

from .conftest import ClientFactory, FakeClock, alert_body, post_signed, records_of, wait_until

START = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


async def test_first_seen_is_the_first_alert_of_the_sentry_issue(
        make_client: ClientFactory, settings: Settings) -> None:
    clock = FakeClock(START)
    client = await make_client(clock=clock)
    # Below the minimum level: decided, opens nothing, but it is the issue's first alert.
    assert (await post_signed(client, alert_body("a" * 32, level="warning"))).status == 202
    clock.advance(hours=3)
    assert (await post_signed(client, alert_body("b" * 32, request_id="r2"))).status == 202
    await wait_until(lambda: bool(records_of(settings.event_log, "issue.opened")))
    first_at = records_of(settings.event_log, "alert.received")[0]["at"]
    second_at = records_of(settings.event_log, "alert.received")[1]["at"]
    text = (settings.outbox_dir / "1117540176.md").read_text("utf-8")
    line = next(x for x in text.splitlines() if "First seen" in x)
    assert first_at in line and second_at not in line


def test_the_snapshot_keeps_first_seen() -> None:
    from obsv.core.policy import State
    state = State()
    state.first_seen["42"] = START
    assert state_from_dict(state_to_dict(state)).first_seen == {"42": START}
