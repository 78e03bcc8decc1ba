"""Rendering the console's pages: Jinja2 templates with autoescape on, so everything that comes from
an event (a GitLab commit message holding ``<script>``) is shown as text; times as ISO-8601 UTC."""

from __future__ import annotations

import datetime
import urllib.parse
from pathlib import Path
from typing import Any

import jinja2
import orjson
from aiohttp import web

from glue import identity

__all__ = ["CSRF", "STATIC", "WHO", "Renderer", "iso"]

STATIC = Path(__file__).parent / "static"
#: Who the request is from, and its session's CSRF token ("" for a bearer request: it needs none).
WHO = web.RequestKey("who", identity.Principal)
CSRF = web.RequestKey("csrf", str)


def iso(value: float | None) -> str:
    if value is None:
        return "-"
    return datetime.datetime.fromtimestamp(value, datetime.UTC).isoformat(timespec="seconds")


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS, default=str).decode()


def _compact(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str).decode()


class Renderer:
    """Templates to responses, with what every page shows (who is logged in, the navigation)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("glue.console"),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(iso=iso, ago=_ago, pretty=_pretty, compact=_compact)
        self.env.globals.update(prefix=prefix)

    def page(self, request: web.Request, template: str, *, status: int = 200, **context: Any) -> web.Response:
        who = request.get(WHO)
        html = self.env.get_template(template).render(
            who=who,
            csrf=request.get(CSRF, ""),
            may_act=who is not None and who.may_act,
            static=request.app.router["static"].url_for,
            here=request.path,
            **context,
        )
        return web.Response(text=html, status=status, content_type="text/html", headers=_NO_STORE)

    def error(self, request: web.Request, status: int, reason: str) -> web.Response:
        return self.page(request, "error.html", status=status, code=status, reason=reason)

    def login(
        self,
        request: web.Request,
        *,
        sso: bool,
        next_path: str,
        status: int = 200,
        problem: str | None = None,
    ) -> web.Response:
        return self.page(request, "login.html", status=status, sso=sso, problem=problem, next=next_path)

    def login_url(self, next_path: str) -> str:
        query = f"?{urllib.parse.urlencode({'next': next_path})}" if next_path else ""
        return f"{self.prefix}/login{query}"


_NO_STORE = {"Cache-Control": "no-store"}
