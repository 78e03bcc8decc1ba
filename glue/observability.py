"""Logging (structlog); the metrics are declared in :mod:`glue.metrics`.

Logs are JSON lines on stderr when it is not a terminal and readable key=value lines when it is. A
redaction processor drops any field whose name says it holds a credential, as a second line of defence
behind the code that never passes one.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import datetime as dt
import logging
import sys
import threading
import time
from collections.abc import MutableMapping, Sequence
from typing import IO, Any

import orjson
import structlog

from glue import aio
from glue import settings as settings_mod

__all__ = ["INFO_ENABLED", "LineBuffer", "configure_logging", "redact", "render_json"]

#: Whether info lines are written (set by configure_logging): hot paths skip building one when not.
INFO_ENABLED = True

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
    known = _secret_key_cache  # a look-up per field rather than a call: every line has ten or so
    for key in event_dict:
        secret = known.get(key)
        if secret is None:
            secret = _is_secret_key(key)
        if secret:
            event_dict[key] = "[redacted]"
    return event_dict


#: The last whole second stamped and its text (``2024-05-01T12:00:00``): one tuple, swapped whole, so a
#: thread reading it never sees a second with another's text.
_second: tuple[int, str] = (-1, "")


def _timestamp() -> str:
    """Now in UTC as ``datetime.now(UTC).isoformat()`` writes it, ``Z`` for the offset: the date and
    time of day formatted once a second, the microseconds for each line (a line's whole isoformat cost
    more than the rest of its rendering, and a delivery logs two)."""
    global _second
    second, micro = divmod(time.time_ns() // 1000, 1_000_000)
    known = _second
    if known[0] != second:
        known = _second = (second, dt.datetime.fromtimestamp(second, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{known[1]}.{micro:06d}Z" if micro else f"{known[1]}Z"  # isoformat leaves out .000000


def render_json(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> bytes:
    """Level, UTC timestamp, redaction, exception text and orjson in one step: the same line as
    structlog's add_log_level, TimeStamper(fmt="iso", utc=True), redact, format_exc_info and
    JSONRenderer in a row, for a fraction of the cost on the per-delivery path."""
    event_dict["level"] = "warning" if method == "warn" else "error" if method == "exception" else method
    event_dict["timestamp"] = _timestamp()
    redact(logger, method, event_dict)
    if "exc_info" in event_dict:
        event_dict = structlog.processors.format_exc_info(logger, method, event_dict)
    return orjson.dumps(event_dict, default=str)


class LineBuffer:
    """A structlog logger for JSON lines: what is logged during one turn of the event loop is written
    with one call at its end (outside a loop, at once), since a write per line costs a system call."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self._lines: list[bytes] = []
        self._lock = threading.Lock()
        self._scheduled_on: asyncio.AbstractEventLoop | None = None
        atexit.register(self._flush_at_exit)

    def msg(self, message: bytes) -> None:
        with self._lock:
            self._lines.append(message)
        try:
            loop = aio.running_loop()
        except RuntimeError:
            self.flush()
            return
        if self._scheduled_on is not loop:  # a flush left on a loop that has ended never runs
            self._scheduled_on = loop
            loop.call_soon(self.flush)

    log = debug = info = warn = warning = err = error = critical = fatal = exception = msg

    def _flush_at_exit(self) -> None:
        with contextlib.suppress(ValueError, OSError):  # the stream may be closed by then
            self.flush()

    def flush(self) -> None:
        with self._lock:
            self._scheduled_on = None
            lines, self._lines = self._lines, []
            if lines:
                self._file.write(b"\n".join(lines) + b"\n")
                self._file.flush()


#: Loggers whose exceptions are connection trouble they retry by themselves: the error in one field, no
#: trace (asyncpg's pool logs one per attempt to restore its connection floor during a database outage).
_ONE_LINE_LOGGERS = frozenset({"asyncpg.pool"})


class _ToStructlog(logging.Handler):
    """Sends the standard library's log records (aiokafka, aiohttp, asyncio) through structlog, so
    every line on stderr has one format, the same redaction and the configured level."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, Any] = {"logger": record.name}
            if record.exc_info and record.name in _ONE_LINE_LOGGERS and record.exc_info[1] is not None:
                error = record.exc_info[1]
                fields["error"] = f"{type(error).__name__}: {error}"
            elif record.exc_info:
                fields["exc_info"] = record.exc_info
            structlog.get_logger(record.name).log(record.levelno, record.getMessage(), **fields)
        except Exception:  # a log line must never break the caller
            self.handleError(record)


def configure_logging(config: settings_mod.Logging, stream: Any = None, extra: Sequence[Any] = ()) -> None:
    """Configure structlog once, at start. JSON (orjson) off a terminal, key=value lines on one.
    ``extra`` processors add fields to every line (the trace ids, when tracing is on)."""
    stream = stream if stream is not None else sys.stderr
    as_json = config.format == "json" or (config.format == "auto" and not stream.isatty())
    processors: list[Any] = [structlog.contextvars.merge_contextvars, *extra]
    factory: Any
    if as_json:
        processors.append(render_json)
        lines = LineBuffer(getattr(stream, "buffer", stream))
        factory = lambda *_: lines  # noqa: E731
    else:
        processors += [
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info,
            structlog.dev.ConsoleRenderer(colors=False),
        ]
        factory = structlog.WriteLoggerFactory(file=stream)
    level = logging.getLevelNamesMapping()[config.level.upper()]
    global INFO_ENABLED
    INFO_ENABLED = level <= logging.INFO
    root = logging.getLogger()
    root.handlers = [handler for handler in root.handlers if not isinstance(handler, _ToStructlog)]
    root.addHandler(_ToStructlog())
    root.setLevel(max(level, logging.WARNING))  # libraries' warnings and errors, not their chatter
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
