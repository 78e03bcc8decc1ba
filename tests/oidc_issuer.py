"""A local OpenID Connect issuer, the Keycloak stand-in of the single sign-on tests: an aiohttp server
on a loopback port with its own RSA key (made per run), Keycloak's paths (``/realms/NAME/...``), the
discovery document, the JWKS, an authorization endpoint that sends the browser straight back with a
code for the user in ``login_as`` (or with ``deny`` as the error), and a token endpoint that checks
the client's authentication, the redirect URI and the PKCE verifier, and takes each code once.

Tests mint bearer JWTs with :meth:`Issuer.token` and rotate keys with :meth:`Issuer.rotate`.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import secrets
import time
from typing import Any

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import RSAKey
from yarl import URL

CLIENT_ID = "glue"
CLIENT_SECRET = "a-client-secret-for-tests"


def new_key(kid: str) -> RSAKey:
    """A fresh RSA signing key named ``kid``."""
    return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"})


@dataclasses.dataclass
class Grant:
    """What an authorization code stands for until it is exchanged."""

    challenge: str
    redirect_uri: str
    nonce: str
    user: dict[str, Any]


class Issuer:
    """The issuer; ``auth_method`` is how a confidential client authenticates at the token endpoint
    (``client_secret`` None: a public client, PKCE only)."""

    def __init__(
        self,
        *,
        realm: str = "test",
        client_secret: str | None = CLIENT_SECRET,
        auth_method: str = "client_secret_basic",
    ) -> None:
        self.realm = realm
        self.client_secret = client_secret
        self.auth_method = auth_method
        self.key = new_key("key-1")
        #: The keys the JWKS publishes.
        self.published = [self.key]
        self.jwks_fetches = 0
        #: Keys of the discovery document to replace (a wrong issuer, say).
        self.discovery: dict[str, Any] = {}
        #: The claims of the user whom the authorization endpoint logs in.
        self.login_as: dict[str, Any] = user("alice", groups=["glue-operators"])
        #: Claims only the access token carries (Keycloak's realm_access).
        self.access_only: set[str] = set()
        #: An error the authorization endpoint answers instead (access_denied).
        self.deny: str | None = None
        #: How the client authenticated at each token request: basic, post or public.
        self.client_auth: list[str] = []
        self.codes: dict[str, Grant] = {}
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The issuer identifier, as Keycloak forms it."""
        return f"http://127.0.0.1:{self.port}/realms/{self.realm}"

    def settings(self, **extra: Any) -> dict[str, Any]:
        """The ``admin.oidc`` settings for this issuer."""
        config: dict[str, Any] = {
            "issuer": self.url,
            "clientId": CLIENT_ID,
            "operators": ["glue-operators"],
            "viewers": ["glue-viewers"],
        }
        if self.client_secret is not None:
            config["clientSecret"] = {"value": self.client_secret}
        return {**config, **extra}

    def token(self, *, key: RSAKey | None = None, header: dict[str, Any] | None = None, **claims: Any) -> str:
        """A JWT signed by ``key`` (the current one): an access token for the admin API by default;
        ``claims`` add to or replace the defaults, None removes one."""
        key = key or self.key
        now = int(time.time())
        body = {
            "iss": self.url,
            "aud": [CLIENT_ID, "account"],
            "azp": CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "sub": "f1c9a4b2",
            **user("alice", groups=["glue-operators"]),
            **claims,
        }
        body = {name: value for name, value in body.items() if value is not None}
        return jwt.encode({"alg": "RS256", "kid": key.kid, **(header or {})}, body, key)

    def rotate(self) -> RSAKey:
        """Switch to a new signing key; the JWKS publishes it alone from now on."""
        self.key = new_key(f"key-{len(self.published) + 1}-{secrets.token_hex(2)}")
        self.published = [self.key]
        return self.key

    # -- the server

    async def start(self) -> None:
        app = web.Application()
        base = f"/realms/{self.realm}"
        app.router.add_get(f"{base}/.well-known/openid-configuration", self._discovery)
        app.router.add_get(f"{base}/protocol/openid-connect/certs", self._jwks)
        app.router.add_get(f"{base}/protocol/openid-connect/auth", self._authorize)
        app.router.add_post(f"{base}/protocol/openid-connect/token", self._token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Stop answering (the port stays this issuer's: ``start`` again serves on it)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _discovery(self, _: web.Request) -> web.Response:
        endpoints = f"{self.url}/protocol/openid-connect"
        return web.json_response(
            {
                "issuer": self.url,
                "authorization_endpoint": f"{endpoints}/auth",
                "token_endpoint": f"{endpoints}/token",
                "jwks_uri": f"{endpoints}/certs",
                "response_types_supported": ["code"],
                "id_token_signing_alg_values_supported": ["RS256", "ES256", "HS256"],
                "code_challenge_methods_supported": ["plain", "S256"],
                "token_endpoint_auth_methods_supported": [self.auth_method],
                **self.discovery,
            }
        )

    async def _jwks(self, _: web.Request) -> web.Response:
        self.jwks_fetches += 1
        return web.json_response({"keys": [key.as_dict(private=False) for key in self.published]})

    async def _authorize(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        if query.get("client_id") != CLIENT_ID or query.get("response_type") != "code":
            return web.Response(status=400, text="unknown client or response type")
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            return web.Response(status=400, text="PKCE with S256 is required")
        if "openid" not in query.get("scope", "").split():
            return web.Response(status=400, text="not an OpenID Connect request")
        back = URL(query["redirect_uri"])
        if self.deny is not None:
            back = back.update_query(
                error=self.deny, error_description="The user denied it", state=query["state"]
            )
            raise web.HTTPFound(back)
        code = secrets.token_urlsafe(16)
        self.codes[code] = Grant(
            query["code_challenge"], query["redirect_uri"], query["nonce"], self.login_as
        )
        raise web.HTTPFound(back.update_query(code=code, state=query["state"]))

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if not self._client_authenticated(request, form):
            return web.json_response({"error": "invalid_client"}, status=401)
        grant = self.codes.pop(str(form.get("code")), None)
        if grant is None:
            return _invalid_grant("Code not valid")
        if form.get("redirect_uri") != grant.redirect_uri:
            return _invalid_grant("Incorrect redirect_uri")
        verifier = str(form.get("code_verifier", "")).encode()
        if (
            base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=").decode()
            != grant.challenge
        ):
            return _invalid_grant("PKCE verification failed: Invalid code verifier")
        in_id_token = {name: value for name, value in grant.user.items() if name not in self.access_only}
        return web.json_response(
            {
                "access_token": self.token(**grant.user),
                "id_token": self.token(aud=CLIENT_ID, nonce=grant.nonce, **in_id_token),
                "token_type": "Bearer",
                "expires_in": 300,
            }
        )

    def _client_authenticated(self, request: web.Request, form: Any) -> bool:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme == "Basic":
            self.client_auth.append("basic")
            given = base64.b64decode(credentials).decode().split(":", 1)
            return self.auth_method == "client_secret_basic" and given == [CLIENT_ID, self.client_secret]
        if "client_secret" in form:
            self.client_auth.append("post")
            return self.auth_method == "client_secret_post" and (
                form.get("client_id"),
                form.get("client_secret"),
            ) == (CLIENT_ID, self.client_secret)
        self.client_auth.append("public")
        return self.client_secret is None and form.get("client_id") == CLIENT_ID


def user(name: str, *, groups: list[str] | None = None, **claims: Any) -> dict[str, Any]:
    """A user's claims as Keycloak's token carries them."""
    found: dict[str, Any] = {"preferred_username": name, "email": f"{name}@example.org", **claims}
    if groups is not None:
        found["groups"] = groups
    return found


def _invalid_grant(description: str) -> web.Response:
    return web.json_response({"error": "invalid_grant", "error_description": description}, status=400)
