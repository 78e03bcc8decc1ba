"""Who is asking: the principals of the admin API (and the console served beside it).

A request bears a bearer token; ``Authenticator.bearer`` turns it into a ``Principal``: the name the
audit trail records, and a role. ``viewer`` reads (routes, audit, events, dead letters); ``operator``
also acts (pause, resume, approve, deny, retry, purge). Static tokens are named in ``admin.tokens``
and are operators unless listed in ``admin.viewers``. Token values are compared in constant time,
against every token, and never logged. With ``admin.oidc`` configured, a bearer that is not a static
token but looks like a JWT goes to the issuer's verifier (glue.oidc), which names the user and maps a
claim to the role; static tokens are tried first, so an unreachable issuer never locks them out.
"""

from __future__ import annotations

import dataclasses
import hmac
import re
from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

from aiohttp import web

from glue import settings as settings_mod

__all__ = [
    "ROLES",
    "Authenticator",
    "OnLogin",
    "Principal",
    "Refused",
    "Role",
    "SingleSignOn",
    "TokenVerifier",
]

Role = Literal["viewer", "operator"]
ROLES: tuple[Role, ...] = ("viewer", "operator")


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: ``name`` is who acts in the audit trail."""

    name: str
    role: Role

    @property
    def may_act(self) -> bool:
        """Whether this caller may change anything (an operator), not only read."""
        return self.role == "operator"


#: What a login flow calls once it knows who logged in: (request, principal, the console path to
#: return to) -> the response that starts the session.
OnLogin = Callable[[web.Request, Principal, str], Awaitable[web.StreamResponse]]


class Refused(Exception):
    """A bearer refused: ``status`` 401 (not a valid credential), 403 (a valid user without a role)
    or 503 (the issuer cannot be asked now); ``reason`` for the log, ``answer`` for the caller (the
    reason unless it would help a guesser). Neither ever holds the token."""

    def __init__(self, status: int, reason: str, answer: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.answer = reason if answer is None else answer


class SingleSignOn(Protocol):
    """A browser login through the platform's identity provider (OpenID Connect)."""

    def routes(self, on_login: OnLogin) -> list[web.RouteDef]:
        """``GET /login/sso`` (start the flow) and ``GET /login/sso/callback`` (finish it and call
        ``on_login``), relative to the application they are added to."""
        ...


class TokenVerifier(SingleSignOn, Protocol):
    """An identity provider that also vouches for bearer JWTs (glue.oidc.Oidc)."""

    async def principal(self, token: str) -> Principal:
        """Who a JWT of the issuer names, or :class:`Refused` with the reason."""
        ...

    async def close(self) -> None:
        """Release its HTTP client."""
        ...


#: The answer to a missing or wrong static token: which of the two, or how near, is not said.
_ASK_FOR_TOKEN = "a valid bearer token is required"
#: Three base64url segments: a JWS in compact form (a JWT).
_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


class Authenticator:
    """Bearer tokens to principals, from the ``admin`` settings (read once, at start), and the JWTs of
    ``issuer`` when one is configured."""

    def __init__(self, config: settings_mod.Admin, issuer: TokenVerifier | None = None) -> None:
        #: The browser login through the identity provider, None unless one is configured.
        self.sso: SingleSignOn | None = issuer
        self._issuer = issuer
        viewers = set(config.viewers)
        #: (principal, accepted values) per static token.
        self._tokens = [
            (Principal(name, "viewer" if name in viewers else "operator"), ref.resolve())
            for name, ref in sorted(config.named().items())
        ]

    @property
    def token_names(self) -> list[str]:
        return [principal.name for principal, _ in self._tokens]

    async def check(self, token: str) -> Principal:
        """The principal a bearer token stands for, or :class:`Refused` saying why not."""
        if not token:
            raise Refused(401, "missing bearer token", _ASK_FOR_TOKEN)
        offered = token.encode()
        found = None
        for principal, values in self._tokens:
            for value in values:  # compare with every token, so the time says nothing of which
                if hmac.compare_digest(offered, value) and found is None:
                    found = principal
        if found is not None:
            return found
        if self._issuer is not None and _JWT.fullmatch(token):
            return await self._issuer.principal(token)
        raise Refused(401, "wrong bearer token", _ASK_FOR_TOKEN)

    async def bearer(self, token: str) -> Principal | None:
        """The principal a bearer token stands for, None for a wrong or empty one (or a JWT refused
        for any reason: :meth:`check` says which)."""
        try:
            return await self.check(token)
        except Refused:
            return None

    async def close(self) -> None:
        """Release the issuer's HTTP client, if any."""
        if self._issuer is not None:
            await self._issuer.close()
