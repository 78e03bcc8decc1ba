"""The intake's own counters and histogram (glue/observability.py) expose exactly what
prometheus_client's Counter and Histogram would for the same observations."""

from __future__ import annotations

import re

import prometheus_client
from prometheus_client.registry import CollectorRegistry

from glue import observability

BUCKETS = (0.001, 0.01, 0.1, 1.0)


def exposition(registry: CollectorRegistry) -> str:
    """The text exposition, creation times masked (the two are created at different moments)."""
    text = prometheus_client.generate_latest(registry).decode()
    return re.sub(r"(_created(?:\{[^}]*\})?) \S+", r"\1 <time>", text)


def test_counter_and_histogram_expose_what_prometheus_client_would() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    counter = observability.LoopCounter("glue_things_total", "Things.", ["endpoint", "outcome"], ours)
    reference = prometheus_client.Counter(
        "glue_things_total", "Things.", ["endpoint", "outcome"], registry=theirs
    )
    histogram = observability.LoopHistogram("glue_wait_seconds", "Waits.", BUCKETS, ours)
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
