"""The supervisor: open the journal, start the workers and sources, wait for a signal, drain.

Drain order on SIGTERM/SIGINT: stop intake (sources stop accepting; in-flight requests finish) ->
stop the workers (no new claims; in-flight invocations finish or are released for retry) -> close the
shared clients -> close the journal. A second signal during the drain is ignored; the drain itself is
bounded by each component's own timeout.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import importlib
import pkgutil
import signal
from typing import TYPE_CHECKING, Protocol

import structlog

from glue import contract, intake, journal
from glue import settings as settings_mod
from glue.journal import retention
from glue.sources import http

if TYPE_CHECKING:
    from glue import objectstore

log = structlog.get_logger(__name__)


class Component(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclasses.dataclass
class Runtime:
    """What the components of one daemon share."""

    settings: settings_mod.Settings
    journal: journal.Journal
    intake: intake.Intake
    registry: contract.Registry
    clients: contract.Clients
    readiness: list[http.ReadinessCheck] = dataclasses.field(default_factory=list)
    archive: objectstore.ArchiveWriter | None = None  # set by _workers when settings.archive is given


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


def _workers(runtime: Runtime) -> list[Component]:
    """Components that act on journaled events. Started first, stopped after the sources."""
    components: list[Component] = []
    if runtime.settings.archive is not None and runtime.settings.sources.minio is not None:
        from glue import objectstore

        store = objectstore.ObjectStore(runtime.settings.sources.minio)
        runtime.archive = objectstore.ArchiveWriter(store, runtime.settings.archive, close_store=True)
        components.append(runtime.archive)  # started first, stopped last: takes lines until the end
        runtime.intake.taps.append(runtime.archive.record)  # a no-op unless archive.recordings
    components.append(retention.Retention(runtime.journal, days=runtime.settings.journal.retention_days))
    kafka_config = runtime.settings.sources.kafka
    if kafka_config is not None and kafka_config.output is not None:
        from glue.sources import kafka

        # Before the executor, so stopped after it: the last outcomes are published too.
        components.append(kafka.KafkaOutput(kafka_config, runtime.journal))
    if runtime.settings.execution.enabled:
        from glue import execution, routing

        router = routing.load(runtime.settings.routes, runtime.registry, source="routes")
        enricher = None
        if router.enriched and runtime.settings.sources.minio is not None:  # settings require the latter
            from glue import enrich, objectstore

            enricher = enrich.Enricher(objectstore.ObjectStore(runtime.settings.sources.minio))
        executor = execution.Executor(
            runtime.journal,
            router,
            runtime.clients,
            runtime.settings.execution,
            enricher=enricher,
            # a no-op unless archive.deadLetters
            on_dead_letter=runtime.archive.dead_letter if runtime.archive is not None else None,
        )
        runtime.intake.router = executor.routing.route_at_intake
        runtime.intake.on_journaled.append(executor.routing.journaled)
        components.append(executor)  # stopped before retention and the archive: its last outcomes land
    return components


def _sources(runtime: Runtime) -> list[Component]:
    """Ways in besides HTTP. Started before HTTP, stopped with it."""
    components: list[Component] = []
    # Each source's client library is imported only when the source is configured (memory, start time).
    if runtime.settings.sources.kafka is not None:
        from glue.sources import kafka

        source = kafka.KafkaSource(runtime.settings.sources.kafka, runtime.intake, runtime.journal)
        runtime.readiness.append(source.ready)
        components.append(source)
    minio = runtime.settings.sources.minio
    if minio is not None and minio.buckets:
        from glue.sources import minio_listen

        listen = minio_listen.ListenSource(minio, runtime.intake.accept, reject=runtime.journal.reject)
        runtime.readiness.append(listen.readiness)
        components.append(listen)
    return components


class Daemon:
    """One running glue: usable in-process (tests) or from ``glue run``."""

    def __init__(self, settings: settings_mod.Settings, *, registry: contract.Registry | None = None) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else contract.registry
        self.journal = journal.create(settings.journal)
        self.intake = intake.Intake(
            self.journal, max_backlog=settings.server.max_backlog, record=settings.record
        )
        self.clients = contract.Clients(self.registry, settings.clients)
        self.runtime = Runtime(settings, self.journal, self.intake, self.registry, self.clients)
        self.workers: list[Component] = []
        self.sources: list[Component] = []
        self.http: http.HttpSource | None = None

    async def start(self) -> None:
        await self.journal.open()
        await self.intake.start()
        self.workers = _workers(self.runtime)
        for component in self.workers:
            await component.start()
        self.sources = _sources(self.runtime)
        for component in self.sources:
            await component.start()
        self.http = http.HttpSource(self.settings, self.intake, self.journal, self.runtime.readiness)
        await self.http.start()
        log.info("started", workers=[c.name for c in self.workers], sources=[c.name for c in self.sources])

    async def stop(self) -> None:
        log.info("draining")
        intake_side: list[Component] = [*([self.http] if self.http else []), *reversed(self.sources)]
        for component in [*intake_side, *reversed(self.workers)]:
            try:
                await component.stop()
            except Exception:
                log.exception("stop failed", component=component.name)
        await self.intake.stop()
        await self.clients.aclose()
        await self.journal.close()
        log.info("stopped")


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
