"""A rotation driven the way the daemon drives it: an event journaled (SQLite), routed by a configured
route whose params are templates over the event, run by the executor against the OpenBao double and the
Kubernetes API double. What an operator sees: the invocation rows in the journal, the secret's versions in
OpenBao, the Deployment's pod template."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cloudevents.core.v1.event import CloudEvent

from glue import events
from handlers import openbao
from tests.handlers.openbao.conftest import DEPLOYMENTS, deployment, running_executor

ROUTE = {
    "name": "rotate-db",
    "match": "type == 'com.example.secret.compromised'",
    "handler": "openbao.kv.rotate",
    "params": {
        "path": "{{ data.path }}",
        "generate": {"type": "password", "length": 40},
        "restart": [{"namespace": "apps", "name": "{{ data.workload }}"}],
    },
    "delivery": {"attempts": 2, "backoff": {"initial": 0.05, "max": 0.1, "jitter": 0}, "timeout": 10},
}


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_rotation_dead_lettered_on_its_follow_up_then_redriven_rotates_once(
    tmp_path: Path, bao: Any, apiserver: Any, bao_config: dict[str, Any], kubeconfig: Path
) -> None:
    bao.kv_put("secret", "app/db", {"username": "app", "password": "compromised-password-1"})
    async with running_executor(tmp_path, ROUTE, bao_config, kubeconfig) as (store, executor):
        event = CloudEvent(
            {
                "id": "alert-7",
                "source": "/scanner",
                "type": "com.example.secret.compromised",
                "datacontenttype": "application/json",
            },
            {"path": "app/db", "workload": "web"},
        )
        delivery = events.Delivery("http", "test", "cloudevents", {}, events.to_json(event))
        await store.append(delivery, [event])
        executor.wake()

        # The Deployment does not exist yet: the follow-up fails for good, after the rotation.
        async def dead() -> bool:
            return bool(await store.invocations(state="dead"))

        await until(dead)
        [invocation] = await store.invocations(state="dead")
        assert bao.kv["secret"]["app/db"].current_version == 2
        assert invocation.last_error is not None and "not found" in invocation.last_error
        for version in (1, 2):
            assert bao.kv_data("secret", "app/db", version)["password"] not in invocation.last_error

        # The operator creates the Deployment and redrives: the rotation is not made again.
        apiserver.seed(DEPLOYMENTS, deployment())
        await store.redrive([invocation.id], now=time.time())
        executor.wake()

        async def done() -> bool:
            found = await store.invocation(invocation.id)
            return found is not None and found.state == "done"

        await until(done)
        assert bao.kv["secret"]["app/db"].current_version == 2
        assert len(bao.kv_data("secret", "app/db")["password"]) == 40
        template = apiserver.read(DEPLOYMENTS, "apps", "web")["spec"]["template"]["metadata"]
        assert template["annotations"][openbao.ANNOTATION_VERSION] == "secret/app/db@2"
