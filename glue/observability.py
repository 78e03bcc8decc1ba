"""Logging (structlog) and the intake metrics (Prometheus).

Logs are JSON lines on stderr when it is not a terminal and readable key=value lines when it is. A
redaction processor drops any field whose name says it holds a credential, as a second line of defence
behind the code that never passes one. Metric names follow Prometheus conventions; labels are of bounded
cardinality (endpoint names come from the config, outcomes from a fixed set).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import prometheus_client
import structlog

from glue import settings as settings_mod

DELIVERIES = prometheus_client.Counter(
    "glue_deliveries_total",
    "Inbound deliveries by endpoint and outcome (accepted, duplicate, rejected, unauthorized, "
    "too_large, unsupported, unavailable).",
    ["endpoint", "outcome"],
)
EVENTS_JOURNALED = prometheus_client.Counter(
    "glue_events_journaled_total", "Events newly written to the journal, by endpoint.", ["endpoint"]
)
DUPLICATES = prometheus_client.Counter(
    "glue_duplicate_events_total", "Events recognised as already journaled, by endpoint.", ["endpoint"]
)
JOURNAL_WRITE = prometheus_client.Histogram(
    "glue_journal_write_seconds",
    "Time from handing a delivery to the journal to its commit.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
BACKLOG = prometheus_client.Gauge("glue_backlog_events", "Journaled events not yet routed.")

_SECRET_WORDS = ("token", "secret", "password", "authorization", "signature", "credential", "dsn")


_secret_key_cache: dict[str, bool] = {}


def _is_secret_key(key: str) -> bool:
    known = _secret_key_cache.get(key)
    if known is None:
        known = any(word in key.lower() for word in _SECRET_WORDS)
        if len(_secret_key_cache) < 4096:  # field names come from code: a small, fixed set
            _secret_key_cache[key] = known
    return known


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Replace the value of any field whose name says it is a credential."""
    for key in event_dict:
        if _is_secret_key(key):
            event_dict[key] = "[redacted]"
    return event_dict


def configure_logging(config: settings_mod.Logging, stream: Any = None) -> None:
    """Configure structlog once, at start. JSON (orjson) off a terminal, key=value lines on one."""
    stream = stream if stream is not None else sys.stderr
    as_json = config.format == "json" or (config.format == "auto" and not stream.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
        structlog.processors.format_exc_info,
    ]
    factory: Any
    if as_json:
        processors.append(structlog.processors.JSONRenderer(serializer=orjson.dumps, default=str))
        factory = structlog.BytesLoggerFactory(file=getattr(stream, "buffer", stream))
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
        factory = structlog.WriteLoggerFactory(file=stream)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[config.level.upper()]
        ),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )


def metrics_text() -> tuple[bytes, str]:
    """The Prometheus exposition of every glue metric, and its content type."""
    return prometheus_client.generate_latest(), prometheus_client.CONTENT_TYPE_LATEST
