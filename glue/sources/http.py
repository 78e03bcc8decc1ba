"""Webhook intake on aiohttp: one POST route per configured endpoint, plus /healthz, /readyz, /metrics.

Answers: 202 with the event ids once journaled (no ids for an empty CloudEvents batch); 200 with the
same ids when every event of the delivery was journaled before; 400 malformed; 401 missing or wrong
credentials; 413 over the endpoint's size limit; 415 content type the format does not take; 503 with
Retry-After when the journal cannot be written or the backlog is over its bound. Nothing is journaled
on any 4xx.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson
import structlog
from aiohttp import web

from glue import events, formats, intake, journal, metrics, observability
from glue import settings as settings_mod

__all__ = ["HttpSource", "ReadinessCheck", "Unauthorized"]

log = structlog.get_logger(__name__)

#: A readiness check: returns None when ready, else the reason it is not.
ReadinessCheck = Callable[[], Awaitable[str | None]]

_SECRET_REFRESH = 10.0  # seconds between re-reads of mounted secret files (rotation without restart)


class Unauthorized(Exception):
    pass


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

    def check(self, headers: dict[str, str], body: bytes) -> None:
        kind = self.config.type
        if kind == "none" or self.secrets is None:
            return
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
        elif kind == "gitlab-signature":
            self._standard_webhooks(headers, body, accepted)

    def _standard_webhooks(self, headers: dict[str, str], body: bytes, accepted: Sequence[bytes]) -> None:
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
        if abs(time.time() - sent_at) > self.config.tolerance_seconds:
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

    @staticmethod
    def _require(ok: bool) -> None:
        if not ok:
            raise Unauthorized("missing or wrong credentials")


def _answer(status: int, **body: object) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


class _EndpointHandler:
    def __init__(self, endpoint: settings_mod.Endpoint, intake_: intake.Intake) -> None:
        self.endpoint = endpoint
        self.name = endpoint.name
        self.intake = intake_
        self.auth = _Authenticator.build(endpoint.auth)
        self.options = formats.Options.of(endpoint)
        extra = [endpoint.auth.signature_header.lower()] if endpoint.auth.type == "hmac-sha256" else []
        self.scrub = events.SENSITIVE_HEADERS.union(extra)  # credentials never reach the journal
        self._deliveries = metrics.Children(metrics.DELIVERIES, self.name)

    def _outcome(self, outcome: str, started: float, **fields: object) -> None:
        self._deliveries[outcome].inc()
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

    async def handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        headers = {name.lower(): value for name, value in request.headers.items()}  # names: lower case
        needs_body = self.auth.needs_body()
        if not needs_body:
            try:
                self.auth.check(headers, b"")
            except Unauthorized as exc:
                self._outcome("unauthorized", started, reason=str(exc), **_peer(request))
                return _answer(401, error=str(exc))
        body = await self._read_body(request)
        if body is None:
            self._outcome("too_large", started)
            return _answer(413, error=f"body larger than {self.endpoint.max_body_bytes} bytes")
        if needs_body:
            try:
                self.auth.check(headers, body)
            except Unauthorized as exc:
                self._outcome("unauthorized", started, reason=str(exc), **_peer(request))
                return _answer(401, error=str(exc))
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
            self._outcome("unavailable", started, reason=str(exc))
            response = _answer(503, error="journal unavailable, retry later")
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


async def _anonymous(_: web.Request, response: web.StreamResponse) -> None:
    """Answer as ``runtime-glue``: aiohttp would name its own and Python's versions in ``Server``."""
    response.headers["Server"] = "runtime-glue"


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
        self.app.on_response_prepare.append(_anonymous)
        for endpoint in settings.endpoints:
            self.app.router.add_post(endpoint.path, _EndpointHandler(endpoint, intake_).handle)
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
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=server.shutdown_timeout)
        await self._runner.setup()
        site = web.TCPSite(self._runner, server.host, server.port)
        await site.start()
        sockets = self._runner.addresses
        self.port = sockets[0][1] if sockets else server.port
        log.info(
            "listening", host=server.host, port=self.port, endpoints=[e.path for e in self.settings.endpoints]
        )

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to the shutdown timeout), close."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
