"""Single sign-on through OpenID Connect (``admin.oidc``): the issuer's bearer JWTs for the admin API,
and the authorization-code flow with PKCE for the console's login.

The issuer is found by discovery (``{issuer}/.well-known/openid-configuration``, whose ``issuer``
must be the configured one) and its keys by its JWKS, cached. A token signed by a key the cache does
not hold makes the cache refetch, which is how a key rotation at the provider reaches us; refetches
(and retries after a failed fetch) happen at most once per ``refetch_seconds`` however many such
tokens arrive, so a stream of forged key ids cannot turn us against the issuer. The cache is also
refreshed after an hour, so a key the provider withdrew stops being accepted.

Only asymmetric signatures the issuer offers are accepted (RS256, ES256, ...): never ``none``, never
an HMAC (``HS256`` would let anyone holding the client secret mint tokens), and the algorithm is the
one of the key found by ``kid``. ``iss``, ``aud``, ``exp`` (with ``nbf`` and ``iat``, within a small
leeway for clock skew) are checked by joserfc.

When the issuer cannot be asked (down, or its discovery document is wrong) a JWT that needs it is
answered 503 with the reason, not 401: the token may well be good, so a client should retry later
rather than drop its token or send the user through a login that fails too, and the monitoring sees
an outage rather than a wave of bad logins. Static tokens never need the issuer.

The login keeps its state, PKCE verifier, nonce, return path and callback URL in a cookie encrypted
and authenticated with a key of this process (JWE, ``dir`` + ``A256GCM``): HttpOnly, ``SameSite=Lax``
(the provider's redirect back is a top-level cross-site GET, which Strict would strip), scoped to the
login paths, ten minutes long and named after the state so that logins in two tabs do not clash.
A login must therefore finish on the replica that started it (session affinity, as for the console's
sessions).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import math
import secrets
import ssl
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, cast

import aiohttp
import structlog
from aiohttp import web
from joserfc import errors, jwe, jws, jwt
from joserfc.jwk import KeySet, OctKey
from joserfc.util import urlsafe_b64encode
from yarl import URL

from glue import identity
from glue import settings as settings_mod

__all__ = ["ASYMMETRIC", "Oidc"]

log = structlog.get_logger(__name__)

#: The signature algorithms a token may use: public-key ones only.
ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
#: Seconds of clock skew allowed on exp, nbf and iat.
LEEWAY = 30
#: The JWKS is refreshed on first use after this many seconds.
MAX_AGE = 3600.0
#: How long a login may take from /login/sso to its callback.
FLOW_SECONDS = 600
#: How the reasons of refused bearer JWTs and refused logins begin.
BEARER = "bearer JWT refused"
LOGIN = "single sign-on refused"
_COOKIE_PREFIX = "glue_sso_"
_COOKIE_JWE = jwe.JWERegistry(algorithms=["dir", "A256GCM"])
_HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)


class _ProviderError(Exception):
    """The issuer cannot be asked, or answered something we cannot use."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Provider:
    """What discovery tells of the issuer."""

    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    algorithms: frozenset[str]
    auth_methods: tuple[str, ...]

    @classmethod
    def parse(cls, document: dict[str, Any], issuer: str) -> _Provider:
        if document.get("issuer") != issuer:
            raise _ProviderError(
                f"the discovery document names issuer {document.get('issuer')!r}, not {issuer!r}"
            )
        endpoints = {}
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = document.get(name)
            if not isinstance(value, str) or not value.startswith(("https://", "http://")):
                raise _ProviderError(f"the discovery document has no usable {name}")
            endpoints[name] = value
        offered = document.get("id_token_signing_alg_values_supported")
        algorithms = ASYMMETRIC & set(offered) if isinstance(offered, list) else ASYMMETRIC
        if not algorithms:
            raise _ProviderError(f"the issuer signs with none of {', '.join(sorted(ASYMMETRIC))}")
        challenges = document.get("code_challenge_methods_supported")
        if isinstance(challenges, list) and "S256" not in challenges:
            raise _ProviderError("the issuer does not offer PKCE with S256")
        methods = document.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        return cls(**endpoints, algorithms=frozenset(algorithms), auth_methods=tuple(methods))


class Oidc:
    """An OpenID Connect issuer as glue's identity provider (implements identity.TokenVerifier)."""

    def __init__(
        self,
        config: settings_mod.Oidc,
        *,
        refetch_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._secret = config.client_secret.resolve()[0].decode() if config.client_secret else None
        self._refetch_seconds = refetch_seconds
        self._clock = clock
        self._lock = asyncio.Lock()
        self._http: aiohttp.ClientSession | None = None
        self._provider: _Provider | None = None
        self._keys: KeySet | None = None
        self._keys_at = -math.inf  # when the cached keys were fetched
        self._asked_at = -math.inf  # when the issuer was last asked, answered or not
        self._failure = ""
        self._cookie_key = OctKey.generate_key(256)

    # -- bearer JWTs

    async def principal(self, token: str) -> identity.Principal:
        """Who a bearer JWT of the issuer names (for the admin API), or identity.Refused."""
        claims = await self._verify(token, audience=self.config.api_audience)
        return self._principal(claims, claims)

    async def _verify(self, token: str, *, audience: str | None, refusal: str = BEARER) -> dict[str, Any]:
        """The claims of a JWT signed by the issuer, for ``audience`` (None: any), still valid; else
        identity.Refused (401), its reason starting with ``refusal``."""
        try:
            header = jws.extract_compact(token.encode()).headers()
        except (errors.JoseError, ValueError):
            raise _refused(refusal, "not a JWT") from None
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in ASYMMETRIC:
            raise _refused(
                refusal, f"algorithm {algorithm!r} is not accepted: only the issuer's public-key signatures"
            )
        keys, provider = await self._key_set(kid)
        if algorithm not in provider.algorithms:
            raise _refused(refusal, f"algorithm {algorithm} is not one the issuer signs with")
        try:
            key = keys.get_by_kid(kid)
        except errors.InvalidKeyIdError:
            raise _refused(refusal, f"the issuer's JWKS holds no key {kid!r}") from None
        try:
            claims = jwt.decode(token, key, algorithms=[algorithm]).claims
        except errors.BadSignatureError:
            raise _refused(refusal, f"the signature does not verify with the issuer's key {kid!r}") from None
        except (errors.JoseError, ValueError) as exc:
            raise _refused(refusal, f"cannot verify it: {exc}") from None
        registry = jwt.JWTClaimsRegistry(
            leeway=LEEWAY, iss={"essential": True, "value": self.config.issuer}, exp={"essential": True}
        )
        if audience is not None:
            registry.options["aud"] = {"essential": True, "value": audience}
        try:
            registry.validate(claims)
        except errors.ExpiredTokenError:
            raise _refused(refusal, "it has expired") from None
        except errors.MissingClaimError as exc:
            raise _refused(refusal, f"it lacks the claim {exc.claim}") from None
        except errors.InvalidClaimError as exc:
            wrong = {
                "iss": f"it is not from the issuer {self.config.issuer}",
                "aud": f"its audience (aud) does not include {audience}",
            }
            raise _refused(refusal, wrong.get(exc.claim, f"{exc.claim}: {exc.description}")) from None
        return claims

    def _principal(
        self, claims: dict[str, Any], roles_from: dict[str, Any], refusal: str = BEARER
    ) -> identity.Principal:
        """The user ``claims`` name, with the role the ``roles_from`` claims map to."""
        config = self.config
        name = claims.get(config.username_claim)
        if not isinstance(name, str) or not name:
            raise _refused(refusal, f"it has no {config.username_claim} claim naming the user")
        held = set(_claim_values(roles_from, config.roles_claim))
        if held & set(config.operators):
            return identity.Principal(name, "operator")
        if held & set(config.viewers):
            return identity.Principal(name, "viewer")
        raise identity.Refused(403, f"{name} holds none of the {config.roles_claim} values that grant a role")

    # -- the issuer's keys

    async def _key_set(self, kid: str | None) -> tuple[KeySet, _Provider]:
        """The issuer's keys, refetched when ``kid`` is not among them (at most once per
        ``refetch_seconds``) or when they are old; identity.Refused (503) when the issuer cannot be
        asked and the cache cannot answer."""
        if not self._fresh_with(kid):
            async with self._lock:
                now = self._clock()
                if not self._fresh_with(kid) and now - self._asked_at >= self._refetch_seconds:
                    self._asked_at = now
                    try:
                        self._provider = self._provider or await self._discover()
                        self._keys = KeySet.import_key_set(
                            cast(Any, await self._get_json(self._provider.jwks_uri))
                        )
                        self._keys_at, self._failure = now, ""
                    except (_ProviderError, errors.JoseError, KeyError, TypeError) as exc:
                        self._failure = str(exc)
                        log.warning("identity provider unusable", issuer=self.config.issuer, reason=str(exc))
        # a failed fetch leaves the cache answering for the keys it holds, stale or not
        if self._keys is None or self._provider is None or (self._failure and not self._holds(kid)):
            raise _unreachable(self._failure)
        return self._keys, self._provider

    def _holds(self, kid: str | None) -> bool:
        keys = list(self._keys or ())
        return any(key.kid == kid for key in keys) or (kid is None and len(keys) == 1)

    def _fresh_with(self, kid: str | None) -> bool:
        """Whether the cached keys are young and hold ``kid``."""
        return self._clock() - self._keys_at < MAX_AGE and self._holds(kid)

    async def _discover(self) -> _Provider:
        issuer = self.config.issuer
        document = await self._get_json(f"{issuer.rstrip('/')}/.well-known/openid-configuration")
        return _Provider.parse(document, issuer)

    async def _provider_now(self) -> _Provider:
        """The discovery document, fetched on first use (identity.Refused, 503, when it cannot be)."""
        async with self._lock:
            if self._provider is None:
                try:
                    self._provider = await self._discover()
                except _ProviderError as exc:
                    log.warning("identity provider unusable", issuer=self.config.issuer, reason=str(exc))
                    raise _unreachable(str(exc)) from None
            return self._provider

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            context = ssl.create_default_context(
                cafile=str(self.config.ca_file) if self.config.ca_file else None
            )
            self._http = aiohttp.ClientSession(
                timeout=_HTTP_TIMEOUT, connector=aiohttp.TCPConnector(ssl=context)
            )
        return self._http

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with self._client().get(url) as response:
                if response.status != 200:
                    raise _ProviderError(f"{url} answered HTTP {response.status}")
                document = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise _ProviderError(f"{url}: {exc or type(exc).__name__}") from None
        if not isinstance(document, dict):
            raise _ProviderError(f"{url} did not answer a JSON object")
        return document

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- the browser login

    def routes(self, on_login: identity.OnLogin) -> list[web.RouteDef]:
        """``GET /login/sso`` sends the browser to the provider; ``GET /login/sso/callback`` takes it
        back, exchanges the code and hands the user to ``on_login``."""

        async def start(request: web.Request) -> web.StreamResponse:
            try:
                provider = await self._provider_now()
            except identity.Refused as exc:
                return _refusal(request, exc)
            state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
            flow: dict[str, Any] = {
                "state": state,
                "nonce": nonce,
                "verifier": verifier,
                "next": _next_path(request),
                "redirect": self._redirect_uri(request),
                "exp": int(time.time()) + FLOW_SECONDS,
            }
            challenge = urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode()
            target = URL(provider.authorization_endpoint).update_query(
                response_type="code",
                client_id=self.config.client_id,
                redirect_uri=flow["redirect"],
                scope=" ".join(self.config.scopes),
                state=state,
                nonce=nonce,
                code_challenge=challenge,
                code_challenge_method="S256",
            )
            response = web.Response(
                status=302, headers={"Location": str(target), "Cache-Control": "no-store"}
            )
            sealed = jwt.encode(
                {"alg": "dir", "enc": "A256GCM"}, flow, self._cookie_key, registry=_COOKIE_JWE
            )
            response.set_cookie(
                _cookie_name(state),
                sealed,
                max_age=FLOW_SECONDS,
                path=request.path,
                httponly=True,
                samesite="Lax",
                secure=flow["redirect"].startswith("https:"),
            )
            return response

        async def callback(request: web.Request) -> web.StreamResponse:
            try:
                principal, flow = await self._finish(request)
            except identity.Refused as exc:
                return _refusal(request, exc)
            log.info("single sign-on login", who=principal.name, role=principal.role)
            response = await on_login(request, principal, flow["next"])
            _forget_flow(request, response)
            return response

        return [web.get("/login/sso", start), web.get("/login/sso/callback", callback)]

    async def _finish(self, request: web.Request) -> tuple[identity.Principal, dict[str, Any]]:
        """The user the provider's redirect back vouches for, and the login it finishes."""
        query = request.query
        if "error" in query:
            said = " ".join(filter(None, (query["error"], query.get("error_description"))))
            raise _refused_login(f"the identity provider refused it: {_printable(said)}")
        flow = self._open_flow(request.cookies.get(_cookie_name(query.get("state", ""))))
        if flow is None or not _same(flow["state"], query.get("state", "")):
            raise _refused_login(
                "its state matches no login started in this browser in the last ten minutes; start again"
            )
        if not query.get("code"):
            raise _refused_login("the identity provider sent no code")
        tokens = await self._exchange(await self._provider_now(), query["code"], flow)
        id_token, access_token = tokens.get("id_token"), tokens.get("access_token")
        if not isinstance(id_token, str):
            raise _refused_login("the identity provider returned no ID token")
        claims = await self._verify(
            id_token, audience=self.config.client_id, refusal=f"{LOGIN}: the ID token"
        )
        if claims.get("azp", self.config.client_id) != self.config.client_id:
            raise _refused_login("the ID token was issued to another client (azp)")
        if not _same(str(claims.get("nonce", "")), flow["nonce"]):
            raise _refused_login("the ID token's nonce is not this login's")
        # Keycloak puts realm roles (realm_access.roles) in the access token only.
        roles_from = claims
        if _claim_values(claims, self.config.roles_claim) == [] and isinstance(access_token, str):
            roles_from = await self._verify(access_token, audience=None, refusal=f"{LOGIN}: the access token")
        return self._principal(claims, roles_from, f"{LOGIN}: the ID token"), flow

    async def _exchange(self, provider: _Provider, code: str, flow: dict[str, Any]) -> dict[str, Any]:
        """The provider's tokens for ``code`` (with the PKCE verifier, and the client's secret as
        discovery says it takes it)."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": flow["redirect"],
            "code_verifier": flow["verifier"],
        }
        headers: dict[str, str] = {}
        client_id = self.config.client_id
        if self._secret is None:
            form["client_id"] = client_id
        elif "client_secret_basic" in provider.auth_methods:
            # RFC 6749 2.3.1: both form-encoded before the Basic scheme
            pair = f"{urllib.parse.quote(client_id, safe='')}:{urllib.parse.quote(self._secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        elif "client_secret_post" in provider.auth_methods:
            form |= {"client_id": client_id, "client_secret": self._secret}
        else:
            raise identity.Refused(503, "the issuer takes neither client_secret_basic nor client_secret_post")
        try:
            async with self._client().post(provider.token_endpoint, data=form, headers=headers) as response:
                answer = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise _unreachable(f"its token endpoint: {exc or type(exc).__name__}") from None
        if not isinstance(answer, dict):
            raise identity.Refused(503, "the identity provider's token endpoint did not answer a JSON object")
        if status in (400, 401):
            said = " ".join(str(answer.get(key, "")) for key in ("error", "error_description")).strip()
            raise _refused_login(f"the identity provider did not take the code: {_printable(said)}")
        if status != 200:
            raise identity.Refused(503, f"the identity provider's token endpoint answered HTTP {status}")
        return answer

    def _open_flow(self, sealed: str | None) -> dict[str, Any] | None:
        """The login a cookie of ours holds, None when it is absent, forged or expired."""
        if not sealed:
            return None
        try:
            flow = jwt.decode(sealed, self._cookie_key, registry=_COOKIE_JWE).claims
            jwt.JWTClaimsRegistry(exp={"essential": True}).validate(flow)
        except (errors.JoseError, ValueError):
            return None
        return flow

    def _redirect_uri(self, request: web.Request) -> str:
        """Where the provider sends the browser back: the configured URL, or this login's own
        callback path on the host the browser asked for."""
        if self.config.redirect_url is not None:
            return self.config.redirect_url
        scheme, host = request.scheme, request.host
        if self.config.trust_forwarded_headers:
            scheme = request.headers.get("X-Forwarded-Proto", scheme).split(",")[0].strip()
            host = request.headers.get("X-Forwarded-Host", host).split(",")[0].strip()
        return f"{scheme}://{host}{request.path}/callback"


def _unreachable(why: str) -> identity.Refused:
    return identity.Refused(503, f"the identity provider cannot be asked now: {why}")


def _refused(refusal: str, why: str) -> identity.Refused:
    return identity.Refused(401, f"{refusal}: {why}")


def _refused_login(why: str) -> identity.Refused:
    return _refused(LOGIN, why)


def _refusal(request: web.Request, refused: identity.Refused) -> web.Response:
    """A login's refusal as the browser sees it: the status and the reason in plain text."""
    log.warning("single sign-on refused", reason=refused.reason, peer=request.remote)
    response = web.Response(status=refused.status, text=refused.answer + "\n")
    response.headers["Cache-Control"] = "no-store"
    _forget_flow(request, response)
    return response


def _forget_flow(request: web.Request, response: web.StreamResponse) -> None:
    """A login's cookie is good for one callback."""
    name = _cookie_name(request.query.get("state", ""))
    if name in request.cookies:
        response.del_cookie(name, path=request.path.removesuffix("/callback"))


def _same(given: str, expected: str) -> bool:
    """Constant-time equality of two strings, any characters (compare_digest takes only ASCII str)."""
    return hmac.compare_digest(given.encode(), expected.encode())


def _cookie_name(state: str) -> str:
    return _COOKIE_PREFIX + "".join(c for c in state[:16] if c.isalnum() or c in "-_")


def _next_path(request: web.Request) -> str:
    """Where the console returns after the login: a path on this host (``?next=``), by default the
    application's root (``/ui/`` when mounted at /ui)."""
    wanted = request.query.get("next", "")
    if wanted.startswith("/") and not wanted.startswith("//") and "\\" not in wanted:
        return wanted
    return request.path.removesuffix("login/sso")


def _claim_values(claims: dict[str, Any], path: str) -> list[str]:
    """The strings at a claim, or a dotted path into nested claims (``realm_access.roles``)."""
    value: Any = claims
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, str):
        return [value]
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _printable(text: str) -> str:
    """What a provider said, safe for a plain-text answer and a log line."""
    return "".join(c for c in text if c.isprintable())[:200]
