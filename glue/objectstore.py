"""The one place that speaks to MinIO (S3) through the minio SDK.

- :class:`ObjectStore`: a client built from ``sources.minio`` (credentials re-read from their mounted
  files or environment variables, TLS verified against a custom CA), with the calls the rest of glue
  needs: object info and user metadata, tags, a bounded read of a small object, a put, a listing, and
  a SigV4-signed request for MinIO's ListenBucketNotification (the listen source streams it with
  aiohttp; see :mod:`glue.sources.minio_listen`).
- :class:`ArchiveWriter`: recordings and dead letters as JSON lines in a bucket, one object per flush,
  partitioned by date: ``<prefix>/<kind>/date=YYYY-MM-DD/<HHMMSS>-<writer>-<n>.jsonl``.
- :func:`read_archive`: the lines of an ``s3://bucket/prefix`` back, in key (so date) order.

The SDK is blocking (urllib3): every call runs in a worker thread under the configured timeout, so a
slow or unreachable MinIO never stalls the event loop. Every failure is an :class:`ObjectStoreError`
whose message names the bucket, the key and the reason, never a credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import functools
import io
import secrets as secrets_mod
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import SplitResult, quote, urlsplit, urlunsplit

import minio
import orjson
import structlog
import urllib3
from minio import error as minio_error
from minio import helpers as minio_helpers
from minio import signer as minio_signer
from minio import time as minio_time
from minio.credentials import credentials as minio_creds
from minio.credentials import providers as minio_providers

from glue import events, metrics
from glue import settings as settings_mod

__all__ = [
    "ArchiveWriter",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectStoreError",
    "ObjectTooLarge",
    "iter_archive",
    "parse_url",
    "read_archive",
    "read_deliveries",
]

log = structlog.get_logger(__name__)

T = TypeVar("T")


_SECRET_REFRESH = 10.0  # seconds between re-reads of mounted credential files (rotation without restart)
_NOT_FOUND = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchVersion", "NoSuchTagSet", "ResourceNotFound"})


class ObjectStoreError(Exception):
    """A call to the object store failed; the message is safe to log and show."""


class ObjectNotFound(ObjectStoreError):
    pass


class ObjectTooLarge(ObjectStoreError):
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a HEAD of an object tells: size, eTag, type, version and the user metadata."""

    bucket: str
    key: str
    size: int | None
    etag: str | None
    content_type: str | None
    version_id: str | None
    last_modified: str | None  # RFC 3339
    metadata: dict[str, str]  # user metadata, names lower case without "x-amz-meta-"

    def to_dict(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "key": self.key,
            "size": self.size,
            "eTag": self.etag,
            "contentType": self.content_type,
            "versionId": self.version_id,
            "lastModified": self.last_modified,
            "metadata": self.metadata,
        }


class _SecretProvider(minio_providers.Provider):
    """Credentials from SecretRefs, re-read every few seconds so a rotated Secret applies."""

    def __init__(self, config: settings_mod.Minio, refresh: float) -> None:
        assert config.access_key is not None and config.secret_key is not None
        self._refresh = refresh
        self._access = config.access_key
        self._secret = config.secret_key
        self._token = config.session_token
        self._lock = threading.Lock()
        self._cached: minio_creds.Credentials | None = None
        self._read_at = 0.0

    def _load(self) -> minio_creds.Credentials:
        token = self._token.resolve()[0].decode() if self._token is not None else None
        return minio_creds.Credentials(
            self._access.resolve()[0].decode(), self._secret.resolve()[0].decode(), token
        )

    def retrieve(self) -> minio_creds.Credentials:
        with self._lock:
            if self._cached is None or time.monotonic() - self._read_at > self._refresh:
                try:
                    self._cached = self._load()
                except ValueError as exc:
                    if self._cached is None:
                        raise ObjectStoreError(f"MinIO credentials: {exc}") from None
                    log.warning("minio credentials reload failed, keeping the last ones", reason=str(exc))
                self._read_at = time.monotonic()
            return self._cached


def _describe(exc: BaseException) -> str:
    if isinstance(exc, minio_error.S3Error):
        return f"{exc.code}: {exc.message}" if exc.message else str(exc.code)
    if isinstance(exc, minio_error.ServerError):
        return f"server error (HTTP {exc.status_code})"
    if isinstance(exc, minio_error.InvalidResponseError):
        return "invalid response from the server"
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        return f"unreachable ({type(exc.reason).__name__})"
    if isinstance(exc, (urllib3.exceptions.HTTPError, OSError)):
        return f"unreachable ({type(exc).__name__})"
    return type(exc).__name__


class ObjectStore:
    """A minio SDK client configured from ``sources.minio``. Methods are coroutines."""

    def __init__(self, config: settings_mod.Minio, *, secret_refresh: float = _SECRET_REFRESH) -> None:
        self.config = config
        self._provider = _SecretProvider(config, secret_refresh) if config.access_key is not None else None
        ca_certs = str(config.ca_file) if config.ca_file is not None else None
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=config.timeout, read=config.timeout),
            maxsize=10,
            cert_reqs="CERT_REQUIRED",
            ca_certs=ca_certs,
            retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        )
        self._client = minio.Minio(
            config.endpoint,
            secure=config.secure,
            region=config.region,
            http_client=self._http,
            credentials=self._provider,
        )

    def close(self) -> None:
        self._http.clear()

    @property
    def base_url(self) -> str:
        return f"{'https' if self.config.secure else 'http'}://{self.config.endpoint}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for direct HTTP calls (the listen stream); None over plain HTTP."""
        if not self.config.secure:
            return None
        cafile = str(self.config.ca_file) if self.config.ca_file is not None else None
        return ssl.create_default_context(cafile=cafile)

    async def _call(self, what: str, fn: Callable[[], T], *, version_id: str | None = None) -> T:
        # The pool's connect/read timeouts bound each socket wait; this bounds the whole call
        # (retries included). Callers wanting less wrap the call in asyncio.timeout().
        limit = self.config.timeout * 3
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._blocking, what, fn, version_id), limit)
        except TimeoutError:
            raise ObjectStoreError(f"{what}: no answer within {limit:g}s") from None

    @staticmethod
    def _blocking(what: str, fn: Callable[[], T], version_id: str | None = None) -> T:
        """Run an SDK call here (a worker thread, or a command line tool), errors made readable.

        A read of one version that MinIO answers 405 MethodNotAllowed reads a delete marker (or a
        version being purged): minio cmd/erasure-object.go answers so for HEAD, GET and tagging of a
        deleted version (HEAD with ``x-amz-delete-marker: true``). That version holds no object:
        ObjectNotFound, as for a key that is gone."""
        try:
            return fn()
        except ObjectStoreError:
            raise
        except minio_error.S3Error as exc:
            if version_id is not None and exc.code == "MethodNotAllowed":
                raise ObjectNotFound(f"{what}: version {version_id} is a delete marker") from None
            kind = ObjectNotFound if exc.code in _NOT_FOUND else ObjectStoreError
            raise kind(f"{what}: {_describe(exc)}") from None
        except (minio_error.MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise ObjectStoreError(f"{what}: {_describe(exc)}") from None

    async def stat(self, bucket: str, key: str, *, version_id: str | None = None) -> ObjectInfo:
        def run() -> ObjectInfo:
            obj = self._client.stat_object(bucket, key, version_id=version_id)
            headers = obj.metadata or {}
            metadata = {
                name.lower().removeprefix("x-amz-meta-"): str(value)
                for name, value in headers.items()
                if name.lower().startswith("x-amz-meta-")
            }
            return ObjectInfo(
                bucket=bucket,
                key=key,
                size=obj.size,
                etag=obj.etag,
                content_type=obj.content_type,
                version_id=obj.version_id,
                last_modified=obj.last_modified.isoformat() if obj.last_modified else None,
                metadata=metadata,
            )

        return await self._call(f"s3://{bucket}/{key}", run, version_id=version_id)

    async def tags(self, bucket: str, key: str, *, version_id: str | None = None) -> dict[str, str]:
        def run() -> dict[str, str]:
            tags = self._client.get_object_tags(bucket, key, version_id=version_id)
            return dict(tags or {})

        return await self._call(f"s3://{bucket}/{key} tags", run, version_id=version_id)

    async def read(self, bucket: str, key: str, *, max_bytes: int, version_id: str | None = None) -> bytes:
        """The whole object, refused with ObjectTooLarge when it holds more than ``max_bytes``."""
        where = f"s3://{bucket}/{key}"
        return await self._call(
            where, lambda: self._read(bucket, key, max_bytes, version_id), version_id=version_id
        )

    def read_blocking(self, bucket: str, key: str, *, max_bytes: int) -> bytes:
        """:meth:`read` for command line tools that run no event loop."""
        return self._blocking(f"s3://{bucket}/{key}", lambda: self._read(bucket, key, max_bytes, None))

    def _read(self, bucket: str, key: str, max_bytes: int, version_id: str | None) -> bytes:
        where = f"s3://{bucket}/{key}"

        response = self._client.get_object(bucket, key, version_id=version_id)
        try:
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise ObjectTooLarge(f"{where}: {declared} bytes, over the bound of {max_bytes}")
            data = response.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise ObjectTooLarge(f"{where}: over the bound of {max_bytes} bytes")
            return bytes(data)
        finally:
            response.close()
            response.release_conn()

    async def put(
        self, bucket: str, key: str, data: bytes, *, content_type: str = "application/octet-stream"
    ) -> None:
        def run() -> None:
            self._client.put_object(bucket, key, io.BytesIO(data), len(data), content_type=content_type)

        await self._call(f"s3://{bucket}/{key}", run)

    async def list_keys(self, bucket: str, prefix: str = "", *, start_after: str | None = None) -> list[str]:
        """Every key under the prefix (recursive), in lexical order."""
        return await self._call(f"s3://{bucket}/{prefix}", lambda: self._list(bucket, prefix, start_after))

    def list_keys_blocking(self, bucket: str, prefix: str = "") -> list[str]:
        """:meth:`list_keys` for command line tools that run no event loop."""
        return self._blocking(f"s3://{bucket}/{prefix}", lambda: self._list(bucket, prefix, None))

    def _list(self, bucket: str, prefix: str, start_after: str | None) -> list[str]:
        return [
            obj.object_name
            for obj in self._client.list_objects(
                bucket, prefix=prefix, recursive=True, start_after=start_after
            )
            if obj.object_name is not None and not obj.is_dir
        ]

    def listen_request(
        self, bucket: str, *, prefix: str, suffix: str, events: Sequence[str], ping: int
    ) -> tuple[str, dict[str, str]]:
        """URL (already encoded) and SigV4-signed headers of ``GET /<bucket>?events=..&ping=N``.

        Signed with the SDK's own signer, so it is the request the SDK would send (plus ``ping``)."""
        params: list[tuple[str, str]] = [("events", name) for name in events]
        params += [("ping", str(ping)), ("prefix", prefix), ("suffix", suffix)]
        query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in sorted(params))
        url = SplitResult(
            "https" if self.config.secure else "http", self.config.endpoint, f"/{quote(bucket)}", query, ""
        )
        date = minio_time.utcnow()
        headers: dict[str, str] = {"Host": url.netloc, "x-amz-date": minio_time.to_amz_date(date)}
        if self._provider is not None:
            creds = self._provider.retrieve()
            sha256 = "UNSIGNED-PAYLOAD" if self.config.secure else minio_helpers.sha256_hash(b"")
            headers["x-amz-content-sha256"] = sha256
            if creds.session_token:
                headers["X-Amz-Security-Token"] = creds.session_token
            signed = minio_signer.sign_v4_s3(
                method="GET",
                url=url,
                region=self.config.region,
                headers=dict(headers),
                credentials=creds,
                content_sha256=sha256,
                date=date,
            )
            headers = {name: str(value) for name, value in signed.items()}
        return urlunsplit(url), headers


# ---------------------------------------------------------------------------------------------- archive


def parse_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix). Raises ValueError with a reason."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"{url!r} is not an s3://bucket/prefix URL")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: no query or fragment expected")
    return parts.netloc, parts.path.lstrip("/")


@dataclasses.dataclass(slots=True)
class _Pending:
    date: str
    lines: list[bytes] = dataclasses.field(default_factory=list)
    size: int = 0


class ArchiveWriter:
    """Buffers archive lines and writes them to the bucket as date-partitioned JSON-lines objects.

    ``record(delivery)`` and ``dead_letter(record)`` never block and never raise; lines are written
    every ``flushSeconds``, when an object reaches ``maxObjectBytes``, and on :meth:`stop`. A failed
    write keeps its lines for the next flush; above ``maxBufferBytes`` the oldest lines are dropped (and
    counted). The archive is a copy: the journal stays the source of truth.
    """

    name = "archive"
    KINDS = ("recordings", "dead-letters", "audit")

    def __init__(
        self,
        store: ObjectStore,
        config: settings_mod.Archive,
        *,
        clock: Callable[[], float] = time.time,
        writer_id: str | None = None,
        close_store: bool = False,
    ) -> None:
        self.store = store
        self._close_store = close_store
        self.config = config
        self._clock = clock
        self._writer = writer_id or secrets_mod.token_hex(4)
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._buffered = 0
        #: Lines dropped since the bucket last took a write (None: no write has failed since).
        self._dropped: int | None = None
        self._counter = 0
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # -- producers

    def record(self, delivery: events.Delivery) -> None:
        """Archive one delivery as a ``glue replay`` line (no-op unless ``recordings`` is on)."""
        if self.config.recordings:
            self._add("recordings", delivery.to_record(), delivery.received_at)

    def write(self, delivery: events.Delivery) -> None:
        """Alias of :meth:`record`, so the writer can stand where intake's file recorder stands."""
        self.record(delivery)

    def dead_letter(self, record: Mapping[str, Any], at: float | None = None) -> None:
        """Archive one dead letter (a JSON-able mapping) (no-op unless ``deadLetters`` is on)."""
        if self.config.dead_letters:
            self._add("dead-letters", record, at if at is not None else self._clock())

    def audit(self, record: Mapping[str, Any], at: float) -> None:
        """Archive one entry of the audit trail (no-op unless ``audit`` is on)."""
        if self.config.audit:
            self._add("audit", record, at)

    def _add(self, kind: str, record: Mapping[str, Any], at: float) -> None:
        try:
            line = orjson.dumps(record) + b"\n"
        except TypeError as exc:
            log.error("archive line is not JSON-able, dropped", kind=kind, reason=str(exc))
            metrics.ARCHIVE_DROPPED.labels(kind).inc()
            return
        date = datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%d")
        pending = self._pending.setdefault((kind, date), _Pending(date))
        pending.lines.append(line)
        pending.size += len(line)
        self._buffered += len(line)
        self._shed()
        metrics.ARCHIVE_BUFFERED.set(self._buffered)
        if pending.size >= self.config.max_object_bytes:
            self._wake.set()

    def _shed(self) -> None:
        """Drop the oldest lines while the buffer is over its bound; the first drop since the bucket
        last took a write is logged (the metric counts every one)."""
        while self._buffered > self.config.max_buffer_bytes and self._pending:
            (kind, _), oldest = min(self._pending.items(), key=lambda item: item[0][1])
            line = oldest.lines.pop(0)
            oldest.size -= len(line)
            self._buffered -= len(line)
            metrics.ARCHIVE_DROPPED.labels(kind).inc()
            if not self._dropped:
                log.warning(
                    "archive buffer full, dropping the oldest lines",
                    kind=kind,
                    bound=self.config.max_buffer_bytes,
                )
            self._dropped = (self._dropped or 0) + 1
            if not oldest.lines:
                del self._pending[(kind, oldest.date)]

    # -- lifecycle

    async def start(self) -> None:
        self._flusher = asyncio.create_task(self._loop(), name="archive-flush")

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        await self.flush()
        if self.buffered_bytes:
            log.error("archive lines not written at stop", bytes=self.buffered_bytes)
        if self._close_store:
            self.store.close()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.flush_seconds)
            self._wake.clear()
            await self.flush()

    @property
    def buffered_bytes(self) -> int:
        return self._buffered

    async def flush(self) -> int:
        """Write every buffered line; returns the number of objects written. Failures are kept."""
        async with self._lock:
            written = 0
            for (kind, date), pending in list(self._pending.items()):
                # Take the lines out before awaiting: lines added meanwhile go to a fresh batch.
                del self._pending[(kind, date)]
                for chunk in self._chunks(pending.lines):
                    key = self._key(kind, date)
                    try:
                        await self.store.put(
                            self.config.bucket, key, b"".join(chunk), content_type="application/x-ndjson"
                        )
                    except ObjectStoreError as exc:
                        metrics.ARCHIVE_ERRORS.labels(kind).inc()
                        log.warning(
                            "archive write failed, lines kept",
                            kind=kind,
                            key=key,
                            reason=str(exc),
                            buffered=self._buffered,
                            bound=self.config.max_buffer_bytes,
                        )
                        self._requeue(kind, date, chunk)
                        if self._dropped is None:
                            self._dropped = 0
                        continue
                    size = sum(len(line) for line in chunk)
                    self._buffered -= size
                    metrics.ARCHIVE_OBJECTS.labels(kind).inc()
                    metrics.ARCHIVE_LINES.labels(kind).inc(len(chunk))
                    written += 1
                    if self._dropped is not None:
                        log.info("archive written again", kind=kind, dropped=self._dropped)
                        self._dropped = None
            metrics.ARCHIVE_BUFFERED.set(self._buffered)
            return written

    def _requeue(self, kind: str, date: str, lines: list[bytes]) -> None:
        pending = self._pending.setdefault((kind, date), _Pending(date))
        pending.lines[:0] = lines
        pending.size += sum(len(line) for line in lines)

    def _chunks(self, lines: list[bytes]) -> list[list[bytes]]:
        chunks: list[list[bytes]] = [[]]
        size = 0
        for line in lines:
            if chunks[-1] and size + len(line) > self.config.max_object_bytes:
                chunks.append([])
                size = 0
            chunks[-1].append(line)
            size += len(line)
        return [chunk for chunk in chunks if chunk]

    def _key(self, kind: str, date: str) -> str:
        self._counter += 1
        stamp = datetime.datetime.fromtimestamp(self._clock(), datetime.UTC).strftime("%H%M%S")
        prefix = self.config.prefix.strip("/")
        head = f"{prefix}/" if prefix else ""
        return f"{head}{kind}/date={date}/{stamp}-{self._writer}-{self._counter:06d}.jsonl"


async def read_archive(
    store: ObjectStore, url: str, *, since: datetime.date | None = None, max_object_bytes: int = 256 << 20
) -> AsyncIterator[dict[str, Any]]:
    """The JSON objects of every ``.jsonl`` object under ``s3://bucket/prefix``, in key order.

    Keys sort by kind, then date partition, then time, so one kind's lines come out oldest first.
    ``since`` skips date partitions before that day. A malformed line raises ObjectStoreError naming
    the object and the line number."""
    bucket, prefix = _parse_archive_url(url)
    for key in _archive_keys(await store.list_keys(bucket, prefix), since):
        data = await store.read(bucket, key, max_bytes=max_object_bytes)
        for _, value in _archive_lines(bucket, key, data):
            yield value


def iter_archive(
    store: ObjectStore, url: str, *, since: datetime.date | None = None, max_object_bytes: int = 256 << 20
) -> Iterator[tuple[str, dict[str, Any]]]:
    """:func:`read_archive` for command line tools (no event loop): yields (``s3://bucket/key:line``,
    object) so a message can point at the line."""
    bucket, prefix = _parse_archive_url(url)
    for key in _archive_keys(store.list_keys_blocking(bucket, prefix), since):
        data = store.read_blocking(bucket, key, max_bytes=max_object_bytes)
        for number, value in _archive_lines(bucket, key, data):
            yield f"s3://{bucket}/{key}:{number}", value


def _parse_archive_url(url: str) -> tuple[str, str]:
    try:
        return parse_url(url)
    except ValueError as exc:
        raise ObjectStoreError(str(exc)) from None


def _archive_keys(keys: list[str], since: datetime.date | None) -> list[str]:
    return [
        key
        for key in keys
        if key.endswith(".jsonl") and (since is None or (day := _partition_date(key)) is None or day >= since)
    ]


def _archive_lines(bucket: str, key: str, data: bytes) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise ObjectStoreError(f"s3://{bucket}/{key} line {number}: not JSON") from None
        if not isinstance(value, dict):
            raise ObjectStoreError(f"s3://{bucket}/{key} line {number}: not a JSON object")
        yield number, value


async def read_deliveries(
    store: ObjectStore, url: str, *, since: datetime.date | None = None
) -> AsyncIterator[events.Delivery]:
    """Recorded deliveries under ``s3://bucket/prefix`` (the ``recordings`` kind), for ``glue replay``.

    Point it at ``s3://<bucket>/<prefix>/recordings`` (or deeper, one date partition). A line that is not
    a recording raises ObjectStoreError naming the URL and the reason."""
    number = 0
    async for line in read_archive(store, url, since=since):
        number += 1
        try:
            yield events.Delivery.from_record(line)
        except (KeyError, ValueError, TypeError) as exc:
            raise ObjectStoreError(f"{url}: record {number} is not a recorded delivery ({exc!r})") from None


@functools.lru_cache(maxsize=1024)
def _partition_date(key: str) -> datetime.date | None:
    for part in key.split("/"):
        if part.startswith("date="):
            try:
                return datetime.date.fromisoformat(part.removeprefix("date="))
            except ValueError:
                return None
    return None
