"""The API double keeps the Kubernetes API conventions the handler tests rely on (see apiserver.py for
the upstream documents), checked here through kubernetes-asyncio over HTTP as the handlers use it."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

import glue
from tests.handlers.kubernetes.apiserver import ApiServer
from tests.handlers.kubernetes.conftest import CERTIFICATES, DEPLOYMENTS, deployment

G, V, P = "cert-manager.io", "v1", "certificates"

# kubernetes-asyncio takes ``_content_type`` but its stubs do not declare it: passed as ``**`` of a mapping.
MERGE: dict[str, Any] = {"_content_type": "application/merge-patch+json"}
STRATEGIC_MERGE: dict[str, Any] = {"_content_type": "application/strategic-merge-patch+json"}
APPLY: dict[str, Any] = {"_content_type": "application/apply-patch+yaml"}


def cert(name: str = "c", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"secretName": name, "issuerRef": {"name": "ca"}, **spec},
        "status": {"revision": 7},
    }


@pytest.fixture
async def custom(clients: glue.Clients) -> k8s.CustomObjectsApi:
    return k8s.CustomObjectsApi(await clients.get("kubernetes"))


def reason(exc: ApiException) -> str:
    return str(json.loads(cast(bytes, exc.body))["reason"])  # the double always answers with a body


async def test_create_answers_201_with_metadata_and_drops_status(
    apiserver: ApiServer, custom: k8s.CustomObjectsApi
) -> None:
    created = await custom.create_namespaced_custom_object(G, V, "ns", P, cert())
    assert apiserver.writes[-1]["method"] == "POST"
    assert created["metadata"]["generation"] == 1 and created["metadata"]["uid"]
    assert "status" not in created  # the status subresource is written through /status only
    with pytest.raises(ApiException) as raised:
        await custom.create_namespaced_custom_object(G, V, "ns", P, cert())
    assert (raised.value.status, reason(raised.value)) == (409, "AlreadyExists")


async def test_resource_version_and_generation(apiserver: ApiServer, custom: k8s.CustomObjectsApi) -> None:
    created = await custom.create_namespaced_custom_object(G, V, "ns", P, cert())
    rv = created["metadata"]["resourceVersion"]
    same = await custom.patch_namespaced_custom_object(
        G, V, "ns", P, "c", {"spec": {"secretName": "c"}}, **MERGE
    )
    assert same["metadata"]["resourceVersion"] == rv  # no-op: nothing persisted
    labelled = await custom.patch_namespaced_custom_object(
        G, V, "ns", P, "c", {"metadata": {"labels": {"a": "b"}}}, **MERGE
    )
    assert labelled["metadata"]["resourceVersion"] != rv and labelled["metadata"]["generation"] == 1
    changed = await custom.patch_namespaced_custom_object(
        G, V, "ns", P, "c", {"spec": {"dnsNames": ["x"]}}, **MERGE
    )
    assert changed["metadata"]["generation"] == 2
    with pytest.raises(ApiException) as raised:  # stale resourceVersion in a patch: a precondition
        await custom.patch_namespaced_custom_object(
            G,
            V,
            "ns",
            P,
            "c",
            {"metadata": {"resourceVersion": rv}},
            **MERGE,
        )
    assert (raised.value.status, reason(raised.value)) == (409, "Conflict")


async def test_status_subresource(apiserver: ApiServer, custom: k8s.CustomObjectsApi) -> None:
    await custom.create_namespaced_custom_object(G, V, "ns", P, cert())
    live = await custom.get_namespaced_custom_object(G, V, "ns", P, "c")
    updated = await custom.replace_namespaced_custom_object_status(
        G, V, "ns", P, "c", {**live, "spec": {"secretName": "ignored"}, "status": {"revision": 8}}
    )
    assert updated["status"] == {"revision": 8} and updated["spec"]["secretName"] == "c"
    main = await custom.patch_namespaced_custom_object(
        G, V, "ns", P, "c", {"status": {"revision": 99}}, **MERGE
    )
    assert main["status"] == {"revision": 8}
    with pytest.raises(ApiException) as raised:  # a PUT with a stale resourceVersion
        await custom.replace_namespaced_custom_object_status(G, V, "ns", P, "c", live)
    assert raised.value.status == 409


async def test_dry_run_persists_nothing(apiserver: ApiServer, custom: k8s.CustomObjectsApi) -> None:
    await custom.create_namespaced_custom_object(G, V, "ns", P, cert("d"), dry_run="All")
    assert apiserver.find(CERTIFICATES, "ns", "d") is None
    await custom.create_namespaced_custom_object(G, V, "ns", P, cert())
    await custom.delete_namespaced_custom_object(G, V, "ns", P, "c", dry_run="All")
    assert apiserver.find(CERTIFICATES, "ns", "c") is not None


async def test_patch_types(apiserver: ApiServer, custom: k8s.CustomObjectsApi, clients: glue.Clients) -> None:
    await custom.create_namespaced_custom_object(G, V, "ns", P, cert())
    with pytest.raises(ApiException) as raised:
        await custom.patch_namespaced_custom_object(G, V, "ns", P, "c", {"spec": {}}, **STRATEGIC_MERGE)
    assert (raised.value.status, reason(raised.value)) == (415, "UnsupportedMediaType")
    apiserver.seed(DEPLOYMENTS, deployment("d", "ns"))
    apps = k8s.AppsV1Api(await clients.get("kubernetes"))
    patched = await apps.patch_namespaced_deployment("d", "ns", {"spec": {"paused": True}})  # SMP by default
    assert patched.spec.paused is True


async def test_server_side_apply(apiserver: ApiServer, custom: k8s.CustomObjectsApi) -> None:
    with pytest.raises(ApiException) as raised:
        await custom.patch_namespaced_custom_object(G, V, "ns", P, "c", cert(), **APPLY)
    assert raised.value.status == 422  # fieldManager is required (ValidatePatchOptions)

    body = cert(dnsNames=["a"], duration="2160h")
    created = await custom.patch_namespaced_custom_object(
        G, V, "ns", P, "c", body, field_manager="one", **APPLY
    )
    assert created is None  # 201 Created: kubernetes-asyncio maps only 200 to a body for PATCH
    assert apiserver.writes[-1]["method"] == "PATCH"
    first = await custom.get_namespaced_custom_object(G, V, "ns", P, "c")
    assert first["spec"]["duration"] == "2160h" and "status" not in first  # created by apply
    body = cert(dnsNames=["a", "b"])  # duration no longer applied by "one": removed
    second = await custom.patch_namespaced_custom_object(
        G, V, "ns", P, "c", body, field_manager="one", **APPLY
    )
    assert second["spec"]["dnsNames"] == ["a", "b"] and "duration" not in second["spec"]

    other = cert(dnsNames=["z"])
    with pytest.raises(ApiException) as raised:
        await custom.patch_namespaced_custom_object(G, V, "ns", P, "c", other, field_manager="two", **APPLY)
    assert (raised.value.status, reason(raised.value)) == (409, "Conflict")
    forced = await custom.patch_namespaced_custom_object(
        G, V, "ns", P, "c", other, field_manager="two", force=True, **APPLY
    )
    assert forced["spec"]["dnsNames"] == ["z"]


async def test_a_custom_object_update_needs_a_resource_version(
    apiserver: ApiServer, custom: k8s.CustomObjectsApi, clients: glue.Clients
) -> None:
    """apiextensions-apiserver pkg/registry/customresource/strategy.go: AllowUnconditionalUpdate is false."""
    await custom.create_namespaced_custom_object(G, V, "ns", P, cert())
    live = await custom.get_namespaced_custom_object(G, V, "ns", P, "c")
    unconditional = {
        **live,
        "metadata": {k: v for k, v in live["metadata"].items() if k != "resourceVersion"},
    }
    for replace in (custom.replace_namespaced_custom_object, custom.replace_namespaced_custom_object_status):
        with pytest.raises(ApiException) as raised:
            await replace(G, V, "ns", P, "c", unconditional)
        assert (raised.value.status, reason(raised.value)) == (422, "Invalid")
        assert "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update" in str(
            json.loads(cast(bytes, raised.value.body))["message"]
        )
    # a built-in kind such as a Deployment allows it (its strategy says so)
    apiserver.seed(DEPLOYMENTS, deployment("d", "ns"))
    api = await clients.get("kubernetes")
    apps = k8s.AppsV1Api(api)
    current = api.sanitize_for_serialization(await apps.read_namespaced_deployment("d", "ns"))
    current["metadata"].pop("resourceVersion")
    await apps.replace_namespaced_deployment("d", "ns", current)


async def test_force_only_with_apply(apiserver: ApiServer, custom: k8s.CustomObjectsApi) -> None:
    """apimachinery ValidatePatchOptions: force: Forbidden: may not be specified for non-apply patch."""
    await custom.create_namespaced_custom_object(G, V, "ns", P, cert())
    with pytest.raises(ApiException) as raised:
        await custom.patch_namespaced_custom_object(
            G, V, "ns", P, "c", {"spec": {"dnsNames": ["x"]}}, force=True, **MERGE
        )
    assert (raised.value.status, reason(raised.value)) == (422, "Invalid")
    assert apiserver.read(CERTIFICATES, "ns", "c")["spec"].get("dnsNames") is None


@pytest.mark.parametrize(
    ("resource", "obj", "problem"),
    [
        (
            "cert-manager.io/v1/certificates",
            {"spec": {"issuerRef": {"name": "ca"}}},
            "spec.secretName: Required value",
        ),
        (
            "cert-manager.io/v1/certificates",
            {"spec": {"secretName": "c", "issuerRef": {"name": "ca"}, "privateKey": {"algorithm": "DSA"}}},
            "spec.privateKey.algorithm",
        ),
        (
            "externaldns.k8s.io/v1alpha1/dnsendpoints",
            {"spec": {"endpoints": [{"dnsName": "a.example.com", "recordTTL": "60"}]}},
            "spec.endpoints[0].recordTTL",
        ),
        (
            "kubeai.org/v1/models",
            {"spec": {"url": "hf://a/b", "engine": "VLLM"}},
            "spec.features: Required value",
        ),
        (
            "kubeai.org/v1/models",
            {"spec": {"url": "hf://a/b", "engine": "TGI", "features": ["TextGeneration"]}},
            'spec.engine: Unsupported value: "TGI"',
        ),
        (
            "kubeai.org/v1/models",
            {"spec": {"url": "gs://b/m", "engine": "VLLM", "features": ["TextGeneration"]}},
            'urls of format "gs://..." only supported when using a cacheProfile',
        ),
        (
            "argoproj.io/v1alpha1/workflows",
            {"spec": {"arguments": {"parameters": [{"value": "x"}]}}},
            "spec.arguments.parameters[0].name: Required value",
        ),
    ],
)
async def test_objects_are_validated_against_their_crd(
    apiserver: ApiServer, clients: glue.Clients, resource: str, obj: dict[str, Any], problem: str
) -> None:
    group, version, plural = resource.split("/")
    kind = next(k.kind for r, k in apiserver.kinds.items() if str(r.plural) == plural)
    body = {
        "apiVersion": f"{group}/{version}",
        "kind": kind,
        "metadata": {"name": "x", "namespace": "ns"},
        **obj,
    }
    custom = k8s.CustomObjectsApi(await clients.get("kubernetes"))
    with pytest.raises(ApiException) as raised:
        await custom.create_namespaced_custom_object(group, version, "ns", plural, body)
    assert (raised.value.status, reason(raised.value)) == (422, "Invalid")
    assert problem in json.loads(cast(bytes, raised.value.body))["message"]


async def test_model_transition_rules(apiserver: ApiServer, clients: glue.Clients) -> None:
    """kubeai manifests/crds/kubeai.org_models.yaml: url immutable with a cacheProfile; name <= 40."""
    custom = k8s.CustomObjectsApi(await clients.get("kubernetes"))
    spec = {"url": "s3://m/v1", "engine": "VLLM", "features": ["TextGeneration"], "cacheProfile": "efs"}
    body = {"apiVersion": "kubeai.org/v1", "kind": "Model", "metadata": {"name": "m"}, "spec": spec}
    await custom.create_namespaced_custom_object("kubeai.org", "v1", "ns", "models", body)
    with pytest.raises(ApiException) as raised:
        await custom.patch_namespaced_custom_object(
            "kubeai.org", "v1", "ns", "models", "m", {"spec": {"url": "s3://m/v2"}}, **MERGE
        )
    assert (
        "url is immutable when using cacheProfile." in json.loads(cast(bytes, raised.value.body))["message"]
    )
    long = {**body, "metadata": {"name": "m" * 41}}
    with pytest.raises(ApiException) as raised:
        await custom.create_namespaced_custom_object("kubeai.org", "v1", "ns", "models", long)
    assert "name must not exceed 40 characters." in json.loads(cast(bytes, raised.value.body))["message"]
