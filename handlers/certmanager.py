"""cert-manager: Certificate objects (``cert-manager.io/v1``) and ``cmctl renew``.

- ``certmanager.certificate`` creates or updates a Certificate by server-side apply (dnsNames, secretName,
  issuerRef, duration, renewBefore, privateKey); ``state: absent`` deletes it.
- ``certmanager.renew`` does what ``cmctl renew`` does: it sets the ``Issuing`` condition to True with
  reason ``ManuallyTriggered`` by a full update of the status subresource carrying the resourceVersion it
  read (a 409 re-reads and retries). The issuing controller then re-issues and removes the condition.

Renewing is not idempotent by itself: once an issuance completes, setting the condition again issues
again. So the first trigger records, in the annotation ``runtime-glue.io/renew``, the invocation's key and
the ``status.revision`` it saw. The same event again finds its key and stops when the revision has moved
on or the issuance is still running; it triggers only if its own trigger never landed. While an issuance
is already in progress (``Issuing`` True) a new event changes nothing, as cert-manager's own trigger
controller does.
"""

from __future__ import annotations

import datetime
from typing import Any, Literal

import pydantic
from cloudevents.core.v1.event import CloudEvent

import glue
from handlers import kubernetes

__all__ = [
    "CERTIFICATE",
    "RENEW_ANNOTATION",
    "CertificateParams",
    "RenewParams",
    "certificate",
    "renew",
    "with_issuing",
]

CERTIFICATE = kubernetes.Resource("cert-manager.io", "v1", "certificates", "Certificate")
RENEW_ANNOTATION = kubernetes.ANNOTATION_PREFIX + "renew"

_GO_DURATION = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"


class IssuerRef(kubernetes.Params):
    name: str = pydantic.Field(min_length=1)
    kind: str = "Issuer"
    group: str = "cert-manager.io"


class PrivateKey(kubernetes.Params):
    rotation_policy: Literal["Never", "Always"] | None = None
    algorithm: Literal["RSA", "ECDSA", "Ed25519"] | None = None
    size: int | None = pydantic.Field(default=None, gt=0)
    encoding: Literal["PKCS1", "PKCS8"] | None = None


class CertificateParams(kubernetes.Params):
    """``certmanager.certificate``: the Certificate to converge to (or remove)."""

    namespace: str = pydantic.Field(min_length=1)
    name: str = pydantic.Field(min_length=1, max_length=253)
    secret_name: str | None = None
    issuer_ref: IssuerRef | None = None
    dns_names: list[str] = []
    common_name: str | None = None
    duration: str | None = pydantic.Field(default=None, pattern=_GO_DURATION)
    renew_before: str | None = pydantic.Field(default=None, pattern=_GO_DURATION)
    private_key: PrivateKey | None = None
    labels: dict[str, str] = {}
    state: Literal["present", "absent"] = "present"

    @pydantic.model_validator(mode="after")
    def _required(self) -> CertificateParams:
        if self.state == "present":
            missing = [
                field
                for field, value in (("secretName", self.secret_name), ("issuerRef", self.issuer_ref))
                if value is None
            ]
            if missing:
                raise ValueError(f"a Certificate needs {' and '.join(missing)}")
            if not self.dns_names and not self.common_name:
                raise ValueError("give dnsNames or commonName")
        return self

    def spec(self) -> dict[str, Any]:
        assert self.issuer_ref is not None
        spec: dict[str, Any] = {
            "secretName": self.secret_name,
            "issuerRef": self.issuer_ref.model_dump(by_alias=True),
        }
        if self.dns_names:
            spec["dnsNames"] = self.dns_names
        if self.common_name:
            spec["commonName"] = self.common_name
        if self.duration:
            spec["duration"] = self.duration
        if self.renew_before:
            spec["renewBefore"] = self.renew_before
        if self.private_key is not None:
            key = self.private_key.model_dump(by_alias=True, exclude_none=True)
            if key:
                spec["privateKey"] = key
        return spec


CERTIFICATE_RBAC = [
    glue.RbacRule(("cert-manager.io",), ("certificates",), ("get", "create", "patch", "delete")),
]


@glue.handler(
    "certmanager.certificate", params=CertificateParams, rbac=CERTIFICATE_RBAC, clients=["kubernetes"]
)
async def certificate(
    *, event: CloudEvent, params: CertificateParams, ctx: glue.Context, **_: Any
) -> glue.Plan | None:
    """Create, update (server-side apply) or delete a cert-manager Certificate."""
    obj = None
    if params.state == "present":
        obj = kubernetes.manifest(
            CERTIFICATE, params.namespace, params.name, params.spec(), event=event, labels=params.labels
        )
    return await kubernetes.converge(
        ctx, CERTIFICATE, params.namespace, params.name, obj, log_as="certificate"
    )


# --------------------------------------------------------------------------------------------- renew


class RenewParams(kubernetes.Params):
    """``certmanager.renew``: which Certificate to re-issue."""

    namespace: str = pydantic.Field(min_length=1)
    name: str = pydantic.Field(min_length=1)
    wait_for_target: bool = False


RENEW_RBAC = [
    glue.RbacRule(("cert-manager.io",), ("certificates",), ("get", "patch")),
    glue.RbacRule(("cert-manager.io",), ("certificates/status",), ("update",)),
]


def _issuing(cert: dict[str, Any]) -> bool:
    conditions = (cert.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Issuing" and c.get("status") == "True" for c in conditions)


def _revision(cert: dict[str, Any]) -> int:
    return int((cert.get("status") or {}).get("revision") or 0)


def with_issuing(cert: dict[str, Any]) -> dict[str, Any]:
    """The object with the condition cmctl sets, as cert-manager's SetCertificateCondition does it.

    cert-manager pkg/api/util/conditions.go: an existing condition of the type is replaced in place;
    its lastTransitionTime is kept when the status does not change, else (and for a new condition) it
    is now; observedGeneration is always the object's generation.
    """
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    condition = {
        "type": "Issuing",
        "status": "True",
        "reason": "ManuallyTriggered",
        "message": "Certificate re-issuance manually triggered",
        "lastTransitionTime": now,
        "observedGeneration": (cert.get("metadata") or {}).get("generation"),
    }
    status = dict(cert.get("status") or {})
    conditions = [dict(c) for c in status.get("conditions") or []]
    for index, existing in enumerate(conditions):
        if existing.get("type") == "Issuing":
            if existing.get("status") == condition["status"] and existing.get("lastTransitionTime"):
                condition["lastTransitionTime"] = existing["lastTransitionTime"]
            conditions[index] = condition
            break
    else:
        conditions.append(condition)
    status["conditions"] = conditions
    return {**cert, "status": status}


@glue.handler("certmanager.renew", params=RenewParams, rbac=RENEW_RBAC, clients=["kubernetes"])
async def renew(*, event: CloudEvent, params: RenewParams, ctx: glue.Context, **_: Any) -> glue.Plan | None:
    """Trigger re-issuance of a Certificate like ``cmctl renew``, once per event."""
    what = f"Certificate {params.namespace}/{params.name}"
    key = kubernetes.key_hash(ctx.idempotency_key, 32)
    target = CERTIFICATE.path(params.namespace, params.name)
    annotate_call = kubernetes.merge_patch_call(
        target,
        {"metadata": {"annotations": {RENEW_ANNOTATION: f"{key}@<status.revision>"}}},
        "record the trigger, with the resourceVersion read",
    )
    status_call = glue.Call(
        "PUT",
        f"{target}/status",
        body={
            "status": {"conditions": [{"type": "Issuing", "status": "True", "reason": "ManuallyTriggered"}]}
        },
        note="full status update carrying the resourceVersion read (409: re-read and retry)",
    )
    api = await kubernetes.client(ctx)
    if api is None:
        return glue.Plan([annotate_call, status_call], summary=f"renew {what} ({kubernetes.UNCHECKED})")
    per_request = kubernetes.request_timeout(api, ctx)
    custom = kubernetes.custom_objects(api)

    async def attempt() -> tuple[str, list[glue.Call]]:
        cert = await kubernetes.read(api, CERTIFICATE, params.namespace, params.name, per_request=per_request)
        if cert is None:
            raise kubernetes.missing(CERTIFICATE, params.name)
        revision = _revision(cert)
        mark = ((cert.get("metadata") or {}).get("annotations") or {}).get(RENEW_ANNOTATION, "")
        mark_key, _, mark_revision = mark.partition("@")
        calls: list[glue.Call] = []
        if mark_key == key:
            if _issuing(cert) or revision > int(mark_revision or 0):
                return "already triggered by this event", calls
        elif _issuing(cert):
            return "an issuance is already in progress", calls
        else:
            annotations = {RENEW_ANNOTATION: f"{key}@{revision}", **kubernetes.event_annotations(event)}
            patch = {
                "metadata": {
                    "resourceVersion": cert["metadata"]["resourceVersion"],
                    "annotations": annotations,
                }
            }
            patched = await kubernetes.merge_patch(
                api,
                CERTIFICATE,
                params.namespace,
                params.name,
                patch,
                dry_run=ctx.dry_run,
                per_request=per_request,
            )
            calls.append(annotate_call)
            if not ctx.dry_run:  # a dry-run answer is not stored: keep updating what was read
                cert = patched
        await custom.replace_namespaced_custom_object_status(
            CERTIFICATE.group,
            CERTIFICATE.version,
            params.namespace,
            CERTIFICATE.plural,
            params.name,
            with_issuing(cert),
            **kubernetes.write_options(dry_run=ctx.dry_run, per_request=per_request, field_manager=None),
        )
        calls.append(status_call)
        return "renewal triggered", calls

    with kubernetes.errors(what, wait_for_target=params.wait_for_target):
        outcome, calls = await kubernetes.on_conflict(attempt, what)
    if ctx.dry_run:
        suffix = f" ({kubernetes.CHECKED})" if calls else ""
        return glue.Plan(calls, summary=f"{what}: {outcome}{suffix}")
    ctx.log.info("certificate renew", target=what, outcome=outcome)
    return None
