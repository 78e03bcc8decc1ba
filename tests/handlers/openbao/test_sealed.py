"""OpenBao sealed while rotations are due: the OpenBao double (double.py, following OpenBao's API docs: a
sealed server answers every request but ``sys/health`` with 503 ``Vault is sealed``) seals itself at the
first rotation's write and is unsealed two seconds later, while the executor runs rotations for three
events (SQLite journal, a route whose attempts time out well before the unseal).

What happens to the rotations: each attempt that met the seal ends as a temporary error (the invocation
waits ``pending`` with the reason), none is dead-lettered, and after the unseal each secret is rotated
exactly once and each workload restarted once.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from cloudevents.core.v1.event import CloudEvent

from glue import events
from handlers import openbao
from tests.handlers.openbao.conftest import DEPLOYMENTS, deployment, running_executor
from tests.handlers.openbao.double import OpenBaoDouble

SECRETS = ["db1", "db2", "db3"]

ROUTE = {
    "name": "rotate-db",
    "match": "type == 'com.example.secret.compromised'",
    "handler": "openbao.kv.rotate",
    "params": {
        "path": "app/{{ data.name }}",
        "generate": {"type": "password", "length": 40},
        "restart": [{"namespace": "apps", "name": "{{ data.name }}"}],
    },
    "delivery": {"attempts": 50, "backoff": {"initial": 0.1, "max": 0.4, "jitter": 0}, "timeout": 0.5},
}


def compromised(name: str) -> CloudEvent:
    return CloudEvent(
        {
            "id": f"alert-{name}",
            "source": "/scanner",
            "type": "com.example.secret.compromised",
            "datacontenttype": "application/json",
        },
        {"name": name},
    )


async def test_rotations_wait_out_a_sealed_openbao_and_each_happens_once(
    tmp_path: Path, bao: OpenBaoDouble, apiserver: Any, bao_config: dict[str, Any], kubeconfig: Path
) -> None:
    for name in SECRETS:
        bao.kv_put("secret", f"app/{name}", {"username": "app", "password": f"compromised-{name}"})
        apiserver.seed(DEPLOYMENTS, deployment(name))
    loop = asyncio.get_running_loop()
    sealed_at: list[float] = []

    def seal() -> None:
        bao.sealed = True
        sealed_at.append(time.monotonic())
        loop.call_later(2.0, setattr, bao, "sealed", False)

    bao.on("POST", "secret/data/app/db1", seal)  # sealed mid-rotation: the write meets the seal

    waiting: list[str] = []
    async with running_executor(tmp_path, ROUTE, bao_config, kubeconfig) as (store, executor):
        for name in SECRETS:
            event = compromised(name)
            await store.append(
                events.Delivery("http", "test", "cloudevents", {}, events.to_json(event)), [event]
            )
        executor.wake()

        deadline = time.monotonic() + 30
        while True:
            rows = await store.invocations()
            waiting.extend(row.last_error or "" for row in rows if row.state == "pending" and row.last_error)
            if len(rows) == len(SECRETS) and all(row.state == "done" for row in rows):
                break
            assert not [row for row in rows if row.state == "dead"], "a rotation gave up while sealed"
            assert time.monotonic() < deadline, [(row.state, row.last_error) for row in rows]
            await asyncio.sleep(0.05)
        rows = await store.invocations()

    assert sealed_at, "OpenBao was never sealed"
    assert any("Vault is sealed" in reason for reason in waiting), set(waiting)
    assert max(row.attempt for row in rows) > 1
    for name in SECRETS:
        # Rotated exactly once: version 1 was the compromised value, version 2 the only new one.
        assert bao.kv["secret"][f"app/{name}"].current_version == 2
        assert bao.kv_data("secret", f"app/{name}")["password"] != f"compromised-{name}"
        template = apiserver.read(DEPLOYMENTS, "apps", name)
        assert template["metadata"]["generation"] == 2  # restarted once
        annotations = template["spec"]["template"]["metadata"]["annotations"]
        assert annotations[openbao.ANNOTATION_VERSION] == f"secret/app/{name}@2"
    assert bao.count("POST", "secret/data/app/db1") == 1  # the sealed write was not applied, one was
