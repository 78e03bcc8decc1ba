"""A loopback double of MinIO's ListenBucketNotification API (moto has none).

It follows MinIO's ``cmd/listen-notification-handlers.go`` and ``internal/event/event.go``:
``GET /<bucket>?events=..&prefix=..&suffix=..&ping=N``; answer 200 with ``Content-Type:
text/event-stream`` and newline-delimited JSON ``{"Records":[<one event>]}`` lines (json.Encoder, so
each ends in a newline), ``{"Records":null}`` after every ``ping`` seconds without an event; the
headers go out with the first line or keep-alive, not before; a request without valid SigV4 gets
MinIO's S3 XML error (403 ``SignatureDoesNotMatch``); an event name ``internal/event/name.go`` ParseName
does not know gets 400 ``InvalidArgument``. With ``legacy`` set it is a server from before the
``ping`` parameter (April 2023): a bare space, no newline, every 500 ms.

The signature is checked with botocore's independent SigV4 implementation, not with the minio SDK's
signer that glue uses to make it.

Each accepted connection plays the next script the test queued, a list of steps:
("line", bytes) writes a line; ("raw", bytes) writes bytes as they are (an over-long line, spaces);
("drop", bytes) is an event MinIO publishes and drops because the listener's buffer is full
(internal/pubsub Publish sends without blocking); ("wait", asyncio.Event) sends a first keep-alive (so
the headers go out), then keep-alives until the test sets it; ("partial", bytes) writes bytes and then
drops the connection; ("status", code, xml code) refuses the connection; ("end",) ends the stream
cleanly; ("hold",) sends keep-alives until the server stops.
With no script queued a connection holds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import re
import ssl
from typing import Any

from aiohttp import web
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.formats import payloads

#: The names minio's internal/event/name.go ParseName accepts (as of February 2026).
EVENT_NAMES = frozenset(
    {
        "s3:BucketCreated:*",
        "s3:BucketRemoved:*",
        "s3:ObjectAccessed:*",
        "s3:ObjectAccessed:Get",
        "s3:ObjectAccessed:GetRetention",
        "s3:ObjectAccessed:GetLegalHold",
        "s3:ObjectAccessed:Head",
        "s3:ObjectAccessed:Attributes",
        "s3:ObjectCreated:*",
        "s3:ObjectCreated:CompleteMultipartUpload",
        "s3:ObjectCreated:Copy",
        "s3:ObjectCreated:Post",
        "s3:ObjectCreated:Put",
        "s3:ObjectCreated:PutRetention",
        "s3:ObjectCreated:PutLegalHold",
        "s3:ObjectCreated:PutTagging",
        "s3:ObjectCreated:DeleteTagging",
        "s3:ObjectRemoved:*",
        "s3:ObjectRemoved:Delete",
        "s3:ObjectRemoved:DeleteMarkerCreated",
        "s3:ObjectRemoved:NoOP",
        "s3:ObjectRemoved:DeleteAllVersions",
        "s3:LifecycleDelMarkerExpiration:Delete",
        "s3:Replication:*",
        "s3:Replication:OperationFailedReplication",
        "s3:Replication:OperationCompletedReplication",
        "s3:Replication:OperationMissedThreshold",
        "s3:Replication:OperationReplicatedAfterThreshold",
        "s3:Replication:OperationNotTracked",
        "s3:ObjectRestore:*",
        "s3:ObjectRestore:Post",
        "s3:ObjectRestore:Completed",
        "s3:ObjectTransition:Failed",
        "s3:ObjectTransition:Complete",
        "s3:ObjectTransition:*",
        "s3:Scanner:ManyVersions",
        "s3:Scanner:LargeVersions",
        "s3:Scanner:BigPrefix",
    }
)
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/s3/aws4_request, "
    r"SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<sig>[0-9a-f]{64})$"
)


def _error(status: int, code: str, resource: str) -> web.Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{code}</Message><Resource>{resource}</Resource>"
        "<RequestId>17B2D3C4E5F60718</RequestId></Error>"
    )
    return web.Response(status=status, text=body, content_type="application/xml")


@dataclasses.dataclass
class Seen:
    bucket: str
    query: dict[str, list[str]]


class ListenDouble:
    def __init__(self, access_key: str, secret_key: str, region: str = "us-east-1") -> None:
        self.credentials = Credentials(access_key, secret_key)
        self.region = region
        self.scripts: collections.deque[list[tuple[Any, ...]]] = collections.deque()
        self.seen: list[Seen] = []  # connections that passed authentication
        self.attempts = 0  # every request, refused ones included
        self.connected = asyncio.Condition()
        self.open_streams = 0
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._stopping = asyncio.Event()
        self.ssl_context: ssl.SSLContext | None = None  # set before start() to serve over TLS
        #: A server from before April 2023: ``ping`` is ignored, a bare space (no newline) is sent
        #: every ``legacy_interval`` seconds (500 ms on those servers) while no event comes.
        self.legacy = False
        self.legacy_interval = 0.5
        self.dropped: list[bytes] = []  # events the "drop" steps published and never sent

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{bucket}", self._listen)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def wait_connections(self, count: int, within: float = 10.0, *, refused: bool = False) -> None:
        async with asyncio.timeout(within):
            async with self.connected:
                await self.connected.wait_for(lambda: (self.attempts if refused else len(self.seen)) >= count)

    def _signature_ok(self, request: web.Request) -> str | None:
        match = _AUTH.match(request.headers.get("Authorization", ""))
        if match is None:
            return "AccessDenied"
        if match["key"] != self.credentials.access_key:
            return "InvalidAccessKeyId"
        signed = match["signed"].split(";")
        headers = {name: request.headers.get(name, "") for name in signed}
        aws = AWSRequest(method=request.method, url=str(request.url), headers=headers)
        aws.context["timestamp"] = request.headers.get("x-amz-date", "")
        auth = S3SigV4Auth(self.credentials, "s3", match["region"])
        expected = auth.signature(auth.string_to_sign(aws, auth.canonical_request(aws)), aws)
        return None if expected == match["sig"] else "SignatureDoesNotMatch"

    async def _listen(self, request: web.Request) -> web.StreamResponse:
        bucket = request.match_info["bucket"]
        problem = self._signature_ok(request)
        async with self.connected:
            self.attempts += 1
            self.connected.notify_all()
        if problem is not None:
            return _error(403, problem, f"/{bucket}")
        query: dict[str, list[str]] = {}
        for name, value in request.query.items():
            query.setdefault(name, []).append(value)
        # event.ParseName: any name outside MinIO's list is refused before the stream opens.
        if not all(name in EVENT_NAMES for name in query.get("events", [])):
            return _error(400, "InvalidArgument", f"/{bucket}")
        ping = 0 if self.legacy else int(query.get("ping", ["0"])[0] or 0)
        script = self.scripts.popleft() if self.scripts else [("hold",)]
        async with self.connected:
            self.seen.append(Seen(bucket, query))
            self.connected.notify_all()
        if script and script[0][0] == "status":
            return _error(script[0][1], script[0][2], f"/{bucket}")
        # setEventStreamHeaders sets the headers; they go out with the first write that is flushed
        # (the first event or keep-alive), not when the stream opens.
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})

        async def write(data: bytes) -> None:
            if not response.prepared:
                await response.prepare(request)
            await response.write(data)

        async def keepalives(until: asyncio.Event) -> None:
            """Until ``until`` is set: what the server sends when it has no event, after each tick."""
            while not until.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(until.wait(), self.legacy_interval if ping == 0 else ping)
                    return
                # with ping: json.Encoder of an empty struct; without (before April 2023): a bare space
                await write(b'{"Records":null}\n' if ping else b" ")

        self.open_streams += 1
        try:
            for step in script:
                if step[0] == "line":
                    await write(step[1] + b"\n")
                elif step[0] == "raw":  # bytes as they are (no newline added)
                    await write(step[1])
                elif step[0] == "drop":  # published while this listener's buffer was full: never sent
                    self.dropped.append(step[1])
                elif step[0] == "wait":  # hold the line until the test sets the event (keep-alives meanwhile)
                    if not response.prepared:
                        await write(b'{"Records":null}\n' if ping else b" ")
                    await keepalives(step[1])
                elif step[0] == "partial":
                    await write(step[1])
                    await asyncio.sleep(0.05)
                    assert request.transport is not None
                    request.transport.abort()  # a dropped connection: no chunked terminator
                    return response
                elif step[0] == "end":
                    if not response.prepared:
                        await response.prepare(request)
                    await response.write_eof()
                    return response
                elif step[0] == "hold":
                    await keepalives(self._stopping)
                    return response
            if not response.prepared:
                await response.prepare(request)
            await response.write_eof()
            return response
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        finally:
            self.open_streams -= 1


def record(
    bucket: str,
    key: str,
    *,
    event_name: str = "s3:ObjectCreated:Put",
    escaped: bool = False,
    sequencer: str = "17B2D3C4E5F60718",
    size: int = 4096,
    request_id: str | None = "17B2D3C4E5F60718",
    event_time: str = "2025-11-28T00:01:02.345Z",
) -> dict[str, Any]:
    """One S3 event record in the documented schema (formats.md section 3), of an unversioned bucket."""
    return payloads.minio_record(
        key,
        request_id=request_id,
        event_time=event_time,
        bucket=bucket,
        event_name=event_name,
        escaped=escaped,
        version_id=None,
        sequencer=sequencer,
        size=size,
    )
