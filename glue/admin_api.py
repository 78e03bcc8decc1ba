"""The admin API: the operators' commands (``glue routes``, ``pause``, ``resume``, ``approve``, ``deny``,
``audit``, ``dlq``) over HTTP, JSON in and out, on a port of its own (``admin.port``), off unless configured.

Every request carries ``Authorization: Bearer <token>``; the principal it stands for (glue.identity:
the token's name in ``admin.tokens``, or the user a JWT of the ``admin.oidc`` issuer names) is who
acts in the audit trail. A missing or wrong token is answered 401 and logged with the reason (never
the token); a viewer's request to act, or a user whose claims grant no role, is answered 403; a JWT
while the issuer cannot be asked, 503. The webhook
port never serves these paths: this is a separate listener, bound to ``admin.host``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp import web

from glue import identity, journal, oidc, operations, rails, routing
from glue import settings as settings_mod

__all__ = ["AdminApi"]

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request, operations.Actor], Awaitable[Any]]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


class AdminApi:
    """The admin API's listener over the daemon's journal and its routes."""

    name = "admin-api"

    def __init__(
        self,
        config: settings_mod.Admin,
        store: journal.Journal,
        router: routing.Router,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.router = router
        self.clock = clock
        self.authenticator = identity.Authenticator(config, oidc.Oidc(config.oidc) if config.oidc else None)
        self.app = web.Application(client_max_size=64 << 10, middlewares=[_json_errors])
        for method, path, handler in (
            ("GET", "/v1/routes", self._routes),
            ("POST", "/v1/routes/{name}/pause", self._pause),
            ("POST", "/v1/routes/{name}/resume", self._resume),
            ("POST", "/v1/pause", self._pause),
            ("POST", "/v1/resume", self._resume),
            ("POST", "/v1/invocations/{id}/approve", self._approve),
            ("POST", "/v1/invocations/{id}/deny", self._deny),
            ("GET", "/v1/audit", self._audit),
            ("GET", "/v1/invocations/{id}", self._invocation),
            ("GET", "/v1/dlq", self._dlq_list),
            ("POST", "/v1/dlq/retry", self._dlq_retry),
            ("POST", "/v1/dlq/purge", self._dlq_purge),
        ):
            self.app.router.add_route(method, path, self._guarded(handler))
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    # -- authentication

    async def principal(self, request: web.Request) -> identity.Principal:
        """Who the request's bearer token stands for, or identity.Refused saying why not."""
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            given = ""
        return await self.authenticator.check(given.strip())

    def _guarded(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def run(request: web.Request) -> web.StreamResponse:
            try:
                who = await self.principal(request)
            except identity.Refused as exc:
                reason = exc.reason
                if reason == "missing bearer token" and "Authorization" in request.headers:
                    reason = "wrong bearer token"  # a header of another scheme, or an empty one
                log.warning("admin API refused", reason=reason, path=request.path, peer=request.remote)
                return _json({"error": exc.answer}, status=exc.status)
            if request.method != "GET" and not who.may_act:
                log.warning("admin API refused", reason="viewer may not act", who=who.name, path=request.path)
                return _json({"error": f"{who.name} may only read (role viewer)"}, status=403)
            try:
                return _json(await handler(request, operations.Actor(who.name, self.clock)))
            except operations.OperationError as exc:
                return _json({"error": str(exc)}, status=exc.status)
            except _BadRequest as exc:
                return _json({"error": str(exc)}, status=400)
            except journal.JournalUnavailable as exc:
                return _json({"error": f"journal unavailable: {exc}"}, status=503)

        return run

    # -- operations

    async def _routes(self, _: web.Request, actor: operations.Actor) -> Any:
        return await operations.routes_list(self.store, self.router, actor.clock())

    async def _pause(self, request: web.Request, actor: operations.Actor) -> Any:
        body = await _body(request)
        seconds = body.get("for")
        if seconds is not None:
            try:
                seconds = rails.parse_duration(seconds)
            except ValueError as exc:
                raise _BadRequest(f"for: {exc}") from None
        reason = body.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise _BadRequest("reason: expected a string")
        route = request.match_info.get("name", rails.GLOBAL)
        return await operations.pause(self.store, self.router, route, actor, reason=reason, seconds=seconds)

    async def _resume(self, request: web.Request, actor: operations.Actor) -> Any:
        await _body(request)
        route = request.match_info.get("name", rails.GLOBAL)
        return await operations.resume(self.store, self.router, route, actor)

    async def _decide(self, request: web.Request, actor: operations.Actor, yes: bool) -> Any:
        body = await _body(request)
        invocation = _invocation_id(request.match_info["id"])
        note = body.get("note")
        if note is not None and not isinstance(note, str):
            raise _BadRequest("note: expected a string")
        return await operations.approve(self.store, invocation, actor, yes=yes, note=note)

    async def _approve(self, request: web.Request, actor: operations.Actor) -> Any:
        return await self._decide(request, actor, True)

    async def _deny(self, request: web.Request, actor: operations.Actor) -> Any:
        return await self._decide(request, actor, False)

    async def _audit(self, request: web.Request, actor: operations.Actor) -> Any:
        since = _number(request.query, "since", float)
        return await operations.audit_entries(self.store, since=since, route=request.query.get("route"))

    async def _invocation(self, request: web.Request, _: operations.Actor) -> Any:
        number = _invocation_id(request.match_info["id"])
        item = await self.store.invocation(number)
        if item is None:
            raise operations.OperationError(f"no invocation {number}", status=404)
        result = await operations.invocation_detail(self.store, item)
        stored = await self.store.get(item.event_seq)
        if stored is not None:
            result.update(await operations.with_delivery(self.store, stored))
        return result

    async def _dlq_list(self, request: web.Request, _: operations.Actor) -> Any:
        query = request.query
        ids = [_invocation_id(part) for part in query.get("ids", "").split(",") if part]
        limit = _number(query, "limit", int)
        if limit is not None and limit < 1:
            raise _BadRequest("limit: expected a positive number")
        selected = await operations.dead_letters(
            self.store, ids=ids, route=query.get("route"), since=_number(query, "since", float), limit=limit
        )
        return await operations.dead_letter_rows(self.store, selected)

    async def _dlq_change(
        self, request: web.Request, actor: operations.Actor, action: operations.DlqAction
    ) -> Any:
        body = await _body(request)
        ids = body.get("ids") or []
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise _BadRequest("ids: expected a list of invocation ids")
        route, since, everything = body.get("route"), body.get("since"), body.get("all", False)
        if route is not None and not isinstance(route, str):
            raise _BadRequest("route: expected a string")
        if since is not None and (isinstance(since, bool) or not isinstance(since, int | float)):
            raise _BadRequest("since: expected unix seconds")
        if not isinstance(everything, bool):
            raise _BadRequest("all: expected true or false")
        result = await operations.dlq_change(
            self.store,
            actor,
            action,
            ids=[_invocation_id(str(i)) for i in ids],
            route=route,
            since=since,
            everything=everything,
        )
        verb = operations.DLQ_DONE[action]
        log.warning(
            f"dead letters {verb}",
            operator=actor.who,
            invocations=result[verb],
            routes=result["routes"],
            filter={"route": route, "since": since, "all": everything, "ids": ids or None},
        )
        return result

    async def _dlq_retry(self, request: web.Request, actor: operations.Actor) -> Any:
        return await self._dlq_change(request, actor, "retry")

    async def _dlq_purge(self, request: web.Request, actor: operations.Actor) -> Any:
        return await self._dlq_change(request, actor, "purge")

    # -- lifecycle

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.config.host, self.config.port).start()
        sockets = self._runner.addresses
        self.port = sockets[0][1] if sockets else self.config.port
        names = self.authenticator.token_names
        sso = self.config.oidc.issuer if self.config.oidc else None
        log.info("admin API listening", host=self.config.host, port=self.port, tokens=names, sso=sso)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.authenticator.close()


class _BadRequest(Exception):
    """A request body or query the API cannot take (400)."""


def _invocation_id(text: str) -> int:
    """An invocation id from a path: a positive number that fits the journal's 64-bit ids."""
    try:
        number = int(text)
    except ValueError:
        raise _BadRequest("the invocation id must be a number") from None
    if not 0 < number < 1 << 63:
        raise _BadRequest(f"no invocation can have id {text}: ids are positive 64-bit numbers")
    return number


def _number(query: Any, name: str, kind: type[int] | type[float]) -> Any:
    """A number from the query string, None when absent."""
    if name not in query:
        return None
    try:
        return kind(query[name])
    except ValueError:
        raise _BadRequest(
            f"{name}: expected a number ({'unix seconds' if name == 'since' else 'a count'})"
        ) from None


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _BadRequest("the body must be a JSON object")
    return data


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """aiohttp's own refusals (no such path, a method the path does not take, a body over the limit)
    answered as every other error of the API: JSON with the reason, and the headers they carry
    (``Allow`` of a 405)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        answer = _json({"error": exc.reason}, status=exc.status)
        if "Allow" in exc.headers:
            answer.headers["Allow"] = exc.headers["Allow"]
        return answer
