"""Slow and oversized clients over a raw socket (asyncio streams): what the sender sees, within a bound.

Each test writes bytes by hand, as a hostile or broken client would, and reads what comes back: an
answer (status line, headers) or the connection closed. The bounds are the configured limits plus a
margin for a loaded machine.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.sources.http.conftest import Running, StartDaemon

BODY = b'{"name": "model-a"}'
HEAD = (
    "POST /events HTTP/1.1\r\nHost: glue\r\nce-specversion: 1.0\r\nce-source: /limits\r\n"
    "ce-type: com.example.limits\r\ncontent-type: application/json\r\n"
)


def server(**limits: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": 0, **limits}


ENDPOINT = {"name": "ce", "path": "/events", "format": "cloudevents"}


async def start(start_daemon: StartDaemon, **limits: Any) -> tuple[Running, int]:
    glue = await start_daemon({"endpoints": [ENDPOINT], "server": server(**limits)})
    assert glue.daemon.pipeline is not None and glue.daemon.pipeline.http.port is not None
    return glue, glue.daemon.pipeline.http.port


def request(event_id: str, extra: str = "") -> bytes:
    return f"{HEAD}ce-id: {event_id}\r\ncontent-length: {len(BODY)}\r\n{extra}\r\n".encode() + BODY


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer: status, headers (lower-case names), body (by Content-Length)."""
    status_line = await reader.readline()
    assert status_line, "the connection was closed without an answer"
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> float:
    """Seconds until the server closes the connection (EOF or reset); fail if it is still open."""
    started = time.monotonic()
    async with asyncio.timeout(seconds):
        try:
            while await reader.read(65536):
                pass
        except ConnectionResetError:
            pass
    return time.monotonic() - started


async def test_headers_sent_a_byte_at_a_time_are_cut_off_at_the_idle_timeout(
    start_daemon: StartDaemon,
) -> None:
    # The slowloris: one header byte a second kept a connection open for over a minute.
    glue, port = await start(start_daemon, idleTimeout=1)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /events HTTP/1.1\r\n")
    started = time.monotonic()

    async def trickle() -> None:
        for byte in b"X-Slow: " + b"a" * 100:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.1)

    sender = asyncio.create_task(trickle())
    try:
        await closed_within(reader, 5)
    finally:
        sender.cancel()
        writer.close()
    assert time.monotonic() - started < 3
    assert await glue.events() == []


async def test_an_idle_keep_alive_connection_is_closed(start_daemon: StartDaemon) -> None:
    _, port = await start(start_daemon, idleTimeout=1)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request("idle-1"))
    status, headers, _ = await read_answer(reader)
    assert status == 202 and headers.get("connection", "").lower() != "close"
    assert await closed_within(reader, 4) < 3
    writer.close()


async def test_a_slow_body_is_answered_408_and_closed(start_daemon: StartDaemon) -> None:
    glue, port = await start(start_daemon, bodyTimeout=1)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"{HEAD}ce-id: slow-body\r\ncontent-length: {len(BODY)}\r\n\r\n".encode()
    writer.write(head + BODY[:5])  # the rest never comes
    started = time.monotonic()
    async with asyncio.timeout(4):
        status, headers, body = await read_answer(reader)
    assert status == 408 and b"not received within 1 s" in body
    assert headers["connection"].lower() == "close"
    assert time.monotonic() - started < 3
    await closed_within(reader, 4)
    writer.close()
    assert await glue.events() == []


async def test_a_header_over_the_size_limit_is_refused(
    start_daemon: StartDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    glue, port = await start(start_daemon, maxHeaderBytes=2048)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request("big-header", f"x-big: {'a' * 4096}\r\n"))
    async with asyncio.timeout(4):
        status, _, body = await read_answer(reader)
    assert status == 400 and b"2048" in body
    # The operator sees one warning with the peer and the reason, not a traceback per request.
    [record] = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert record.levelname == "WARNING" and record.exc_info is None
    assert record.getMessage().startswith("malformed request refused: 127.0.0.1 (Got more than 2048 bytes")
    await closed_within(reader, 4)
    writer.close()
    # Within the limit the same request goes through.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request("small-header", f"x-big: {'a' * 1024}\r\n"))
    assert (await read_answer(reader))[0] == 202
    writer.close()
    assert [event.id for event in await glue.events()] == ["small-header"]


async def test_too_many_headers_are_refused(start_daemon: StartDaemon) -> None:
    glue, port = await start(start_daemon, maxHeaders=16)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request("many", "".join(f"x-h{n}: v\r\n" for n in range(20))))
    async with asyncio.timeout(4):
        status, _, body = await read_answer(reader)
    assert status == 400 and b"Too many headers" in body
    await closed_within(reader, 4)
    writer.close()
    assert await glue.events() == []


async def test_a_keep_alive_connection_closes_after_its_last_request(start_daemon: StartDaemon) -> None:
    glue, port = await start(start_daemon, maxRequestsPerConnection=3)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    for n in range(3):
        writer.write(request(f"keep-{n}"))
        answers.append(await read_answer(reader))
    assert [status for status, _, _ in answers] == [202, 202, 202]
    assert [headers.get("connection", "").lower() for _, headers, _ in answers] == ["", "", "close"]
    assert await closed_within(reader, 4) < 2
    writer.close()
    assert len(await glue.events()) == 3
