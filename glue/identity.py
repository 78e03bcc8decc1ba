"""Who is asking: the principals of the admin API (and the console served beside it).

A request bears a bearer token; ``Authenticator.bearer`` turns it into a ``Principal``: the name the
audit trail records, and a role. ``viewer`` reads (routes, audit, events, dead letters); ``operator``
also acts (pause, resume, approve, deny, retry, purge). Static tokens are named in ``admin.tokens``
and are operators unless listed in ``admin.viewers``. Token values are compared in constant time,
against every token, and never logged.
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

from aiohttp import web

from glue import settings as settings_mod

__all__ = ["ROLES", "Authenticator", "OnLogin", "Principal", "Role", "SingleSignOn"]

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


class SingleSignOn(Protocol):
    """A browser login through the platform's identity provider (OpenID Connect)."""

    def routes(self, on_login: OnLogin) -> list[web.RouteDef]:
        """``GET /login/sso`` (start the flow) and ``GET /login/sso/callback`` (finish it and call
        ``on_login``), relative to the application they are added to."""
        ...


class Authenticator:
    """Bearer tokens to principals, from the ``admin`` settings (read once, at start)."""

    def __init__(self, config: settings_mod.Admin) -> None:
        #: The browser login through the identity provider, None unless one is configured.
        self.sso: SingleSignOn | None = None
        viewers = set(config.viewers)
        #: (principal, accepted values) per static token.
        self._tokens = [
            (Principal(name, "viewer" if name in viewers else "operator"), ref.resolve())
            for name, ref in sorted(config.named().items())
        ]

    @property
    def token_names(self) -> list[str]:
        return [principal.name for principal, _ in self._tokens]

    async def bearer(self, token: str) -> Principal | None:
        """The principal a bearer token stands for, None for a wrong or empty one."""
        if not token:
            return None
        offered = token.encode()
        found = None
        for principal, values in self._tokens:
            for value in values:  # compare with every token, so the time says nothing of which
                if hmac.compare_digest(offered, value) and found is None:
                    found = principal
        return found
