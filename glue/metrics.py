"""Glue's Prometheus metrics, declared in one place, and what serves them.

Every part reads its metrics from here (``metrics.DELIVERIES``), so /metrics offers the same
families whichever parts run. Names follow Prometheus conventions (``_total``, ``_seconds``); labels
are of bounded cardinality (endpoint, topic and bucket names come from the config, outcomes and kinds
from fixed sets).

The intake's per-delivery metrics are :class:`LoopCounter` and :class:`LoopHistogram`: plain numbers
the event loop's thread updates without a lock. Where a labelled metric is updated on a hot path,
:class:`Children` keeps its label children so each update is one dictionary look-up.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator, Sequence
from typing import Any

import prometheus_client
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry
from prometheus_client.utils import floatToGoString

__all__ = [
    "APPROVALS_PAST_HALF_TTL",
    "ARCHIVE_BUFFERED",
    "ARCHIVE_DROPPED",
    "ARCHIVE_ERRORS",
    "ARCHIVE_LINES",
    "ARCHIVE_OBJECTS",
    "AUTH_LOCKOUTS",
    "BACKLOG",
    "CLIENT_UP",
    "COALESCED",
    "DEAD_LETTERS",
    "DEAD_LETTER_DEPTH",
    "DELIVERIES",
    "DUPLICATES",
    "EVENTBUS_MESSAGES",
    "EVENTS_JOURNALED",
    "EVENTS_ROUTED",
    "HANDLER_DURATION",
    "INVOCATIONS",
    "INVOCATIONS_AWAITING_APPROVAL",
    "INVOCATIONS_HELD",
    "IN_FLIGHT",
    "JOURNAL_PRUNED",
    "JOURNAL_WRITE",
    "KAFKA_BATCH_SECONDS",
    "KAFKA_COMMIT_SECONDS",
    "KAFKA_LAG",
    "KAFKA_PUBLISHED",
    "KAFKA_RECORDS",
    "MINIO_LISTEN_GAPS",
    "MINIO_LISTEN_LINES",
    "MINIO_LISTEN_RECONNECTS",
    "MINIO_LISTEN_UP",
    "OLDEST_PENDING",
    "RATE_LIMIT_WAIT",
    "RETRIES",
    "ROUTE_BREAKER_OPEN",
    "ROUTE_ERRORS",
    "ROUTE_PAUSED",
    "SOURCE_RECONNECTS",
    "SOURCE_UP",
    "SUPERSEDED",
    "Children",
    "LoopCounter",
    "LoopHistogram",
    "text",
]


class LoopCounter:
    """A labelled Prometheus counter that only the event loop's thread increments.

    Its values are plain numbers, read when the registry is scraped: prometheus_client's own counter
    takes a lock on every increment, and the intake counts every delivery. The exposition is the same,
    ``_created`` series included."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry = prometheus_client.REGISTRY,
    ) -> None:
        self.name = name.removesuffix("_total")
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self._children: dict[tuple[str, ...], _Count] = {}
        registry.register(self)

    def labels(self, *values: str) -> _Count:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = _Count()
        return child

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in list(self._children.items()):
            family.add_metric(values, child.value, created=child.created)
        yield family


class _Count:
    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        self.value += amount


class LoopHistogram:
    """A Prometheus histogram without labels that only the event loop's thread observes (see
    :class:`LoopCounter`)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry = prometheus_client.REGISTRY,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = sorted(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0
        self.created = time.time()
        registry.register(self)

    def observe(self, amount: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, amount)] += 1
        self.sum += amount

    def collect(self) -> Iterator[Metric]:
        cumulative, total = [], 0
        for bound, count in zip([*map(floatToGoString, self.bounds), "+Inf"], self.counts, strict=True):
            total += count
            cumulative.append((bound, float(total)))
        histogram = HistogramMetricFamily(self.name, self.documentation)
        histogram.add_metric([], cumulative, self.sum)
        yield histogram
        yield GaugeMetricFamily(f"{self.name}_created", self.documentation, value=self.created)


class Children(dict[Any, Any]):
    """The label children of one metric, made on first use and kept.

    ``Children(metric, *fixed)[value]`` is ``metric.labels(*fixed, value)``; a tuple key gives several
    label values (``children[route, handler]``). A hit is a plain dictionary look-up: ``labels()``
    builds an argument tuple and looks the child up on every call, which counts on paths that update a
    metric for every delivery or attempt."""

    __slots__ = ("_fixed", "_metric")

    def __init__(self, metric: Any, *fixed: str) -> None:
        super().__init__()
        self._metric = metric
        self._fixed = fixed

    def __missing__(self, key: Any) -> Any:
        values = key if isinstance(key, tuple) else (key,)
        child = self[key] = self._metric.labels(*self._fixed, *values)
        return child


def text() -> tuple[bytes, str]:
    """The Prometheus exposition of every glue metric, and its content type."""
    return prometheus_client.generate_latest(), prometheus_client.CONTENT_TYPE_LATEST


# -- intake: every source's way into the journal ---------------------------------------------------

DELIVERIES = LoopCounter(
    "glue_deliveries_total",
    "Inbound deliveries by endpoint and outcome (accepted, duplicate, rejected, unauthorized, "
    "forbidden, locked_out, replayed, too_large, too_slow, unsupported, unavailable).",
    ["endpoint", "outcome"],
)
EVENTS_JOURNALED = LoopCounter(
    "glue_events_journaled_total", "Events newly written to the journal, by endpoint.", ["endpoint"]
)
DUPLICATES = LoopCounter(
    "glue_duplicate_events_total",
    "Events recognised as already journaled, by endpoint and by what identified them: the producer's "
    "id (producer) or a digest of the payload within the endpoint's dedupWindow (digest).",
    ["endpoint", "identity"],
)
JOURNAL_WRITE = LoopHistogram(
    "glue_journal_write_seconds",
    "Time from handing a delivery to the journal to its commit.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
BACKLOG = prometheus_client.Gauge("glue_backlog_events", "Journaled events not yet routed.")
AUTH_LOCKOUTS = prometheus_client.Counter(
    "glue_auth_lockouts_total",
    "Addresses locked out (answered 429) after repeated 401s, by the endpoint of the last 401; the "
    '429 answers are glue_deliveries_total{outcome="locked_out"}.',
    ["endpoint"],
)

# -- journal ---------------------------------------------------------------------------------------

JOURNAL_PRUNED = prometheus_client.Counter(
    "glue_journal_pruned_rows_total", "Rows removed by retention, by table.", ["table"]
)

# -- Kafka: the consumer, and the output topic of outcomes -----------------------------------------

KAFKA_RECORDS = prometheus_client.Counter(
    "glue_kafka_records_total",
    "Kafka records consumed, by topic and outcome (journaled, duplicate, rejected, retried, ignored).",
    ["topic", "outcome"],
)
KAFKA_LAG = prometheus_client.Gauge(
    "glue_kafka_consumer_lag",
    "Records in a partition after this member's position (high watermark - position).",
    ["topic", "partition"],
)
KAFKA_COMMIT_SECONDS = prometheus_client.Histogram(
    "glue_kafka_commit_seconds",
    "Time to commit a batch's offsets to the group coordinator.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
KAFKA_BATCH_SECONDS = prometheus_client.Histogram(
    "glue_kafka_batch_seconds",
    "Time from fetching a batch to its offsets being committed (decode, journal, commit).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
KAFKA_PUBLISHED = prometheus_client.Counter(
    "glue_kafka_published_total",
    "Invocation outcomes published as CloudEvents to the output topic, by state (done, planned, dead).",
    ["state"],
)

# -- sources that hold a connection (the Argo Events EventBus) -------------------------------------

SOURCE_UP = prometheus_client.Gauge(
    "glue_source_up", "1 while the source's connection (and its consumer) is up, else 0.", ["source"]
)
SOURCE_RECONNECTS = prometheus_client.Counter(
    "glue_source_reconnects_total", "Connections of a source lost and opened again.", ["source"]
)
EVENTBUS_MESSAGES = prometheus_client.Counter(
    "glue_eventbus_messages_total",
    "EventBus messages by source and outcome (journaled, duplicate, rejected, ignored, retried).",
    ["source", "outcome"],
)

# -- MinIO: the listen source and the archive bucket -----------------------------------------------

MINIO_LISTEN_UP = prometheus_client.Gauge(
    "glue_minio_listen_up", "1 while the bucket's MinIO listen stream is connected, else 0.", ["bucket"]
)
MINIO_LISTEN_RECONNECTS = prometheus_client.Counter(
    "glue_minio_listen_reconnects_total", "Listen streams lost and reopened, by bucket.", ["bucket"]
)
MINIO_LISTEN_LINES = prometheus_client.Counter(
    "glue_minio_listen_lines_total",
    "Lines read from a listen stream by bucket and outcome (journaled, duplicate, keepalive, rejected).",
    ["bucket", "outcome"],
)
MINIO_LISTEN_GAPS = prometheus_client.Counter(
    "glue_minio_listen_gaps_total",
    "Times a listen stream may have lost events, by bucket and cause: reconnect (MinIO keeps no backlog "
    "for listeners) or stalled (the reader waited for the journal while MinIO drops what a full "
    "listener buffer cannot take).",
    ["bucket", "cause"],
)
ARCHIVE_OBJECTS = prometheus_client.Counter(
    "glue_archive_objects_total", "Objects written to the archive bucket, by kind.", ["kind"]
)
ARCHIVE_LINES = prometheus_client.Counter(
    "glue_archive_lines_total", "Lines written to the archive bucket, by kind.", ["kind"]
)
ARCHIVE_ERRORS = prometheus_client.Counter(
    "glue_archive_write_errors_total",
    "Failed archive writes (the lines are kept and retried), by kind.",
    ["kind"],
)
ARCHIVE_BUFFERED = prometheus_client.Gauge(
    "glue_archive_buffered_bytes",
    "Bytes of archive lines waiting to be written to the bucket (bounded by archive.maxBufferBytes).",
)
ARCHIVE_DROPPED = prometheus_client.Counter(
    "glue_archive_dropped_lines_total",
    "Lines dropped because the archive buffer was full while the bucket was unreachable, by kind.",
    ["kind"],
)


# -- execution: routing, attempts, dead letters ------------------------------------------------

INVOCATIONS = prometheus_client.Counter(
    "glue_invocations_total",
    "Handler attempts by route, handler and outcome (done, planned, retry, dead, dropped, cancelled).",
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
    # Not glue_dead_letters_total: that counter's family is glue_dead_letters, the depth gauge's name.
    "glue_dead_lettered_total",
    "Invocations moved to the dead-letter queue, by route.",
    ["route"],
)
EVENTS_ROUTED = prometheus_client.Counter(
    "glue_events_routed_total", "Journaled events routed, by outcome (matched, unmatched).", ["outcome"]
)
OLDEST_PENDING = prometheus_client.Gauge(
    "glue_oldest_pending_invocation_age_seconds",
    "Age of the oldest invocation not yet done (0 when none).",
)
IN_FLIGHT = prometheus_client.Gauge("glue_invocations_in_flight", "Handler attempts running now.")
DEAD_LETTER_DEPTH = prometheus_client.Gauge(
    "glue_dead_letters",
    "Invocations in the dead-letter queue now (glue dlq list; retry and purge lower it).",
)
CLIENT_UP = prometheus_client.Gauge(
    "glue_client_up",
    "1 while the client's last check passed (reachable, logged in, permitted), else 0 (glue.health).",
    ["client"],
)
INVOCATIONS_HELD = prometheus_client.Gauge(
    "glue_invocations_held",
    "Invocations held by a safety rail now, by route and reason (paused, budget, breaker, window,"
    " client-down).",
    ["route", "reason"],
)
INVOCATIONS_AWAITING_APPROVAL = prometheus_client.Gauge(
    "glue_invocations_awaiting_approval", "Invocations waiting for `glue approve` or `glue deny` now."
)
APPROVALS_PAST_HALF_TTL = prometheus_client.Gauge(
    "glue_invocations_awaiting_approval_past_half_ttl",
    "Invocations waiting for approval longer than half their ttl (they expire dead at the ttl).",
)
ROUTE_BREAKER_OPEN = prometheus_client.Gauge(
    "glue_route_breaker_open",
    "1 while the route's circuit breaker is open (or half-open), by route.",
    ["route"],
)
ROUTE_PAUSED = prometheus_client.Gauge(
    "glue_route_paused",
    "1 while the route is paused (by itself, by --all or by its config), by route.",
    ["route"],
)
ROUTE_ERRORS = prometheus_client.Counter(
    "glue_route_errors_total",
    "Route expressions that failed on an event, by route and kind (match, params, orderingKey,"
    " concurrencyGroup, coalesce, rateLimit).",
    ["route", "kind"],
)

# -- flow shaping ---------------------------------------------------------------------------------

COALESCED = prometheus_client.Counter(
    "glue_invocations_coalesced_total",
    "Invocations folded into a later (trailing) or earlier (leading) one of their coalesce key, by route.",
    ["route"],
)
SUPERSEDED = prometheus_client.Counter(
    "glue_invocations_superseded_total",
    "Waiting invocations ended by a newer one of their concurrency group, by route.",
    ["route"],
)
RATE_LIMIT_WAIT = prometheus_client.Histogram(
    "glue_rate_limit_wait_seconds",
    "How long an invocation of a route with rateLimit waited for its token (0: none), by route.",
    ["route"],
    buckets=(0.0, 0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0),
)
