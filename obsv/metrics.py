"""Prometheus series of docs/reference.md §3, one registry per app (tests build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """Every series obsv exports; names are part of the contract."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.deliveries = Counter(
            "obsv_deliveries_total", "Webhook deliveries by resource and HTTP status answered",
            ["resource", "status"], registry=r)
        self.alerts_decided = Counter(
            "obsv_alerts_decided_total", "Alerts decided, by action and reason",
            ["action", "reason"], registry=r)
        self.github_requests = Counter(
            "obsv_github_requests_total", "Requests made to GitHub, by endpoint and status",
            ["endpoint", "status"], registry=r)
        self.github_retries = Counter(
            "obsv_github_retries_total", "Attempts retried within a round, by HTTP status "
            "('error' for timeouts and connection errors)", ["status"], registry=r)
        self.issues_opened = Counter(
            "obsv_issues_opened_total", "Issues opened (or rendered, in a dry run)",
            ["dry_run"], registry=r)
        self.comments_posted = Counter(
            "obsv_comments_posted_total", "Recurrence comments posted", ["dry_run"], registry=r)
        self.sink_failures = Counter(
            "obsv_sink_failures_total", "Failed attempts to post a decision",
            ["retryable"], registry=r)
        self.pending_intents = Gauge(
            "obsv_pending_intents", "Decisions to open or comment not yet posted", registry=r)
        self.consumer_lag = Gauge(
            "obsv_consumer_lag_records", "Last appended seq minus last folded seq", registry=r)
        self.log_bytes = Gauge("obsv_log_bytes", "Size of the event log in bytes", registry=r)
        self.snapshot_seq = Gauge(
            "obsv_snapshot_seq", "seq covered by the last snapshot written", registry=r)
        self.log_append_seconds = Histogram(
            "obsv_log_append_seconds", "Time from append request to durable (fsync'd)",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r)
        self.clock_steps = Counter(
            "obsv_clock_steps_total", "Wall clock steps seen (obsv/clock.py), by direction",
            ["direction"], registry=r)
        self.clock_offset = Gauge(
            "obsv_clock_offset_seconds", "Wall clock minus the trusted time record times use",
            registry=r)
        self.github_deliveries = Counter(
            "obsv_github_deliveries_total", "GitHub webhook deliveries by event and HTTP status "
            "answered", ["event", "status"], registry=r)
        self.lifecycle_writes = Counter(
            "obsv_lifecycle_writes_total", "Reopens, closes and Sentry resolves carried out "
            "(or rendered, in a dry run), by action", ["action", "dry_run"], registry=r)
        self.leader = Gauge(
            "obsv_leader", "1 on the replica that decides and posts (always, with the JSONL "
            "log), 0 on a follower (docs/reference.md §12)", registry=r)
        self.polls = Counter(
            "obsv_github_polls_total", "Polls of the repository's issues, by result "
            "(changed, unchanged, failed) ", ["result"], registry=r)
        # Children of ``deliveries`` by (resource, status): ``labels()`` checks and
        # locks on every call, once per delivery; the labels are bounded by the caller.
        self._delivery_children: dict[tuple[str, int], Counter] = {}
        self._decision_children: dict[tuple[str, str], Counter] = {}

    def count_delivery(self, resource: str, status: int) -> None:
        """One more ``obsv_deliveries_total{resource, status}``."""
        child = self._delivery_children.get((resource, status))
        if child is None:
            child = self._delivery_children[(resource, status)] = self.deliveries.labels(
                resource, str(status))
        child.inc()

    def count_decision(self, action: str, reason: str) -> None:
        """One more ``obsv_alerts_decided_total{action, reason}`` (once per alert; both
        labels come from the policy's fixed set, obsv/core/policy.py)."""
        child = self._decision_children.get((action, reason))
        if child is None:
            child = self._decision_children[(action, reason)] = self.alerts_decided.labels(
                action, reason)
        child.inc()
