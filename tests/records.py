"""Building records for core tests: alerts at chosen times, folded like the service."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from obsv.core.alert import Alert
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

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def make_alert(issue: str = "100", event_id: str | None = None, level: str = "error",
               key: str | None = None, environment: str | None = "prod",
               title: str = "Boom") -> Alert:
    return Alert(issue, event_id or f"ev-{issue}-{id(object())}", level,
                 key or f"p:hash:{issue}", "p", environment, title, "app.py", None)


@dataclass
class Log:
    """Records appended in order, each folded at once, decisions recorded right after."""

    state: State = field(default_factory=State)
    records: list[Envelope] = field(default_factory=list)
    now: datetime = T0
    counter: int = 0

    def add(self, event: Event, at: datetime | None = None) -> AlertDecided | None:
        envelope = Envelope(len(self.records) + 1, at or self.now, event)
        self.records.append(envelope)
        return apply(self.state, envelope)

    def config(self, **policy: object) -> None:
        self.add(ConfigApplied(Policy(**policy)))  # type: ignore[arg-type]

    def alert(self, after: timedelta = timedelta(0), record: bool = True,
              **fields: object) -> AlertDecided:
        """Receive an alert ``after`` the previous record; record its decision."""
        self.now += after
        self.counter += 1
        fields.setdefault("event_id", f"ev{self.counter}")
        alert = make_alert(**fields)  # type: ignore[arg-type]
        decision = self.add(AlertReceived(Delivery("r", "event_alert", None, "s"), alert, "{}"))
        assert decision is not None
        if record:
            self.add(decision)
        return decision

    def opened(self, alert_seq: int, number: int, repo: str = "o/r") -> None:
        received = self.state.intents[alert_seq].received
        assert isinstance(received, AlertReceived)
        self.add(IssueOpened(alert_seq, received.alert.sentry_issue_id, repo, number,
                             f"https://gh/{repo}/issues/{number}", False))

    def record_pending(self) -> list[int]:
        """Record every decision derived but not recorded yet, in seq order, as the
        live consumer does when it catches up; returns the seqs decided."""
        pending = sorted(self.state.unrecorded.items())
        for _, decision in pending:
            self.add(decision)
        return [seq for seq, _ in pending]

    def failed(self, alert_seq: int, retryable: bool) -> None:
        self.add(IssueFailed(alert_seq, 3, 422 if not retryable else 502, "boom", retryable,
                             self.now + timedelta(seconds=30) if retryable else None))


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)
