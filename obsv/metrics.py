"""Prometheus series of docs/reference.md §3, one registry per app (tests build many apps)."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client import metrics as _prometheus_metrics
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

_go_float: Callable[[float], str] = floatToGoString  # how prometheus_client writes ``le``


def _created_series() -> bool:
    """Whether prometheus_client exports ``_created`` series now: not when the
    operator set ``PROMETHEUS_DISABLE_CREATED_SERIES`` (or a caller called
    ``disable_created_metrics``), which its own Counter and Histogram read at collect."""
    return bool(_prometheus_metrics._use_created)


class LoopCounter(Collector):
    """A labelled counter kept in a dict, for the series counted once per delivery.

    prometheus_client's ``Counter`` takes a lock and checks its state at every
    ``inc`` (0.3 µs), so that threads may share it. These are counted only on the
    event loop's thread, and ``/metrics`` reads them on the same thread, so a dict
    needs neither. The series are the ones a ``Counter`` exports, ``_created``
    included (a test compares the two expositions).
    """

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 registry: CollectorRegistry) -> None:
        self._name, self._documentation = name, documentation
        self._labelnames = tuple(labelnames)
        self._counts: dict[tuple[object, ...], int] = {}
        self._created: dict[tuple[object, ...], float] = {}
        registry.register(self)

    def inc(self, *labels: object) -> None:
        """One more in the series of ``labels`` (written with ``str`` when read)."""
        counts = self._counts
        if labels in counts:
            counts[labels] += 1
        else:
            counts[labels] = 1
            self._created[labels] = time.time()

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        # Labels are kept as given and written with str: 202 and "202" are one series,
        # as prometheus_client's labels() makes them, never two with the same labels.
        series: dict[tuple[str, ...], tuple[int, float]] = {}
        for labels, count in list(self._counts.items()):
            key = tuple(str(label) for label in labels)
            before, created = series.get(key, (0, self._created[labels]))
            series[key] = (before + count, min(created, self._created[labels]))
        with_created = _created_series()
        for key, (count, created) in series.items():
            family.add_metric(list(key), count, created=created if with_created else None)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)


class LoopHistogram(Collector):
    """A histogram without labels kept in a list, for a time observed once per
    delivery (``LoopCounter`` says why): the bucket is found by ``bisect`` in C
    instead of a loop over the bounds with a lock per bucket (0.65 µs an ``observe``)."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float],
                 registry: CollectorRegistry) -> None:
        self._name, self._documentation = name, documentation
        self._bounds = tuple(float(bound) for bound in buckets)
        self._counts = [0] * (len(self._bounds) + 1)  # the last is +Inf's own
        self._sum = 0.0
        self._created = time.time()
        registry.register(self)

    def observe(self, value: float) -> None:
        """Count ``value`` in the first bucket whose bound is at least ``value``."""
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        cumulative, buckets = 0, []
        for bound, count in zip((*self._bounds, float("inf")), self._counts, strict=True):
            cumulative += count
            buckets.append((_go_float(bound), float(cumulative)))
        family.add_metric([], buckets, self._sum)
        if _created_series():
            family.samples.append(Sample(f"{self._name}_created", {}, self._created))
        yield family

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self._name, self._documentation)


APPEND_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


class Metrics:
    """Every series obsv exports; names are part of the contract."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.deliveries = LoopCounter(
            "obsv_deliveries_total", "Webhook deliveries by resource and HTTP status answered",
            ["resource", "status"], registry=r)
        self.alerts_decided = LoopCounter(
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
        self.log_append_seconds = LoopHistogram(
            "obsv_log_append_seconds", "Time from append request to durable (fsync'd)",
            APPEND_BUCKETS, registry=r)
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

    def count_delivery(self, resource: str, status: int) -> None:
        """One more ``obsv_deliveries_total{resource, status}`` (the caller bounds the
        resources: obsv/ingress.py)."""
        self.deliveries.inc(resource, status)

    def count_decision(self, action: str, reason: str) -> None:
        """One more ``obsv_alerts_decided_total{action, reason}`` (once per alert; both
        labels come from the policy's fixed set, obsv/core/policy.py)."""
        self.alerts_decided.inc(action, reason)
