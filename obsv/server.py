"""The aiohttp application: routes, and one ``cleanup_ctx`` per resource."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from obsv.adminapi import AdminApi
from obsv.clock import Clock, TrustedClock, utc_now
from obsv.consumer import Consumer, Seat
from obsv.core.policy import delivery_recorded
from obsv.eventlog import EventLog
from obsv.githubhooks import GitHubReceiver
from obsv.ingress import Receiver, Remembers
from obsv.logstore import EventStore, SharedEventStore
from obsv.metrics import Metrics
from obsv.poller import PolledChanges, Poller
from obsv.sentryapi import SentrySink
from obsv.settings import Settings
from obsv.sink import DryRunSink, Sink

log = structlog.get_logger("obsv.server")

SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", TrustedClock)
METRICS = web.AppKey("metrics", Metrics)
EVENTLOG: web.AppKey[EventStore] = web.AppKey("eventlog")
RECEIVER = web.AppKey("receiver", Receiver)
GITHUB_RECEIVER = web.AppKey("github_receiver", GitHubReceiver)
SINK = web.AppKey("sink", Sink)
SENTRY: web.AppKey[SentrySink | None] = web.AppKey("sentry")
POLLER = web.AppKey("poller", Poller)
# Webhook and poller record GitHub's observations one at a time (obsv/poller.py rule 3).
OBSERVATIONS = web.AppKey("observations", asyncio.Lock)
POLLED = web.AppKey("polled", PolledChanges)
CONSUMER = web.AppKey("consumer", Consumer)
STARTUP: web.AppKey[asyncio.Task[None]] = web.AppKey("startup")
ADMIN = web.AppKey("admin", AdminApi)


def default_sink(settings: Settings, clock: Clock, metrics: Metrics) -> Sink:
    """The dry-run outbox unless GitHub is configured and dry run is off."""
    if settings.dry_run:
        return DryRunSink.from_settings(settings, clock)
    from obsv.github import GitHubSink
    return GitHubSink(settings, clock, metrics)


def default_sentry(settings: Settings, clock: Clock) -> SentrySink | None:
    """The Sentry API client when resolving in Sentry is on (docs/reference.md §7)."""
    if not settings.resolve_in_sentry:
        return None
    return SentrySink(settings.sentry_api_url, settings.sentry_api_token, clock)


async def _sink_ctx(app: web.Application) -> AsyncIterator[None]:
    await app[SINK].start()
    sentry = app[SENTRY]
    if sentry is not None:
        await sentry.start()
    yield
    if sentry is not None:
        await sentry.close()
    await app[SINK].close()


def create_app(settings: Settings, *, clock: Clock = utc_now, sink: Sink | None = None,
               metrics: Metrics | None = None,
               sentry: SentrySink | None = None) -> web.Application:
    """The obsv web application; nothing is opened until it starts.

    ``clock`` is the wall clock; everything in the app reads the time through one
    ``TrustedClock`` over it (obsv/clock.py), which pairs it with ``clock.monotonic()``
    when it has one (the tests' ``FakeClock``), else with ``time.monotonic``.
    ``sink`` defaults to what the settings choose: the dry-run outbox, or GitHub.
    A sink passed in should count into the same ``metrics``. ``sentry`` resolves
    issues in Sentry; it defaults to the client the settings ask for, if any.
    """
    # The receiver enforces the body limit itself (413 without reading it all);
    # aiohttp's own cap is set just above it so it never answers first.
    app = web.Application(client_max_size=settings.max_body_bytes + 1)
    app[SETTINGS] = settings
    app[METRICS] = metrics or Metrics()
    app[CLOCK] = TrustedClock(clock, metrics=app[METRICS])
    app[SINK] = sink if sink is not None else default_sink(settings, app[CLOCK], app[METRICS])
    app[SENTRY] = sentry if sentry is not None else default_sentry(settings, app[CLOCK])
    app.cleanup_ctx.append(_sink_ctx)
    app.cleanup_ctx.append(_eventlog_ctx)
    app.cleanup_ctx.append(_consumer_ctx)
    app.router.add_post("/webhooks/sentry", _sentry_webhook)
    app.router.add_post("/webhooks/github", _github_webhook)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_route("*", "/api/{path:.*}", _admin_api)  # docs/reference.md §9
    return app


async def open_eventlog(settings: Settings, clock: Clock) -> EventStore:
    """The JSONL file, or PostgreSQL when ``OBSV_DATABASE_URL`` is set (docs/reference.md
    §12); opened, not started."""
    if settings.database_url:
        from obsv.pglog import PgEventLog  # asyncpg only when asked for
        pg = await PgEventLog.open(settings.database_url, clock)
        log.info("log.opened", database=pg.location, last_seq=pg.last_seq, epoch=pg.epoch)
        if pg.last_seq == 0 and _holds_records(settings.event_log):
            # Moving to PostgreSQL without the file's history would forget every
            # decision (duplicates, cooldowns, links): say how to bring it along.
            log.warning("log.file_not_imported", event_log=str(settings.event_log),
                        database=pg.location,
                        fix=f"stop obsv, run obsv import {settings.event_log} "
                            "--database-url URL, then start it again")
        return pg
    eventlog = EventLog.open(settings.event_log, clock)
    if eventlog.mode & 0o077:
        # Not chmod'ed: the file may be shared on purpose, and may not be obsv's to change.
        log.warning("log.mode_too_wide", path=str(eventlog.path), mode=oct(eventlog.mode),
                    fix=f"chmod 600 {eventlog.path}: it holds alert contents")
    if eventlog.torn is not None:
        log.warning("log.torn_tail_set_aside", side_file=str(eventlog.torn.side_file),
                    bytes=eventlog.torn.size, last_seq=eventlog.last_seq)
    return eventlog


def _holds_records(path: Path) -> bool:
    """Whether a JSONL log is at ``path`` with anything in it."""
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


async def _eventlog_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    eventlog = await open_eventlog(settings, app[CLOCK])
    app[CLOCK].not_before(eventlog.last_at)
    eventlog.start()
    app[EVENTLOG] = eventlog
    # Deliveries are accepted from here on, while the consumer still folds the log:
    # it follows the log from before the server listens (obsv/consumer.py rule 3).
    app[RECEIVER] = Receiver(settings.sentry_client_secret, settings.max_body_bytes,
                             eventlog, app[METRICS], remembers=_fold_remembers(app))
    app[OBSERVATIONS] = asyncio.Lock()
    app[POLLED] = PolledChanges()
    if settings.github_webhook_secret:
        app[GITHUB_RECEIVER] = GitHubReceiver(
            settings.github_webhook_secret, settings.max_body_bytes, eventlog, app[METRICS],
            seen=_fold_saw_delivery(app), observations=app[OBSERVATIONS],
            polled=app[POLLED])
    app[ADMIN] = AdminApi(settings.admin_token, eventlog, app[CLOCK],
                          consumer=lambda: app.get(CONSUMER))
    yield
    await eventlog.close()


async def _consumer_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    consumer = Consumer(app[EVENTLOG], app[SINK], settings.policy(), clock=app[CLOCK],
                        metrics=app[METRICS], snapshot_every=settings.snapshot_every,
                        sentry=app[SENTRY], seat=_seat(app))
    app[CONSUMER] = consumer
    # The fold may take seconds on a long log without a snapshot: it runs while the
    # server already answers /healthz (200) and /readyz (503).
    app[STARTUP] = asyncio.create_task(consumer.start(), name="obsv-consumer-start")
    poller = _poller(app, consumer)
    if poller is not None:  # polls once the fold is caught up, never before
        app[POLLER] = poller
        app[STARTUP].add_done_callback(
            lambda task: poller.start() if not task.cancelled() and not task.exception()
            else None)
    yield
    if poller is not None:
        await poller.stop()
    if not app[STARTUP].done():
        app[STARTUP].cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await app[STARTUP]
    await consumer.stop()


def _seat(app: web.Application) -> Seat | None:
    """On a shared log (PostgreSQL) this replica's place in the leader election
    (obsv/leadership.py); the JSONL log has one writer, which always leads."""
    eventlog, settings = app[EVENTLOG], app[SETTINGS]
    if not isinstance(eventlog, SharedEventStore) or not settings.database_url:
        return None
    from obsv.leadership import Leadership  # asyncpg only when asked for
    replica = f"{socket.gethostname()}:{settings.port}/{os.getpid()}"
    return Leadership(settings.database_url, replica, eventlog.take_leadership)


def _poller(app: web.Application, consumer: Consumer) -> Poller | None:
    """The GitHub poller, when posting to GitHub with OBSV_GITHUB_POLL_SECONDS > 0."""
    from obsv.github import GitHubSink, IssuePoll

    settings, sink, eventlog = app[SETTINGS], app[SINK], app[EVENTLOG]
    if not isinstance(sink, GitHubSink) or settings.github_poll_seconds <= 0:
        return None
    previous: dict[str, IssuePoll] = {}  # each repository's last poll, for its ETag

    async def fetch(repo: str, since: datetime) -> Sequence[Mapping[str, Any]] | None:
        if not consumer.leading:  # replicas: only the leader polls (a follower's turn
            return None           # is taken as "unchanged", its since stays put)
        try:
            poll = previous[repo] = await sink.poll_issues(since, previous.get(repo), repo)
        except Exception:
            app[METRICS].polls.labels("failed").inc()
            raise
        app[METRICS].polls.labels("unchanged" if poll.unchanged else "changed").inc()
        return None if poll.unchanged else poll.issues

    # What changed while obsv was down is found from the log's last record on. Every
    # repository obsv opens issues in is polled (docs/reference.md §8).
    since = eventlog.last_at if eventlog.last_seq else app[CLOCK]()
    return Poller(settings.repos, fetch, interval=settings.github_poll_seconds, since=since,
                  state=lambda: consumer.state,
                  caught_up=lambda: consumer.applied(eventlog.last_seq),
                  record=eventlog.append_many, observations=app[OBSERVATIONS],
                  polled=app[POLLED])


def _fold_saw_delivery(app: web.Application) -> Callable[[str], bool]:
    """Whether the fold already holds a ``github.issue`` of this ``X-GitHub-Delivery``."""
    def seen(delivery_id: str) -> bool:
        consumer = app.get(CONSUMER)
        return (consumer is not None and consumer.caught_up
                and delivery_recorded(consumer.state, delivery_id))
    return seen


def _fold_remembers(app: web.Application) -> Remembers:
    """The receiver may store a redelivery by hash only when the running consumer's
    fold still holds its event id (obsv/ingress.py ``StoredBodies``)."""
    def remembers(event_id: str, margin: timedelta) -> bool:
        consumer = app.get(CONSUMER)
        return consumer is not None and consumer.remembers(event_id, margin)
    return remembers


async def _sentry_webhook(request: web.Request) -> web.Response:
    return await request.app[RECEIVER].handle(request)


async def _github_webhook(request: web.Request) -> web.Response:
    receiver = request.app.get(GITHUB_RECEIVER)
    if receiver is None:  # no OBSV_GITHUB_WEBHOOK_SECRET: the route is off (fail closed)
        return web.json_response({"error": "not_found"}, status=404)
    return await receiver.handle(request)


async def _admin_api(request: web.Request) -> web.Response:
    return await request.app[ADMIN].handle(request)


async def _healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    problems = readiness_problems(request.app)
    # Every replica that accepts deliveries is ready, leader or follower; the role is
    # named for people and dashboards (docs/reference.md §12).
    consumer = request.app.get(CONSUMER)
    role = consumer.role if consumer is not None else "follower"
    if problems:
        return web.json_response({"status": "not_ready", "problems": problems, "role": role},
                                 status=503)
    return web.json_response({"status": "ready", "role": role})


def readiness_problems(app: web.Application) -> list[str]:
    """Why the service should not get traffic now; empty when ready."""
    eventlog = app.get(EVENTLOG)
    if eventlog is None:
        return ["event log not open"]
    problems = []
    if not eventlog.writable:
        problems.append("event log not writable (last write failed)")
    consumer = app.get(CONSUMER)
    startup = app.get(STARTUP)
    if (startup is not None and startup.done() and not startup.cancelled()
            and startup.exception() is not None):
        problems.append(f"consumer failed to start: {startup.exception()}")
    elif consumer is None or not consumer.ready:
        # Deliveries are accepted meanwhile; decisions are not caught up yet.
        problems.append("folding the event log (starting): decisions not caught up")
    elif not consumer.running:
        problems.append("consumer not running")
    return problems


async def _metrics(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    if (eventlog := request.app.get(EVENTLOG)) is not None:
        metrics.log_bytes.set(eventlog.size)
        consumer = request.app.get(CONSUMER)
        if consumer is not None and consumer.ready:  # as of this scrape, not the last fold
            metrics.consumer_lag.set(eventlog.last_seq - consumer.state.last_seq)
    return web.Response(body=generate_latest(metrics.registry),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})
