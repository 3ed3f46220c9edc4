"""The series counted on every delivery (obsv/metrics.py ``LoopCounter``,
``LoopHistogram``) export exactly what prometheus_client's ``Counter`` and
``Histogram`` export for the same counts: names, HELP and TYPE lines, labels, values,
buckets, sums and the ``_created`` series (whose times alone differ)."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics import disable_created_metrics, enable_created_metrics

from obsv.metrics import APPEND_BUCKETS, LoopCounter, LoopHistogram, Metrics

_CREATED = re.compile(rb"^(\w+_created(?:\{[^}]*\})?) \S+$", re.MULTILINE)

times = st.one_of(
    st.sampled_from([*APPEND_BUCKETS, 0.0]),  # on a bound: counted in that bucket
    st.floats(min_value=0.0, max_value=5.0, allow_nan=False),
)
labels = st.tuples(st.sampled_from(["event_alert", "issue", "other", "none"]),
                   st.sampled_from([200, 202, 401, 413, 422, 503]))


def _exposition(registry: CollectorRegistry) -> bytes:
    """``/metrics`` as served, with each ``_created`` time replaced by a mark."""
    return _CREATED.sub(rb"\1 <created>", generate_latest(registry))


def _twins() -> tuple[tuple[CollectorRegistry, LoopCounter, LoopHistogram],
                      tuple[CollectorRegistry, Counter, Histogram]]:
    """The loop series in one registry, prometheus_client's own of the same names in
    another."""
    ours, theirs = CollectorRegistry(auto_describe=True), CollectorRegistry(auto_describe=True)
    return ((ours,
             LoopCounter("obsv_deliveries_total", "Deliveries", ["resource", "status"], ours),
             LoopHistogram("obsv_log_append_seconds", "Append", APPEND_BUCKETS, ours)),
            (theirs,
             Counter("obsv_deliveries_total", "Deliveries", ["resource", "status"],
                     registry=theirs),
             Histogram("obsv_log_append_seconds", "Append", buckets=APPEND_BUCKETS,
                       registry=theirs)))


@settings(max_examples=60, deadline=None)
@given(deliveries=st.lists(labels, max_size=30), seconds=st.lists(times, max_size=30))
def test_the_loop_series_export_what_prometheus_clients_own_would(
        deliveries: list[tuple[str, int]], seconds: list[float]) -> None:
    (ours, counter, histogram), (theirs, reference, reference_histogram) = _twins()
    for resource, status in deliveries:
        counter.inc(resource, status)
        reference.labels(resource, str(status)).inc()
    for value in seconds:
        histogram.observe(value)
        reference_histogram.observe(value)
    assert _exposition(ours) == _exposition(theirs)


def test_a_series_name_already_taken_is_refused_as_prometheus_client_refuses_it() -> None:
    """The registry checks the loop series' names like any other (``describe``)."""
    metrics = Metrics()
    try:
        Counter("obsv_deliveries_total", "again", registry=metrics.registry)
    except ValueError as exc:
        assert "obsv_deliveries" in str(exc)
    else:
        raise AssertionError("a second obsv_deliveries_total was registered")


def test_without_created_series_the_loop_series_drop_them_as_prometheus_client_does() -> None:
    """PROMETHEUS_DISABLE_CREATED_SERIES (read by prometheus_client at import; in a
    process, ``disable_created_metrics``) drops every ``_created`` series, the loop
    series' included."""
    (ours, counter, histogram), (theirs, reference, reference_histogram) = _twins()
    counter.inc("event_alert", 202)
    reference.labels("event_alert", "202").inc()
    histogram.observe(0.003)
    reference_histogram.observe(0.003)
    disable_created_metrics()
    try:
        exposition = generate_latest(ours)
        assert exposition == generate_latest(theirs)
    finally:
        enable_created_metrics()
    assert b"_created" not in exposition and b"obsv_deliveries_total{" in exposition


def test_a_label_given_as_a_number_and_as_text_is_one_series() -> None:
    """prometheus_client's labels() writes values with str, so 202 and "202" count in
    one series; the loop counter must not export the same labels twice."""
    ours, theirs = CollectorRegistry(auto_describe=True), CollectorRegistry(auto_describe=True)
    counter = LoopCounter("obsv_deliveries_total", "Deliveries", ["resource", "status"], ours)
    reference = Counter("obsv_deliveries_total", "Deliveries", ["resource", "status"],
                        registry=theirs)
    for status in (202, "202", 401):
        counter.inc("event_alert", status)
        reference.labels("event_alert", status).inc()
    assert _exposition(ours) == _exposition(theirs)
    assert b'obsv_deliveries_total{resource="event_alert",status="202"} 2.0' in _exposition(ours)
