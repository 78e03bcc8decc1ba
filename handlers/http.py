"""``http``: POST the CloudEvent to a URL, in binary or structured mode (CloudEvents HTTP binding).

The answer decides what happens next: 2xx is done; 429 and 5xx are temporary, retried after the
``Retry-After`` the server gave (seconds or an HTTP date) or on the route's backoff; other statuses
(4xx, an unfollowed 3xx) are permanent. Connection failures are temporary.

Every request carries ``Idempotency-Key`` (the invocation's key: event identity and route), so a
receiver can recognise a redelivery; the CloudEvent's ``id`` and ``source`` are stable too.

The aiohttp session is a shared client, ``clients.http`` in the settings (timeout, user agent).
URLs are shown in plans, logs and errors without user info or query (they may hold credentials).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, Literal

import aiohttp
import orjson
import pydantic
import yarl
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.formats.json import JSONFormat

import glue

__all__ = ["HttpClientConfig", "HttpParams", "post", "request_of", "session", "shown"]

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


class HttpParams(glue.Params):
    url: pydantic.AnyHttpUrl
    mode: Literal["binary", "structured"] = "binary"
    headers: dict[str, str] = pydantic.Field(default={}, description="Extra request headers (no secrets).")


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
        return glue.Plan(
            [glue.Call("POST", shown(url), body=_plan_body(headers, body), note=f"{params.mode} mode")],
            summary=f"POST {event.get_type()} to {shown(url)}",
        )
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
