"""The consumer: folds the log, records decisions, hands recorded intents to the sink.

Rules:
1. One task decides, in ``seq`` order, from records that are already durable; the
   fold itself is ``obsv.core.policy.apply``. There is no race to lock.
2. Side effects follow records: the sink only sees an intent once its
   ``alert.decided`` record is fsync'd, and its outcome is the next record.
3. Start: the consumer follows the log from the moment it is made: its listener is
   registered and the log's size and last seq are noted in one synchronous step.
   The fold reads exactly the records up to that size (from the snapshot, if one is
   usable: obsv/snapshots.py), checking every seq runs on by one; the listener has
   queued every later record. So the receiver appends from the moment the log is
   open, during the fold, and no record is folded twice or missed.
4. Then: record the policy if it changed (``config.applied``), record decisions
   derived but not yet recorded, and only then report ready (``/readyz``). Nothing
   already decided is decided again: a decision is a pure function of the records
   before it. Alerts that arrived during the fold come before that
   ``config.applied`` and are decided by the policy recorded before them.
5. Posting is one request at a time, in ``alert_seq`` order, never blocking the
   deciding; a failed round waits until its ``next_attempt_at`` while others go on.
6. Replicas (a shared PostgreSQL log, obsv/leadership.py): every replica folds every
   record, but only the leader records decisions and outcomes, and posts. A follower
   given the lead (``lead``) first folds up to its own ``leader.elected``, so it knows
   everything the former leader recorded; then it records what is undecided, and
   posts. Every intent pending at that moment may have been posted by the former
   leader: it is looked for by its marker before being posted again, as after a
   restart. Its appends carry its epoch; one the log refuses (``LeadershipLost``),
   or a lease run out before a post, makes it a follower again at once (``follow``).
   With the JSONL log there is no seat: the process leads from the start, no epoch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from obsv import logs
from obsv.core.events import (
    AlertDecided,
    AlertReceived,
    CommentPosted,
    ConfigApplied,
    Envelope,
    Event,
    IssueClosed,
    IssueFailed,
    IssueOpened,
    IssueReopened,
    LeaderElected,
    Policy,
    SentryIssueChanged,
    SentryResolved,
    StormDecided,
    SyncDecided,
)
from obsv.core.policy import (
    EVENT_ID_WINDOW,
    Intent,
    State,
    apply,
    event_key,
    orphaned_intents,
    ready_intents,
)
from obsv.core.routes import labels_for
from obsv.eventlog import Clock, LogCorrupt, LogWriteError
from obsv.logstore import EventStore, LeadershipLost
from obsv.metrics import Metrics
from obsv.sentryapi import SentrySink
from obsv.sink import (
    CloseJob,
    CommentJob,
    DigestJob,
    OpenJob,
    ReopenJob,
    ResolveJob,
    Sink,
    retry_time,
)
from obsv.snapshots import Snapshots

log = structlog.get_logger("obsv.consumer")

_RETRY_APPEND_SECONDS = 1.0
# Decisions and failures recorded per append (``_record``): ~0.3 MB of records, one
# bounded write or statement each.
RECORD_CHUNK = 1000
_MAX_RETRY_NAP = 1.0
# About a day of rounds (30 s doubling to an hour): enough for any outage to pass.
_MAX_UNEXPECTED_ATTEMPTS = 30
_LEASE_NAP = 0.1  # rule 6: how often a leader whose lease lapsed looks again
_FIRST_TURN_SECONDS = 10.0  # rule 6: the most start-up waits for a first election


class Seat(Protocol):
    """A replica's place in the election (obsv/leadership.py ``Leadership``)."""

    def start(self, on_elected: Callable[[int], None], on_lost: Callable[[str], None]
              ) -> None:
        """Compete for the lead; call back when it is won (with its epoch) and lost."""

    async def first_try(self) -> None:
        """Return once the first try for the lead is over (won and taken, or not)."""

    def holds(self) -> bool:
        """Whether the lead is still surely this replica's (a GitHub write may start)."""

    def lost(self, reason: str) -> None:
        """The log refused a write of this replica's epoch: step down now."""

    async def close(self) -> None:
        """Stop competing, releasing the lead."""


class Consumer:
    """Follows the event log and drives decisions and their side effects."""

    def __init__(self, eventlog: EventStore, sink: Sink, policy: Policy, *, clock: Clock,
                 metrics: Metrics, snapshot_every: int = 10_000,
                 sentry: SentrySink | None = None, seat: Seat | None = None) -> None:
        self._log = eventlog
        self._sink = sink
        self._sentry = sentry
        self._policy = policy
        self._clock = clock
        self._metrics = metrics
        self._snapshots = Snapshots(eventlog, metrics, snapshot_every)
        self.state = State()
        self._inbox: deque[Envelope] = deque()
        self._wake = asyncio.Event()
        self._poke = asyncio.Event()
        self._in_flight: set[int] = set()
        # Records appended but not folded yet, by key -> seq: a shared log may hand a
        # process its own records after its append returned (obsv/logstore.py rule 4),
        # and until the fold has them their decisions still look unrecorded.
        self._unfolded: dict[int, int] = {}
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._poster: asyncio.Task[None] | None = None
        # Rule 6: without a seat this process leads, with no epoch; with one it
        # follows until elected, then appends under ``_epoch``.
        self._seat = seat
        self.leading = seat is None
        self._epoch: int | None = None
        self._electing: int | None = None  # won, waiting to fold its leader.elected
        self._folded_epoch = 0  # the epoch of the last leader.elected folded
        self._took_over = asyncio.Event()  # the last take-over is done (or abandoned)
        self._restarted: set[int] = set()
        # Intents this process has handed to the sink without a recorded outcome
        # (the outcome's append failed): a new attempt must look before posting.
        self._attempted: set[int] = set()
        self.caught_up = False  # the fold has reached the records the listener queued
        self.ready = False
        # Rule 3, in one synchronous step: what the fold reads, and what the
        # listener queues from now on.
        self._fold_end, self._fold_seq = eventlog.position, eventlog.last_seq
        eventlog.add_listener(self._on_records)

    @property
    def running(self) -> bool:
        """Started, and its tasks alive (``/readyz``)."""
        tasks = [*self._tasks, *([self._poster] if self._poster else [])]
        return self.ready and not any(task.done() for task in tasks)

    @property
    def role(self) -> str:
        """``leader`` or ``follower`` (docs/reference.md §12, ``/readyz``)."""
        return "leader" if self.leading else "follower"

    async def catch_up(self) -> None:
        """Rule 3: restore and fold the log as it was when this consumer was made (on a
        worker thread, so the server answers meanwhile), then what came since."""
        loop = asyncio.get_running_loop()
        self.state = await loop.run_in_executor(None, self._restore)
        self._restarted = set(self.state.intents)
        self.caught_up = True
        self._drain_inbox()

    async def start(self) -> None:
        """Rules 3, 4 and 6: catch up, record what is missing, then follow the log;
        a replica with a seat starts as a follower and competes for the lead."""
        await self.catch_up()
        if self.leading and self.state.policy != self._policy:
            await self._log.append(ConfigApplied(self._policy))
        self._tasks = [asyncio.create_task(self._decide_loop(), name="obsv-decide")]
        if self.leading:
            self._poster = asyncio.create_task(self._post_loop(), name="obsv-post")
        self._wake.set()
        await self._applied(self._log.last_seq)
        if self._seat is not None:
            self._seat.start(self.lead, self.follow)
            # A replica that finds nobody leading takes the lead before it reports
            # ready, as a lone process would; one that finds a leader follows at once.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._first_turn(), _FIRST_TURN_SECONDS)
        self.ready = True
        log.info("consumer.ready", last_seq=self.state.last_seq, role=self.role)
        self._metrics.leader.set(int(self.leading))

    async def _first_turn(self) -> None:
        """The seat's first try for the lead, and if it won, the take-over."""
        assert self._seat is not None
        await self._seat.first_try()
        if self._electing is not None or self.leading:
            await self._took_over.wait()

    def lead(self, epoch: int) -> None:
        """Rule 6: this replica won the lead under ``epoch``; it decides once its fold
        reaches its own ``leader.elected``."""
        self._electing = epoch
        self._wake.set()

    def follow(self, reason: str) -> None:
        """Rule 6: stop deciding and posting at once; keep folding."""
        self._electing = None
        self._took_over.set()  # nobody waits for a take-over that will not come
        if not self.leading:
            return
        self.leading, self._epoch = False, None
        self._metrics.leader.set(0)
        if self._poster is not None:
            self._poster.cancel()  # an answer it awaits is looked for by marker later
            self._poster = None
        self._attempted.clear()
        (log.info if reason == "stopping" else log.warning)(
            "consumer.following", reason=reason, last_seq=self.state.last_seq)

    async def _take_over(self) -> None:
        """Rule 6: the fold has reached this replica's ``leader.elected``: record the
        policy if it changed, then decide and post, looking before every re-post."""
        self.leading, self._epoch, self._electing = True, self._electing, None
        self._took_over.clear()
        self._restarted = set(self.state.intents)
        self._attempted.clear()
        self._metrics.leader.set(1)
        log.info("consumer.leading", epoch=self._epoch, last_seq=self.state.last_seq,
                 pending_intents=len(self.state.intents),
                 undecided=len(self.state.unrecorded))
        if self.state.policy != self._policy:
            try:
                await self._log.append(ConfigApplied(self._policy), epoch=self._epoch)
            except LeadershipLost as exc:
                self._fenced(exc)
                return
            except LogWriteError as exc:  # the decisions go on under the policy recorded
                log.error("consumer.record_failed", error=str(exc), records=1)
        self._poster = asyncio.create_task(self._post_loop(), name="obsv-post")
        self._took_over.set()

    def _fenced(self, exc: LeadershipLost) -> None:
        """The log refused a write: another replica leads now (rule 6)."""
        if self._seat is not None:
            self._seat.lost(str(exc))
        self.follow(str(exc))

    async def step(self) -> None:
        """One round of deciding: fold the records that arrived, record the decisions
        and failures still missing, start a snapshot if one is due, wake the poster."""
        self._drain_inbox()
        if self._electing is not None and self._folded_epoch == self._electing:
            await self._take_over()
        if not self.leading:  # rule 6: a follower folds, and that is all
            return
        await self._record(self._missing_records())
        self._snapshots.maybe_save(self.state)
        self._poke.set()

    async def stop(self) -> None:
        """Leave the election, stop the tasks and write a snapshot (clean shutdown)."""
        if self._seat is not None:
            await self._seat.close()
        tasks = [*self._tasks, *([self._poster] if self._poster else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.ready:
            self._drain_inbox()
        await self._snapshots.close(self.state if self.ready else None)

    def remembers(self, event_id: str, margin: timedelta) -> bool:
        """Whether the fold holds ``event_id`` as received and still will ``margin``
        from now: a redelivery recorded without its body is then surely decided
        ``duplicate`` (docs/reference.md §4, obsv/ingress.py)."""
        if not self.ready:
            return False
        first = self.state.event_ids.get(event_key(event_id))
        return first is not None and self._clock() - first < EVENT_ID_WINDOW - margin

    # -- restore ----------------------------------------------------------------

    def _restore(self) -> State:
        loaded = self._snapshots.load(self._fold_end)
        state, offset = loaded if loaded else (State(), 0)
        # Without bodies: the fold decides on the parsed alert, never on the raw body
        # (a redelivery recorded by hash is decided the same way); only the intents
        # still to post need theirs, to render (obsv/pglog.py rule 8).
        for _, envelope in self._log.read(offset, self._fold_end,
                                          first_seq=state.last_seq + 1, bodies=False):
            apply(state, envelope)
        self._restore_bodies(state)
        if state.last_seq != self._fold_seq:
            raise LogCorrupt(self._log.location, None, self._fold_end,
                             f"the fold ended at seq {state.last_seq}, the log at "
                             f"{self._fold_seq}: was the log changed while obsv ran?")
        log.info("consumer.restored", last_seq=state.last_seq, from_snapshot=bool(loaded),
                 snapshot_seq=self._snapshots.seq, pending_intents=len(state.intents),
                 unrecorded=len(state.unrecorded), arrived_meanwhile=len(self._inbox))
        return state

    def _restore_bodies(self, state: State) -> None:
        """Give the pending intents back the raw bodies the fold did without: only an
        alert's is rendered (obsv/sink.py ``body_of``). A file never leaves one out, and
        a redelivery kept by hash is decided duplicate, so on a file this reads nothing."""
        missing = [seq for seq, intent in state.intents.items()
                   if isinstance(intent.received, AlertReceived) and intent.received.raw is None]
        whole = self._log.whole(missing) if missing else {}
        for seq, envelope in whole.items():
            intent = state.intents[seq]
            if type(envelope.event) is type(intent.received):
                state.intents[seq] = replace(intent, received=envelope.event)

    # -- deciding ---------------------------------------------------------------

    def _on_records(self, envelopes: Sequence[Envelope]) -> None:
        self._inbox.extend(envelopes)
        self._wake.set()

    async def _decide_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.step()

    def _drain_inbox(self) -> None:
        if not self.caught_up:  # rule 3: the fold owns the state until it is done
            return
        while self._inbox:
            envelope = self._inbox.popleft()
            if isinstance(envelope.event, LeaderElected):
                self._folded_epoch = envelope.event.epoch
            decision = apply(self.state, envelope)
            # A follower derives the decisions too (it must know them to take over),
            # but the leader records them: only the leader's count and log line, so
            # that replicas summed count each decision once.
            if decision is not None and self.leading:
                self._metrics.count_decision(decision.action, decision.reason)
                # Suppressions are the bulk during a storm and are in the event log
                # anyway (obsv replay); decisions with side effects are logged at info.
                suppressed = decision.action == "suppress"
                if not suppressed or logs.debug_enabled():
                    (log.debug if suppressed else log.info)(
                        "alert.decided", alert_seq=decision.alert_seq,
                        sentry_issue_id=decision.sentry_issue_id, action=decision.action,
                        reason=decision.reason)
        self._metrics.consumer_lag.set(self._log.last_seq - self.state.last_seq)
        self._metrics.pending_intents.set(len(self.state.intents))
        for seq, waiter in list(self._waiters):
            if seq <= self.state.last_seq and not waiter.done():
                waiter.set_result(None)
        self._waiters = [(s, w) for s, w in self._waiters if not w.done()]

    def _missing_records(self) -> list[tuple[int, Event]]:
        """Decisions derived but not recorded, and failures owed to orphaned comments."""
        self._unfolded = {k: s for k, s in self._unfolded.items() if s > self.state.last_seq}
        busy = self._in_flight | self._unfolded.keys()
        missing: list[tuple[int, Event]] = [
            (seq, d) for seq, d in self.state.unrecorded.items() if seq not in busy]
        # A storm decision waits under its alert's seq, which its alert decision uses
        # too: its in-flight key is the negated seq (seqs start at 1).
        missing += [(-seq, storm) for seq, (storm, _) in self.state.storm_unrecorded.items()
                    if -seq not in busy]
        for intent in orphaned_intents(self.state):
            if intent.alert_seq not in busy:
                missing.append((intent.alert_seq, IssueFailed(
                    intent.alert_seq, intent.attempts, None,
                    "the linked issue could not be opened", False, None)))
        return missing

    async def _record(self, records: list[tuple[int, Event]]) -> None:
        """Record what is missing, ``RECORD_CHUNK`` records per append: a backlog (a
        leader taking over after a long gap, a restart behind thousands of alerts) is
        then appended in bounded writes (one PostgreSQL statement each, where an
        append is never split), not one that could outlast the statement timeout and
        be retried the same forever. A failure stops the round; the next redoes it."""
        for start in range(0, len(records), RECORD_CHUNK):
            if not self.leading or not await self._record_chunk(
                    records[start:start + RECORD_CHUNK]):
                return

    async def _record_chunk(self, records: list[tuple[int, Event]]) -> bool:
        keys = {key for key, _ in records}
        self._in_flight |= keys
        try:
            recorded = await self._log.append_many([event for _, event in records],
                                                   epoch=self._epoch)
            for (key, _), envelope in zip(records, recorded, strict=True):
                self._unfolded[key] = envelope.seq
            return True
        except LeadershipLost as exc:
            self._fenced(exc)
        except LogWriteError as exc:
            log.error("consumer.record_failed", error=str(exc), records=len(records))
            await asyncio.sleep(_RETRY_APPEND_SECONDS)
            self._wake.set()
        finally:
            self._in_flight -= keys
        return False

    async def applied(self, seq: int) -> None:
        """Wait until the fold has reached ``seq`` (the poller compares with the log)."""
        await self._applied(seq)

    async def _applied(self, seq: int) -> None:
        """Wait until the fold has reached ``seq``."""
        if self.state.last_seq >= seq:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((seq, waiter))
        await waiter

    # -- posting ----------------------------------------------------------------

    async def _post_loop(self) -> None:
        while True:
            if self._seat is not None and not self._seat.holds():
                # Rule 6: no GitHub write unless the lead is surely still ours; the
                # keep-alive renews the lease or gives the lead up.
                await asyncio.sleep(_LEASE_NAP)
                continue
            intent, wait = self._next_intent()
            if intent is None:
                self._poke.clear()
                # While a retry is scheduled, look again at least every second: the
                # due time is wall-clock time, which can jump (NTP, a test clock).
                if wait is None:
                    await self._poke.wait()
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._poke.wait(), timeout=min(wait, _MAX_RETRY_NAP))
                continue
            await self._post(intent)

    def _next_intent(self) -> tuple[Intent | None, float | None]:
        """The oldest intent due now, else how long until one is due."""
        now = self._clock()
        soonest: datetime | None = None
        for intent in ready_intents(self.state):
            if intent.alert_seq in self._in_flight:
                continue
            due = intent.next_attempt_at
            if due is None or due <= now:
                return intent, None
            soonest = due if soonest is None or due < soonest else soonest
        return None, None if soonest is None else max(0.0, (soonest - now).total_seconds())

    async def _post(self, intent: Intent) -> None:
        self._in_flight.add(intent.alert_seq)
        try:
            try:
                outcome = await self._outcome(intent)
            except Exception as exc:  # a sink bug must not stop every later post
                log.exception("sink.crashed", alert_seq=intent.alert_seq)
                outcome = self._unexpected(intent, exc)
            if isinstance(outcome, IssueFailed):
                self._metrics.sink_failures.labels(str(outcome.retryable).lower()).inc()
                log.warning("sink.failed", alert_seq=intent.alert_seq, error=outcome.error,
                            retryable=outcome.retryable, attempt=outcome.attempt)
            try:
                # Shielded: stepping down cancels the poster, but an outcome already
                # handed to the log is a fact GitHub holds; it commits, or the log
                # refuses it under a stale epoch, never half.
                appending = asyncio.ensure_future(self._log.append(outcome, epoch=self._epoch))
                appending.add_done_callback(_retrieved)
                record = await asyncio.shield(appending)
            except LeadershipLost as exc:
                log.warning("consumer.outcome_refused", alert_seq=intent.alert_seq,
                            error=str(exc))
                self._fenced(exc)
                return
            except LogWriteError as exc:
                log.error("consumer.outcome_not_recorded", alert_seq=intent.alert_seq,
                          error=str(exc))
                await asyncio.sleep(_RETRY_APPEND_SECONDS)
                return
            self._count(outcome)
            await self._applied(record.seq)
            self._attempted.discard(intent.alert_seq)
        finally:
            self._in_flight.discard(intent.alert_seq)

    def _unexpected(self, intent: Intent, exc: Exception) -> IssueFailed:
        """A sink that raised (a bug, or an input nothing foresaw) is retried like an
        outage, but not for ever: the same error ``_MAX_UNEXPECTED_ATTEMPTS`` times
        running will not heal, and is recorded as a permanent failure."""
        attempt = intent.attempts + 1
        retryable = attempt < _MAX_UNEXPECTED_ATTEMPTS
        return IssueFailed(intent.alert_seq, attempt, None, f"unexpected error: {exc!r}"[:500],
                           retryable, retry_time(self._clock(), attempt) if retryable else None)

    async def _outcome(self, intent: Intent) -> Event:
        maybe_sent = (intent.attempts > 0 or intent.alert_seq in self._restarted
                      or intent.alert_seq in self._attempted)
        self._attempted.add(intent.alert_seq)
        if intent.action == "resolve_sentry":
            return await self._resolve_in_sentry(intent, maybe_sent)
        link = self.state.links.get(intent.link_seq)
        number = link.number if link is not None else None
        received, decision = intent.received, intent.decision
        if isinstance(decision, StormDecided):
            return await self._sink.post_digest(DigestJob(
                intent.alert_seq, intent.at, decision, intent.link_seq,
                self.state.effective_policy.storm_labels, number, intent.attempts,
                maybe_sent))
        if isinstance(received, SentryIssueChanged) and isinstance(decision, SyncDecided):
            return await self._sink.close_issue(CloseJob(
                intent.alert_seq, intent.at, received, decision, number, intent.attempts,
                maybe_sent, link.repo if link is not None else None))
        assert isinstance(received, AlertReceived) and isinstance(decision, AlertDecided)
        policy = self.state.effective_policy
        first_seen = self.state.first_seen.get(received.alert.sentry_issue_id)
        # The decision's repo (docs/reference.md §8); a decision recorded before routing
        # names none: it was the default repository's.
        repo = (link.repo if link is not None else None) or decision.repo or policy.repo
        labels = labels_for(policy, received.alert, repo)
        if intent.action == "open":
            return await self._sink.open_issue(OpenJob(
                intent.alert_seq, intent.at, received, labels, intent.attempts,
                maybe_sent, decision, first_seen, repo))
        if intent.action == "reopen" and not intent.reopened:
            return await self._sink.reopen_issue(ReopenJob(
                intent.alert_seq, decision, number, labels, policy.mute_label,
                intent.attempts, maybe_sent, repo))
        # A comment, or a reopen's regression comment once its PATCH is recorded.
        return await self._sink.post_comment(CommentJob(
            intent.alert_seq, intent.at, received, decision, number, intent.attempts,
            maybe_sent, first_seen, repo))

    async def _resolve_in_sentry(self, intent: Intent, maybe_sent: bool) -> Event:
        decision = intent.decision
        assert isinstance(decision, SyncDecided)
        if self._sentry is None:  # settings refuse this; a test or an old log may not
            return IssueFailed(intent.alert_seq, intent.attempts + 1, None,
                               "resolving in Sentry needs OBSV_SENTRY_API_TOKEN", False, None)
        link = self.state.links.get(intent.link_seq)
        return await self._sentry.resolve(ResolveJob(
            intent.alert_seq, decision, link.sentry_org if link else None, intent.attempts,
            maybe_sent))

    def _count(self, outcome: Event) -> None:
        dry = str(self._sink.dry_run).lower()
        match outcome:
            case IssueOpened():
                self._metrics.issues_opened.labels(dry).inc()
            case CommentPosted():
                self._metrics.comments_posted.labels(dry).inc()
            case IssueReopened():
                self._metrics.lifecycle_writes.labels("reopen", dry).inc()
            case IssueClosed():
                self._metrics.lifecycle_writes.labels("close", dry).inc()
            case SentryResolved():
                self._metrics.lifecycle_writes.labels("resolve_sentry", "false").inc()


def _retrieved(future: asyncio.Future[Envelope]) -> None:
    """An append nobody waits for any more (its poster was stopped): its failure is
    already known to the log's own error logging, not an unhandled error."""
    if not future.cancelled():
        future.exception()
