"""Client health: whether each configured client can do the routes' work, known before an event needs it.

A broken OpenBao login used to surface only when the first rotation dead-lettered. :class:`Health`
checks every configured client at start and then every ``execution.clientCheckSeconds``:

- a shared client with a probe (its handler module registers it with ``glue.client(probe=...)``):
  Kubernetes (reachable, the credentials accepted, and a SelfSubjectRulesReview / SelfSubjectAccessReview
  covering what ``glue rbac`` grants the enabled routes), OpenBao (login and ``lookup-self``);
- the Kafka brokers and the MinIO endpoint of the sources: reachable (a TCP connection).

A client that has nothing to reach (the routes using it only plan) is not checked. The result is the
gauge ``glue_client_up{client}``, the ``clients`` of ``/readyz`` (a down client does not make the daemon
unready: intake still journals, and the invocations that need the client wait), a log line whenever a
client goes down or comes back, and :meth:`Health.down`, which the dispatcher asks before running a
handler. ``glue check`` runs the same checks once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import structlog

from glue import contract, metrics, rbac, routing
from glue import settings as settings_mod

__all__ = ["CHECK_SECONDS", "Check", "ClientStatus", "Health", "checks", "create"]

log = structlog.get_logger(__name__)

#: How long one check of one client may take before it counts as down.
CHECK_SECONDS = 15.0

#: One client's check: None when it can work, else why not (one line, no secret).
Check = Callable[[], Awaitable[str | None]]


@dataclasses.dataclass
class ClientStatus:
    """What the last check of one client found; ``up`` None until it was checked."""

    target: str
    up: bool | None = None
    reason: str | None = None
    checked_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        checked = (
            datetime.datetime.fromtimestamp(self.checked_at, datetime.UTC).isoformat(timespec="seconds")
            if self.checked_at is not None
            else None
        )
        return {"up": self.up, "target": self.target, "reason": self.reason, "checkedAt": checked}


def _needs(routes: Iterable[routing.Compiled]) -> contract.Needs:
    """What the enabled routes need of the clients: the Kubernetes grants of ``glue rbac``."""
    return contract.Needs(kubernetes=tuple((g.namespace, g.rules) for g in rbac.grants(routes)))


def _client_check(
    clients: contract.Clients, name: str, probe: contract.Probe, needs: contract.Needs
) -> Check:
    async def check() -> str | None:
        try:
            client = await clients.get(name)
        except contract.PermanentError as exc:  # e.g. a kubeconfig that cannot be loaded
            return str(exc)
        return await probe(client, needs)

    return check


async def _reachable(addresses: Sequence[tuple[str, int]], seconds: float) -> str | None:
    """None when one of ``addresses`` takes a TCP connection, else what each one answered."""
    failures: list[str] = []
    for host, port in addresses:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), seconds)
        except (OSError, TimeoutError) as exc:
            failures.append(f"{host}:{port} ({type(exc).__name__}: {exc})".replace(": )", ")"))
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return None
    return "unreachable: " + ", ".join(failures)


def _address(text: str, default_port: int) -> tuple[str, int]:
    """``host[:port]`` (``[v6]:port`` too) as (host, port)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
        return host, int(port) if port.isdigit() else default_port
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host, int(port)
    return text, default_port


def checks(
    settings: settings_mod.Settings,
    registry: contract.Registry,
    clients: contract.Clients,
    routes: Iterable[routing.Compiled],
) -> dict[str, tuple[str, Check]]:
    """The checks of every configured client: its name -> (target, check)."""
    enabled = [compiled for compiled in routes if compiled.route.enabled]
    needs = _needs(enabled)
    names = {name for compiled in enabled for name in compiled.handler.clients} | set(settings.clients)
    found: dict[str, tuple[str, Check]] = {}
    for name in sorted(names):
        spec = registry.clients.get(name)
        if spec is None or spec.probe is None or not clients.configured(name):
            continue
        found[name] = (clients.target(name), _client_check(clients, name, spec.probe, needs))
    kafka = settings.sources.kafka
    if kafka is not None:
        brokers = [_address(server, 9092) for server in kafka.bootstrap_servers]
        found["kafka"] = (",".join(kafka.bootstrap_servers), lambda: _reachable(brokers, CHECK_SECONDS / 3))
    minio = settings.sources.minio
    if minio is not None:
        endpoint = [_address(minio.endpoint, 443 if minio.secure else 80)]
        scheme = "https" if minio.secure else "http"
        found["minio"] = (f"{scheme}://{minio.endpoint}", lambda: _reachable(endpoint, CHECK_SECONDS / 3))
    return found


class Health:
    """Checks the clients at start and every ``interval`` seconds (0: at start only); a component."""

    name = "client-health"

    def __init__(
        self,
        checks_: Mapping[str, tuple[str, Check]],
        *,
        handler_clients: Mapping[str, Sequence[str]],
        interval: float,
        timeout: float = CHECK_SECONDS,
        clock: Callable[[], float] = time.time,
        log_changes: bool = True,
    ) -> None:
        self._checks = {name: check for name, (_, check) in checks_.items()}
        self.statuses = {name: ClientStatus(target) for name, (target, _) in checks_.items()}
        self.handler_clients = handler_clients
        self.interval = interval
        self.timeout = timeout
        self.clock = clock
        self.log_changes = log_changes
        self._task: asyncio.Task[None] | None = None

    async def check_all(self) -> dict[str, ClientStatus]:
        """Check every client now, all at once; each status, gauge and change log line follows."""
        names = list(self._checks)
        reasons = await asyncio.gather(*(self._check(name) for name in names))
        for name, reason in zip(names, reasons, strict=True):
            self._record(name, reason)
        return self.statuses

    async def _check(self, name: str) -> str | None:
        try:
            async with asyncio.timeout(self.timeout):
                return await self._checks[name]()
        except TimeoutError:
            return f"no answer within {self.timeout:g} s"
        except Exception as exc:  # a probe's own failure is the client's state, never the daemon's
            return f"{type(exc).__name__}: {exc}"

    def _record(self, name: str, reason: str | None) -> None:
        status = self.statuses[name]
        was = status.up
        status.up, status.reason, status.checked_at = reason is None, reason, self.clock()
        metrics.CLIENT_UP.labels(name).set(1 if status.up else 0)
        if not self.log_changes:
            return
        if status.up and was is not True:
            log.info("client up", client=name, target=status.target)
        elif not status.up and (was is not False or status.reason != reason):
            log.warning("client down", client=name, target=status.target, reason=reason)

    def down(self, handler_name: str) -> str | None:
        """The name of a client of ``handler_name`` that is down now (its invocations should wait),
        or None. A client not checked (nothing to reach: the route plans) is never down."""
        for name in self.handler_clients.get(handler_name, ()):
            status = self.statuses.get(name)
            if status is not None and status.up is False:
                return name
        return None

    def detail(self) -> dict[str, dict[str, Any]]:
        """Every checked client's status, for ``/readyz``."""
        return {name: status.to_dict() for name, status in sorted(self.statuses.items())}

    async def start(self) -> None:
        await self.check_all()
        if self.interval > 0 and self._checks:
            self._task = asyncio.create_task(self._run(), name="client-health")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.check_all()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def create(
    settings: settings_mod.Settings,
    registry: contract.Registry,
    clients: contract.Clients,
    routes: Iterable[routing.Compiled],
    *,
    log_changes: bool = True,
) -> Health:
    """The health of the configured clients, checked as ``execution.clientCheckSeconds`` says."""
    return Health(
        checks(settings, registry, clients, routes),
        handler_clients={name: entry.clients for name, entry in registry.handlers.items()},
        interval=settings.execution.client_check_seconds,
        log_changes=log_changes,
    )
