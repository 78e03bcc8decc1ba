"""JSON log lines (glue/observability.py): what an operator reads from the daemon's stderr."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import logging
import re
import time

import orjson
import pytest
import structlog

from glue import observability, settings
from tests import support
from tests.sources.http.conftest import StartDaemon


class Stream(io.BytesIO):
    def isatty(self) -> bool:
        return False


def lines(stream: Stream) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def configured() -> Stream:
    stream = Stream()
    observability.configure_logging(settings.Logging(level="info", format="json"), stream=stream)
    return stream


def test_a_line_carries_level_time_fields_and_no_credential() -> None:
    stream = configured()
    try:
        log = structlog.get_logger("test")
        log.info("delivery", endpoint="harbor", ids=["a"], api_token="s3cret-value")
        log.debug("not shown at info")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("handler failed", route="r")
        first, second = lines(stream)
        assert first["event"] == "delivery" and first["level"] == "info"
        assert first["endpoint"] == "harbor" and first["ids"] == ["a"]
        assert first["api_token"] == "[redacted]" and b"s3cret-value" not in stream.getvalue()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", str(first["timestamp"]))
        stamp = dt.datetime.fromisoformat(str(first["timestamp"]))
        assert abs((dt.datetime.now(dt.UTC) - stamp).total_seconds()) < 60
        assert second["level"] == "error" and second["route"] == "r"
        assert "ValueError: boom" in str(second["exception"])
    finally:
        structlog.reset_defaults()


@pytest.mark.parametrize(
    ("now_ns", "stamp"),
    [
        (1_714_564_800_123_456_789, "2024-05-01T12:00:00.123456Z"),
        (1_714_564_801_000_000_999, "2024-05-01T12:00:01Z"),  # as isoformat: no fraction on the second
        (1_714_564_801_000_001_000, "2024-05-01T12:00:01.000001Z"),
    ],
)
def test_a_line_is_stamped_with_the_utc_time_as_iso_8601(
    monkeypatch: pytest.MonkeyPatch, now_ns: int, stamp: str
) -> None:
    stream = configured()
    try:
        monkeypatch.setattr(time, "time_ns", lambda: now_ns)
        structlog.get_logger("test").info("delivery")
        (line,) = lines(stream)
        assert line["timestamp"] == stamp
    finally:
        structlog.reset_defaults()


async def test_lines_of_one_loop_turn_are_written_together_at_its_end() -> None:
    stream = configured()
    try:
        log = structlog.get_logger("test")
        log.info("one")
        log.info("two")
        assert stream.getvalue() == b"", "written line by line"
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert [line["event"] for line in lines(stream)] == ["one", "two"]
    finally:
        structlog.reset_defaults()


def test_outside_a_loop_a_line_is_written_at_once() -> None:
    stream = configured()
    try:
        structlog.get_logger("test").info("outside a loop")
        assert [line["event"] for line in lines(stream)] == ["outside a loop"]
    finally:
        structlog.reset_defaults()


def test_library_log_records_become_json_lines_too() -> None:
    stream = configured()
    try:
        logging.getLogger("aiokafka.consumer").warning("heartbeat failed for group %s", "glue")
        logging.getLogger("aiokafka.consumer").info("joined group")  # below the libraries' level
        try:
            raise ConnectionError("broker gone")
        except ConnectionError:
            logging.getLogger("aiohttp.server").exception("Error handling request")
        first, second = lines(stream)
        assert first["event"] == "heartbeat failed for group glue"
        assert first["logger"] == "aiokafka.consumer" and first["level"] == "warning"
        assert second["level"] == "error" and "ConnectionError: broker gone" in str(second["exception"])
    finally:
        structlog.reset_defaults()


async def test_at_warning_level_a_delivery_writes_no_line_but_is_counted(start_daemon: StartDaemon) -> None:
    stream = Stream()
    observability.configure_logging(settings.Logging(level="warning", format="json"), stream=stream)
    # The daemon's module loggers would be cached at this level and with this stream, past the test.
    structlog.configure(cache_logger_on_first_use=False)
    try:
        glue = await start_daemon({"endpoints": [{"name": "ce", "path": "/events", "format": "cloudevents"}]})
        before = support.metric("glue_deliveries_total", endpoint="ce", outcome="accepted")
        headers = {"ce-specversion": "1.0", "ce-id": "quiet", "ce-source": "/t", "ce-type": "t"}
        assert (await glue.post("/events", b"{}", headers))[0] == 202
        structlog.get_logger("test").warning("after the delivery")
        await asyncio.sleep(0)
        assert [line["event"] for line in lines(stream)] == ["after the delivery"]
        assert support.metric("glue_deliveries_total", endpoint="ce", outcome="accepted") == before + 1
    finally:
        observability.configure_logging(settings.Logging(level="info", format="json"), stream=Stream())
        structlog.reset_defaults()
