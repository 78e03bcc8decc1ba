"""MinIO's ListenBucketNotification as a way in: no webhook or Kafka target to configure on MinIO.

One long-lived ``GET /<bucket>?events=..&prefix=..&suffix=..&ping=N`` per configured bucket. The
answer is newline-delimited JSON, one ``{"Records": [...]}`` per line, with ``{"Records":null}``
keep-alive lines every ``ping`` seconds (a lone space on servers without ``ping``). Every record line
becomes one :class:`glue.events.Delivery` (transport ``minio-listen``, format ``minio``) and goes
through the shared intake, so it is decoded by the same decoder as the webhook and Kafka targets (which
knows listen keys are not query-escaped) and yields the same identity for the same object event.

The stream is read with aiohttp on the event loop, signed with the minio SDK's SigV4 signer (see
:meth:`glue.objectstore.ObjectStore.listen_request`). The SDK's own ``listen_bucket_notification`` is a
blocking iterator that reconnects in a tight loop without backoff, drops keep-alives it cannot see,
parses the line (losing the raw bytes replay needs) and cannot be interrupted on shutdown except by
closing its socket from another thread; speaking the documented HTTP API directly avoids all four.

MinIO keeps no backlog for listeners: events published while a stream is down, or while this reader
is slow, are lost. So a down stream is made visible: ``glue_minio_listen_up{bucket}`` is 0, the
readiness check names the bucket, and the source reconnects with capped exponential backoff and
jitter. Lines are journaled concurrently (sharing group commits, in line order) up to a bound; a line
the journal cannot take yet is retried with the same backoff, and reading pauses at the bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import structlog
import yarl

from glue import events, formats, intake, journal, metrics, objectstore, retry
from glue import settings as settings_mod

__all__ = ["TRANSPORT", "ListenSource"]

log = structlog.get_logger(__name__)

#: The transport of listen deliveries (the minio decoder reads keys as unescaped for it).
TRANSPORT = "minio-listen"

Accept = Callable[[events.Delivery], Awaitable[list[journal.Appended]]]
Reject = Callable[[events.Delivery, str], Awaitable[Any]]

_PADDING = frozenset(b" \t\r")  # byte values of whitespace ahead of a line (old servers' keep-alives)
_ERROR_CODE = re.compile(rb"<Code>([^<]{1,64})</Code>")


class StreamError(Exception):
    """The stream could not be opened or ended; the message says why (no credentials)."""


class _Stream:
    """The state of one bucket's stream, for readiness and logs."""

    def __init__(self, bucket: settings_mod.MinioBucket) -> None:
        self.bucket = bucket
        self.connected = False
        self.reason = "not connected yet"
        self.since = time.monotonic()
        self.lines = 0  # lines read on the current connection
        self.was_up = False  # connected before: a later connection follows a gap
        self.stalled = False  # the reader is waiting for the journal (counted once per stall)
        metrics.MINIO_LISTEN_UP.labels(bucket.name).set(0)

    def up(self) -> None:
        if self.was_up:  # events MinIO published while the stream was down are gone
            metrics.MINIO_LISTEN_GAPS.labels(self.bucket.name, "reconnect").inc()
        self.connected, self.reason, self.since, self.lines = True, "", time.monotonic(), 0
        self.was_up = True
        metrics.MINIO_LISTEN_UP.labels(self.bucket.name).set(1)

    def down(self, reason: str) -> None:
        self.connected, self.reason, self.since = False, reason, time.monotonic()
        metrics.MINIO_LISTEN_UP.labels(self.bucket.name).set(0)


class ListenSource:
    """A component (``name``, ``start()``, ``stop()``) that follows the configured buckets."""

    name = "minio-listen"

    def __init__(
        self,
        config: settings_mod.Minio,
        accept: Accept,
        *,
        reject: Reject | None = None,
        store: objectstore.ObjectStore | None = None,
        rng: random.Random | None = None,
        max_in_flight: int = 256,
        drain_seconds: float = 5.0,
    ) -> None:
        self.config = config
        self._accept = accept
        self._reject = reject
        self._store = store
        self._own_store = store is None
        self._rng = rng if rng is not None else random.Random()
        #: Reconnects and journal retries: between half and all of a doubling step, capped.
        self._backoff = retry.Policy.equal_jitter(config.reconnect_initial, config.reconnect_max)
        self._streams = {bucket.name: _Stream(bucket) for bucket in config.buckets}
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # Lines are journaled concurrently (they share group commits) up to this bound per source;
        # tasks start in line order and the journal queues appends in call order, so order holds.
        self._slots = asyncio.Semaphore(max_in_flight)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._drain_seconds = drain_seconds

    # -- lifecycle

    async def start(self) -> None:
        """Open one stream task per bucket and return; connection happens in the background."""
        if self._store is None:
            self._store = objectstore.ObjectStore(self.config)
        ssl_context = self._store.ssl_context()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_context if ssl_context is not None else False),
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=self.config.timeout,
                # MinIO writes a keep-alive every ping seconds: silence for three of them is a dead stream.
                sock_read=self.config.ping_seconds * 3,
            ),
            read_bufsize=self.config.max_line_bytes,
            raise_for_status=False,
        )
        for stream in self._streams.values():
            self._tasks.append(
                asyncio.create_task(self._follow(stream), name=f"minio-listen:{stream.bucket.name}")
            )
        log.info("minio listen started", endpoint=self._store.base_url, buckets=list(self._streams))

    async def stop(self) -> None:
        """Stop reading, then let lines already read finish journaling (MinIO keeps no copy of them):
        up to ``drain_seconds``, after which lines still waiting for the journal are given up, logged."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._in_flight:
            _, late = await asyncio.wait(set(self._in_flight), timeout=self._drain_seconds)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
                log.error("minio listen lines not journaled at stop", count=len(late))
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._own_store and self._store is not None:
            self._store.close()
            self._store = None
        for stream in self._streams.values():
            stream.down("stopped")

    # -- health

    def health(self) -> dict[str, bool]:
        """Bucket name -> whether its stream is connected now."""
        return {name: stream.connected for name, stream in self._streams.items()}

    @property
    def ready(self) -> bool:
        return all(stream.connected for stream in self._streams.values())

    async def readiness(self) -> str | None:
        """For /readyz: None when every bucket stream is connected, else which are down and why."""
        down = [f"{name} ({stream.reason})" for name, stream in self._streams.items() if not stream.connected]
        return f"minio listen stream down: {', '.join(down)}" if down else None

    # -- the stream loop

    async def _follow(self, stream: _Stream) -> None:
        name = stream.bucket.name
        attempt = 0
        while True:
            stream.lines = 0
            try:
                await self._connect_and_read(stream)
                reason = "the server ended the stream"
            except (StreamError, objectstore.ObjectStoreError) as exc:
                reason = str(exc)
            except aiohttp.ClientPayloadError:
                reason = "the connection dropped mid-stream"
            except aiohttp.ServerTimeoutError:
                reason = f"no data for {self.config.ping_seconds * 3}s"
            except (aiohttp.ClientError, OSError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # any other failure of a reader ends in a reconnect, never a dead task
                log.exception("minio listen reader failed", bucket=name)
                reason = f"reader failed: {type(exc).__name__}"
            if stream.lines:
                attempt = 0  # the stream worked: the next failure starts the schedule over
            was_connected = stream.connected
            stream.down(reason)
            if was_connected:
                metrics.MINIO_LISTEN_RECONNECTS.labels(name).inc()
            attempt += 1
            delay = self._backoff.delay(attempt, self._rng)
            log.warning("minio listen stream down", bucket=name, reason=reason, retry_in=round(delay, 3))
            await asyncio.sleep(delay)

    async def _connect_and_read(self, stream: _Stream) -> None:
        """Read one connection until it ends; raises StreamError (or aiohttp's error) saying why."""
        assert self._session is not None and self._store is not None
        bucket = stream.bucket
        url, headers = self._store.listen_request(
            bucket.name,
            prefix=bucket.prefix,
            suffix=bucket.suffix,
            events=bucket.events,
            ping=self.config.ping_seconds,
        )
        async with self._session.get(yarl.URL(url, encoded=True), headers=headers) as response:
            if response.status != 200:
                body = await response.content.read(4096)
                match = _ERROR_CODE.search(body)
                code = f" {match.group(1).decode(errors='replace')}" if match else ""
                raise StreamError(f"HTTP {response.status}{code}")
            stream.up()
            log.info("minio listen stream connected", bucket=bucket.name)
            content_type = response.headers.get("Content-Type", "text/event-stream")
            # Lines are split here rather than with readline: servers before the ``ping`` parameter
            # (MinIO, April 2023) keep the stream alive with a bare space every 500 ms and no newline
            # (cmd/listen-notification-handlers.go, keepAliveTicker), which would grow one line
            # without end; whitespace ahead of a line is a keep-alive, not part of the line.
            pending = bytearray()
            limit = self.config.max_line_bytes
            while True:
                chunk = await response.content.readany()
                if not chunk:
                    break
                pending += chunk
                start = 0
                while (end := pending.find(b"\n", start)) >= 0:
                    line = bytes(pending[start : end + 1]).lstrip(b" \t\r")
                    if len(line) > limit:
                        raise StreamError(f"a line is over {limit} bytes")
                    await self._line(stream, line, content_type)
                    start = end + 1
                del pending[:start]
                if pending and pending[0] in _PADDING:
                    pending = pending.lstrip(b" \t\r")
                    if not pending:
                        metrics.MINIO_LISTEN_LINES.labels(bucket.name, "keepalive").inc()
                if len(pending) > limit:
                    raise StreamError(f"a line is over {limit} bytes")
            if pending:
                raise StreamError("the stream ended inside a line")

    async def _line(self, stream: _Stream, line: bytes, content_type: str) -> None:
        """Hand one whole line to the journal, waiting for room when ``max_in_flight`` are in flight.

        While it waits nothing is read, MinIO's buffer for this listener fills, and MinIO then drops
        events for it without a word (internal/pubsub Publish: a non-blocking send): such a wait is
        counted as a gap in which events may have been lost."""
        stream.lines += 1
        if not self._slots.locked():
            stream.stalled = False
        elif not stream.stalled:  # one gap per stall, however many lines wait in it
            stream.stalled = True
            metrics.MINIO_LISTEN_GAPS.labels(stream.bucket.name, "stalled").inc()
            log.warning("minio listen reader stalled: the journal is behind", bucket=stream.bucket.name)
        await self._slots.acquire()
        task = asyncio.create_task(self._handle(stream.bucket.name, line, content_type))
        self._in_flight.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._slots.release()

    async def _handle(self, bucket: str, line: bytes, content_type: str) -> None:
        body = line.strip()
        if _keepalive(body):
            metrics.MINIO_LISTEN_LINES.labels(bucket, "keepalive").inc()
            return
        delivery = events.Delivery(
            transport=TRANSPORT,
            endpoint=f"minio-listen:{bucket}",
            format="minio",
            headers={"content-type": content_type},
            body=body,
        )
        attempt = 0
        while True:
            try:
                appended = await self._accept_whole(delivery)
            except formats.DecodeError as exc:
                await self._rejected(bucket, delivery, exc.reason)
                return
            except (journal.JournalUnavailable, intake.Overloaded) as exc:
                attempt += 1
                delay = self._backoff.delay(attempt, self._rng)
                log.warning(
                    "journal cannot take a listen line yet",
                    bucket=bucket,
                    reason=str(exc),
                    retry_in=round(delay, 3),
                )
                await asyncio.sleep(delay)
                continue
            except Exception as exc:  # a decoder bug must not stop the stream; keep the line visible
                log.exception("minio listen line failed", bucket=bucket)
                await self._rejected(bucket, delivery, f"decoder failed: {type(exc).__name__}")
                return
            fresh = any(item.new for item in appended)
            metrics.MINIO_LISTEN_LINES.labels(bucket, "journaled" if fresh else "duplicate").inc()
            return

    async def _rejected(self, bucket: str, delivery: events.Delivery, reason: str) -> None:
        """An undecodable line: counted, logged, and journaled as rejected when a journal is given."""
        metrics.MINIO_LISTEN_LINES.labels(bucket, "rejected").inc()
        log.warning("minio listen line rejected", bucket=bucket, reason=reason)
        if self._reject is not None:
            try:
                await self._reject(delivery, reason)
            except journal.JournalUnavailable as exc:
                log.warning("rejected line not journaled", bucket=bucket, reason=str(exc))

    async def _accept_whole(self, delivery: events.Delivery) -> list[journal.Appended]:
        """Accept, and if cancelled (stop) meanwhile, let the journal write finish first: MinIO keeps
        no copy, so a line read is journaled or lost."""
        task = asyncio.ensure_future(self._accept(delivery))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await task
            raise


def _keepalive(body: bytes) -> bool:
    """An empty line, or a JSON object whose Records is null or empty."""
    if not body:
        return True
    if body.startswith(b'{"Records":null') or body == b'{"Records":[]}':
        return True
    if b'"Records"' not in body:
        return False
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False  # the decoder will say what is wrong with it
    return isinstance(value, dict) and not value.get("Records")
