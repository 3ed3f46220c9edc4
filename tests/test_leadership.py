"""Leadership among replicas (docs/reference.md §12, obsv/leadership.py, obsv/consumer.py
rule 6): who decides and posts, how the lead moves, and that a former leader's writes
are refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

from obsv.consumer import Consumer
from obsv.core.alert import alert_from_delivery
from obsv.core.events import AlertReceived, Delivery, LeaderElected, Policy
from obsv.eventlog import EventLog
from obsv.metrics import Metrics
from obsv.settings import Settings
from obsv.sink import DryRunSink

from .conftest import ClientFactory, FakeClock, alert_body, records_of, wait_until

START = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


def _received(event_id: str) -> AlertReceived:
    body = alert_body(event_id=event_id, issue_id=event_id[:6], hashes=[event_id[:6]])
    return AlertReceived(Delivery("r", "event_alert", None, "s"), alert_from_delivery(body),
                         json.dumps(body))


class FakeSeat:
    """The election, driven by the test: what the consumer is told and what it says."""

    def __init__(self) -> None:
        self.lease = True
        self.lost_reasons: list[str] = []
        self.on_elected: Callable[[int], None] | None = None
        self.on_lost: Callable[[str], None] | None = None
        self.closed = False

    def start(self, on_elected: Callable[[int], None], on_lost: Callable[[str], None]
              ) -> None:
        self.on_elected, self.on_lost = on_elected, on_lost

    def holds(self) -> bool:
        return self.lease

    def lost(self, reason: str) -> None:
        self.lost_reasons.append(reason)

    async def close(self) -> None:
        self.closed = True


# -- the JSONL log: one process, always the leader ------------------------------------


async def test_with_the_jsonl_log_the_process_leads(make_client: ClientFactory) -> None:
    client = await make_client()
    answer = await client.get("/readyz")
    assert answer.status == 200
    assert await answer.json() == {"status": "ready", "role": "leader"}
    metrics = await (await client.get("/metrics")).text()
    assert "obsv_leader 1.0" in metrics


# -- a replica with a seat (consumer rule 6), on the real JSONL log and outbox ---------


async def test_a_follower_folds_but_never_decides_nor_posts_until_it_leads(
        settings: Settings) -> None:
    eventlog = EventLog.open(settings.event_log)
    eventlog.start()
    clock, seat, metrics = FakeClock(START), FakeSeat(), Metrics()
    consumer = Consumer(eventlog, DryRunSink(settings.outbox_dir, None, clock), Policy(),
                        clock=clock, metrics=metrics, seat=seat)
    try:
        await consumer.start()
        assert consumer.role == "follower" and seat.on_elected is not None
        assert metrics.registry.get_sample_value("obsv_leader") == 0
        first = await eventlog.append(_received("a" * 32))
        await wait_until(lambda: consumer.state.last_seq == first.seq)
        await consumer.step()
        # Folded (the decision is derived) but neither recorded nor posted.
        assert first.seq in consumer.state.unrecorded
        assert records_of(settings.event_log, "alert.decided") == []
        assert not settings.outbox_dir.exists() or not any(settings.outbox_dir.iterdir())

        # Elected: nothing happens until its own leader.elected is folded ...
        seat.on_elected(7)
        await consumer.step()
        assert consumer.role == "follower"
        assert records_of(settings.event_log, "alert.decided") == []
        # ... then it decides what is undecided and posts it.
        await eventlog.append(LeaderElected(7, "me"))
        await wait_until(lambda: bool(records_of(settings.event_log, "issue.opened")))
        assert consumer.role == "leader" and metrics.registry.get_sample_value("obsv_leader") == 1
        [decided] = records_of(settings.event_log, "alert.decided")
        assert decided["alert_seq"] == first.seq

        # Lost: it stops at once; what arrives later stays undecided.
        assert seat.on_lost is not None
        seat.on_lost("test")
        assert consumer.role == "follower" and metrics.registry.get_sample_value("obsv_leader") == 0
        second = await eventlog.append(_received("b" * 32))
        await wait_until(lambda: consumer.state.last_seq == second.seq)
        await consumer.step()
        assert len(records_of(settings.event_log, "alert.decided")) == 1
    finally:
        await consumer.stop()
        await eventlog.close()
    assert seat.closed


async def test_a_leader_whose_lease_ran_out_posts_nothing(settings: Settings) -> None:
    eventlog = EventLog.open(settings.event_log)
    eventlog.start()
    clock, seat = FakeClock(START), FakeSeat()
    consumer = Consumer(eventlog, DryRunSink(settings.outbox_dir, None, clock), Policy(),
                        clock=clock, metrics=Metrics(), seat=seat)
    try:
        await consumer.start()
        assert seat.on_elected is not None
        seat.lease = False  # e.g. the process was frozen longer than the lease
        seat.on_elected(1)
        await eventlog.append(LeaderElected(1, "me"))
        alert = await eventlog.append(_received("c" * 32))
        # It decides (recorded under its epoch, which the log would refuse if stale) ...
        await wait_until(lambda: bool(records_of(settings.event_log, "alert.decided")))
        assert consumer.role == "leader"
        await wait_until(lambda: alert.seq in consumer.state.intents
                         and consumer.state.intents[alert.seq].recorded)
        for _ in range(5):
            await consumer.step()
        # ... but starts no GitHub write until the lease is renewed.
        assert records_of(settings.event_log, "issue.opened") == []
        assert not settings.outbox_dir.exists() or not any(settings.outbox_dir.iterdir())
        seat.lease = True
        await wait_until(lambda: bool(records_of(settings.event_log, "issue.opened")))
    finally:
        await consumer.stop()
        await eventlog.close()
