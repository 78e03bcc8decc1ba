"""Flow shaping end to end: webhooks into a running daemon (HTTP intake, the journal of each backend,
the executor), handlers acting on the Kubernetes API double (apiserver.py), as in the three cases of
the README's flow shaping section:

- a model uploaded as 30 shards: 30 MinIO notifications give one ``kubeai.reload``, with the last
  shard's event (``coalesce``);
- five tag pushes: the first and the last Workflow only (``concurrencyGroup`` supersede), or the
  earlier Workflows stopped as ``argo stop`` does (cancel);
- a rotation storm: restarts at the rate the limit allows, the rest waiting (``rateLimit``);
- a daemon stopped mid-window and started again runs the window once, with every event.

Payloads follow the documented formats: MinIO's webhook target (an envelope with ``Records``, as
tests/formats/payloads.py builds it from minio's internal/event/event.go), GitLab's Tag Push Hook,
structured CloudEvents. These run in real time with short windows; the executor tests run the same
rules on a virtual clock with minutes-long ones (tests/execution/test_coalesce.py, test_rate_limit.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from glue import app, execution, journal, settings
from handlers import kubernetes
from tests import support
from tests.formats import payloads
from tests.handlers.kubernetes.apiserver import ApiServer
from tests.handlers.kubernetes.conftest import (
    DEPLOYMENTS,
    MODELS,
    WORKFLOW_TEMPLATES,
    WORKFLOWS,
    deployment,
    workflow_template,
)
from tests.journal import pgserver

pytestmark = pytest.mark.slow

pg_database = pgserver.pg_database

SHARDS: dict[str, Any] = {
    "name": "reload-model-after-upload",
    "match": 'type == "minio.ObjectCreated:Put" && data.key.startsWith("llama-70b/")',
    "handler": "kubeai.reload",
    "params": {"namespace": "ai", "name": "llama", "url": "s3://models/{{ data.key.split('/')[0] }}/"},
    "coalesce": {"key": "{{ data.key.split('/')[0] }}", "window": "1s", "maxWait": "30s"},
}


def releases(on_conflict: str) -> dict[str, Any]:
    return {
        "name": "release-on-tag",
        "match": 'type == "gitlab.tag_push"',
        "handler": "argo.submit",
        "params": {
            "namespace": "ci",
            "template": "build-release",
            "parameters": {"tag": "{{ data.ref | replace('refs/tags/', '') }}"},
        },
        "concurrencyGroup": {"key": "{{ data.project.path_with_namespace }}", "onConflict": on_conflict},
    }


ROTATIONS: dict[str, Any] = {
    "name": "restart-on-rotation",
    "match": 'type == "openbao.secret.rotated"',
    "handler": "kubernetes.restart",
    "params": {"namespace": "web", "name": "{{ data.deployment }}"},
    "rateLimit": {"rate": 1, "per": "1h", "burst": 3, "key": "{{ data.deployment }}"},
}


class Daemon(support.Client):
    async def post(self, path: str, body: Any, headers: dict[str, str]) -> int:
        async with self.session.post(self.base + path, data=json.dumps(body), headers=headers) as response:
            return response.status

    @property
    def store(self) -> journal.Journal:
        return self.daemon.journal

    async def invocations(self) -> list[journal.Invocation]:
        return await self.store.invocations(limit=1000)


Start = Callable[[list[dict[str, Any]]], Awaitable[Daemon]]


@pytest.fixture(params=["sqlite", "postgres"])
async def start(request: pytest.FixtureRequest, kubeconfig: Path, tmp_path: Path) -> AsyncIterator[Start]:
    """Start a daemon with these routes (again: a restart on the same journal); stopped at the end."""
    journal_config: dict[str, Any] = {"path": str(tmp_path / "journal.db")}
    if request.param == "postgres":
        dsn = await pgserver.create_schema(request.getfixturevalue("pg_database"))
        journal_config = {"backend": "postgres", "dsn": {"value": dsn}}
    stack = contextlib.AsyncExitStack()

    async def run(routes: list[dict[str, Any]]) -> Daemon:
        config = support.daemon_settings(
            tmp_path,
            journal=journal_config,
            execution={"pollSeconds": 0.05},
            endpoints=[
                {"name": "minio", "path": "/hooks/minio", "format": "minio"},
                {"name": "gitlab", "path": "/hooks/gitlab", "format": "gitlab"},
                {"name": "events", "path": "/events", "format": "cloudevents"},
            ],
            routes=routes,
            clients={"kubernetes": {"kubeconfig": str(kubeconfig)}},
        )
        app.load_plugins(config)
        daemon = await stack.enter_async_context(support.running(config))
        session = await stack.enter_async_context(aiohttp.ClientSession())
        return Daemon(daemon, session)

    async with stack:
        yield run


async def eventually(check: Callable[[], Any], within: float = 30.0) -> Any:
    return await support.eventually(check, within=within)


async def idle(daemon: Daemon) -> None:
    assert daemon.daemon.pipeline is not None
    executor = next(c for c in daemon.daemon.pipeline.workers if isinstance(c, execution.Executor))
    await asyncio.wait_for(executor.idle(), 30)


# -- one reload for a model uploaded as 30 shards --------------------------------------------------


def seed_model(apiserver: ApiServer) -> None:
    apiserver.seed(
        MODELS,
        {
            "apiVersion": "kubeai.org/v1",
            "kind": "Model",
            "metadata": {"name": "llama", "namespace": "ai"},
            "spec": {"url": "s3://models/llama-3-8b/", "engine": "VLLM", "features": ["TextGeneration"]},
        },
    )


def shard_notification(n: int) -> dict[str, Any]:
    record = payloads.minio_record(
        f"llama-70b/model-{n:05d}-of-00030.safetensors",
        sequencer=f"187C3D4A5B6C{n:04X}",
        request_id=f"REQ{n:04d}",
    )
    return payloads.minio_envelope(record)


async def post_shards(daemon: Daemon, numbers: range) -> None:
    for n in numbers:
        assert (
            await daemon.post("/hooks/minio", shard_notification(n), {"Content-Type": "application/json"})
            == 202
        )


async def test_thirty_minio_shards_give_one_reload_with_the_last_shards_event(
    apiserver: ApiServer, start: Start
) -> None:
    seed_model(apiserver)
    daemon = await start([SHARDS])
    await post_shards(daemon, range(1, 31))
    model = await eventually(
        lambda: (m := apiserver.find(MODELS, "ai", "llama")) and m["metadata"]["generation"] == 2 and m
    )
    await asyncio.sleep(1.5)  # longer than the window: nothing else comes
    await idle(daemon)

    assert apiserver.versions(MODELS, "ai", "llama") == 2, "exactly one reload"
    assert model["spec"]["url"] == "s3://models/llama-70b/"
    last = next(
        e
        for e in await daemon.store.list(limit=100)
        if e.subject and e.subject.endswith("00030-of-00030.safetensors")
    )
    assert model["metadata"]["annotations"][kubernetes.ANNOTATION_EVENT_ID] == last.id, (
        "the last shard's event"
    )
    rows = await daemon.invocations()
    [ran] = [i for i in rows if i.state == "done"]
    assert ran.event_seq == last.seq
    assert sorted(i.state for i in rows) == ["coalesced"] * 29 + ["done"]
    assert {i.taken_by for i in rows if i.state == "coalesced"} == {ran.id}
    assert support.metric("glue_invocations_coalesced_total", route="reload-model-after-upload") >= 29


async def test_a_daemon_stopped_mid_window_runs_the_window_once_after_its_restart(
    apiserver: ApiServer, start: Start
) -> None:
    seed_model(apiserver)
    first = await start([SHARDS])
    await post_shards(first, range(1, 11))
    await eventually(lambda: _routed(first, 10))
    await first.daemon.stop()  # inside the window: nothing has run
    assert apiserver.versions(MODELS, "ai", "llama") == 1

    second = await start([SHARDS])
    await eventually(lambda: apiserver.versions(MODELS, "ai", "llama") == 2)
    await asyncio.sleep(1.5)
    await idle(second)
    assert apiserver.versions(MODELS, "ai", "llama") == 2, "run once, not once per daemon"
    rows = await second.invocations()
    assert len(rows) == 10 and sorted(i.state for i in rows) == ["coalesced"] * 9 + ["done"], "nothing lost"


async def _routed(daemon: Daemon, count: int) -> bool:
    return len(await daemon.invocations()) == count and await daemon.store.backlog() == 0


# -- five tag pushes -------------------------------------------------------------------------------


def tag_push(n: int) -> tuple[dict[str, Any], dict[str, str]]:
    body = {
        "object_kind": "tag_push",
        "event_name": "tag_push",
        "before": "0" * 40,
        "after": f"{n:040x}",
        "ref": f"refs/tags/v1.0.{n}",
        "checkout_sha": f"{n:040x}",
        "project_id": 42,
        "project": {"id": 42, "name": "shop", "path_with_namespace": "web/shop"},
        "commits": [],
        "total_commits_count": 0,
    }
    uuid = f"6f0b1c52-8a4e-4b1f-9d3c-2a7e5c1d9e{n:02d}"
    headers = {
        "Content-Type": "application/json",
        "X-Gitlab-Event": "Tag Push Hook",
        "X-Gitlab-Event-UUID": uuid,
        "Idempotency-Key": uuid,
    }
    return body, headers


def workflows_by_tag(apiserver: ApiServer) -> dict[str, dict[str, Any]]:
    found = {}
    for (res, _, name), obj in apiserver.objects.items():
        if str(res.plural) == "workflows" and not obj.deleted:
            wf = apiserver.read(WORKFLOWS, "ci", name)
            found[wf["spec"]["arguments"]["parameters"][0]["value"]] = wf
    return found


async def test_five_tag_pushes_under_supersede_give_the_first_and_the_last_workflow(
    apiserver: ApiServer, start: Start
) -> None:
    apiserver.seed(WORKFLOW_TEMPLATES, workflow_template(parameters=[{"name": "tag"}]))
    submitting = asyncio.Event()
    answer = asyncio.Event()

    async def slow_first_submit() -> None:  # the first submit is in flight while the others arrive
        submitting.set()
        await answer.wait()

    apiserver.before("POST", "/workflows$", slow_first_submit)
    daemon = await start([releases("supersede")])
    assert await daemon.post("/hooks/gitlab", *tag_push(1)) == 202
    await asyncio.wait_for(submitting.wait(), 30)
    for n in range(2, 6):
        assert await daemon.post("/hooks/gitlab", *tag_push(n)) == 202
    await eventually(
        lambda: _states(daemon, ["pending", "running", "superseded", "superseded", "superseded"])
    )
    answer.set()
    # the outcome of the last is committed just after its Workflow is created
    await eventually(lambda: _states(daemon, ["done", "done", "superseded", "superseded", "superseded"]))
    await idle(daemon)

    assert set(workflows_by_tag(apiserver)) == {"v1.0.1", "v1.0.5"}, "the first and the last only"
    assert support.metric("glue_invocations_superseded_total", route="release-on-tag") >= 3


async def test_five_tag_pushes_under_cancel_stop_the_earlier_workflows(
    apiserver: ApiServer, start: Start
) -> None:
    apiserver.seed(WORKFLOW_TEMPLATES, workflow_template(parameters=[{"name": "tag"}]))
    daemon = await start([releases("cancel")])
    assert await daemon.post("/hooks/gitlab", *tag_push(1)) == 202
    first = await eventually(lambda: workflows_by_tag(apiserver).get("v1.0.1"))
    apiserver.set_status(WORKFLOWS, "ci", first["metadata"]["name"], {"phase": "Running"})  # the controller
    for n in range(2, 6):
        assert await daemon.post("/hooks/gitlab", *tag_push(n)) == 202
    await eventually(lambda: "v1.0.5" in workflows_by_tag(apiserver))
    await eventually(lambda: _finished(daemon))  # outcomes are committed just after the calls
    await idle(daemon)

    found = workflows_by_tag(apiserver)
    assert found["v1.0.1"]["spec"].get("shutdown") == "Stop", "the earlier Workflow stopped (argo stop)"
    assert "shutdown" not in found["v1.0.5"]["spec"], "the newest runs"
    assert all(wf["spec"].get("shutdown") == "Stop" for tag, wf in found.items() if tag != "v1.0.5")
    states = {i.params["parameters"]["tag"]: i.state for i in await daemon.invocations()}
    assert states["v1.0.1"] == "cancelled" and states["v1.0.5"] == "done"
    assert set(states.values()) <= {"cancelled", "superseded", "done"}


async def _finished(daemon: Daemon) -> bool:
    return all(i.state not in ("pending", "running") for i in await daemon.invocations())


async def _states(daemon: Daemon, expected: list[str]) -> bool:
    return sorted(i.state for i in await daemon.invocations()) == sorted(expected)


# -- a rotation storm ------------------------------------------------------------------------------


async def test_a_rotation_storm_restarts_at_the_rate_the_limit_allows_the_rest_wait(
    apiserver: ApiServer, start: Start
) -> None:
    apiserver.seed(DEPLOYMENTS, deployment("api", "web"))
    daemon = await start([ROTATIONS])
    headers = {"Content-Type": "application/cloudevents+json"}
    for n in range(1, 21):
        rotated = {
            "specversion": "1.0",
            "id": f"rotation-{n}",
            "source": "//openbao/rotations",
            "type": "openbao.secret.rotated",
            "datacontenttype": "application/json",
            "data": {"deployment": "api", "path": "web/api/db"},
        }
        assert await daemon.post("/events", rotated, headers) == 202

    async def waiting() -> bool:
        rows = await daemon.invocations()
        return len(rows) == 20 and sorted(r.state for r in rows) == ["done"] * 3 + ["pending"] * 17

    await eventually(waiting)
    await asyncio.sleep(0.5)
    assert apiserver.versions(DEPLOYMENTS, "web", "api") == 1 + 3, "the burst of 3, then one an hour"
    pending = [r for r in await daemon.invocations() if r.state == "pending"]
    assert {r.wait_reason for r in pending} == {"rate-limit"} and all(r.attempt == 0 for r in pending)


# -- a crash mid-window ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_sigkill_mid_window_then_restart_loses_nothing_and_runs_once(
    apiserver: ApiServer, kubeconfig: Path, tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """``glue run`` as a real process, killed with SIGKILL inside a coalescing window, then started
    again on the same journal: the window's one reload happens once, with every event."""
    seed_model(apiserver)
    journal_config: dict[str, Any] = {"path": str(tmp_path / "journal.db")}
    if backend == "postgres":
        dsn = await pgserver.create_schema(request.getfixturevalue("pg_database"))
        journal_config = {"backend": "postgres", "dsn": {"value": dsn}}
    port = _free_port()
    config = tmp_path / "glue.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server": {"host": "127.0.0.1", "port": port},
                "journal": journal_config,
                "logging": {"level": "warning", "format": "json"},
                "execution": {"pollSeconds": 0.05},
                "endpoints": [{"name": "minio", "path": "/hooks/minio", "format": "minio"}],
                "routes": [{**SHARDS, "coalesce": {**SHARDS["coalesce"], "window": "5s"}}],
                "clients": {"kubernetes": {"kubeconfig": str(kubeconfig)}},
            }
        )
    )
    log = tmp_path / "glue.log"
    store = journal.create(settings.Journal.model_validate(journal_config))
    await store.open()
    first = await support.spawn_glue(config, log)
    try:
        await eventually(lambda: _healthy(port))
        async with aiohttp.ClientSession() as session:
            for n in range(1, 11):
                async with session.post(
                    f"http://127.0.0.1:{port}/hooks/minio", json=shard_notification(n)
                ) as response:
                    assert response.status == 202

        async def routed() -> bool:
            return len(await store.invocations(limit=100)) == 10 and await store.backlog() == 0

        await eventually(routed)
        os.kill(first.pid, signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL
        assert apiserver.versions(MODELS, "ai", "llama") == 1, "killed inside the window: nothing ran"

        second = await support.spawn_glue(config, log)
        try:
            await eventually(lambda: apiserver.versions(MODELS, "ai", "llama") == 2)
            await asyncio.sleep(5.5)  # longer than the window: nothing else runs
            assert apiserver.versions(MODELS, "ai", "llama") == 2, "once, not once per daemon"
            rows = await store.invocations(limit=100)
            assert sorted(i.state for i in rows) == ["coalesced"] * 9 + ["done"], "nothing lost"
        finally:
            second.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(second.wait(), 30) == 0
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
        await store.close()
    assert "Traceback" not in log.read_text()


async def _healthy(port: int) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as response,
        ):
            return response.status == 200
    except aiohttp.ClientError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
