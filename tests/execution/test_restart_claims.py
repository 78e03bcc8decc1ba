"""After SIGKILL and a restart, the daemon takes back what its dead predecessor had claimed at once,
not when the lease ends: on SQLite (one daemon per journal file) every claim; on PostgreSQL its own,
under the replica identity that survives a restart (the pod's name)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from glue import app, journal, settings
from glue.execution import executor
from tests import support
from tests.execution.conftest import delivery_of, journal_settings

LEASE = 600.0  # far longer than the test: only a take-back at start lets the invocation run


async def killed_with_a_claim(config: settings.Journal, owner: str) -> None:
    """What a daemon killed mid-attempt leaves: a running invocation under a long lease."""
    store = journal.create(config)
    await store.open()
    try:
        event = support.cloudevent("k1")
        await store.append(delivery_of(event), [event])
        now = time.time()
        [claimed] = await store.claim_events(owner, limit=10, lease=LEASE, now=now)
        invocation = journal.NewInvocation(
            route="audit",
            handler="log",
            idempotency_key=journal.idempotency_key(claimed.identity, "audit"),
            params={"message": "m"},
            due_at=now,
        )
        await store.record_routing(owner, {claimed.seq: [invocation]}, now=now)
        [running] = await store.claim_invocations(owner, limit=10, lease=LEASE, now=now)
        assert running.state == "running"
    finally:
        await store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_restart_takes_back_the_killed_predecessors_claims(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = await journal_settings(backend, tmp_path, request)
    if backend == "postgres":  # a replica in a pod: its identity is the pod's name, before and after
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
        monkeypatch.setenv("POD_NAME", "glue-7d9f-x2x")
        killed = executor.default_owner()
        assert killed == "glue-7d9f-x2x"
    else:  # another process: another host:pid
        killed = "laptop:4242"
    await killed_with_a_claim(config, killed)
    loaded = support.daemon_settings(
        tmp_path,
        execution={"pollSeconds": 0.05},
        routes=[{"name": "audit", "handler": "log", "params": {"message": "m"}}],
    ).model_copy(update={"journal": config})
    app.load_plugins(loaded)
    with capture_logs() as logs:
        async with support.running(loaded) as daemon:

            async def done() -> bool:
                rows = await daemon.journal.invocations()
                return [row.state for row in rows] == ["done"]

            await support.eventually(done, within=10)
    [line] = [e for e in logs if e["event"] == "released stale claims"]
    assert line["invocations"] == 1


def test_outside_a_pod_the_owner_is_host_and_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert executor.default_owner().rsplit(":", 1)[1].isdigit()
