"""Leadership among replicas (docs/reference.md §12, obsv/leadership.py, obsv/consumer.py
rule 6): who decides and posts, how the lead moves, and that a former leader's writes
are refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from obsv.consumer import Consumer
from obsv.core.alert import alert_from_delivery
from obsv.core.events import AlertReceived, Delivery, IssueFailed, LeaderElected, Policy
from obsv.eventlog import EventLog
from obsv.logstore import LeadershipLost
from obsv.metrics import Metrics
from obsv.settings import Settings
from obsv.sink import DryRunSink

from .conftest import SECRET, ClientFactory, FakeClock, alert_body, records_of, wait_until
from .fakes import FakeGitHub
from .process import ServeProcess
from .replicas import (
    db_records,
    deliver,
    freeze,
    get_text,
    role,
    stop_quietly,
    thaw,
    wait_records,
    wait_role,
)

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

    async def first_try(self) -> None:
        return None  # the test elects by hand, later

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
        # Folded (the decision is derived) but neither recorded, counted nor posted.
        assert first.seq in consumer.state.unrecorded
        assert metrics.registry.get_sample_value(
            "obsv_alerts_decided_total", {"action": "open", "reason": "new_issue"}) is None
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


# -- real replicas on a real PostgreSQL --------------------------------------------------


def _replica(tmp_path: Path, pg_url: str, name: str, **env: str) -> ServeProcess:
    """An ``obsv serve`` on the shared database (dry run: each its own outbox)."""
    return ServeProcess(tmp_path, {"OBSV_SENTRY_CLIENT_SECRET": SECRET,
                                   "OBSV_DATABASE_URL": pg_url,
                                   "OBSV_OUTBOX_DIR": str(tmp_path / f"outbox-{name}"),
                                   "OBSV_GITHUB_POLL_SECONDS": "0", **env})


async def test_sigkill_of_the_leader_hands_the_lead_to_a_follower(
        tmp_path: Path, pg_url: str) -> None:
    first, second = _replica(tmp_path, pg_url, "a"), _replica(tmp_path, pg_url, "b")
    try:
        await first.start()
        assert await role(first) == "leader"  # alone, it leads before it is ready
        await second.start()
        assert await role(second) == "follower"
        # A follower accepts deliveries; the leader decides them.
        seq = await deliver(second.url, "a" * 32)
        await wait_records(pg_url, lambda rs: any(r.get("alert_seq") == seq and
                                                  r["type"] == "alert.decided" for r in rs))
        first.kill()
        await wait_role(second, "leader")
        seq = await deliver(second.url, "b" * 32)
        records = await wait_records(pg_url, lambda rs: any(
            r.get("alert_seq") == seq and r["type"] == "alert.decided" for r in rs))
        elected = [r for r in records if r["type"] == "leader.elected"]
        assert [r["epoch"] for r in elected] == [1, 2]
        assert elected[0]["replica"] != elected[1]["replica"]
        assert "obsv_leader 1.0" in await get_text(second.url + "/metrics")
        assert second.stop() == 0
    finally:
        for process in (first, second):
            stop_quietly(process)


async def test_a_frozen_leader_loses_the_lead_and_steps_down_when_it_wakes(
        tmp_path: Path, pg_url: str) -> None:
    first, second = _replica(tmp_path, pg_url, "a"), _replica(tmp_path, pg_url, "b")
    try:
        await first.start()
        await wait_role(first, "leader")
        await second.start()
        assert await role(second) == "follower"
        freeze(first)
        # The server ends the frozen leader's idle session (idle_session_timeout), which
        # releases its lock; the follower takes the lead under a new epoch.
        await wait_role(second, "leader", timeout=30)
        thaw(first)
        await wait_role(first, "follower")
        assert "leader.lost" in first.stderr_path.read_text()
        assert "obsv_leader 0.0" in await get_text(first.url + "/metrics")
        seq = await deliver(first.url, "c" * 32)  # still accepts deliveries
        records = await wait_records(pg_url, lambda rs: any(
            r.get("alert_seq") == seq and r["type"] == "alert.decided" for r in rs))
        assert [r["epoch"] for r in records if r["type"] == "leader.elected"] == [1, 2]
        assert first.stop() == 0 and second.stop() == 0
    finally:
        for process in (first, second):
            stop_quietly(process)


async def test_a_stale_epochs_writes_are_refused_and_its_leader_steps_down(
        settings: Settings, pg_url: str) -> None:
    """The fence itself: a leader that missed a takeover (frozen, partitioned: its seat
    still says it holds the lead) records nothing once another replica took over."""
    from obsv.pglog import PgEventLog

    clock, seat = FakeClock(START), FakeSeat()
    old, new = await PgEventLog.open(pg_url, clock), await PgEventLog.open(pg_url, clock)
    old.start()
    new.start()
    consumer = Consumer(old, DryRunSink(settings.outbox_dir, None, clock), Policy(),
                        clock=clock, metrics=Metrics(), seat=seat)
    try:
        await consumer.start()
        assert seat.on_elected is not None
        epoch = await old.take_leadership("old")
        seat.on_elected(epoch)
        await wait_records(pg_url, lambda rs: bool(rs) and rs[-1]["type"] == "config.applied")
        assert consumer.role == "leader"

        assert await new.take_leadership("new") == epoch + 1
        arrived = await new.append(_received("d" * 32))  # a delivery on the new leader
        await wait_until(lambda: bool(seat.lost_reasons))
        assert consumer.role == "follower"
        # The old leader's decision was refused: nothing after the delivery.
        records = await db_records(pg_url)
        assert [r["type"] for r in records] == [
            "leader.elected", "config.applied", "leader.elected", "alert.received"]
        assert records[-1]["seq"] == arrived.seq
        # Appended directly, a stale epoch's record is refused as well, and the new
        # leader's goes in.
        failed = IssueFailed(arrived.seq, 1, None, "test", True, None)
        with pytest.raises(LeadershipLost):
            await old.append(failed, epoch=epoch)
        assert len(await db_records(pg_url)) == len(records)
        await new.append(failed, epoch=epoch + 1)
        assert len(await db_records(pg_url)) == len(records) + 1
    finally:
        await consumer.stop()
        await old.close()
        await new.close()


async def test_only_the_leader_polls_github(tmp_path: Path, pg_url: str) -> None:
    """Each replica talks to its own fake GitHub here, so every poll is attributed."""
    fakes = [FakeGitHub(), FakeGitHub()]
    for fake in fakes:
        await fake.start()
    replicas = [_replica(tmp_path, pg_url, name, OBSV_GITHUB_TOKEN="test-token",
                         OBSV_GITHUB_REPO="acme/shop", OBSV_GITHUB_API_URL=fake.base_url,
                         OBSV_DRY_RUN="false", OBSV_GITHUB_POLL_SECONDS="1")
                for name, fake in zip("ab", fakes, strict=True)]
    leader, follower = replicas
    try:
        await leader.start()
        await follower.start()
        assert (await role(leader), await role(follower)) == ("leader", "follower")
        await wait_until(lambda: len(fakes[0].requests("poll_issues")) >= 2)
        assert fakes[1].requests("poll_issues") == []
        leader.kill()
        await wait_role(follower, "leader")
        await wait_until(lambda: bool(fakes[1].requests("poll_issues")))
        assert follower.stop() == 0
    finally:
        for process in replicas:
            stop_quietly(process)
        for fake in fakes:
            await fake.close()
