"""Webhook intake on aiohttp: one POST route per configured endpoint, plus /healthz, /readyz, /metrics.

Answers: 202 with the event ids once journaled (no ids for an empty CloudEvents batch); 200 with the
same ids when every event of the delivery was journaled before; 400 malformed, or headers over the
server's limits; 401 missing or wrong credentials, a replayed signature, no client certificate; 403 a
client certificate the endpoint does not list; 408 a body slower than ``server.bodyTimeout``; 413 over
the endpoint's size limit; 415 content type the format does not take; 429 with Retry-After from an
address locked out after repeated 401s; 503 with Retry-After when the journal cannot be written or the
backlog is over its bound. Nothing is journaled on any 4xx. The defences themselves are in
glue/listener.py.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import hashlib
import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson
import structlog
from aiohttp import http_exceptions, web

from glue import events, formats, intake, journal, listener, metrics, observability
from glue import settings as settings_mod

__all__ = ["Forbidden", "HttpSource", "ReadinessCheck", "Replayed", "Unauthorized"]

log = structlog.get_logger(__name__)

#: A readiness check: returns None when ready, else the reason it is not.
ReadinessCheck = Callable[[], Awaitable[str | None]]

_SECRET_REFRESH = 10.0  # seconds between re-reads of mounted secret files (rotation without restart)


class Unauthorized(Exception):
    pass


class Replayed(Unauthorized):
    """A valid signature already accepted within the tolerance."""


class Forbidden(Exception):
    """A verified client certificate whose names the endpoint does not list."""


class _Secrets:
    """The accepted values of one endpoint's secret, re-read now and then so a rotated Secret applies."""

    def __init__(self, ref: settings_mod.SecretRef) -> None:
        self._ref = ref
        self._values = ref.resolve()
        self._read_at = time.monotonic()

    @property
    def values(self) -> tuple[bytes, ...]:
        if time.monotonic() - self._read_at > _SECRET_REFRESH:
            self._read_at = time.monotonic()
            try:
                self._values = self._ref.resolve()
            except ValueError as exc:  # keep the last good values; say so without the value
                log.warning("secret reload failed", reason=str(exc))
        return self._values


def _matches(candidate: bytes, accepted: Sequence[bytes]) -> bool:
    """Constant-time comparison against every accepted value (no early exit on the first match)."""
    result = False
    for value in accepted:
        result |= hmac.compare_digest(candidate, value)
    return result


@dataclasses.dataclass
class _Authenticator:
    config: settings_mod.Auth
    secrets: _Secrets | None

    @classmethod
    def build(cls, config: settings_mod.Auth) -> _Authenticator:
        return cls(config, _Secrets(config.secret) if config.secret is not None else None)

    def needs_body(self) -> bool:
        return self.config.type in ("gitlab-signature", "hmac-sha256")

    def replay_cache(self) -> listener.ReplayCache | None:
        """Signed endpoints remember what they accepted for as long as a signature is valid: the
        timestamp's tolerance (gitlab-signature); hmac-sha256 signs no time, so the same span from receipt."""
        if self.needs_body() and self.config.refuse_replays:
            return listener.ReplayCache(float(self.config.tolerance_seconds))
        return None

    def check(self, headers: dict[str, str], body: bytes) -> tuple[bytes, float] | None:
        """Raise Unauthorized with the reason. For a signed request return what identifies its signature
        (the current key's HMAC of what was signed) and how long it could be accepted again, for the
        replay check."""
        kind = self.config.type
        if kind == "none" or self.secrets is None:
            return None
        accepted = self.secrets.values
        if kind == "header":
            self._require(_matches(headers.get("authorization", "").encode(), accepted))
        elif kind == "bearer":
            scheme, _, token = headers.get("authorization", "").partition(" ")
            self._require(scheme.lower() == "bearer" and _matches(token.strip().encode(), accepted))
        elif kind == "gitlab-token":
            self._require(_matches(headers.get("x-gitlab-token", "").encode(), accepted))
        elif kind == "hmac-sha256":
            given = headers.get(self.config.signature_header.lower(), "")
            given = given.removeprefix("sha256=").strip().lower()
            digests = [hmac.new(key, body, hashlib.sha256).hexdigest().encode() for key in accepted]
            self._require(_matches(given.encode(), digests))
            return digests[0], float(self.config.tolerance_seconds)
        elif kind == "gitlab-signature":
            return self._standard_webhooks(headers, body, accepted)
        return None

    def _standard_webhooks(
        self, headers: dict[str, str], body: bytes, accepted: Sequence[bytes]
    ) -> tuple[bytes, float]:
        """Standard Webhooks: ``v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>``.

        The key is the base64 part of the ``whsec_<base64>`` signing token."""
        msg_id = headers.get("webhook-id", "")
        stamp = headers.get("webhook-timestamp", "")
        signatures = headers.get("webhook-signature", "")
        if not (msg_id and stamp and signatures):
            raise Unauthorized("missing webhook-id, webhook-timestamp or webhook-signature")
        try:
            sent_at = int(stamp)
        except ValueError:
            raise Unauthorized("webhook-timestamp is not an integer") from None
        now = time.time()
        if abs(now - sent_at) > self.config.tolerance_seconds:
            raise Unauthorized("webhook-timestamp outside the tolerance")
        signed = msg_id.encode() + b"." + stamp.encode() + b"." + body
        expected = []
        for secret in accepted:
            try:
                key = base64.b64decode(secret.removeprefix(b"whsec_"), validate=True)
            except binascii.Error:
                key = secret
            expected.append(base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()))
        given = [part.partition(",")[2].encode() for part in signatures.split() if part.startswith("v1,")]
        result = False
        for candidate in given:
            result |= _matches(candidate, expected)
        self._require(result)
        # Valid until the timestamp leaves the tolerance: longer than the tolerance if it is ahead of us.
        return expected[0], sent_at + self.config.tolerance_seconds - now + 1.0

    @staticmethod
    def _require(ok: bool) -> None:
        if not ok:
            raise Unauthorized("missing or wrong credentials")


def _answer(status: int, **body: object) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _refuse(status: int, reason: str, retry_after: float | None = None, close: bool = False) -> web.Response:
    response = _answer(status, error=reason)
    if retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))  # not before it ends
    if close:
        response.force_close()
    return response


class _Guards:
    """What every endpoint of one listener shares: the lockout, and who counts as the sender."""

    def __init__(self, server: settings_mod.Server) -> None:
        self.lockout = listener.Lockout(server.lockout)
        self.proxies = list(server.trusted_proxies)
        self.body_timeout = server.body_timeout

    def sender(self, request: web.Request) -> str | None:
        if not self.proxies:
            return request.remote
        return listener.client_address(request.remote, request.headers.get("X-Forwarded-For"), self.proxies)


class _EndpointHandler:
    def __init__(self, endpoint: settings_mod.Endpoint, intake_: intake.Intake, guards: _Guards) -> None:
        self.endpoint = endpoint
        self.name = endpoint.name
        self.intake = intake_
        self.guards = guards
        self.auth = _Authenticator.build(endpoint.auth)
        # Lockout applies where there is something to guess: a secret or a client certificate.
        self.guarded = endpoint.auth.type != "none" or endpoint.client_cert is not None
        self.replays = self.auth.replay_cache()
        self.client_names = (
            frozenset(endpoint.client_cert.names) if endpoint.client_cert is not None else None
        )
        self.options = formats.Options.of(endpoint)
        extra = [endpoint.auth.signature_header.lower()] if endpoint.auth.type == "hmac-sha256" else []
        self.scrub = events.SENSITIVE_HEADERS.union(extra)  # credentials never reach the journal
        self._deliveries = metrics.Children(metrics.DELIVERIES, self.name)

    def _outcome(self, outcome: str, started: float, **fields: object) -> None:
        self._deliveries[outcome].inc()
        if outcome == "locked_out":  # the lockout was logged once when it began; not every answer
            return
        if observability.INFO_ENABLED:  # else the line's fields are not even built
            log.info(
                "delivery",
                endpoint=self.name,
                outcome=outcome,
                ms=round((time.perf_counter() - started) * 1000, 2),
                **fields,
            )

    async def _read_body(self, request: web.Request) -> bytes | None:
        limit = self.endpoint.max_body_bytes
        if request.content_length is not None:
            # aiohttp reads exactly Content-Length bytes (and the app's client_max_size bounds it).
            return await request.read() if request.content_length <= limit else None
        chunks: list[bytes] = []  # chunked transfer: count as it streams in
        size = 0
        async for chunk in request.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def _unauthorized(self, request: web.Request, started: float, exc: Unauthorized) -> web.Response:
        self._outcome(
            "replayed" if isinstance(exc, Replayed) else "unauthorized",
            started,
            reason=str(exc),
            **_peer(request),
        )
        self.guards.lockout.failed(self.guards.sender(request), self.name)
        return _answer(401, error=str(exc))

    def _client_cert(self, request: web.Request) -> None:
        """mTLS: a verified client certificate, and one of the endpoint's names if it lists any."""
        names = listener.client_cert_names(request.transport)
        if names is None:
            raise Unauthorized("client certificate required")
        if self.client_names and self.client_names.isdisjoint(names):
            shown = ", ".join(names) or "(no names)"
            raise Forbidden(f"client certificate {shown} is not allowed on this endpoint")

    def _locked_out(self, request: web.Request, started: float) -> web.Response | None:
        left = self.guards.lockout.retry_after(self.guards.sender(request))
        if left is None:
            return None
        self._outcome("locked_out", started)
        return _refuse(429, "too many failed authentications from this address, retry later", left)

    async def handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        if self.guarded and self.guards.lockout.active:
            refused = self._locked_out(request, started)
            if refused is not None:
                return refused
        headers = {name.lower(): value for name, value in request.headers.items()}  # names: lower case
        needs_body = self.auth.needs_body()
        if not needs_body or self.client_names is not None:
            try:
                if self.client_names is not None:
                    self._client_cert(request)
                if not needs_body:
                    self.auth.check(headers, b"")
            except Unauthorized as exc:
                return self._unauthorized(request, started, exc)
            except Forbidden as exc:
                self._outcome("forbidden", started, reason=str(exc), **_peer(request))
                return _answer(403, error=str(exc))
        try:
            if request.content.is_eof():  # all of it came with the head: no timer (the usual case)
                body = await self._read_body(request)
            else:
                async with asyncio.timeout(self.guards.body_timeout):
                    body = await self._read_body(request)
        except TimeoutError:
            self._outcome("too_slow", started, **_peer(request))
            return _refuse(408, f"body not received within {self.guards.body_timeout:g} s", close=True)
        if body is None:
            self._outcome("too_large", started)
            return _answer(413, error=f"body larger than {self.endpoint.max_body_bytes} bytes")
        replay_key = None
        if needs_body:
            try:
                signed = self.auth.check(headers, body)
                if signed is not None and self.replays is not None:
                    replay_key = signed[0]
                    if not self.replays.claim(replay_key, signed[1]):
                        raise Replayed("signature already seen within the tolerance (a replay)")
            except Unauthorized as exc:
                return self._unauthorized(request, started, exc)
        delivery = events.Delivery(
            transport="http",
            endpoint=self.name,
            format=self.endpoint.format,
            headers=events.scrub_headers(headers, self.scrub),
            body=body,
        )
        try:
            appended = await self.intake.accept(delivery, self.options)
        except formats.DecodeError as exc:
            self._outcome("unsupported" if exc.status == 415 else "rejected", started, reason=exc.reason)
            return _answer(exc.status, error=exc.reason)
        except (intake.Overloaded, journal.JournalUnavailable) as exc:
            if replay_key is not None and self.replays is not None:
                self.replays.release(replay_key)  # not taken: the sender's retry of these bytes is welcome
            self._outcome("unavailable", started, reason=str(exc))
            busy = isinstance(exc, intake.Overloaded)
            why = "backlog over its bound (server.maxBacklog)" if busy else "journal unavailable"
            response = _answer(503, error=f"{why}, retry later")
            response.headers["Retry-After"] = "5"
            return response
        ids = [item.id for item in appended]
        fresh = any(item.new for item in appended) or not appended  # none: an empty CloudEvents batch
        self._outcome("accepted" if fresh else "duplicate", started, ids=ids)
        return _answer(202 if fresh else 200, ids=ids)


def _peer(request: web.Request) -> dict[str, str | None]:
    """Who sent a request: the connection's address, and X-Forwarded-For when a proxy set it."""
    peer: dict[str, str | None] = {"remote": request.remote}
    forwarded = request.headers.get("X-Forwarded-For")
    if forwarded:
        peer["forwarded_for"] = forwarded
    return peer


def _bad_request_in_one_line(record: logging.LogRecord) -> bool:
    """aiohttp logs every request it cannot parse (a header over the limits, garbage) with a traceback:
    a hostile sender could fill the logs with them. Keep one line with the reason, at warning."""
    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, http_exceptions.HttpProcessingError):
        record.msg = "malformed request refused: %s (%s)"
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else None
        record.args = (peer, exc.message.splitlines()[0])
        record.exc_info = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True


def _answer_headers(max_requests: int) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """Answer as ``runtime-glue`` (aiohttp would name its own and Python's versions in ``Server``), and
    close a keep-alive connection with its ``max_requests``-th answer."""

    async def prepare(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Server"] = "runtime-glue"
        # aiohttp counts the requests parsed on a connection; it offers no public way to bound them.
        # The hook runs after aiohttp wrote its Connection header, hence both lines.
        if getattr(request.protocol, "_request_count", 0) >= max_requests:
            response.force_close()
            response.headers["Connection"] = "close"

    return prepare


class HttpSource:
    """The aiohttp server: webhook endpoints and the operational routes."""

    name = "http"

    def __init__(
        self,
        settings: settings_mod.Settings,
        intake_: intake.Intake,
        journal_: journal.Journal,
        readiness: Sequence[ReadinessCheck] = (),
        *,
        clients: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self.settings = settings
        self.intake = intake_
        self.journal = journal_
        self.readiness = list(readiness)
        self.clients = clients
        self.app = web.Application(
            client_max_size=max([1 << 20, *(e.max_body_bytes for e in settings.endpoints)])
        )
        self.app.on_response_prepare.append(_answer_headers(settings.server.max_requests_per_connection))
        guards = _Guards(settings.server)
        for endpoint in settings.endpoints:
            self.app.router.add_post(endpoint.path, _EndpointHandler(endpoint, intake_, guards).handle)
        tls = settings.server.tls
        self.tls = (
            listener.ServerTls(tls, any(e.client_cert is not None for e in settings.endpoints))
            if tls is not None
            else None
        )
        self._watch: asyncio.Task[None] | None = None
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self.app.router.add_get("/metrics", self._metrics)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        problems: list[str] = []
        try:
            await self.journal.ping()
        except journal.JournalUnavailable as exc:
            problems.append(f"journal: {exc}")
        for check in self.readiness:
            reason = await check()
            if reason:
                problems.append(reason)
        # The clients' health is detail: a client that is down does not stop intake (its invocations
        # wait), so it does not make the daemon unready.
        detail = {
            "ready": not problems,
            "problems": problems,
            "clients": dict(self.clients()) if self.clients is not None else {},
        }
        return web.Response(
            body=orjson.dumps(detail, option=orjson.OPT_APPEND_NEWLINE),
            status=503 if problems else 200,
            content_type="application/json",
        )

    async def _metrics(self, _: web.Request) -> web.Response:
        body, content_type = metrics.text()
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    async def start(self) -> None:
        server = self.settings.server
        self._runner = web.AppRunner(
            self.app,
            access_log=None,
            shutdown_timeout=server.shutdown_timeout,
            max_line_size=server.max_header_bytes,
            max_field_size=server.max_header_bytes,
            max_headers=server.max_headers,
            # aiohttp arms this timer when a connection opens and after each answer, and closes the
            # connection if no whole request head came by then: idle keep-alive and slow headers alike.
            keepalive_timeout=server.idle_timeout,
            # After an early answer (401, 413, 408) the rest of the body is read and dropped for at most
            # this long, so the sender sees the answer rather than a reset.
            lingering_time=min(10.0, server.body_timeout),
        )
        server_log = logging.getLogger("aiohttp.server")
        if _bad_request_in_one_line not in server_log.filters:
            server_log.addFilter(_bad_request_in_one_line)
        await self._runner.setup()
        context = self.tls.context if self.tls is not None else None
        site = web.TCPSite(self._runner, server.host, server.port, ssl_context=context)
        await site.start()
        sockets = self._runner.addresses
        self.port = sockets[0][1] if sockets else server.port
        if self.tls is not None:
            self._watch = asyncio.create_task(self.tls.watch(), name="listener-tls-reload")
        log.info(
            "listening",
            host=server.host,
            port=self.port,
            tls=self.tls is not None,
            endpoints=[e.path for e in self.settings.endpoints],
        )

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to the shutdown timeout), close."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
