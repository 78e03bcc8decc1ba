"""The data path of one daemon, assembled in one place from parts passed to their constructors.

    sources (HTTP, Kafka, the Argo Events EventBus, MinIO listen)
      -> intake (decode, identity, backlog bound, routing at intake by the executor's routing loop)
      -> journal (append: the event is acknowledged once this commits)
      -> executor (routing loop -> dispatcher -> runner -> handlers; settler writes outcomes back)

Beside it run the workers that read the journal too: the bucket archive (a tap of intake and the
executor's dead-letter hook), journal retention and the Kafka output. Every hook between parts is a
constructor argument, fixed here before the daemon starts; :mod:`glue.app` supervises the result.
Client libraries (the MinIO SDK, aiokafka, nats-py, the route compiler) are imported only when configured.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import structlog

from glue import contract, health, intake, journal
from glue import settings as settings_mod
from glue.journal import retention
from glue.sources import http

if TYPE_CHECKING:
    from glue import execution, objectstore
    from glue import tracing as tracing_mod

__all__ = ["Component", "Pipeline", "build", "make_executor", "make_health", "make_intake"]

log = structlog.get_logger(__name__)


class Component(Protocol):
    """A long-running part of the daemon: started in order, stopped in reverse."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def make_intake(
    journal_: journal.Inbox,
    *,
    max_backlog: int,
    record: Path | None = None,
    executor: execution.Executor | None = None,
    archive: objectstore.ArchiveWriter | None = None,
    tracing: tracing_mod.Tracing | None = None,
) -> intake.Intake:
    """Intake in front of the journal: events are routed as they are journaled by the executor's
    routing loop (without an executor they wait pending for a routing pass, here or on another
    replica), every delivery is copied to the archive (a no-op unless ``archive.recordings``), and
    traced when ``tracing`` is given."""
    return intake.Intake(
        journal_,
        max_backlog=max_backlog,
        record=record,
        router=executor.routing_loop if executor is not None else None,
        taps=(archive.record,) if archive is not None else (),
        tracing=tracing,
    )


def make_executor(
    settings: settings_mod.Settings,
    journal_: journal.Journal,
    registry: contract.Registry,
    clients: contract.Clients,
    *,
    archive: objectstore.ArchiveWriter | None = None,
    tracing: tracing_mod.Tracing | None = None,
    client_down: Callable[[str], str | None] | None = None,
) -> execution.Executor | None:
    """The executor of the configured routes (None when ``execution.enabled`` is off); it reads the
    object store first for routes with an ``enrich`` block, dead letters go to the archive (a
    no-op unless ``archive.deadLetters``), and an invocation whose client ``client_down`` names is
    held (reason ``client-down``) until the client is up."""
    if not settings.execution.enabled:
        return None
    from glue import execution, routing

    router = routing.load(settings.routes, registry, source="routes")
    enricher = None
    if router.enriched and settings.sources.minio is not None:  # settings require the latter
        from glue import enrich, objectstore

        enricher = enrich.Enricher(objectstore.ObjectStore(settings.sources.minio))
    return execution.Executor(
        journal_,
        router,
        clients,
        settings.execution,
        enricher=enricher,
        on_dead_letter=archive.dead_letter if archive is not None else None,
        sole=settings.journal.backend == "sqlite",  # one file, one daemon: claims left are a dead one's
        tracing=tracing,
        client_down=client_down,
    )


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """The parts of one daemon's data path. Started workers first (they act on what is journaled),
    then the sources, HTTP last; stopped in reverse: intake stops before the executor drains, and
    the archive takes lines until the end."""

    intake: intake.Intake
    workers: tuple[Component, ...]
    sources: tuple[Component, ...]
    http: http.HttpSource
    archive: objectstore.ArchiveWriter | None
    #: The configured clients' health; ``health.down(handler)`` names a client of a handler that is down.
    health: health.Health
    _started: list[Component] = dataclasses.field(default_factory=list, init=False, repr=False)

    async def start(self) -> None:
        """Start every part in order; on failure :meth:`stop` stops those already started."""
        await self.intake.start()
        for component in (*self.workers, *self.sources, self.http):
            self._started.append(component)
            await component.start()
        log.info("started", workers=[c.name for c in self.workers], sources=[c.name for c in self.sources])

    async def stop(self) -> None:
        """Stop what was started, in reverse; a part that fails to stop is logged, the rest go on."""
        while self._started:
            component = self._started.pop()
            try:
                await component.stop()
            except Exception:
                log.exception("stop failed", component=component.name)
        await self.intake.stop()


def build(
    settings: settings_mod.Settings,
    journal_: journal.Journal,
    registry: contract.Registry,
    clients: contract.Clients,
    tracing: tracing_mod.Tracing | None = None,
) -> Pipeline:
    """Assemble the daemon's data path from the settings, over an open journal; ``tracing`` (None:
    off) traces deliveries and attempts."""
    archive = None
    if settings.archive is not None and settings.sources.minio is not None:
        from glue import objectstore

        store = objectstore.ObjectStore(settings.sources.minio)
        archive = objectstore.ArchiveWriter(store, settings.archive, close_store=True)
    # Before the executor: its dispatcher may ask ``clients_health.down`` before running a handler.
    clients_health = make_health(settings, registry, clients)
    executor = make_executor(
        settings,
        journal_,
        registry,
        clients,
        archive=archive,
        tracing=tracing,
        client_down=clients_health.down,
    )
    accepting = make_intake(
        journal_,
        max_backlog=settings.server.max_backlog,
        record=settings.record,
        executor=executor,
        archive=archive,
        tracing=tracing,
    )
    sources, readiness = _sources(settings, accepting, journal_)
    workers = _workers(settings, journal_, archive, executor)
    if settings.admin is not None:
        from glue import admin_api, routing

        router = routing.load(settings.routes, registry, source="routes")
        api = admin_api.AdminApi(settings.admin, journal_, router)
        if settings.admin.console:
            from glue import console

            pages = console.Console(
                api.authenticator,
                journal_,
                router,
                config=settings.admin,
                tracing=settings.tracing,
                lockout=settings.server.lockout,
                settle_seconds=settings.execution.lease_seconds,  # no attempt runs longer
            )
            api.app.add_subapp(console.PREFIX, pages.app)  # the admin listener only, never the webhook port
        workers = (*workers, api)  # stopped first
    return Pipeline(
        intake=accepting,
        # Checked first: what the clients can do is known before the first invocation runs.
        workers=(clients_health, *workers),
        sources=sources,
        http=http.HttpSource(settings, accepting, journal_, readiness, clients=clients_health.detail),
        archive=archive,
        health=clients_health,
    )


def make_health(
    settings: settings_mod.Settings, registry: contract.Registry, clients: contract.Clients
) -> health.Health:
    """The checks of the configured clients against what the enabled routes need."""
    from glue import routing

    router = routing.load(settings.routes, registry, source="routes")
    return health.create(settings, registry, clients, router.routes)


def _workers(
    settings: settings_mod.Settings,
    journal_: journal.Journal,
    archive: objectstore.ArchiveWriter | None,
    executor: execution.Executor | None,
) -> tuple[Component, ...]:
    """Components that act on journaled events, in start order."""
    workers: list[Component] = []
    if archive is not None:
        workers.append(archive)  # started first, stopped last: takes lines until the end
        if archive.config.audit:
            from glue import auditlog

            # stopped before the archive: its last entries go with the final flush
            poll = min(archive.config.flush_seconds, 5.0)
            workers.append(auditlog.AuditArchive(journal_, archive, poll_seconds=poll))
    workers.append(retention.Retention(journal_, days=settings.journal.retention_days))
    kafka_config = settings.sources.kafka
    if kafka_config is not None and kafka_config.output is not None:
        from glue.sources import kafka

        # Before the executor, so stopped after it: the last outcomes are published too.
        workers.append(kafka.KafkaOutput(kafka_config, journal_))
    if executor is not None:
        workers.append(executor)  # stopped before retention and the archive: its last outcomes land
    return tuple(workers)


def _sources(
    settings: settings_mod.Settings, accepting: intake.Intake, journal_: journal.Journal
) -> tuple[tuple[Component, ...], tuple[http.ReadinessCheck, ...]]:
    """Ways in besides HTTP, and what the HTTP source's readiness asks of them."""
    sources: list[Component] = []
    readiness: list[http.ReadinessCheck] = []
    if settings.sources.kafka is not None:
        from glue.sources import kafka

        source = kafka.KafkaSource(settings.sources.kafka, accepting, journal_)
        readiness.append(source.ready)
        sources.append(source)
    if settings.sources.argo_events is not None:
        from glue.sources import argo_events

        bus = argo_events.ArgoEventsSource(
            settings.sources.argo_events, accepting.accept_many, reject=journal_.reject
        )
        readiness.append(bus.readiness)
        sources.append(bus)
    if settings.sources.jetstream is not None:
        from glue.sources import argo_events

        stream = argo_events.JetStreamSource(
            settings.sources.jetstream, accepting.accept_many, reject=journal_.reject
        )
        readiness.append(stream.readiness)
        sources.append(stream)
    minio = settings.sources.minio
    if minio is not None and minio.buckets:
        from glue.sources import minio_listen

        listen = minio_listen.ListenSource(minio, accepting.accept, reject=journal_.reject)
        readiness.append(listen.readiness)
        sources.append(listen)
    return tuple(sources), tuple(readiness)
