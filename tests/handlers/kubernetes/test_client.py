"""The shared Kubernetes client: chosen by ``clients.kubernetes`` (kubeconfig file and context, or the
in-cluster service account), opened once through the handler contract and closed with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

import glue
from handlers import kubernetes
from tests.handlers.kubernetes.apiserver import ApiServer
from tests.handlers.kubernetes.conftest import DEPLOYMENTS, deployment


def two_contexts(apiserver: ApiServer, tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "elsewhere", "cluster": {"server": "http://127.0.0.1:9"}},
                    {"name": "double", "cluster": {"server": str(apiserver.url).rstrip("/")}},
                ],
                "users": [{"name": "u", "user": {"token": "t0k3n-not-logged"}}],
                "contexts": [
                    {"name": "prod", "context": {"cluster": "elsewhere", "user": "u"}},
                    {"name": "test", "context": {"cluster": "double", "user": "u"}},
                ],
                "current-context": "prod",
            }
        )
    )
    return path


async def test_the_configured_context_is_used_and_sends_the_token(
    apiserver: ApiServer, tmp_path: Path
) -> None:
    config = {"kubernetes": {"kubeconfig": str(two_contexts(apiserver, tmp_path)), "context": "test"}}
    apiserver.seed(DEPLOYMENTS, deployment("web", "a"))
    shared = glue.Clients(glue.registry, config)
    async with shared.opened():
        api = await shared.get("kubernetes")
        assert await shared.get("kubernetes") is api  # one client for the daemon
        result = await kubernetes.rollout_restart(api, "Deployment", "a", "web", "v1")
        assert result.changed
    last = list(apiserver)[-1]  # kmock keeps every request it served
    assert last.headers["Authorization"] == "Bearer t0k3n-not-logged"
    assert last.headers["User-Agent"].startswith("runtime-glue/")
    assert api.rest_client.pool_manager.closed  # closed with the other shared clients


async def test_unusable_configurations_are_clear_permanent_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    cases: list[tuple[dict[str, Any], str]] = [
        (
            {"inCluster": True},
            "cannot load the Kubernetes client configuration: Service host/port is not set",
        ),
        ({"kubeconfig": str(tmp_path / "absent")}, "cannot load the Kubernetes client configuration"),
    ]
    for config, message in cases:
        shared = glue.Clients(glue.registry, {"kubernetes": config})
        with pytest.raises(glue.PermanentError, match=message):
            await shared.get("kubernetes")
        await shared.aclose()


def test_config_is_validated_when_the_settings_load() -> None:
    with pytest.raises(pydantic.ValidationError, match="inCluster excludes kubeconfig"):
        kubernetes.KubernetesConfig.model_validate({"inCluster": True, "kubeconfig": "/x"})
    with pytest.raises(pydantic.ValidationError):
        kubernetes.KubernetesConfig.model_validate({"cluster": "x"})


async def test_a_request_the_client_cannot_encode_is_permanent(
    apiserver: ApiServer, clients: glue.Clients
) -> None:
    """kubernetes-asyncio's REST client raises ApiException(status=0, "Cannot prepare a request message")
    before sending a body it cannot encode for its content type (as 30.1.0 did for every server-side
    apply), and its ApiClient turns that into an AttributeError: a permanent error, nothing sent."""
    api = await clients.get("kubernetes")
    options: dict[str, Any] = {"_content_type": "text/plain"}
    with (
        pytest.raises(glue.PermanentError, match="the client cannot send this request"),
        kubernetes.errors("Certificate ns/c"),
    ):
        await kubernetes.custom_objects(api).patch_namespaced_custom_object(
            "cert-manager.io", "v1", "ns", "certificates", "c", {"spec": {}}, **options
        )
    assert apiserver.writes == []
