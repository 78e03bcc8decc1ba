"""externaldns.endpoint / externaldns.annotate against the API double (apiserver.py).

The DNSEndpoint shape follows external-dns's CRD (apis/v1alpha1/dnsendpoint.go, endpoint/endpoint.go) and
the annotation keys docs/annotations/annotations.md, both as summarised in reference/actions.md section 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest
from cloudevents.core.v1.event import CloudEvent

import glue
from glue import cli, routing
from handlers import externaldns, kubernetes
from tests.handlers.kubernetes.apiserver import ApiServer
from tests.handlers.kubernetes.conftest import DNSENDPOINTS, SERVICES, MakeContext, make_event

NS = "web"


def params(**overrides: Any) -> externaldns.EndpointParams:
    values: dict[str, Any] = {
        "namespace": NS,
        "name": "shop",
        "endpoints": [
            {"dnsName": "shop.example.com", "recordType": "A", "targets": ["10.0.0.1"], "recordTTL": 180},
            {
                "dnsName": "shop.example.com",
                "recordType": "TXT",
                "targets": ["owner=glue"],
                "providerSpecific": [
                    {"name": "external-dns.kubernetes.io/cloudflare-proxied", "value": "true"}
                ],
            },
        ],
    }
    values.update(overrides)
    return externaldns.EndpointParams.model_validate(values)


async def test_apply_creates_the_dnsendpoint_by_server_side_apply(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    assert await externaldns.endpoint(event=event, params=params(), ctx=make_ctx()) is None

    obj = apiserver.read(DNSENDPOINTS, NS, "shop")
    assert obj["spec"]["endpoints"][0] == {
        "dnsName": "shop.example.com",
        "recordType": "A",
        "targets": ["10.0.0.1"],
        "recordTTL": 180,
    }
    assert obj["spec"]["endpoints"][1]["providerSpecific"][0]["value"] == "true"
    assert obj["metadata"]["annotations"][kubernetes.ANNOTATION_EVENT_ID] == "evt-1"
    write = apiserver.writes[-1]
    assert write["contentType"] == "application/apply-patch+yaml"
    assert write["query"]["fieldManager"] == "runtime-glue"
    assert write["query"]["force"] in ("true", "True")


async def test_same_event_again_changes_nothing(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    await externaldns.endpoint(event=event, params=params(), ctx=make_ctx())
    before = apiserver.read(DNSENDPOINTS, NS, "shop")

    await externaldns.endpoint(event=event, params=params(), ctx=make_ctx(attempt=2))

    after = apiserver.read(DNSENDPOINTS, NS, "shop")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert apiserver.versions(DNSENDPOINTS, NS, "shop") == 1


async def test_new_targets_update_the_spec_and_drop_what_is_no_longer_applied(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    await externaldns.endpoint(event=event, params=params(), ctx=make_ctx())
    changed = params(endpoints=[{"dnsName": "shop.example.com", "targets": ["10.0.0.2"]}])

    await externaldns.endpoint(event=make_event(id="evt-2"), params=changed, ctx=make_ctx("k2"))

    obj = apiserver.read(DNSENDPOINTS, NS, "shop")
    assert obj["spec"]["endpoints"] == [
        {"dnsName": "shop.example.com", "recordType": "A", "targets": ["10.0.0.2"]}
    ]
    assert obj["metadata"]["generation"] == 2
    assert obj["metadata"]["annotations"][kubernetes.ANNOTATION_EVENT_ID] == "evt-2"
    assert kubernetes.ANNOTATION_TRACEPARENT not in obj["metadata"]["annotations"]


async def test_dry_run_plans_and_changes_nothing(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    plan = await externaldns.endpoint(event=event, params=params(), ctx=make_ctx(dry_run=True))

    assert isinstance(plan, glue.Plan)
    [call] = plan.calls
    assert call.method == "PATCH"
    assert call.target == f"/apis/externaldns.k8s.io/v1alpha1/namespaces/{NS}/dnsendpoints/shop" + (
        "?fieldManager=runtime-glue&force=true"
    )
    assert call.body["spec"]["endpoints"][0]["targets"] == ["10.0.0.1"]
    assert apiserver.writes[-1]["query"]["dryRun"] == "All"
    assert apiserver.find(DNSENDPOINTS, NS, "shop") is None


async def test_dry_run_of_an_applied_event_plans_nothing(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    await externaldns.endpoint(event=event, params=params(), ctx=make_ctx())
    plan = await externaldns.endpoint(event=event, params=params(), ctx=make_ctx(dry_run=True))
    assert plan is not None and plan.calls == [] and "already" in plan.summary


async def test_removal_event_deletes_and_a_replay_is_fine(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    await externaldns.endpoint(event=event, params=params(), ctx=make_ctx())
    absent = params(state="absent", endpoints=[])

    dry = await externaldns.endpoint(event=event, params=absent, ctx=make_ctx(dry_run=True))
    assert dry is not None and [c.method for c in dry.calls] == ["DELETE"]
    assert apiserver.find(DNSENDPOINTS, NS, "shop") is not None

    await externaldns.endpoint(event=event, params=absent, ctx=make_ctx())
    assert apiserver.find(DNSENDPOINTS, NS, "shop") is None
    await externaldns.endpoint(event=event, params=absent, ctx=make_ctx(attempt=2))  # already gone: done


def endpoint(record_type: str, *targets: str) -> dict[str, Any]:
    return {"dnsName": "x.example.com", "recordType": record_type, "targets": list(targets)}


@pytest.mark.parametrize("record_type", ["A", "AAAA", "NS", "PTR"])
def test_params_reject_a_trailing_dot_external_dns_would_skip(record_type: str) -> None:
    """external-dns source/crd.go skips (with a log line only) a dotted target of these record types."""
    with pytest.raises(pydantic.ValidationError, match=f"{record_type} targets must not end with a dot"):
        params(endpoints=[endpoint(record_type, "host.example.com.")])
    params(endpoints=[endpoint(record_type, "host.example.com")])


@pytest.mark.parametrize(
    "target",
    [
        ("CNAME", "shop.example.net."),
        ("DNAME", "example.net."),
        ("TXT", "v=spf1 a."),
        ("MX", "10 mail.example.com."),
        ("SRV", "0 5 443 shop.example.com."),
    ],
)
def test_params_accept_a_trailing_dot_where_external_dns_does(target: tuple[str, str]) -> None:
    params(endpoints=[endpoint(*target)])


def test_naptr_targets_need_the_dot() -> None:
    with pytest.raises(pydantic.ValidationError, match="NAPTR targets must end with a dot"):
        params(endpoints=[endpoint("NAPTR", '100 10 "U" "E2U+sip" "!^.*$!sip:x@example.com!" example.com')])


def test_glue_check_refuses_a_literal_dotted_ns_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "glue.yaml"
    config.write_text(
        """
routes:
  - name: delegate
    handler: externaldns.endpoint
    params:
      namespace: dns
      name: delegation
      endpoints: [{dnsName: team.example.com, recordType: NS, targets: [ns1.example.net.]}]
"""
    )
    assert cli.main(["check", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "routes[0] (delegate).params.endpoints.0" in err
    assert "NS targets must not end with a dot" in err


def test_params_reject_what_external_dns_would_skip() -> None:
    with pytest.raises(pydantic.ValidationError, match="endpoints must not be empty"):
        params(endpoints=[])
    with pytest.raises(pydantic.ValidationError):
        params(name="Not_A_Name")


async def test_schema_rejection_is_permanent_with_the_servers_message(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    apiserver.validators[apiserver.define(DNSENDPOINTS, "DNSEndpoint")] = [
        lambda old, new: ["spec.endpoints[0].recordTTL: Invalid value: must be at most 86400"]
    ]
    with pytest.raises(glue.PermanentError, match="recordTTL: Invalid value: must be at most 86400"):
        await externaldns.endpoint(event=event, params=params(), ctx=make_ctx())


@pytest.mark.parametrize(("status", "error"), [(429, glue.TemporaryError), (502, glue.TemporaryError)])
async def test_throttling_and_server_errors_are_temporary(
    apiserver: ApiServer,
    make_ctx: MakeContext,
    event: CloudEvent,
    status: int,
    error: type[glue.TemporaryError],
) -> None:
    apiserver.fail("PATCH", "/dnsendpoints/shop$", status, headers={"Retry-After": "3"})
    with pytest.raises(error) as raised:
        await externaldns.endpoint(event=event, params=params(), ctx=make_ctx())
    assert raised.value.delay == 3.0


# --------------------------------------------------------------------------------------------- annotate


def service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "shop", "namespace": NS, "annotations": {"team": "web"}},
        "spec": {"ports": [{"port": 80}], "selector": {"app": "shop"}},
    }


async def test_annotate_sets_the_v022_keys_by_default(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    apiserver.seed(SERVICES, service())
    annotate = externaldns.AnnotateParams(namespace=NS, name="shop", hostnames=["shop.example.com"], ttl=60)

    await externaldns.annotate(event=event, params=annotate, ctx=make_ctx())
    await externaldns.annotate(event=event, params=annotate, ctx=make_ctx(attempt=2))

    annotations = apiserver.read(SERVICES, NS, "shop")["metadata"]["annotations"]
    assert annotations["external-dns.kubernetes.io/hostname"] == "shop.example.com"
    assert annotations["external-dns.kubernetes.io/ttl"] == "60"
    assert "external-dns.kubernetes.io/target" not in annotations
    assert annotations["team"] == "web"
    assert annotations[kubernetes.ANNOTATION_EVENT_ID] == "evt-1"
    assert apiserver.versions(SERVICES, NS, "shop") == 2  # seed + one change, the replay sent nothing
    assert apiserver.writes[-1]["contentType"] == "application/merge-patch+json"


async def test_annotate_with_the_alpha_prefix_and_removal(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    apiserver.seed(SERVICES, service())
    alpha = "external-dns.alpha.kubernetes.io/"
    present = externaldns.AnnotateParams(
        namespace=NS, name="shop", hostnames=["a.example.com", "b.example.com"], annotation_prefix=alpha
    )
    await externaldns.annotate(event=event, params=present, ctx=make_ctx())
    assert apiserver.read(SERVICES, NS, "shop")["metadata"]["annotations"][alpha + "hostname"] == (
        "a.example.com,b.example.com"
    )

    absent = externaldns.AnnotateParams(namespace=NS, name="shop", state="absent", annotation_prefix=alpha)
    plan = await externaldns.annotate(event=event, params=absent, ctx=make_ctx(dry_run=True))
    assert plan is not None and len(plan.calls) == 1
    assert alpha + "hostname" in apiserver.read(SERVICES, NS, "shop")["metadata"]["annotations"]

    await externaldns.annotate(event=event, params=absent, ctx=make_ctx())
    assert alpha + "hostname" not in apiserver.read(SERVICES, NS, "shop")["metadata"]["annotations"]


async def test_annotate_missing_service(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    annotate = externaldns.AnnotateParams(namespace=NS, name="absent", hostnames=["x.example.com"])
    with pytest.raises(glue.PermanentError, match='services "absent" not found'):
        await externaldns.annotate(event=event, params=annotate, ctx=make_ctx())
    waiting = annotate.model_copy(update={"wait_for_target": True})
    with pytest.raises(glue.TemporaryError):
        await externaldns.annotate(event=event, params=waiting, ctx=make_ctx())


def test_annotation_ttl_zero_is_refused() -> None:
    """external-dns ignores a ttl annotation outside 1..2147483647 (source/annotations/processors.go)."""
    with pytest.raises(pydantic.ValidationError, match="greater than or equal to 1"):
        externaldns.AnnotateParams(namespace=NS, name="shop", hostnames=["shop.example.com"], ttl=0)


def test_a_templated_dotted_ns_target_is_refused_when_the_route_renders_it() -> None:
    """Not literal, so not at glue check: the rendered params fail the handler's model, which is what a
    dry-run plan and an invocation (dead-lettered, not run) show."""
    router = routing.load(
        [
            {
                "name": "delegate",
                "handler": "externaldns.endpoint",
                "params": {
                    "namespace": "dns",
                    "name": "delegation",
                    "endpoints": [
                        {"dnsName": "{{ data.zone }}", "recordType": "NS", "targets": ["{{ data.server }}"]}
                    ],
                },
            }
        ],
        glue.registry,
    )
    event = make_event(data={"zone": "team.example.com", "server": "ns1.example.net."})
    (decision,) = router.decide(event)
    assert decision.params is None
    assert decision.params_error is not None and "NS targets must not end with a dot" in decision.params_error
