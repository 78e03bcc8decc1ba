"""The executor's Prometheus metrics, and the cache of their labelled children."""

from __future__ import annotations

from typing import Any

import prometheus_client

__all__ = [
    "DEAD_LETTERS",
    "EVENTS_ROUTED",
    "HANDLER_DURATION",
    "INVOCATIONS",
    "IN_FLIGHT",
    "OLDEST_PENDING",
    "RETRIES",
    "labelled",
]

INVOCATIONS = prometheus_client.Counter(
    "glue_invocations_total",
    "Handler attempts by route, handler and outcome (done, planned, retry, dead, dropped).",
    ["route", "handler", "outcome"],
)
HANDLER_DURATION = prometheus_client.Histogram(
    "glue_handler_duration_seconds",
    "Time a handler attempt took, by route and handler.",
    ["route", "handler"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
RETRIES = prometheus_client.Counter(
    "glue_invocation_retries_total", "Attempts scheduled again, by route and handler.", ["route", "handler"]
)
DEAD_LETTERS = prometheus_client.Counter(
    "glue_dead_letters_total", "Invocations moved to the dead-letter queue, by route.", ["route"]
)
EVENTS_ROUTED = prometheus_client.Counter(
    "glue_events_routed_total", "Journaled events routed, by outcome (matched, unmatched).", ["outcome"]
)
OLDEST_PENDING = prometheus_client.Gauge(
    "glue_oldest_pending_invocation_age_seconds",
    "Age of the oldest invocation not yet done (0 when none).",
)
IN_FLIGHT = prometheus_client.Gauge("glue_invocations_in_flight", "Handler attempts running now.")


_CHILDREN: dict[tuple[Any, ...], Any] = {}


def labelled(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, cached: the lookup is on every dispatch's path."""
    key = (metric, *labels)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(*labels)
    return child
