"""The intake's own counters and histogram (glue/metrics.py) expose exactly what prometheus_client's
Counter and Histogram would for the same observations; label children kept by metrics.Children are
the metric's own."""

from __future__ import annotations

import re

import prometheus_client
from prometheus_client.registry import CollectorRegistry

from glue import metrics

BUCKETS = (0.001, 0.01, 0.1, 1.0)


def exposition(registry: CollectorRegistry) -> str:
    """The text exposition, creation times masked (the two are created at different moments)."""
    text = prometheus_client.generate_latest(registry).decode()
    return re.sub(r"(_created(?:\{[^}]*\})?) \S+", r"\1 <time>", text)


def test_counter_and_histogram_expose_what_prometheus_client_would() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    counter = metrics.LoopCounter("glue_things_total", "Things.", ["endpoint", "outcome"], ours)
    reference = prometheus_client.Counter(
        "glue_things_total", "Things.", ["endpoint", "outcome"], registry=theirs
    )
    histogram = metrics.LoopHistogram("glue_wait_seconds", "Waits.", BUCKETS, ours)
    reference_histogram = prometheus_client.Histogram(
        "glue_wait_seconds", "Waits.", buckets=BUCKETS, registry=theirs
    )
    for endpoint, outcome, amount in [("a", "accepted", 1), ("a", "accepted", 2), ("b", "rejected", 1)]:
        counter.labels(endpoint, outcome).inc(amount)
        reference.labels(endpoint, outcome).inc(amount)
    # Below, on and between the bounds, and above the last: a value on a bound counts in its bucket.
    for seconds in (0.0, 0.001, 0.002, 0.01, 0.5, 1.0, 7.0):
        histogram.observe(seconds)
        reference_histogram.observe(seconds)

    assert exposition(ours) == exposition(theirs)
    assert 'glue_wait_seconds_bucket{le="0.001"} 2.0' in exposition(ours)
    assert 'glue_things_total{endpoint="a",outcome="accepted"} 3.0' in exposition(ours)


def test_children_are_the_metrics_own_label_children() -> None:
    registry = CollectorRegistry()
    counter = metrics.LoopCounter("glue_things_total", "Things.", ["endpoint", "outcome"], registry)
    reference = prometheus_client.Counter("glue_refs_total", "Refs.", ["route", "handler"], registry=registry)
    by_outcome = metrics.Children(counter, "a")
    by_route = metrics.Children(reference)

    by_outcome["accepted"].inc()
    by_outcome["accepted"].inc(2)
    by_route["r", "h"].inc()

    assert by_outcome["accepted"] is counter.labels("a", "accepted")
    assert by_route["r", "h"] is reference.labels("r", "h")
    assert 'glue_things_total{endpoint="a",outcome="accepted"} 3.0' in exposition(registry)
    assert 'glue_refs_total{handler="h",route="r"} 1.0' in exposition(registry)
