"""kubernetes.restart and rollout_restart(): kubectl's restartedAt by strategic merge patch, once per event.

Against the API double in apiserver.py (kmock + the API conventions it lacks); the request shape follows
kubectl's objectrestarter.go / rollout_restart.go as summarised in reference/actions.md section 6.1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cloudevents.core.v1.event import CloudEvent

import glue
from handlers import kubernetes
from tests.handlers.kubernetes import conftest as k8s_fixtures
from tests.handlers.kubernetes.apiserver import ApiServer
from tests.handlers.kubernetes.conftest import DEPLOYMENTS, STATEFULSETS, MakeContext, make_event

NS = "apps"


def deployment(name: str = "web", **spec: Any) -> dict[str, Any]:
    return k8s_fixtures.deployment(name, NS, replicas=2, **spec)


def template_annotations(api: ApiServer, name: str = "web", resource: str = DEPLOYMENTS) -> dict[str, str]:
    annotations: dict[str, str] = api.read(resource, NS, name)["spec"]["template"]["metadata"].get(
        "annotations", {}
    )
    return annotations


async def test_restart_sets_restarted_at_from_the_event(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    apiserver.seed(DEPLOYMENTS, deployment())
    params = kubernetes.RestartParams(namespace=NS, name="web")

    result = await kubernetes.restart(event=event, params=params, ctx=make_ctx())

    assert result is None
    obj = apiserver.read(DEPLOYMENTS, NS, "web")
    assert obj["metadata"]["generation"] == 2  # the pod template changed: a rollout
    annotations = template_annotations(apiserver)
    assert annotations[kubernetes.RESTARTED_AT] == "2026-11-27T12:00:00Z"
    assert obj["metadata"]["annotations"][kubernetes.ANNOTATION_EVENT_ID] == "evt-1"
    assert obj["metadata"]["annotations"][kubernetes.ANNOTATION_TRACEPARENT].startswith("00-4bf92f35")
    patch = apiserver.writes[-1]
    assert patch["contentType"] == "application/strategic-merge-patch+json"
    assert patch["query"]["fieldManager"] == kubernetes.FIELD_MANAGER


async def test_same_event_again_rolls_nothing(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    apiserver.seed(DEPLOYMENTS, deployment())
    params = kubernetes.RestartParams(namespace=NS, name="web")
    await kubernetes.restart(event=event, params=params, ctx=make_ctx())
    versions = apiserver.versions(DEPLOYMENTS, NS, "web")

    await kubernetes.restart(event=event, params=params, ctx=make_ctx(attempt=2))

    assert apiserver.versions(DEPLOYMENTS, NS, "web") == versions
    assert apiserver.read(DEPLOYMENTS, NS, "web")["metadata"]["generation"] == 2


async def test_another_event_with_the_same_time_rolls_again(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    apiserver.seed(DEPLOYMENTS, deployment())
    params = kubernetes.RestartParams(namespace=NS, name="web")
    await kubernetes.restart(event=event, params=params, ctx=make_ctx("src evt-1 r"))

    other = make_event(id="evt-2")
    await kubernetes.restart(event=other, params=params, ctx=make_ctx("src evt-2 r"))

    assert apiserver.read(DEPLOYMENTS, NS, "web")["metadata"]["generation"] == 3


async def test_dry_run_changes_nothing_and_is_checked_by_the_server(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    apiserver.seed(DEPLOYMENTS, deployment())
    params = kubernetes.RestartParams(namespace=NS, name="web")

    plan = await kubernetes.restart(event=event, params=params, ctx=make_ctx(dry_run=True))

    assert isinstance(plan, glue.Plan)
    assert [(c.method, c.target) for c in plan.calls] == [
        ("PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/web?fieldManager=runtime-glue")
    ]
    assert "dryRun=All" in plan.summary
    assert apiserver.writes[-1]["query"]["dryRun"] == "All"
    assert apiserver.versions(DEPLOYMENTS, NS, "web") == 1
    assert kubernetes.RESTARTED_AT not in template_annotations(apiserver)


async def test_dry_run_without_a_cluster_still_plans(
    event: CloudEvent, make_ctx: MakeContext, tmp_path: Path
) -> None:
    missing = glue.Clients(glue.registry, {"kubernetes": {"kubeconfig": str(tmp_path / "absent")}})
    params = kubernetes.RestartParams(namespace=NS, name="web")

    plan = await kubernetes.restart(event=event, params=params, ctx=make_ctx(dry_run=True, clients=missing))

    assert plan is not None and len(plan.calls) == 1
    assert "not checked" in plan.summary
    with pytest.raises(glue.PermanentError, match="cannot load the Kubernetes client configuration"):
        await kubernetes.restart(event=event, params=params, ctx=make_ctx(clients=missing))


async def test_statefulset_through_the_plain_function(apiserver: ApiServer, clients: glue.Clients) -> None:
    sts = deployment("db")
    sts["kind"] = "StatefulSet"
    sts["spec"]["serviceName"] = "db"
    apiserver.seed(STATEFULSETS, sts)
    api = await clients.get("kubernetes")

    first = await kubernetes.rollout_restart(api, "StatefulSet", NS, "db", "kv-version-7")
    again = await kubernetes.rollout_restart(api, "StatefulSet", NS, "db", "kv-version-7")

    assert (first.changed, again.changed) == (True, False)
    assert template_annotations(apiserver, "db", STATEFULSETS)[kubernetes.RESTARTED_AT] == "kv-version-7"
    assert apiserver.versions(STATEFULSETS, NS, "db") == 2


async def test_missing_workload_is_permanent_unless_the_route_waits(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    params = kubernetes.RestartParams(namespace=NS, name="absent")
    with pytest.raises(glue.PermanentError, match=r'deployments.apps "absent" not found'):
        await kubernetes.restart(event=event, params=params, ctx=make_ctx())

    waiting = kubernetes.RestartParams(namespace=NS, name="absent", wait_for_target=True)
    with pytest.raises(glue.TemporaryError):
        await kubernetes.restart(event=event, params=waiting, ctx=make_ctx())


async def test_paused_deployment_is_refused(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    apiserver.seed(DEPLOYMENTS, deployment(paused=True))
    params = kubernetes.RestartParams(namespace=NS, name="web")
    with pytest.raises(glue.PermanentError, match="paused"):
        await kubernetes.restart(event=event, params=params, ctx=make_ctx())
    assert apiserver.versions(DEPLOYMENTS, NS, "web") == 1


@pytest.mark.parametrize(
    ("status", "headers", "error", "delay"),
    [
        (429, {"Retry-After": "7"}, glue.TemporaryError, 7.0),
        (503, {}, glue.TemporaryError, None),
        (500, {"Retry-After": "2"}, glue.TemporaryError, 2.0),
        (422, {}, glue.PermanentError, None),
        (403, {}, glue.PermanentError, None),
    ],
)
async def test_api_errors_are_classified(
    apiserver: ApiServer,
    make_ctx: MakeContext,
    event: CloudEvent,
    status: int,
    headers: dict[str, str],
    error: type[Exception],
    delay: float | None,
) -> None:
    apiserver.seed(DEPLOYMENTS, deployment())
    apiserver.fail("PATCH", r"/deployments/web$", status, message="the server says no", headers=headers)
    params = kubernetes.RestartParams(namespace=NS, name="web")

    with pytest.raises(error, match="the server says no") as raised:
        await kubernetes.restart(event=event, params=params, ctx=make_ctx())

    if isinstance(raised.value, glue.TemporaryError):
        assert raised.value.delay == delay


async def test_connection_refused_is_temporary(
    make_ctx: MakeContext, event: CloudEvent, tmp_path: Path
) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    offline = glue.Clients(glue.registry, {"kubernetes": {"kubeconfig": str(config)}})
    async with offline.opened():
        with pytest.raises(glue.TemporaryError, match="cannot reach the API server"):
            await kubernetes.restart(
                event=event,
                params=kubernetes.RestartParams(namespace=NS, name="web"),
                ctx=make_ctx(clients=offline),
            )


async def test_plain_function_decides_by_its_template_annotations(
    apiserver: ApiServer, clients: glue.Clients
) -> None:
    """What a secret rotation does: same time, another version -> a restart; the same version -> none."""
    apiserver.seed(DEPLOYMENTS, deployment())
    api = await clients.get("kubernetes")
    when = "2026-11-27T12:00:00Z"

    v1 = await kubernetes.rollout_restart(api, "Deployment", NS, "web", when, template_annotations={"v": "1"})
    v1_again = await kubernetes.rollout_restart(
        api, "Deployment", NS, "web", when, template_annotations={"v": "1"}
    )
    v2 = await kubernetes.rollout_restart(api, "Deployment", NS, "web", when, template_annotations={"v": "2"})

    assert (v1.changed, v1_again.changed, v2.changed) == (True, False, True)
    assert apiserver.read(DEPLOYMENTS, NS, "web")["metadata"]["generation"] == 3
