"""The operator console: the journal, each route's explanation and the queues to act on, in a browser.

An aiohttp application mounted at :data:`PREFIX` on the admin API's listener (never the webhook port),
with the admin API's principals (glue.identity): a login form takes a token and starts a signed
session cookie (HttpOnly, SameSite=Strict, Secure over https, Path=/ui); pages also take
``Authorization: Bearer``. Viewers read everything and are shown no action form (a post is 403);
operators act, through glue.operations (the audit trail records the principal's name). Every action
form carries the session's CSRF token; a bearer request needs none. A wrong token is answered 401 and
logged as the admin API logs it (never the token), and counts toward the listener's lockout.

Pages are rendered on the server (Jinja2, autoescaped); the one script keeps the events page live
(server-sent events) and everything reads with JavaScript off. The Content-Security-Policy allows
scripts, styles and connections only from the console itself.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from glue import identity, journal, listener, operations, routing
from glue import settings as settings_mod
from glue.console import pages, session, views

__all__ = ["PREFIX", "Console"]

log = structlog.get_logger(__name__)

#: Where the console is mounted on the admin listener.
PREFIX = "/ui"

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self';"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
#: Paths (under the prefix) served without a login.
_OPEN = ("/login", "/static/")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Console:
    """The console's application (:attr:`app`), to mount at :data:`PREFIX` on the admin listener."""

    def __init__(
        self,
        authenticator: identity.Authenticator,
        store: journal.Journal,
        router: routing.Router,
        *,
        config: settings_mod.Admin,
        tracing: settings_mod.Tracing,
        lockout: settings_mod.Lockout,
        settle_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.authenticator = authenticator
        self.clock = clock
        key = config.session_key.resolve()[0] if config.session_key is not None else None
        self.sessions = session.Sessions(key, minutes=config.session_minutes, path=PREFIX)
        self.lockout = listener.Lockout(lockout)
        self.render = pages.Renderer(PREFIX)
        self.app = web.Application(middlewares=[self._guard])
        views.Views(
            self.render, store, router, tracing=tracing, clock=clock, settle_seconds=settle_seconds
        ).add_to(self.app)
        self.app.router.add_get("/login", self._login_page)
        self.app.router.add_post("/login", self._login)
        self.app.router.add_post("/logout", self._logout)
        self.app.router.add_static("/static/", pages.STATIC, name="static", append_version=True)
        if authenticator.sso is not None:
            self.app.add_routes(authenticator.sso.routes(self.logged_in))

    # -- who is asking

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await self._checked(request, handler)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = self.render.error(request, exc.status, exc.text or exc.reason)
        except operations.OperationError as exc:
            response = self.render.error(request, exc.status, str(exc))
        except journal.JournalUnavailable as exc:
            response = self.render.error(request, 503, f"journal unavailable: {exc}")
        if not response.prepared:
            response.headers.update(_HEADERS)
        return response

    async def _checked(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        inner = request.path.removeprefix(PREFIX)
        if inner.startswith(_OPEN):
            return await handler(request)
        locked = self._locked_out(request)
        if locked is not None:
            return locked
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        csrf = ""  # a bearer request needs none
        if "Authorization" in request.headers:
            try:
                who = await self.authenticator.check(given.strip() if scheme.lower() == "bearer" else "")
            except identity.Refused as exc:
                reason = "wrong bearer token" if exc.reason == "missing bearer token" else exc.reason
                self._refused(request, exc, reason)
                return self.render.error(request, exc.status, exc.answer)
        else:
            found = self.sessions.read(request)
            if found is None:
                if request.method in ("GET", "HEAD"):
                    raise web.HTTPSeeOther(self.render.login_url(request.path_qs))
                return self.render.error(request, 401, "log in first")
            who, csrf = found.principal, found.csrf
        if request.method not in ("GET", "HEAD"):
            if not who.may_act and inner != "/logout":
                log.warning("admin API refused", reason="viewer may not act", who=who.name, path=request.path)
                return self.render.error(request, 403, f"{who.name} may only read (role viewer)")
            if csrf:
                form = await request.post()
                offered = form.get("csrf")
                if not isinstance(offered, str) or not session.Session(who, csrf).csrf_ok(offered):
                    log.warning("admin API refused", reason="CSRF token missing or wrong", path=request.path)
                    return self.render.error(request, 403, "the form is stale: reload the page and try again")
        request[pages.WHO] = who
        request[pages.CSRF] = csrf
        return await handler(request)

    def _locked_out(self, request: web.Request) -> web.Response | None:
        """429 while the request's address is locked out (the listener's lockout, after wrong tokens)."""
        wait = self.lockout.retry_after(request.remote)
        if wait is None:
            return None
        answer = self.render.error(request, 429, "too many wrong tokens from this address: try later")
        answer.headers["Retry-After"] = str(int(wait) + 1)
        return answer

    def _refused(self, request: web.Request, refused: identity.Refused, reason: str) -> None:
        """Log a refused credential as the admin API does (never the token); a wrong one (401) counts
        toward the lockout."""
        log.warning("admin API refused", reason=reason, path=request.path, peer=request.remote)
        if refused.status == 401:
            self.lockout.failed(request.remote, "console")

    # -- logging in and out

    async def _login_page(self, request: web.Request) -> web.StreamResponse:
        next_path = request.query.get("next", "")
        return self.render.login(request, sso=self.authenticator.sso is not None, next_path=next_path)

    async def _login(self, request: web.Request) -> web.StreamResponse:
        locked = self._locked_out(request)
        if locked is not None:
            return locked
        form = await request.post()
        token, next_path = form.get("token"), form.get("next")
        next_path = next_path if isinstance(next_path, str) else ""
        try:
            who = await self.authenticator.check(token.strip() if isinstance(token, str) else "")
        except identity.Refused as exc:
            self._refused(request, exc, f"{exc.reason} at login")
            if exc.status != 401:  # a JWT of the issuer without a role (403), or the issuer down (503)
                return self.render.error(request, exc.status, exc.answer)
            return self.render.login(
                request,
                sso=self.authenticator.sso is not None,
                next_path=next_path,
                status=401,
                problem="That token is not valid.",
            )
        log.info("console login", who=who.name, role=who.role, peer=request.remote)
        return await self.logged_in(request, who, next_path)

    async def logged_in(
        self, request: web.Request, who: identity.Principal, next_path: str
    ) -> web.StreamResponse:
        """Start ``who``'s session and go to ``next_path`` (a console path; anything else: the overview).
        The token form and the single sign-on callback both end here."""
        target = next_path if next_path.startswith(PREFIX + "/") and "//" not in next_path else PREFIX + "/"
        answer = web.Response(status=303, headers={"Location": target, **_HEADERS})
        self.sessions.start(answer, request, who)
        return answer

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        answer = web.Response(status=303, headers={"Location": self.render.login_url("")})
        self.sessions.end(answer)
        return answer
