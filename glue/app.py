"""The supervisor: open the journal, start the data path (:mod:`glue.pipeline`), wait for a signal, drain.

Drain order on SIGTERM/SIGINT: stop intake (sources stop accepting; in-flight requests finish) ->
stop the workers (no new claims; in-flight invocations finish or are released for retry) -> close the
shared clients -> close the journal. A second signal during the drain is ignored; the drain itself is
bounded by each component's own timeout.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import os
import pkgutil
import signal
import urllib.parse
from typing import TYPE_CHECKING

import structlog

from glue import auditlog, contract, journal, pipeline
from glue import settings as settings_mod

if TYPE_CHECKING:
    from glue import tracing as tracing_mod

__all__ = ["Daemon", "announce", "load_plugins", "run"]

log = structlog.get_logger(__name__)


def load_plugins(settings: settings_mod.Settings, *, everything: bool = False) -> None:
    """Import the handler modules the routes name, and any configured plugin modules.

    A built-in handler ``kubeai.reload`` lives in ``handlers.kubeai``: only the modules a config uses are
    imported, so a daemon without Kubernetes routes never loads the Kubernetes client. ``everything``
    imports every built-in (for listings). Modules register their handlers on import.
    """
    import handlers

    if everything:
        names = [m.name for m in pkgutil.iter_modules(handlers.__path__, prefix="handlers.")]
    else:
        wanted = {str(route.get("handler", "")).split(".", 1)[0] for route in settings.routes}
        wanted.update(settings.clients)  # clients.kubernetes is registered by handlers.kubernetes
        names = [f"handlers.{name}" for name in sorted(wanted) if name.isidentifier()]
    for name in names:
        if name.rsplit(".", 1)[-1].startswith("_"):
            continue
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # the module exists but a dependency of it is missing
                raise
    for name in settings.plugins:
        importlib.import_module(name)
    named = {str(route.get("handler", "")) for route in settings.routes}
    if not everything and not named <= set(contract.registry.handlers):
        load_plugins(settings, everything=True)  # so that "unknown handler" lists every handler


class Daemon:
    """One running glue: usable in-process (tests) or from ``glue run``. Its data path is a
    :class:`glue.pipeline.Pipeline`, built once the journal is open."""

    def __init__(self, settings: settings_mod.Settings, *, registry: contract.Registry | None = None) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else contract.registry
        self.journal = journal.create(settings.journal)
        self.clients = contract.Clients(self.registry, settings.clients)
        self.pipeline: pipeline.Pipeline | None = None
        self.tracing: tracing_mod.Tracing | None = None

    async def start(self) -> None:
        announce(self.settings, self.registry, self.clients)
        await self.journal.open()
        await auditlog.record_start(self.journal, self.settings, who=self._who())
        self.tracing = start_tracing(self.settings.tracing)
        self.pipeline = pipeline.build(
            self.settings, self.journal, self.registry, self.clients, tracing=self.tracing
        )
        await self.pipeline.start()

    def _who(self) -> str:
        """This replica in the audit trail: its claims' owner name."""
        from glue.execution import executor

        return self.settings.execution.owner or executor.default_owner()

    async def stop(self) -> None:
        log.info("draining")
        if self.pipeline is not None:
            await self.pipeline.stop()
        await self.clients.aclose()
        if self.tracing is not None:
            await self.tracing.stop()  # after the clients: their last calls are exported too
            self.tracing = None
        await self.journal.close()
        log.info("stopped")


def start_tracing(config: settings_mod.Tracing) -> tracing_mod.Tracing | None:
    """Tracing when an OTLP endpoint is configured (glue.tracing and the SDK are imported only then),
    started before any client opens a session; None, and nothing created, otherwise."""
    if not config.exporting(os.environ):
        return None
    from glue import tracing

    started = tracing.setup(config, os.environ)
    if started is not None:
        started.start()
        log.info("tracing", endpoint=_tracing_target(config), service=config.service_name)
    return started


def _tracing_target(config: settings_mod.Tracing) -> str:
    """Where spans go, for the start-up line (the variables win over the file, as in the exporter);
    without user info or query, which may hold a credential."""
    for name in settings_mod.OTLP_ENDPOINT_VARIABLES:
        if os.environ.get(name):
            return f"{_without_credentials(os.environ[name])} ({name})"
    return _without_credentials(str(config.endpoint))


def _without_credentials(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def announce(settings: settings_mod.Settings, registry: contract.Registry, clients: contract.Clients) -> None:
    """One ``client`` line per client the daemon may talk to, with its target (the routes' mode,
    live or dry-run, is logged by the executor as it starts)."""
    log.info("journal", backend=settings.journal.backend, target=_journal_target(settings.journal))
    names = {name for route in settings.routes for name in _route_clients(registry, route)}
    names.update(settings.clients)
    for name in sorted(names):
        log.info("client", client=name, target=clients.target(name))
    kafka = settings.sources.kafka
    if kafka is not None:
        log.info(
            "client",
            client="kafka",
            target=",".join(kafka.bootstrap_servers),
            tls=kafka.tls is not None,
            sasl=kafka.sasl.mechanism if kafka.sasl is not None else None,
        )
    minio = settings.sources.minio
    if minio is not None:
        scheme = "https" if minio.secure else "http"
        log.info("client", client="minio", target=f"{scheme}://{minio.endpoint}")


def _journal_target(config: settings_mod.Journal) -> str:
    return str(config.path) if config.backend == "sqlite" else "PostgreSQL (journal.dsn)"


def _route_clients(registry: contract.Registry, route: dict[str, object]) -> tuple[str, ...]:
    """The clients of a route's handler, if it is registered (an unknown one fails at start anyway)."""
    entry = registry.handlers.get(str(route.get("handler", "")))
    return entry.clients if entry is not None else ()


async def run(settings: settings_mod.Settings, stop: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or ``stop`` is set), then drain and return."""
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    load_plugins(settings)
    daemon = Daemon(settings)
    try:
        await daemon.start()
        gc.freeze()  # what start-up built lives as long as the daemon: keep it out of every collection
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await daemon.stop()
