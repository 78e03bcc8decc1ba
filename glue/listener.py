"""The webhook listener's defences against what a hostile or broken sender does.

- :class:`ServerTls`: HTTPS from a cert-manager Secret mount, re-read when the files change. A new
  ``ssl.SSLContext`` is built from the files and handed to each new handshake by the listening context's
  SNI callback (called for every ClientHello, with or without a server name), so a certificate and key
  are only ever taken as a pair that loaded together, and connections already open keep theirs.
- :func:`client_cert_names`: the names of a verified client certificate (mTLS endpoints).
- :class:`ReplayCache`: signatures accepted within the tolerance, bounded in memory.
- :class:`Lockout`: addresses answered 429 after repeated 401s, without a cost for anyone else.
- :func:`client_address`: the peer address, or the client a trusted proxy names.

Everything here runs on the event loop's thread; nothing takes a lock.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import os
import ssl
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from glue import metrics
from glue import settings as settings_mod

__all__ = [
    "REPLAY_CACHE_ENTRIES",
    "Lockout",
    "ReplayCache",
    "ServerTls",
    "client_address",
    "client_cert_names",
]

log = structlog.get_logger(__name__)

#: Signatures remembered per endpoint: 32-byte keys, about 150 bytes each with their entry, so a few MB
#: at most. Past it the oldest are forgotten early (a replay of one of those is then not recognised).
REPLAY_CACHE_ENTRIES = 20_000
#: Addresses whose recent 401s are counted; past it the oldest counts are forgotten.
_LOCKOUT_ADDRESSES = 50_000


# -- TLS -----------------------------------------------------------------------------------------------


def _stamp(paths: Sequence[Path]) -> tuple[tuple[int, int, int], ...]:
    """What changes when a file is replaced (a Secret mount swaps a symlink) or rewritten."""
    stamps = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            stamps.append((0, 0, 0))
        else:
            stamps.append((stat.st_ino, stat.st_mtime_ns, stat.st_size))
    return tuple(stamps)


class ServerTls:
    """The listener's TLS: :attr:`context` for the server, :meth:`watch` to follow the files."""

    def __init__(self, config: settings_mod.Tls, ask_client_cert: bool) -> None:
        self.config = config
        self.ask_client_cert = ask_client_cert
        self._paths = [config.cert_file, config.key_file]
        if config.client_ca_file is not None:
            self._paths.append(config.client_ca_file)
        self._stamp = _stamp(self._paths)
        try:  # a bad file at start is an error the operator sees at once, naming the files
            self.current = self._build()
        except (OSError, ssl.SSLError, ValueError) as exc:
            files = ", ".join(str(path) for path in self._paths)
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise settings_mod.ConfigError("server.tls", [("", f"cannot load {files}: {reason}")]) from None
        self.context = self.current
        self.reloads = 0

    def _build(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.config.cert_file, self.config.key_file)
        if self.ask_client_cert and self.config.client_ca_file is not None:
            # Optional at the handshake: an endpoint without clientCert still serves senders without one,
            # and one with it answers 401 with a reason instead of a bare TLS alert.
            context.verify_mode = ssl.CERT_OPTIONAL
            context.load_verify_locations(cafile=self.config.client_ca_file)
        context.sni_callback = self._pick
        return context

    def _pick(self, connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        if self.current is not context:
            connection.context = self.current

    def reload(self) -> bool:
        """Build a context from the files if they changed; keep the last good one if they do not load."""
        stamp = _stamp(self._paths)
        if stamp == self._stamp:
            return False
        try:
            fresh = self._build()
        except (OSError, ssl.SSLError, ValueError) as exc:
            # A Secret being written (a key without its certificate yet): try again at the next look.
            log.warning("listener certificate not reloaded", reason=str(exc), cert=str(self.config.cert_file))
            return False
        self._stamp = stamp
        self.current = fresh
        self.reloads += 1
        log.info("listener certificate reloaded", cert=str(self.config.cert_file))
        return True

    async def watch(self) -> None:
        """Look at the files every ``reloadSeconds`` until cancelled."""
        while True:
            await asyncio.sleep(self.config.reload_seconds)
            self.reload()


def client_cert_names(transport: asyncio.BaseTransport | None) -> list[str] | None:
    """Subject common names and DNS subjectAltNames of the connection's verified client certificate,
    or None without one. (With CERT_OPTIONAL a certificate that fails verification fails the handshake,
    so any certificate seen here was verified against clientCaFile.)"""
    if transport is None:
        return None
    cert: Any = transport.get_extra_info("peercert")
    if not cert:
        return None
    names = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    names.extend(value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS")
    return names


# -- replayed signatures ----------------------------------------------------------------------------


class ReplayCache:
    """Signatures accepted, each kept while it could still be accepted again.

    Entries go in roughly in expiry order (a signature's time to live is about the tolerance), so the
    oldest are at the front and pruning stops at the first one still alive; an expired entry left
    behind a live one is treated as absent."""

    def __init__(self, window: float, entries: int = REPLAY_CACHE_ENTRIES) -> None:
        self.window = window
        self.entries = entries
        self._seen: collections.OrderedDict[bytes, float] = collections.OrderedDict()

    def claim(self, key: bytes, ttl: float | None = None) -> bool:
        """Remember ``key`` for ``ttl`` seconds (default: the window); False if it is remembered now."""
        now = time.monotonic()
        seen = self._seen
        while seen:
            oldest, expires = next(iter(seen.items()))
            if expires > now and len(seen) < self.entries:
                break
            del seen[oldest]
        until = seen.get(key)
        if until is not None and until > now:
            return False
        seen[key] = now + (self.window if ttl is None else ttl)
        seen.move_to_end(key)
        return True

    def release(self, key: bytes) -> None:
        """Forget ``key``: its delivery was not taken (503), so the sender's retry must get through."""
        self._seen.pop(key, None)

    def __len__(self) -> int:
        return len(self._seen)


# -- credential guessing ----------------------------------------------------------------------------


class Lockout:
    """Counts 401s per address; ``failures`` of them within the window lock the address out.

    The check on every request is one test of an empty dictionary unless some address is locked."""

    def __init__(self, config: settings_mod.Lockout) -> None:
        self.config = config
        self._failures: dict[str, tuple[int, float]] = {}  # address -> (401s, window start)
        self._locked: dict[str, float] = {}  # address -> monotonic time the lockout ends
        self._expire_at = 0.0

    @property
    def active(self) -> bool:
        """Some address is (or was, until looked at) locked out."""
        return bool(self._locked)

    def retry_after(self, address: str | None) -> float | None:
        """Seconds left of the address's lockout, or None when it may try."""
        if not self._locked or address is None:
            return None
        until = self._locked.get(address)
        if until is None:
            self._expire(time.monotonic())
            return None
        left = until - time.monotonic()
        if left <= 0:
            del self._locked[address]
            return None
        return left

    def failed(self, address: str | None, endpoint: str) -> None:
        """Count a 401; lock the address out (logged once, counted) when it reaches the limit."""
        limit = self.config.failures
        if limit == 0 or address is None:
            return
        now = time.monotonic()
        count, start = self._failures.get(address, (0, now))
        if now - start > self.config.window_seconds:
            count, start = 0, now
        count += 1
        if count < limit:
            if address not in self._failures and len(self._failures) >= _LOCKOUT_ADDRESSES:
                self._forget_stale(now)
            self._failures[address] = (count, start)
            return
        self._failures.pop(address, None)
        self._locked[address] = now + self.config.seconds
        metrics.AUTH_LOCKOUTS.labels(endpoint).inc()
        log.warning(
            "address locked out after repeated 401s",
            remote=address,
            endpoint=endpoint,
            failures=count,
            window_seconds=self.config.window_seconds,
            locked_seconds=self.config.seconds,
        )

    def _expire(self, now: float) -> None:
        """Drop ended lockouts now and then, so the check goes back to one test of an empty table."""
        if now < self._expire_at:
            return
        self._expire_at = now + 1.0
        for address, until in list(self._locked.items()):
            if until <= now:
                del self._locked[address]

    def _forget_stale(self, now: float) -> None:
        window = self.config.window_seconds
        for address, (_, start) in list(self._failures.items()):
            if now - start > window:
                del self._failures[address]
        while len(self._failures) >= _LOCKOUT_ADDRESSES:
            del self._failures[next(iter(self._failures))]
        for address, until in list(self._locked.items()):
            if until <= now:
                del self._locked[address]


# -- who is sending ---------------------------------------------------------------------------------

Networks = Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]


def _trusted(address: str, proxies: Networks) -> bool:
    with contextlib.suppress(ValueError):
        ip = ipaddress.ip_address(address.strip())
        return any(ip in network for network in proxies)
    return False


def client_address(peer: str | None, forwarded_for: str | None, proxies: Networks) -> str | None:
    """The sender's address: the peer's, unless the peer is a trusted proxy; then the right-most
    X-Forwarded-For entry that is not itself a trusted proxy (the ones left of it could be forged)."""
    if not proxies or peer is None or not forwarded_for or not _trusted(peer, proxies):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            return hop
    return hops[0] if hops else peer
