"""The console's login through the provider (authorization code with PKCE), end to end over real
sockets: a browser-like client follows /ui/login/sso -> the issuer's /authorize -> /ui/login/sso/callback,
and the login hands the right user and return path to on_login; a wrong state, a replayed code, a
code of another login (the verifier does not match), the provider's refusal and a user without a
role are refused with the reason."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from glue import identity, oidc, settings
from tests.oidc_issuer import Issuer, user

COOKIE = "glue_sso_"


class Console:
    """A small application with the login mounted under /ui, as the console mounts it; its on_login
    answers 200 naming who logged in and where they return."""

    def __init__(self, verifier: oidc.Oidc) -> None:
        self.verifier = verifier
        self.logins: list[tuple[identity.Principal, str]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def on_login(self, _: web.Request, principal: identity.Principal, next_path: str) -> web.Response:
        self.logins.append((principal, next_path))
        return web.Response(text=f"{principal.name} ({principal.role}) -> {next_path}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ui"

    async def start(self) -> None:
        ui = web.Application()
        ui.add_routes(self.verifier.routes(self.on_login))
        root = web.Application()
        root.add_subapp("/ui", ui)
        self._runner = web.AppRunner(root, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()
        await self.verifier.close()


@pytest.fixture
def console_for(issuer: Issuer) -> Callable[..., Console]:
    return lambda **extra: Console(oidc.Oidc(settings.Oidc.model_validate(issuer.settings(**extra))))


@pytest.fixture
async def console(console_for: Callable[..., Console]) -> AsyncIterator[Console]:
    started = console_for()
    await started.start()
    try:
        yield started
    finally:
        await started.stop()


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


async def answer(response: aiohttp.ClientResponse) -> tuple[int, str]:
    return response.status, (await response.text()).strip()


async def to_callback(browser: aiohttp.ClientSession, console: Console, query: str = "") -> URL:
    """Start a login and let the issuer answer: the callback URL it sends the browser to (not yet
    followed)."""
    async with browser.get(f"{console.url}/login/sso{query}", allow_redirects=False) as started:
        assert started.status == 302
        authorize = started.headers["Location"]
    async with browser.get(authorize, allow_redirects=False) as authorized:
        assert authorized.status == 302
        return URL(authorized.headers["Location"])


def sso_cookies(browser: aiohttp.ClientSession) -> dict[str, str]:
    return {cookie.key: cookie.value for cookie in browser.cookie_jar if cookie.key.startswith(COOKIE)}


async def test_a_login_follows_the_provider_and_hands_the_user_to_on_login(
    issuer: Issuer, console: Console, browser: aiohttp.ClientSession
) -> None:
    async with browser.get(f"{console.url}/login/sso?next=/ui/events/42", allow_redirects=False) as started:
        assert started.status == 302
        cookie = started.cookies[next(iter(sso_cookies(browser)))]
        assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["path"] == "/ui/login/sso"
        sent = URL(started.headers["Location"])
    assert str(sent.with_query(None)) == f"{issuer.url}/protocol/openid-connect/auth"
    assert sent.query["redirect_uri"] == f"{console.url}/login/sso/callback"
    assert sent.query["scope"] == "openid profile email"
    assert sent.query["code_challenge_method"] == "S256" and len(sent.query["code_challenge"]) == 43
    assert sent.query["state"] and sent.query["nonce"]
    async with browser.get(sent) as finished:  # the issuer redirects back; the client follows
        assert await answer(finished) == (200, "alice (operator) -> /ui/events/42")
    assert console.logins == [(identity.Principal("alice", "operator"), "/ui/events/42")]
    assert issuer.client_auth == ["basic"]
    assert sso_cookies(browser) == {}  # the login's cookie is good for one callback


async def test_a_viewer_logs_in_with_post_auth_and_an_outside_next_returns_to_the_root(
    issuer: Issuer, console_for: Callable[..., Console], browser: aiohttp.ClientSession
) -> None:
    issuer.auth_method = "client_secret_post"
    issuer.login_as = user("bob", groups=["glue-viewers"])
    console = console_for()
    await console.start()
    try:
        async with browser.get(f"{console.url}/login/sso?next=//evil.example/") as finished:
            assert await answer(finished) == (200, "bob (viewer) -> /ui/")
        assert issuer.client_auth == ["post"]
    finally:
        await console.stop()


async def test_a_public_client_logs_in_with_pkce_alone_and_realm_roles_from_the_access_token(
    console_for: Callable[..., Console], browser: aiohttp.ClientSession
) -> None:
    public = Issuer(client_secret=None)
    await public.start()
    public.login_as = user("dora", realm_access={"roles": ["glue-admin"]})
    public.access_only = {"realm_access"}  # Keycloak's default: realm roles in the access token only
    console = Console(
        oidc.Oidc(
            settings.Oidc.model_validate(
                public.settings(rolesClaim="realm_access.roles", operators=["glue-admin"])
            )
        )
    )
    await console.start()
    try:
        async with browser.get(f"{console.url}/login/sso") as finished:
            assert await answer(finished) == (200, "dora (operator) -> /ui/")
        assert public.client_auth == ["public"]
    finally:
        await console.stop()
        await public.stop()


async def test_a_wrong_state_is_refused(console: Console, browser: aiohttp.ClientSession) -> None:
    callback = await to_callback(browser, console)
    forged = callback.update_query(state="x" * 43)
    async with browser.get(forged) as response:
        status, text = await answer(response)
    assert status == 401
    assert text.startswith("single sign-on refused: its state matches no login started in this browser")
    assert console.logins == []


async def test_a_replayed_code_is_refused(
    issuer: Issuer, console: Console, browser: aiohttp.ClientSession
) -> None:
    callback = await to_callback(browser, console)
    cookies = sso_cookies(browser)
    async with browser.get(callback) as response:
        assert response.status == 200
    # the same callback again, the login's cookie put back as an attacker holding both would
    browser.cookie_jar.update_cookies(cookies, URL(console.url))
    async with browser.get(callback) as response:
        assert await answer(response) == (
            401,
            "single sign-on refused: the identity provider did not take the code: "
            "invalid_grant Code not valid",
        )
    assert len(console.logins) == 1


async def test_a_code_of_another_login_fails_the_verifier(
    console: Console, browser: aiohttp.ClientSession
) -> None:
    mine = await to_callback(browser, console)
    theirs = await to_callback(browser, console)  # another login; its code is bound to its challenge
    injected = mine.update_query(code=theirs.query["code"])
    async with browser.get(injected) as response:
        status, text = await answer(response)
    assert status == 401 and "PKCE verification failed" in text
    assert console.logins == []


async def test_the_providers_refusal_and_a_user_without_a_role_are_refused(
    issuer: Issuer, console: Console, browser: aiohttp.ClientSession
) -> None:
    issuer.deny = "access_denied"
    async with browser.get(f"{console.url}/login/sso") as response:
        assert await answer(response) == (
            401,
            "single sign-on refused: the identity provider refused it: access_denied The user denied it",
        )
    assert sso_cookies(browser) == {}
    issuer.deny = None
    issuer.login_as = user("carol", groups=["staff"])
    async with browser.get(f"{console.url}/login/sso") as response:
        assert await answer(response) == (403, "carol holds none of the groups values that grant a role")
    assert console.logins == []


async def test_an_unreachable_issuer_is_a_503_with_the_reason(
    issuer: Issuer, console: Console, browser: aiohttp.ClientSession
) -> None:
    await issuer.stop()
    async with browser.get(f"{console.url}/login/sso") as response:
        status, text = await answer(response)
    assert status == 503 and text.startswith("the identity provider cannot be asked now: ")


@pytest.mark.parametrize("trusted", [False, True])
async def test_the_callback_url_follows_forwarded_headers_only_when_trusted(
    console_for: Callable[..., Console], browser: aiohttp.ClientSession, trusted: bool
) -> None:
    console = console_for(trustForwardedHeaders=trusted)
    await console.start()
    try:
        proxy = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "glue.example.org"}
        async with browser.get(f"{console.url}/login/sso", headers=proxy, allow_redirects=False) as started:
            query = URL(started.headers["Location"]).query
            sent, state = query["redirect_uri"], query["state"]
            [cookie] = started.cookies.values()
        if trusted:
            assert sent == "https://glue.example.org/ui/login/sso/callback" and cookie["secure"]
        else:
            assert sent == f"{console.url}/login/sso/callback" and not cookie["secure"]
        # a state that only starts like the login's (its cookie is found), in any characters: refused
        tampered = {"state": state + "é", "code": "x"}
        async with browser.get(f"{console.url}/login/sso/callback", params=tampered) as response:
            assert response.status == 401
    finally:
        await console.stop()
