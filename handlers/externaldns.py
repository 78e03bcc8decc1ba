"""External DNS: DNSEndpoint objects (``externaldns.k8s.io/v1alpha1``) and the hostname annotations.

- ``externaldns.endpoint`` creates or updates a DNSEndpoint by server-side apply (field manager
  ``runtime-glue``), so the same event applied again changes nothing; with ``state: absent`` it deletes
  it (already gone is fine).
- ``externaldns.annotate`` sets the ``hostname`` / ``target`` / ``ttl`` annotations on a Service or an
  Ingress, for installations that use those sources. external-dns v0.22 moved the annotation prefix from
  ``external-dns.alpha.kubernetes.io/`` to ``external-dns.kubernetes.io/``; ``annotationPrefix`` picks the
  one the installed version reads.

The endpoint fields follow external-dns's ``endpoint.Endpoint`` (dnsName, recordType, targets, recordTTL,
labels, providerSpecific, setIdentifier) and its CRD source's checks (source/crd.go: a target must not end
with a dot, except for CNAME, DNAME, TXT, MX and SRV; a NAPTR target must), which are made when the params
are validated: by ``glue check`` for literal params, when the route renders them otherwise (so also in a
dry-run plan).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

import pydantic
from cloudevents.core.v1.event import CloudEvent

import glue
from handlers import kubernetes

__all__ = ["DNSENDPOINT", "AnnotateParams", "Endpoint", "EndpointParams", "annotate", "endpoint"]

DNSENDPOINT = kubernetes.Resource("externaldns.k8s.io", "v1alpha1", "dnsendpoints", "DNSEndpoint")
DEFAULT_PREFIX = "external-dns.kubernetes.io/"

#: Record types whose targets external-dns's CRD source takes with or without a trailing dot.
_ANY_TARGET = frozenset({"CNAME", "DNAME", "TXT", "MX", "SRV"})

_DNS_1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class ProviderSpecific(kubernetes.Params):
    name: str = pydantic.Field(min_length=1)
    value: str


class Endpoint(kubernetes.Params):
    """One DNS record set, as external-dns's Endpoint type has it."""

    dns_name: str = pydantic.Field(min_length=1, alias="dnsName")
    record_type: str = pydantic.Field(default="A", pattern=r"^[A-Z]+$")
    targets: list[str] = []
    record_ttl: int | None = pydantic.Field(default=None, ge=0, alias="recordTTL")
    labels: dict[str, str] = {}
    provider_specific: list[ProviderSpecific] = []
    set_identifier: str | None = None

    @pydantic.model_validator(mode="after")
    def _targets_valid(self) -> Endpoint:
        # external-dns source/crd.go (crdSource.Endpoints) skips, with only a warning in its log, an
        # endpoint whose target ends with a dot, except for CNAME and DNAME (endpoint/utils.go
        # RequiresTrailingDot), TXT, MX and SRV; a NAPTR target must end with one. Refused here instead.
        if self.record_type in _ANY_TARGET:
            return self
        if self.record_type == "NAPTR":
            bare = [target for target in self.targets if not target.endswith(".")]
            if bare:
                raise ValueError(f"NAPTR targets must end with a dot: {', '.join(bare)}")
            return self
        dotted = [target for target in self.targets if target.endswith(".")]
        if dotted:
            raise ValueError(
                f"{self.record_type} targets must not end with a dot (external-dns skips such an "
                f"endpoint): {', '.join(dotted)}"
            )
        return self

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "dnsName": self.dns_name,
            "recordType": self.record_type,
            "targets": self.targets,
        }
        if self.record_ttl is not None:
            spec["recordTTL"] = self.record_ttl
        if self.labels:
            spec["labels"] = self.labels
        if self.provider_specific:
            spec["providerSpecific"] = [{"name": p.name, "value": p.value} for p in self.provider_specific]
        if self.set_identifier:
            spec["setIdentifier"] = self.set_identifier
        return spec


class EndpointParams(kubernetes.Params):
    """``externaldns.endpoint``: the DNSEndpoint to converge to (or remove)."""

    namespace: str = pydantic.Field(min_length=1)
    name: str = pydantic.Field(min_length=1, max_length=253, pattern=_DNS_1123_SUBDOMAIN.pattern)
    endpoints: list[Endpoint] = []
    labels: dict[str, str] = {}
    state: Literal["present", "absent"] = "present"

    @pydantic.model_validator(mode="after")
    def _endpoints_given(self) -> EndpointParams:
        if self.state == "present" and not self.endpoints:
            raise ValueError("endpoints must not be empty (use state: absent to remove the DNSEndpoint)")
        return self


ENDPOINT_RBAC = [
    # Server-side apply is a PATCH that also creates; delete on a removal event.
    glue.RbacRule(("externaldns.k8s.io",), ("dnsendpoints",), ("get", "create", "patch", "delete")),
]


@glue.handler("externaldns.endpoint", params=EndpointParams, rbac=ENDPOINT_RBAC, clients=["kubernetes"])
async def endpoint(
    *, event: CloudEvent, params: EndpointParams, ctx: glue.Context, **_: Any
) -> glue.Plan | None:
    """Create, update (server-side apply) or delete a DNSEndpoint."""
    obj = None
    if params.state == "present":
        spec = {"endpoints": [e.to_spec() for e in params.endpoints]}
        obj = kubernetes.manifest(
            DNSENDPOINT, params.namespace, params.name, spec, event=event, labels=params.labels
        )
    return await kubernetes.converge(
        ctx,
        DNSENDPOINT,
        params.namespace,
        params.name,
        obj,
        log_as="dnsendpoint",
        delete_note="removal event",
    )


# --------------------------------------------------------------------------------------------- annotate


class AnnotateParams(kubernetes.Params):
    """``externaldns.annotate``: the external-dns annotations of a Service or Ingress."""

    kind: Literal["Service", "Ingress"] = "Service"
    namespace: str = pydantic.Field(min_length=1)
    name: str = pydantic.Field(min_length=1)
    hostnames: list[str] = []
    targets: list[str] = []
    ttl: int | None = pydantic.Field(
        default=None,
        ge=1,
        le=2147483647,
        description="Seconds; external-dns ignores a TTL outside 1..2147483647, 0 included "
        "(source/annotations/processors.go, TTLFromAnnotations).",
    )
    annotation_prefix: str = pydantic.Field(default=DEFAULT_PREFIX, pattern=r"^[a-z0-9.-]+/$")
    state: Literal["present", "absent"] = "present"
    wait_for_target: bool = False

    @pydantic.model_validator(mode="after")
    def _hostnames_given(self) -> AnnotateParams:
        if self.state == "present" and not self.hostnames:
            raise ValueError("hostnames must not be empty (use state: absent to remove the annotations)")
        for target in self.targets:
            try:
                ipaddress.ip_address(target)
            except ValueError:
                if not target or " " in target:
                    raise ValueError(f"target {target!r} is neither an IP address nor a host name") from None
        return self

    def desired(self) -> dict[str, str | None]:
        keys = {name: self.annotation_prefix + name for name in ("hostname", "target", "ttl")}
        if self.state == "absent":
            return dict.fromkeys(keys.values())
        return {
            keys["hostname"]: ",".join(self.hostnames),
            keys["target"]: ",".join(self.targets) if self.targets else None,
            keys["ttl"]: str(self.ttl) if self.ttl is not None else None,
        }


ANNOTATE_RBAC = [
    glue.RbacRule(("",), ("services",), ("get", "patch")),
    glue.RbacRule(("networking.k8s.io",), ("ingresses",), ("get", "patch")),
]


@glue.handler("externaldns.annotate", params=AnnotateParams, rbac=ANNOTATE_RBAC, clients=["kubernetes"])
async def annotate(
    *, event: CloudEvent, params: AnnotateParams, ctx: glue.Context, **_: Any
) -> glue.Plan | None:
    """Set (or remove) external-dns hostname/target/ttl annotations on a Service or Ingress."""
    what = f"{params.kind} {params.namespace}/{params.name}"
    desired = params.desired()
    body = {"metadata": {"annotations": {**desired, **kubernetes.event_annotations(event)}}}
    if params.kind == "Service":
        target = kubernetes.path("", "v1", "services", params.namespace, params.name)
    else:
        target = kubernetes.path("networking.k8s.io", "v1", "ingresses", params.namespace, params.name)
    call = kubernetes.merge_patch_call(target, body, "external-dns annotations")
    api = await kubernetes.client(ctx)
    if api is None:
        return glue.Plan([call], summary=f"annotate {what} ({kubernetes.UNCHECKED})")
    per_request = kubernetes.request_timeout(api, ctx)
    read: Any
    patch: Any
    if params.kind == "Service":
        core = kubernetes.core_v1(api)
        read, patch = core.read_namespaced_service, core.patch_namespaced_service
    else:
        networking = kubernetes.networking_v1(api)
        read, patch = networking.read_namespaced_ingress, networking.patch_namespaced_ingress
    with kubernetes.errors(what, wait_for_target=params.wait_for_target):
        current = api.sanitize_for_serialization(
            await read(params.name, params.namespace, _request_timeout=per_request)
        )
        present = (current.get("metadata") or {}).get("annotations") or {}
        if all(present.get(key) == value for key, value in desired.items()):
            ctx.log.info("external-dns annotations already set", target=what)
            return glue.Plan([], summary=f"{what} already carries these annotations") if ctx.dry_run else None
        await patch(
            params.name,
            params.namespace,
            body,
            **kubernetes.write_options(
                content_type=kubernetes.MERGE_PATCH, dry_run=ctx.dry_run, per_request=per_request
            ),
        )
    if ctx.dry_run:
        return glue.Plan([call], summary=f"annotate {what} ({kubernetes.CHECKED})")
    ctx.log.info("external-dns annotations set", target=what, state=params.state)
    return None
