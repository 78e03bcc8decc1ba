"""An API storm: the Kubernetes API double (apiserver.py, following the API concepts page for errors as
``Status`` objects and ``Retry-After`` on 429) answers 500 and 429 for a while to the restarts a burst of
events asks for, in a running daemon (HTTP intake, SQLite journal, executor).

What happens to the events: each attempt that met a 500 waits the route's backoff (growing), each that
met a 429 waits at least its ``Retry-After``, none gives up, and once the storm passes every workload is
restarted exactly once. Short windows (a 0.2 s backoff, ``Retry-After: 1``) keep it quick on the real clock:
the client talks over sockets, which a virtual clock would not wait for.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from glue import app, execution, journal
from tests import support
from tests.handlers.kubernetes import conftest as k8s_fixtures
from tests.handlers.kubernetes.apiserver import ApiServer
from tests.handlers.kubernetes.conftest import DEPLOYMENTS

pytestmark = pytest.mark.slow

NS = "apps"
WORKLOADS = [f"web{n}" for n in range(6)]
INITIAL = 0.2  # the route's first backoff (s); it doubles, capped at MAX
MAX = 3.0
RETRY_AFTER = 1


@pytest.fixture
async def daemon(kubeconfig: Path, tmp_path: Path) -> AsyncIterator[app.Daemon]:
    config = support.daemon_settings(
        tmp_path,
        execution={"pollSeconds": 0.05},
        endpoints=[{"name": "events", "path": "/events", "format": "cloudevents"}],
        routes=[
            {
                "name": "restart",
                "handler": "kubernetes.restart",
                "params": {"namespace": NS, "name": "{{ data.name }}"},
                "delivery": {
                    "attempts": 30,
                    "backoff": {"initial": INITIAL, "multiplier": 2, "max": MAX, "jitter": 0},
                },
            }
        ],
        clients={"kubernetes": {"kubeconfig": str(kubeconfig)}},
    )
    app.load_plugins(config)
    async with support.running(config) as running:
        yield running


async def test_a_storm_of_500_and_429_backs_off_honours_retry_after_and_drains(
    apiserver: ApiServer, daemon: app.Daemon
) -> None:
    for name in WORKLOADS:
        apiserver.seed(DEPLOYMENTS, k8s_fixtures.deployment(name, NS, replicas=2))
    deployments = r"/apis/apps/v1/namespaces/apps/deployments/"
    # The storm: the next 12 reads and 24 writes fail, first with 500, then with 429 and Retry-After.
    apiserver.fail("GET", deployments, 500, times=6)
    apiserver.fail("PATCH", deployments, 500, times=12)
    apiserver.fail("GET", deployments, 429, headers={"Retry-After": str(RETRY_AFTER)}, times=6)
    apiserver.fail("PATCH", deployments, 429, headers={"Retry-After": str(RETRY_AFTER)}, times=12)

    async with aiohttp.ClientSession() as session:
        await _push_each_workload(session, daemon)

    assert daemon.pipeline is not None
    executor = next(c for c in daemon.pipeline.workers if isinstance(c, execution.Executor))
    await support.eventually(lambda: _all_done(daemon.journal), within=60)
    await asyncio.wait_for(executor.idle(), 30)

    assert all(fault.times == 0 for fault in apiserver.faults), "the storm did not happen"
    for name in WORKLOADS:  # every workload restarted exactly once, after the storm
        assert apiserver.read(DEPLOYMENTS, NS, name)["metadata"]["generation"] == 2
    patches: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for write in apiserver.writes:
        if write["method"] == "PATCH":
            patches[write["path"].rsplit("/", 1)[1]].append(write)
    for name, writes in patches.items():
        assert writes[-1]["answered"] is None, f"{name}: the last write failed"
        waits = [later["at"] - earlier["at"] for earlier, later in itertools.pairwise(writes)]
        after_500 = [w for w, earlier in zip(waits, writes, strict=False) if earlier["answered"] == 500]
        after_429 = [w for w, earlier in zip(waits, writes, strict=False) if earlier["answered"] == 429]
        # 429: Retry-After honoured (the server asked for a second); 500: at least the route's backoff.
        assert all(w >= RETRY_AFTER - 0.05 for w in after_429), (name, after_429)
        assert all(w >= INITIAL - 0.05 for w in after_500), (name, after_500)
        # Backoff grows: consecutive 500s of one workload wait longer each time (up to MAX).
        assert after_500 == sorted(after_500) or max(after_500) >= MAX - 0.1, (name, after_500)
    assert sum(1 for w in apiserver.writes if w["answered"] == 429) == 12
    invocations = await daemon.journal.invocations()
    assert {row.state for row in invocations} == {"done"}
    assert max(row.attempt for row in invocations) > 2  # they did meet the storm


async def test_a_storm_opens_the_routes_breaker_which_probes_and_closes_when_it_passes(
    apiserver: ApiServer, kubeconfig: Path, tmp_path: Path
) -> None:
    """With a breaker on the route (the safety rails), the storm's failed attempts open it: the rest wait
    ``held``, ``breaker``, using no attempt; after the cooldown one probes, and once the API answers
    again the breaker closes and every workload is restarted exactly once."""
    for name in WORKLOADS:
        apiserver.seed(DEPLOYMENTS, k8s_fixtures.deployment(name, NS, replicas=2))
    # Every first attempt fails, and so do the first two probes.
    apiserver.fail("GET", r"/apis/apps/v1/namespaces/apps/deployments/", 500, times=len(WORKLOADS) + 2)
    config = support.daemon_settings(
        tmp_path,
        execution={"pollSeconds": 0.05},
        endpoints=[{"name": "events", "path": "/events", "format": "cloudevents"}],
        routes=[
            {
                "name": "restart",
                "handler": "kubernetes.restart",
                "params": {"namespace": NS, "name": "{{ data.name }}"},
                # retries come after the replicas' rails cache (at most 1 s old) has seen the breaker
                "delivery": {"attempts": 30, "backoff": {"initial": 1.5, "max": 1.5, "jitter": 0}},
                "breaker": {"failures": 3, "within": "1m", "cooldown": "1s"},
            }
        ],
        clients={"kubernetes": {"kubeconfig": str(kubeconfig)}},
    )
    app.load_plugins(config)
    with capture_logs() as logs:
        await _storm_through(config)
    events = [(line["event"], line.get("reason")) for line in logs]
    opened = events.index(("breaker opened", None))
    assert ("held", "breaker") in events[opened:], "the rest waited for the breaker"
    assert ("breaker half-open: probing", None) in events[opened:]
    assert events.index(("breaker closed", None)) > opened  # a probe got through: closed again
    assert all(fault.times == 0 for fault in apiserver.faults), "the storm did not happen"
    for name in WORKLOADS:
        assert apiserver.read(DEPLOYMENTS, NS, name)["metadata"]["generation"] == 2


async def _storm_through(config: Any) -> None:
    async with support.running(config) as daemon, aiohttp.ClientSession() as session:
        await _push_each_workload(session, daemon)

        await support.eventually(lambda: _all_done(daemon.journal), within=60)


async def _push_each_workload(session: aiohttp.ClientSession, daemon: app.Daemon) -> None:
    """One push event per workload, each acknowledged (202)."""
    for n, name in enumerate(WORKLOADS):
        headers = {
            "ce-specversion": "1.0",
            "ce-id": f"push-{n}",
            "ce-source": "/registry",
            "ce-type": "com.example.pushed",
            "content-type": "application/json",
        }
        async with session.post(
            support.base_url(daemon) + "/events", data=json.dumps({"name": name}), headers=headers
        ) as response:
            assert response.status == 202


async def _all_done(store: journal.Journal) -> bool:
    rows = await store.invocations()
    return len(rows) == len(WORKLOADS) and all(row.state == "done" for row in rows)
