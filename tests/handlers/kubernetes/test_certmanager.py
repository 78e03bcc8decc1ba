"""certmanager.certificate / certmanager.renew against the API double (apiserver.py).

The Certificate fields follow cert-manager's pkg/apis/certmanager/v1/types_certificate.go and the renew
sequence cmctl's pkg/renew/renew.go (Issuing=True, reason ManuallyTriggered, status update with the
resourceVersion read), as summarised in reference/actions.md section 3. The "issuing controller" below
is the test playing cert-manager: it removes the condition and bumps status.revision.
"""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from cloudevents.core.v1.event import CloudEvent

import glue
from handlers import certmanager, kubernetes
from tests.handlers.kubernetes.apiserver import ApiServer
from tests.handlers.kubernetes.conftest import CERTIFICATES, MakeContext, make_event

NS = "web"


def cert_params(**overrides: Any) -> certmanager.CertificateParams:
    values: dict[str, Any] = {
        "namespace": NS,
        "name": "shop-tls",
        "secretName": "shop-tls",
        "dnsNames": ["shop.example.com"],
        "issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer"},
        "duration": "2160h",
        "renewBefore": "360h",
        "privateKey": {"rotationPolicy": "Always", "algorithm": "ECDSA", "size": 256},
    }
    values.update(overrides)
    return certmanager.CertificateParams.model_validate(values)


def seed_certificate(apiserver: ApiServer, *, revision: int = 1, issuing: bool = False) -> None:
    apiserver.seed(
        CERTIFICATES,
        {
            "apiVersion": "cert-manager.io/v1",
            "kind": "Certificate",
            "metadata": {"name": "shop-tls", "namespace": NS},
            "spec": {"secretName": "shop-tls", "issuerRef": {"name": "ca"}, "dnsNames": ["shop.example.com"]},
            "status": {
                "revision": revision,
                "conditions": [{"type": "Ready", "status": "True", "reason": "Ready"}]
                + ([{"type": "Issuing", "status": "True", "reason": "Renewing"}] if issuing else []),
            },
        },
    )


def issuing(apiserver: ApiServer) -> dict[str, Any] | None:
    conditions = apiserver.read(CERTIFICATES, NS, "shop-tls")["status"]["conditions"]
    return next((c for c in conditions if c["type"] == "Issuing"), None)


def complete_issuance(apiserver: ApiServer) -> None:
    """What cert-manager's issuing controller does when done: new revision, condition removed."""
    status = apiserver.read(CERTIFICATES, NS, "shop-tls")["status"]
    conditions = [c for c in status["conditions"] if c["type"] != "Issuing"]
    apiserver.set_status(
        CERTIFICATES, NS, "shop-tls", {"revision": status["revision"] + 1, "conditions": conditions}
    )


async def test_certificate_apply_replay_and_dry_run(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    plan = await certmanager.certificate(event=event, params=cert_params(), ctx=make_ctx(dry_run=True))
    assert plan is not None and [c.method for c in plan.calls] == ["PATCH"]
    assert apiserver.find(CERTIFICATES, NS, "shop-tls") is None

    await certmanager.certificate(event=event, params=cert_params(), ctx=make_ctx())
    await certmanager.certificate(event=event, params=cert_params(), ctx=make_ctx(attempt=2))

    obj = apiserver.read(CERTIFICATES, NS, "shop-tls")
    assert obj["spec"] == {
        "secretName": "shop-tls",
        "issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer", "group": "cert-manager.io"},
        "dnsNames": ["shop.example.com"],
        "duration": "2160h",
        "renewBefore": "360h",
        "privateKey": {"rotationPolicy": "Always", "algorithm": "ECDSA", "size": 256},
    }
    assert obj["metadata"]["annotations"][kubernetes.ANNOTATION_EVENT_ID] == "evt-1"
    assert apiserver.versions(CERTIFICATES, NS, "shop-tls") == 1


def test_certificate_params_are_checked_when_the_config_loads() -> None:
    with pytest.raises(pydantic.ValidationError, match="needs secretName"):
        cert_params(secretName=None)
    with pytest.raises(pydantic.ValidationError, match="duration"):
        cert_params(duration="90 days")


async def test_certificate_removal(apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent) -> None:
    await certmanager.certificate(event=event, params=cert_params(), ctx=make_ctx())
    gone = cert_params(state="absent")
    await certmanager.certificate(event=event, params=gone, ctx=make_ctx())
    assert apiserver.find(CERTIFICATES, NS, "shop-tls") is None
    assert await certmanager.certificate(event=event, params=gone, ctx=make_ctx()) is None


async def test_renew_sets_the_condition_cmctl_sets(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    seed_certificate(apiserver)
    params = certmanager.RenewParams(namespace=NS, name="shop-tls")

    await certmanager.renew(event=event, params=params, ctx=make_ctx())

    condition = issuing(apiserver)
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("True", "ManuallyTriggered")
    assert condition["observedGeneration"] == 1
    obj = apiserver.read(CERTIFICATES, NS, "shop-tls")
    assert obj["metadata"]["annotations"][kubernetes.ANNOTATION_EVENT_ID] == "evt-1"
    assert obj["metadata"]["generation"] == 1  # status and metadata only: the spec did not change
    put = apiserver.writes[-1]
    assert (put["method"], put["path"]) == (
        "PUT",
        f"/apis/cert-manager.io/v1/namespaces/{NS}/certificates/shop-tls/status",
    )
    assert put["body"]["metadata"]["resourceVersion"]


async def test_a_replay_does_not_renew_twice(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    seed_certificate(apiserver)
    params = certmanager.RenewParams(namespace=NS, name="shop-tls")
    await certmanager.renew(event=event, params=params, ctx=make_ctx())

    await certmanager.renew(event=event, params=params, ctx=make_ctx(attempt=2))  # still issuing
    complete_issuance(apiserver)
    versions = apiserver.versions(CERTIFICATES, NS, "shop-tls")
    await certmanager.renew(event=event, params=params, ctx=make_ctx(attempt=3))  # issued since

    assert issuing(apiserver) is None
    assert apiserver.versions(CERTIFICATES, NS, "shop-tls") == versions
    assert apiserver.read(CERTIFICATES, NS, "shop-tls")["status"]["revision"] == 2

    await certmanager.renew(event=make_event(id="evt-2"), params=params, ctx=make_ctx("other event"))
    assert issuing(apiserver) is not None  # a new event does renew again


async def test_nothing_while_an_issuance_is_in_progress(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    seed_certificate(apiserver, issuing=True)
    params = certmanager.RenewParams(namespace=NS, name="shop-tls")

    plan = await certmanager.renew(event=event, params=params, ctx=make_ctx(dry_run=True))
    await certmanager.renew(event=event, params=params, ctx=make_ctx())

    assert plan is not None and plan.calls == [] and "in progress" in plan.summary
    assert apiserver.versions(CERTIFICATES, NS, "shop-tls") == 1
    condition = issuing(apiserver)
    assert condition is not None and condition["reason"] == "Renewing"


async def test_renew_dry_run_is_checked_and_changes_nothing(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    seed_certificate(apiserver)
    params = certmanager.RenewParams(namespace=NS, name="shop-tls")

    plan = await certmanager.renew(event=event, params=params, ctx=make_ctx(dry_run=True))

    assert plan is not None and [c.method for c in plan.calls] == ["PATCH", "PUT"]
    assert [w["query"].get("dryRun") for w in apiserver.writes] == ["All", "All"]
    assert apiserver.versions(CERTIFICATES, NS, "shop-tls") == 1
    assert issuing(apiserver) is None


async def test_a_conflict_rereads_and_retries(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    seed_certificate(apiserver)
    apiserver.fail(
        "PUT",
        "/certificates/shop-tls/status$",
        409,
        reason="Conflict",
        message="the object has been modified",
    )
    params = certmanager.RenewParams(namespace=NS, name="shop-tls")

    await certmanager.renew(event=event, params=params, ctx=make_ctx())

    condition = issuing(apiserver)
    assert condition is not None and condition["reason"] == "ManuallyTriggered"
    assert [w["method"] for w in apiserver.writes] == ["PATCH", "PUT", "PUT"]  # the mark is not written twice


async def test_stale_resource_version_from_a_concurrent_writer(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    """A controller writes between our read and our update: the API server answers 409, we re-read."""
    seed_certificate(apiserver)
    params = certmanager.RenewParams(namespace=NS, name="shop-tls")
    apiserver.before(
        "PUT",
        "/status$",
        lambda: apiserver.set_status(CERTIFICATES, NS, "shop-tls", {"notAfter": "2027-01-01T00:00:00Z"}),
    )
    await certmanager.renew(event=event, params=params, ctx=make_ctx())

    obj = apiserver.read(CERTIFICATES, NS, "shop-tls")
    condition = issuing(apiserver)
    assert condition is not None and condition["reason"] == "ManuallyTriggered"
    assert obj["status"]["notAfter"] == "2027-01-01T00:00:00Z"  # the concurrent write is kept


async def test_renew_errors(apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent) -> None:
    params = certmanager.RenewParams(namespace=NS, name="shop-tls")
    with pytest.raises(glue.PermanentError, match="not found"):
        await certmanager.renew(event=event, params=params, ctx=make_ctx())
    waiting = certmanager.RenewParams(namespace=NS, name="shop-tls", wait_for_target=True)
    with pytest.raises(glue.TemporaryError):
        await certmanager.renew(event=event, params=waiting, ctx=make_ctx())

    seed_certificate(apiserver)
    apiserver.fail("PUT", "/status$", 409, times=10)
    with pytest.raises(glue.TemporaryError, match="still conflicting"):
        await certmanager.renew(event=event, params=params, ctx=make_ctx())
    apiserver.faults.clear()
    apiserver.fail("PUT", "/status$", 422, message="status.conditions[1].type: Required value")
    with pytest.raises(glue.PermanentError, match="Required value"):
        await certmanager.renew(event=event, params=params, ctx=make_ctx())


def test_issuing_condition_follows_cert_managers_condition_helper() -> None:
    """cert-manager pkg/api/util/conditions.go (SetCertificateCondition): the condition is replaced in
    place; the same status keeps its lastTransitionTime, a different one gets the current time."""
    since = "2026-01-02T03:04:05Z"
    cert: dict[str, Any] = {
        "metadata": {"generation": 4},
        "status": {
            "conditions": [
                {"type": "Issuing", "status": "True", "reason": "Renewing", "lastTransitionTime": since},
                {"type": "Ready", "status": "True", "reason": "Ready", "lastTransitionTime": since},
            ]
        },
    }

    same = certmanager.with_issuing(cert)["status"]["conditions"]
    assert [c["type"] for c in same] == ["Issuing", "Ready"]
    assert same[0]["lastTransitionTime"] == since
    assert (same[0]["reason"], same[0]["observedGeneration"]) == ("ManuallyTriggered", 4)

    cert["status"]["conditions"][0]["status"] = "False"
    changed = certmanager.with_issuing(cert)["status"]["conditions"]
    assert [c["type"] for c in changed] == ["Issuing", "Ready"]
    assert changed[0]["status"] == "True" and changed[0]["lastTransitionTime"] != since
