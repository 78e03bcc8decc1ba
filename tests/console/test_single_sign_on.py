"""The console's side of single sign-on: a login flow (here one that knows its user at once, standing
in for the OpenID Connect flow) ends in the same session as the token form, and returns only to a
console path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

import glue
from glue import console, identity, journal, routing, settings

ALICE = identity.Principal("alice@example.org", "viewer")


class InstantSignOn:
    """A SingleSignOn whose ``/login/sso`` logs Alice in without asking anyone."""

    def routes(self, on_login: identity.OnLogin) -> list[web.RouteDef]:
        async def start(request: web.Request) -> web.StreamResponse:
            return await on_login(request, ALICE, request.query.get("next", ""))

        return [web.get("/login/sso", start)]


@pytest.fixture
async def console_url(tmp_path: Path) -> AsyncIterator[str]:
    """A console with the single sign-on above, on a loopback port over a fresh journal."""
    admin = settings.Admin(tokens={"ops": settings.SecretRef(value=SecretStr("ops-token"))}, port=0)
    authenticator = identity.Authenticator(admin)
    authenticator.sso = InstantSignOn()
    store = journal.create(settings.Journal(path=tmp_path / "journal.db"))
    await store.open()
    router = routing.load([], glue.Registry(), source="routes")
    pages = console.Console(
        authenticator,
        store,
        router,
        config=admin,
        tracing=settings.Tracing(),
        lockout=settings.Lockout(),
        settle_seconds=60.0,
    )
    root = web.Application()
    root.add_subapp(console.PREFIX, pages.app)
    runner = web.AppRunner(root)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
        await store.close()


async def test_a_single_sign_on_login_starts_a_session_and_returns_to_a_console_path(
    console_url: str,
) -> None:
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.get(f"{console_url}/ui/login") as response:
            assert 'href="/ui/login/sso"' in await response.text()
        async with http.get(f"{console_url}/ui/login/sso?next=/ui/audit", allow_redirects=False) as response:
            assert (response.status, response.headers["Location"]) == (303, "/ui/audit")
        async with http.get(f"{console_url}/ui/audit") as response:
            assert response.status == 200
            assert "alice@example.org (viewer)" in await response.text()
        for elsewhere in ("https://evil.example/ui/", "//evil.example/", "/v1/routes"):
            async with http.get(
                f"{console_url}/ui/login/sso", params={"next": elsewhere}, allow_redirects=False
            ) as response:
                assert response.headers["Location"] == "/ui/", elsewhere
