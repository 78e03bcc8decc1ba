"""The console's login sessions: a signed cookie, no server-side store.

The cookie carries who logged in (the principal's name and role), a CSRF token and, through the
signature's timestamp, when; it is signed with ``admin.sessionKey`` (itsdangerous), so every replica
that shares the key accepts it, and nobody can make or change one without the key. Without a key
each process draws a random one: its sessions end when it restarts. A session is not revoked when
its token is removed from the config; it ends at its expiry (``admin.sessionMinutes``).
"""

from __future__ import annotations

import dataclasses
import hmac
import secrets
from typing import Any

import itsdangerous
from aiohttp import web

from glue import identity

__all__ = ["COOKIE", "Session", "Sessions"]

COOKIE = "glue_console"


@dataclasses.dataclass(frozen=True, slots=True)
class Session:
    """A logged-in browser: who, and the token every action form of the session carries."""

    principal: identity.Principal
    csrf: str

    def csrf_ok(self, offered: str) -> bool:
        return hmac.compare_digest(offered.encode(), self.csrf.encode())


class Sessions:
    """Makes and reads the signed session cookie."""

    def __init__(self, key: bytes | None, *, minutes: float, path: str) -> None:
        self.seconds = int(minutes * 60)
        self.path = path
        self._signer = itsdangerous.URLSafeTimedSerializer(
            key if key is not None else secrets.token_bytes(32), salt="glue-console-session"
        )

    def start(self, response: web.StreamResponse, request: web.Request, who: identity.Principal) -> None:
        """Set a fresh session for ``who`` on ``response`` (a new CSRF token with it)."""
        value = self._signer.dumps({"name": who.name, "role": who.role, "csrf": secrets.token_urlsafe(24)})
        response.set_cookie(
            COOKIE,
            value,
            max_age=self.seconds,
            path=self.path,
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )

    def end(self, response: web.StreamResponse) -> None:
        response.del_cookie(COOKIE, path=self.path)

    def read(self, request: web.Request) -> Session | None:
        """The request's session, None without one or with one forged, altered or expired."""
        value = request.cookies.get(COOKIE)
        if not value:
            return None
        try:
            data: Any = self._signer.loads(value, max_age=self.seconds)
        except itsdangerous.BadData:
            return None
        role = data.get("role") if isinstance(data, dict) else None
        if role not in identity.ROLES:
            return None
        return Session(identity.Principal(str(data["name"]), role), str(data["csrf"]))
