"""Fixtures: the OpenBao double on loopback, a client configuration pointing at it (Kubernetes auth with a
service-account token file), contexts to call the handlers with, and a guard that fails any test whose log
output contains a generated secret value or a credential."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import uuid
from collections.abc import AsyncIterator, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from cloudevents.core.v1.event import CloudEvent
from structlog.testing import capture_logs

import glue
import handlers.openbao  # noqa: F401  (registers the handlers and the client)
from glue import execution, journal, routing, settings
from tests.handlers.kubernetes import conftest as k8s_fixtures
from tests.handlers.openbao.double import OpenBaoDouble

ROLE = "runtime-glue"
JWT = "eyJhbGciOiJSUzI1NiJ9.service-account-token-for-tests.signature"


@pytest.fixture
async def bao() -> AsyncIterator[OpenBaoDouble]:
    double = OpenBaoDouble()
    double.kubernetes_roles["kubernetes"][ROLE] = {JWT}
    await double.start()
    try:
        yield double
    finally:
        await double.stop()


@pytest.fixture
def sa_token(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(JWT + "\n")
    return path


@pytest.fixture
def bao_config(bao: OpenBaoDouble, sa_token: Path) -> dict[str, Any]:
    """``clients.openbao`` as an operator writes it (camelCase), with short backoff for tests."""
    return {
        "address": bao.url,
        "auth": {"method": "kubernetes", "role": ROLE, "tokenFile": str(sa_token)},
        "retry": {"initial": 0.01, "maximum": 0.05, "attempts": 6},
        "requestTimeout": 5,
    }


@pytest.fixture
async def clients(bao_config: dict[str, Any]) -> AsyncIterator[glue.Clients]:
    shared = glue.Clients(glue.registry, {"openbao": bao_config})
    async with shared.opened():
        yield shared


@pytest.fixture
def make_ctx(clients: glue.Clients) -> k8s_fixtures.MakeContext:
    def make(
        key: str = "/test evt-1 rotate", *, dry_run: bool = False, timeout: float = 30.0, **kw: Any
    ) -> glue.Context:
        return glue.Context(
            route=kw.pop("route", "rotate"),
            handler=kw.pop("handler", "openbao"),
            idempotency_key=key,
            attempt=kw.pop("attempt", 1),
            dry_run=dry_run,
            log=structlog.get_logger("test").bind(key=key),
            clients=kw.pop("clients", clients),
            deadline=asyncio.get_running_loop().time() + timeout,
            **kw,
        )

    return make


@contextlib.asynccontextmanager
async def running_executor(
    tmp_path: Path, route: dict[str, Any], bao_config: dict[str, Any], kubeconfig: Path
) -> AsyncIterator[tuple[journal.Journal, execution.Executor]]:
    """A SQLite journal and an executor of ``route`` with the OpenBao and Kubernetes clients of the
    doubles, started; stopped and closed when the block ends."""
    store = journal.create(
        settings.Journal(backend="sqlite", path=tmp_path / "journal.db", group_commit_ms=0)
    )
    await store.open()
    clients = glue.Clients(
        glue.registry, {"openbao": bao_config, "kubernetes": {"kubeconfig": str(kubeconfig)}}
    )
    executor = execution.Executor(
        store,
        routing.load([route], glue.registry, source="test"),
        clients,
        settings.Execution.model_validate({"pollSeconds": 0.05, "owner": "test"}),
    )
    await executor.start()
    try:
        yield store, executor
    finally:
        await executor.stop()
        await clients.aclose()
        await store.close()


def make_event(*, id: str | None = None, source: str = "/test", type: str = "secret.rotate") -> CloudEvent:
    return CloudEvent(
        {
            "id": id or str(uuid.uuid4()),
            "source": source,
            "type": type,
            "time": datetime.datetime(2026, 11, 27, 12, 0, 0, tzinfo=datetime.UTC),
        },
        None,
    )


@pytest.fixture
def event() -> CloudEvent:
    return make_event(id="evt-1")


@pytest.fixture(autouse=True)
def no_secret_in_logs(bao: OpenBaoDouble) -> Iterator[list[MutableMapping[str, Any]]]:
    """Every log record of the test, checked at teardown against every value OpenBao holds or issued."""
    with capture_logs() as records:
        yield records
    secrets = [
        *bao.written_values(),
        *bao.issued,
        JWT,
        *(s for m in bao.approles.values() for s in m.values()),
    ]
    for record in records:
        text = repr(record)
        leaked = [s for s in secrets if len(s) >= 8 and s in text]
        assert not leaked, f"a secret value reached the log: {record.get('event')!r}"


# The Kubernetes API double (kmock) of tests/handlers/kubernetes, for the restart follow-ups.
apiserver = k8s_fixtures.apiserver
kubeconfig = k8s_fixtures.kubeconfig

DEPLOYMENTS = k8s_fixtures.DEPLOYMENTS
deployment = k8s_fixtures.deployment


@pytest.fixture
async def clients_k8s(bao_config: dict[str, Any], kubeconfig: Path) -> AsyncIterator[glue.Clients]:
    config = {"openbao": bao_config, "kubernetes": {"kubeconfig": str(kubeconfig)}}
    shared = glue.Clients(glue.registry, config)
    async with shared.opened():
        yield shared
