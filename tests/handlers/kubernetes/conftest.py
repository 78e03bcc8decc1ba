"""Fixtures: the Kubernetes API double on a loopback port, a kubeconfig pointing at it, the shared
client opened through the handler contract, and contexts/events to call handlers with."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kmock
import pytest
import structlog
import yaml
from cloudevents.core.v1.event import CloudEvent

import glue
import handlers.argo
import handlers.certmanager
import handlers.externaldns
import handlers.kubeai
import handlers.kubernetes  # noqa: F401  (registers the handlers and the client)
from tests.handlers.kubernetes import schemas
from tests.handlers.kubernetes.apiserver import ApiServer

DEPLOYMENTS = "apps/v1/deployments"
STATEFULSETS = "apps/v1/statefulsets"
DNSENDPOINTS = "externaldns.k8s.io/v1alpha1/dnsendpoints"
CERTIFICATES = "cert-manager.io/v1/certificates"
MODELS = "kubeai.org/v1/models"
WORKFLOWS = "argoproj.io/v1alpha1/workflows"
WORKFLOW_TEMPLATES = "argoproj.io/v1alpha1/workflowtemplates"
CLUSTER_WORKFLOW_TEMPLATES = "argoproj.io/v1alpha1/clusterworkflowtemplates"
SERVICES = "v1/services"

#: The ``make_ctx`` fixture: a handler context, with keyword arguments for its fields.
MakeContext = Callable[..., glue.Context]


def deployment(
    name: str = "web", namespace: str = "apps", *, replicas: int = 1, **spec: Any
) -> dict[str, Any]:
    """A Deployment to seed the API double with (one container; ``spec`` adds or replaces fields)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
            },
            **spec,
        },
    }


@pytest.fixture
async def apiserver() -> AsyncIterator[ApiServer]:
    async with ApiServer() as api, kmock.Server(api):
        api.define(DEPLOYMENTS, "Deployment", builtin=True)
        api.define(STATEFULSETS, "StatefulSet", builtin=True)
        api.define("apps/v1/daemonsets", "DaemonSet", builtin=True)
        api.define(SERVICES, "Service", builtin=True)
        api.define("networking.k8s.io/v1/ingresses", "Ingress", builtin=True)
        api.define(DNSENDPOINTS, "DNSEndpoint")
        api.define(CERTIFICATES, "Certificate")
        api.define(MODELS, "Model")
        api.define(WORKFLOWS, "Workflow", status=False)  # Argo's CRD has no status subresource
        api.define(WORKFLOW_TEMPLATES, "WorkflowTemplate", status=False)
        api.define(CLUSTER_WORKFLOW_TEMPLATES, "ClusterWorkflowTemplate", namespaced=False, status=False)
        for resource, validators in schemas.VALIDATORS.items():
            api.validators[kmock.resource(resource)] = list(validators)
        yield api


def workflow_template(
    name: str = "build-release",
    namespace: str | None = "ci",
    *,
    parameters: list[dict[str, Any]] | None = None,
    labels: dict[str, str] | None = None,
    entrypoint: str | None = "main",
) -> dict[str, Any]:
    """A (Cluster)WorkflowTemplate to seed (``namespace`` None: a ClusterWorkflowTemplate)."""
    spec: dict[str, Any] = {
        "templates": [{"name": "main", "container": {"image": "alpine:3", "command": ["true"]}}],
        "arguments": {"parameters": parameters if parameters is not None else []},
    }
    if entrypoint:
        spec["entrypoint"] = entrypoint
    metadata: dict[str, Any] = {"name": name, **({"namespace": namespace} if namespace else {})}
    if labels:
        metadata["labels"] = labels
    kind = "WorkflowTemplate" if namespace else "ClusterWorkflowTemplate"
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec}


@pytest.fixture
def kubeconfig(apiserver: ApiServer, tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "double", "cluster": {"server": str(apiserver.url).rstrip("/")}}],
                "users": [{"name": "glue", "user": {"token": "not-a-real-token"}}],
                "contexts": [{"name": "double", "context": {"cluster": "double", "user": "glue"}}],
                "current-context": "double",
            }
        )
    )
    return path


@pytest.fixture
async def clients(kubeconfig: Path) -> AsyncIterator[glue.Clients]:
    shared = glue.Clients(glue.registry, {"kubernetes": {"kubeconfig": str(kubeconfig)}})
    async with shared.opened():
        yield shared


@pytest.fixture
def make_ctx(clients: glue.Clients) -> MakeContext:
    def make(
        key: str = "src 1 route", *, dry_run: bool = False, route: str = "test-route", **kw: Any
    ) -> glue.Context:
        return glue.Context(
            route=route,
            handler=kw.pop("handler", "test"),
            idempotency_key=key,
            attempt=kw.pop("attempt", 1),
            dry_run=dry_run,
            log=structlog.get_logger("test"),
            clients=kw.pop("clients", clients),
            **kw,
        )

    return make


def make_event(
    *, id: str | None = None, source: str = "/test", type: str = "test.event", data: Any = None, **extra: Any
) -> CloudEvent:
    attributes: dict[str, Any] = {
        "id": id or str(uuid.uuid4()),
        "source": source,
        "type": type,
        "time": datetime.datetime(2026, 11, 27, 12, 0, 0, tzinfo=datetime.UTC),
        **extra,
    }
    return CloudEvent(attributes, data)


@pytest.fixture
def event() -> CloudEvent:
    return make_event(id="evt-1", traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
