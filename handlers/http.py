"""``http``: POST the CloudEvent to a URL, in binary or structured mode (CloudEvents HTTP binding).

The answer decides what happens next: 2xx is done; 429 and 5xx are temporary, retried after the
``Retry-After`` the server gave (seconds or an HTTP date) or on the route's backoff; other statuses
(4xx, an unfollowed 3xx) are permanent. Connection failures are temporary.

Every request carries ``Idempotency-Key`` (the invocation's key: event identity and route), so a
receiver can recognise a redelivery; the CloudEvent's ``id`` and ``source`` are stable too.

The aiohttp session is a shared client, ``clients.http`` in the settings (timeout, user agent).
URLs are shown in plans, logs and errors without user info or query (they may hold credentials).

``auth`` authenticates the request: ``bearer`` (``Authorization: Bearer <secret>``), ``basic``
(``username`` and the secret as password) or ``hmac-sha256`` (hex HMAC-SHA256 of the exact body sent,
``sha256=<hex>`` in ``header``, default ``X-Signature-256``). The secret is named by a file or an
environment variable, read at every attempt (a rotated Secret applies at once), and never appears in
a plan, a log line or an error: a plan shows the header with ``<redacted>``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import aiohttp
import orjson
import pydantic
import yarl
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.formats.json import JSONFormat

import glue

__all__ = [
    "HttpClientConfig",
    "HttpParams",
    "OutboundAuth",
    "SecretSource",
    "post",
    "request_of",
    "session",
    "shown",
]

_FORMAT = JSONFormat()


class HttpClientConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    timeout: float = pydantic.Field(default=30.0, gt=0, description="Total seconds per request.")
    user_agent: str = pydantic.Field(default="runtime-glue", alias="userAgent")


@glue.client("http", config=HttpClientConfig, describe=lambda _: "the url in each route's params")
@contextlib.asynccontextmanager
async def session(config: Any) -> AsyncIterator[aiohttp.ClientSession]:
    """The shared session; ``config`` is the validated :class:`HttpClientConfig`."""
    if not isinstance(config, HttpClientConfig):
        config = HttpClientConfig.model_validate(config)
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=config.timeout), headers={"User-Agent": config.user_agent}
    ) as client:
        yield client


class SecretSource(glue.Params):
    """Where a credential is read: a file (a mounted Secret) or an environment variable; never a value."""

    file: Path | None = None
    env: str | None = None

    @pydantic.model_validator(mode="after")
    def _one(self) -> SecretSource:
        if (self.file is None) == (self.env is None):
            raise ValueError("give exactly one of file or env (a secret is never written in the config)")
        return self

    def read(self) -> bytes:
        if self.file is not None:
            try:
                value = self.file.read_text().strip()
            except OSError as exc:
                raise glue.PermanentError(f"auth secret: cannot read {self.file}: {exc.strerror}") from None
        else:
            assert self.env is not None
            value = os.environ.get(self.env, "")
        if not value:
            raise glue.PermanentError(f"auth secret {self.file or self.env} is empty or not set")
        return value.encode()


class OutboundAuth(glue.Params):
    """How the request proves who sent it."""

    type: Literal["bearer", "basic", "hmac-sha256"]
    secret: SecretSource
    username: str | None = pydantic.Field(default=None, description="basic: the user name.")
    header: str = pydantic.Field(default="X-Signature-256", description="hmac-sha256: the signature header.")

    @pydantic.model_validator(mode="after")
    def _username(self) -> OutboundAuth:
        if (self.type == "basic") != (self.username is not None):
            raise ValueError("username goes with type basic, and basic needs one")
        return self

    @property
    def header_name(self) -> str:
        return self.header if self.type == "hmac-sha256" else "Authorization"

    def value(self, body: bytes) -> str:
        secret = self.secret.read()
        if self.type == "bearer":
            return "Bearer " + secret.decode()
        if self.type == "basic":
            assert self.username is not None
            return "Basic " + base64.b64encode(self.username.encode() + b":" + secret).decode()
        return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class HttpParams(glue.Params):
    url: pydantic.AnyHttpUrl
    mode: Literal["binary", "structured"] = "binary"
    headers: dict[str, str] = pydantic.Field(default={}, description="Extra request headers (no secrets).")
    auth: OutboundAuth | None = pydantic.Field(
        default=None, description="bearer, basic or hmac-sha256, from a secret file or variable."
    )


def shown(url: str) -> str:
    """The URL without user info, query or fragment."""
    parsed = yarl.URL(url)
    return str(parsed.with_user(None).with_query(None).with_fragment(None))


def request_of(event: Any, params: HttpParams, idempotency_key: str) -> tuple[dict[str, str], bytes]:
    message = (
        ce_http.to_binary(event, _FORMAT)
        if params.mode == "binary"
        else ce_http.to_structured(event, _FORMAT)
    )
    headers = {**params.headers, **message.headers, "Idempotency-Key": idempotency_key}
    return headers, message.body


def _plan_body(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    try:
        shown_body: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        shown_body = body.decode("utf-8", "replace")
    return {"headers": headers, "body": shown_body}


@glue.handler("http", params=HttpParams, clients=["http"])
async def post(*, event: Any, params: HttpParams, ctx: glue.Context, **_: Any) -> glue.Plan | None:
    """POST the CloudEvent to a URL (binary or structured mode)."""
    url = str(params.url)
    headers, body = request_of(event, params, ctx.idempotency_key)
    if ctx.dry_run:
        if params.auth is not None:
            headers = {**headers, params.auth.header_name: "<redacted>"}
        return glue.Plan(
            [glue.Call("POST", shown(url), body=_plan_body(headers, body), note=f"{params.mode} mode")],
            summary=f"POST {event.get_type()} to {shown(url)}",
        )
    if params.auth is not None:
        headers = {**headers, params.auth.header_name: params.auth.value(body)}
    client: aiohttp.ClientSession = await ctx.clients.get("http")
    try:
        async with client.post(url, data=body, headers=headers, allow_redirects=False) as response:
            status, reason = response.status, response.reason or ""
            delay = glue.retry_after(response.headers.get("Retry-After"))
            await response.read()
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise glue.TemporaryError(f"POST {shown(url)}: {type(exc).__name__}") from None
    if 200 <= status < 300:
        ctx.log.debug("posted", url=shown(url), status=status)
        return None
    message = f"POST {shown(url)}: HTTP {status} {reason}".strip()
    if status == 429 or status >= 500:
        raise glue.TemporaryError(message, delay=delay)
    raise glue.PermanentError(message)
