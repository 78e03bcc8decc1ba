"""End to end: webhooks into a running daemon (HTTP intake, SQLite journal, executor), handlers acting on
the Kubernetes API double (apiserver.py) through a kubeconfig, exactly as ``glue run`` wires them.

Payloads are written here from the documented formats (reference/formats.md: Harbor "Default" push,
GitLab Tag Push Hook, a structured CloudEvent).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from structlog.testing import capture_logs

from glue import app, cli, execution
from handlers import kubernetes
from tests import support
from tests.handlers.kubernetes.apiserver import ApiServer
from tests.handlers.kubernetes.conftest import (
    CERTIFICATES,
    DNSENDPOINTS,
    MODELS,
    WORKFLOW_TEMPLATES,
    WORKFLOWS,
    workflow_template,
)

ROUTES: list[dict[str, Any]] = [
    {
        "name": "vllm-image-pushed",
        "match": 'type == "harbor.artifact.pushed" && data.repository.repo_full_name == "ai/vllm"',
        "handler": "kubeai.reload",
        "params": {"namespace": "ai", "name": "llama", "image": "{{ data.resources[0].resource_url }}"},
    },
    {
        "name": "release-on-tag",
        "match": 'type == "gitlab.tag_push" && data.ref.startsWith("refs/tags/v")',
        "handler": "argo.submit",
        "params": {
            "namespace": "ci",
            "template": "build-release",
            "parameters": {
                "tag": "{{ data.ref | replace('refs/tags/', '') }}",
                "project": "{{ data.project.path_with_namespace }}",
                "sha": "{{ data.checkout_sha }}",
            },
        },
    },
    {
        "name": "endpoint-dns",
        "match": 'type == "platform.endpoint.announced"',
        "handler": "externaldns.endpoint",
        "params": {
            "namespace": "{{ data.namespace }}",
            "name": "{{ data.name }}",
            "endpoints": [{"dnsName": "{{ data.host }}", "recordType": "A", "targets": ["{{ data.ip }}"]}],
        },
    },
    {
        "name": "endpoint-certificate",
        "match": 'type == "platform.endpoint.announced"',
        "handler": "certmanager.certificate",
        "params": {
            "namespace": "{{ data.namespace }}",
            "name": "{{ data.name }}-tls",
            "secretName": "{{ data.name }}-tls",
            "dnsNames": ["{{ data.host }}"],
            "issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer"},
        },
    },
]


class Daemon(support.Client):
    async def post(self, path: str, body: Any, headers: dict[str, str]) -> int:
        async with self.session.post(self.base + path, data=json.dumps(body), headers=headers) as response:
            return response.status


@pytest.fixture
async def daemon(kubeconfig: Path, tmp_path: Path) -> AsyncIterator[Daemon]:
    config = support.daemon_settings(
        tmp_path,
        execution={"pollSeconds": 0.05},
        endpoints=[
            {"name": "harbor", "path": "/hooks/harbor", "format": "harbor"},
            {"name": "gitlab", "path": "/hooks/gitlab", "format": "gitlab"},
            {"name": "events", "path": "/events", "format": "cloudevents"},
        ],
        routes=ROUTES,
        clients={"kubernetes": {"kubeconfig": str(kubeconfig)}},
    )
    app.load_plugins(config)
    async with support.running(config) as running, aiohttp.ClientSession() as session:
        assert running.pipeline is not None
        assert any(component.name == "executor" for component in running.pipeline.workers)
        yield Daemon(running, session)


async def eventually(check: Callable[[], Any]) -> Any:
    return await support.eventually(check, within=30.0)


async def settled(daemon: Daemon) -> None:
    """Nothing left to route or run (the executor's own idle check)."""
    assert daemon.daemon.pipeline is not None
    executor = next(c for c in daemon.daemon.pipeline.workers if isinstance(c, execution.Executor))
    await asyncio.wait_for(executor.idle(), 30)


async def test_harbor_push_updates_the_kubeai_model(apiserver: ApiServer, daemon: Daemon) -> None:
    apiserver.seed(
        MODELS,
        {
            "apiVersion": "kubeai.org/v1",
            "kind": "Model",
            "metadata": {"name": "llama", "namespace": "ai"},
            "spec": {
                "url": "hf://meta-llama/Llama-3.1-8B-Instruct",
                "engine": "VLLM",
                "features": ["TextGeneration"],
                "image": "ai/vllm:0.9.0",
            },
        },
    )
    push = {
        "type": "PUSH_ARTIFACT",
        "occur_at": 1764244800,
        "operator": "ci-bot",
        "event_data": {
            "resources": [
                {
                    "digest": "sha256:" + "ab" * 32,
                    "tag": "0.9.1",
                    "resource_url": "harbor.example/ai/vllm:0.9.1",
                }
            ],
            "repository": {
                "name": "vllm",
                "namespace": "ai",
                "repo_full_name": "ai/vllm",
                "repo_type": "private",
            },
        },
    }
    headers = {"Content-Type": "application/json"}

    assert await daemon.post("/hooks/harbor", push, headers) == 202
    model = await eventually(
        lambda: (
            (m := apiserver.find(MODELS, "ai", "llama")) and m["spec"].get("image") != "ai/vllm:0.9.0" and m
        )
    )
    assert model["spec"]["image"] == "harbor.example/ai/vllm:0.9.1"
    assert model["metadata"]["generation"] == 2
    assert model["metadata"]["annotations"][kubernetes.ANNOTATION_EVENT_SOURCE] == "harbor"

    assert await daemon.post("/hooks/harbor", push, headers) == 200  # Harbor's retry: same body, a duplicate
    await settled(daemon)
    assert apiserver.versions(MODELS, "ai", "llama") == 2


async def test_gitlab_tag_push_delivered_twice_is_one_workflow(apiserver: ApiServer, daemon: Daemon) -> None:
    apiserver.seed(
        WORKFLOW_TEMPLATES,
        workflow_template(parameters=[{"name": "tag"}, {"name": "project"}, {"name": "sha"}]),
    )
    tag_push = {
        "object_kind": "tag_push",
        "event_name": "tag_push",
        "before": "0" * 40,
        "after": "3f2a" * 10,
        "ref": "refs/tags/v2.3.0",
        "checkout_sha": "3f2a" * 10,
        "project_id": 42,
        "project": {
            "id": 42,
            "name": "shop",
            "path_with_namespace": "web/shop",
            "web_url": "https://gitlab.example/web/shop",
        },
        "commits": [],
        "total_commits_count": 0,
    }
    headers = {
        "Content-Type": "application/json",
        "X-Gitlab-Event": "Tag Push Hook",
        "X-Gitlab-Event-UUID": "6f0b1c52-8a4e-4b1f-9d3c-2a7e5c1d9e01",
        "Idempotency-Key": "6f0b1c52-8a4e-4b1f-9d3c-2a7e5c1d9e01",
    }

    statuses = await asyncio.gather(
        daemon.post("/hooks/gitlab", tag_push, headers), daemon.post("/hooks/gitlab", tag_push, headers)
    )
    assert sorted(statuses) in ([200, 202], [202, 202])  # one journaled event either way
    await eventually(lambda: apiserver.writes)
    await settled(daemon)
    assert await daemon.post("/hooks/gitlab", tag_push, headers) == 200  # and once more, later
    await settled(daemon)

    workflows = [obj.raw for (res, ns, _), obj in apiserver.objects.items() if str(res.plural) == "workflows"]
    assert len(workflows) == 1
    [workflow] = workflows
    assert workflow["metadata"]["name"].startswith("build-release-")
    assert workflow["metadata"]["labels"][kubernetes.LABEL_ROUTE] == "release-on-tag"
    assert workflow["spec"]["arguments"]["parameters"] == [
        {"name": "tag", "value": "v2.3.0"},
        {"name": "project", "value": "web/shop"},
        {"name": "sha", "value": "3f2a" * 10},
    ]
    assert workflow["metadata"]["annotations"][kubernetes.ANNOTATION_EVENT_ID] == headers["Idempotency-Key"]
    assert apiserver.find(WORKFLOWS, "ci", workflow["metadata"]["name"]) is not None


async def test_cloudevent_announcing_an_endpoint_gives_dns_and_a_certificate(
    apiserver: ApiServer, daemon: Daemon
) -> None:
    announced = {
        "specversion": "1.0",
        "id": "ep-7f3c",
        "source": "//platform.example/catalog",
        "type": "platform.endpoint.announced",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "datacontenttype": "application/json",
        "data": {"namespace": "web", "name": "shop", "host": "shop.example.com", "ip": "203.0.113.10"},
    }
    headers = {"Content-Type": "application/cloudevents+json"}

    assert await daemon.post("/events", announced, headers) == 202
    dns = await eventually(lambda: apiserver.find(DNSENDPOINTS, "web", "shop"))
    cert = await eventually(lambda: apiserver.find(CERTIFICATES, "web", "shop-tls"))

    assert dns["spec"]["endpoints"] == [
        {"dnsName": "shop.example.com", "recordType": "A", "targets": ["203.0.113.10"]}
    ]
    assert cert["spec"]["dnsNames"] == ["shop.example.com"]
    assert cert["spec"]["issuerRef"] == {
        "name": "letsencrypt",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    for obj in (dns, cert):
        annotations = obj["metadata"]["annotations"]
        assert annotations[kubernetes.ANNOTATION_EVENT_ID] == "ep-7f3c"
        assert annotations[kubernetes.ANNOTATION_TRACEPARENT] == announced["traceparent"]


async def glue_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the ``glue`` command line as ``main()`` in a thread (its own event loop); the API double
    keeps serving in this one."""
    code = await asyncio.to_thread(cli.main, list(args))
    out, err = capsys.readouterr()
    rows = "\n".join(line for line in out.splitlines() if line.startswith("{"))  # not the daemon's log lines
    return code, rows, err


async def test_replay_dry_run_plans_are_checked_by_the_api_server(
    apiserver: ApiServer, daemon: Daemon, kubeconfig: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    announced = {
        "specversion": "1.0",
        "id": "ep-9",
        "source": "//platform.example/catalog",
        "type": "platform.endpoint.announced",
        "data": {"namespace": "web", "name": "cart", "host": "cart.example.com", "ip": "203.0.113.11"},
    }
    recording = tmp_path / "events.jsonl"
    recording.write_text(json.dumps(announced) + "\n")
    config = tmp_path / "glue.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "journal": {"path": str(tmp_path / "replay.db")},
                "routes": ROUTES,
                "clients": {"kubernetes": {"kubeconfig": str(kubeconfig)}},
            }
        )
    )

    code, out, err = await glue_cli(capsys, "replay", "--dry-run", str(recording), "--config", str(config))

    assert code == 0, err
    rows = {row["route"]: row for row in map(json.loads, out.splitlines())}
    assert set(rows) == {"endpoint-dns", "endpoint-certificate"}
    for row in rows.values():
        assert row["outcome"] == "planned"
        assert "checked by the API server" in row["plan"]["summary"]
        [call] = row["plan"]["calls"]
        assert call["method"] == "PATCH"
    assert {w["query"].get("dryRun") for w in apiserver.writes} == {"All"}
    assert (
        apiserver.find(DNSENDPOINTS, "web", "cart") is None
        and apiserver.find(CERTIFICATES, "web", "cart-tls") is None
    )

    assert await daemon.post("/events", announced, {"Content-Type": "application/cloudevents+json"}) == 202
    await eventually(lambda: apiserver.find(CERTIFICATES, "web", "cart-tls"))
    await eventually(lambda: apiserver.find(DNSENDPOINTS, "web", "cart"))
    await settled(daemon)

    code, out, err = await glue_cli(capsys, "replay", "--dry-run", str(recording), "--config", str(config))
    assert code == 0, err
    for row in map(json.loads, out.splitlines()):
        assert row["plan"]["calls"] == [] and "already as wanted" in row["plan"]["summary"]


async def test_without_a_cluster_kubernetes_routes_log_their_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No kubeconfig, not in a pod: the route plans instead of failing (the laptop default of `glue run`)."""
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    config = support.daemon_settings(
        tmp_path,
        execution={"pollSeconds": 0.05},
        endpoints=[{"name": "harbor", "path": "/hooks/harbor", "format": "harbor"}],
        routes=ROUTES[:1],
    )
    app.load_plugins(config)
    push = {
        "type": "PUSH_ARTIFACT",
        "occur_at": 1764244800,
        "operator": "ci-bot",
        "event_data": {
            "resources": [{"digest": "sha256:" + "cd" * 32, "resource_url": "harbor.example/ai/vllm:0.9.2"}],
            "repository": {"name": "vllm", "namespace": "ai", "repo_full_name": "ai/vllm"},
        },
    }
    with capture_logs() as logs:
        async with support.running(config) as running, aiohttp.ClientSession() as session:
            client = Daemon(running, session)
            assert await client.post("/hooks/harbor", push, {"Content-Type": "application/json"}) == 202
            dispatched = await eventually(lambda: next((e for e in logs if e["event"] == "dispatched"), None))
    warning = next(e for e in logs if e["event"] == "route runs in dry-run: its client is not configured")
    assert (warning["route"], warning["client"]) == ("vllm-image-pushed", "kubernetes")
    assert dispatched["outcome"] == "planned"
    [call] = dispatched["plan"]["calls"]
    assert call["method"] == "PATCH"
    assert call["target"].startswith("/apis/kubeai.org/v1/namespaces/ai/models/llama")
    assert call["body"]["spec"]["image"] == "harbor.example/ai/vllm:0.9.2"
