"""The CRD schemas the API double validates objects against, answered as 422 Invalid like the API server.

Each validator takes (the stored object or None on create, the proposed object) and returns the API
server's field errors (``<path>: <reason>``), following the upstream CRDs:

- Certificate (cert-manager.io/v1): the published models of ``cloudcoil-models-cert-manager`` (generated
  from cert-manager's CRDs): required fields and enums of spec and status.
- DNSEndpoint (externaldns.k8s.io/v1alpha1): kubernetes-sigs/external-dns
  config/crd/standard/dnsendpoints.externaldns.k8s.io.yaml: no required fields and no enums, only types
  (endpoints of dnsName, recordType, targets, recordTTL int64, labels, providerSpecific, setIdentifier).
- Model (kubeai.org/v1): kubeai-project/kubeai manifests/crds/kubeai.org_models.yaml (generated from
  api/k8s/v1/model_types.go): required url, engine, features; the engine, features and loadBalancing enums;
  minimums; and its x-kubernetes-validations rules (url schemes, gs:// and oss:// only with a cacheProfile,
  cacheProfile url schemes, url immutable with a cacheProfile, cacheProfile immutable, adapters only with
  VLLM, minReplicas <= maxReplicas, metadata.name at most 40 characters). ``targetRequests`` and
  ``scaleDownDelaySeconds`` are required too but defaulted by the API server, so not checked here.
- Workflow (argoproj.io/v1alpha1): argoproj/argo-workflows
  manifests/base/crds/full/argoproj.io_workflows.yaml: required metadata and spec; arguments.parameters
  items need a name and take string values; workflowTemplateRef is {name: string, clusterScope: boolean}.
  (That CRD has no status subresource.)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pydantic
from cloudcoil.models.cert_manager import v1 as cert_manager

__all__ = ["VALIDATORS", "certificate", "dnsendpoint", "model", "workflow"]

Obj = dict[str, Any]


def _type_error(path: str, value: Any, wanted: str) -> str:
    kind = type(value).__name__
    return f'{path}: Invalid value: "{kind}": {path} in body must be of type {wanted}: "{value!r}"'


def _check_type(path: str, value: Any, wanted: str) -> list[str]:
    checks: dict[str, Callable[[Any], bool]] = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
    }
    return [] if value is None or checks[wanted](value) else [_type_error(path, value, wanted)]


def _required(path: str, obj: Obj, *fields: str) -> list[str]:
    return [f"{path}.{field}: Required value" for field in fields if obj.get(field) is None]


def _enum(path: str, value: Any, allowed: tuple[str, ...]) -> list[str]:
    if value is None or value in allowed:
        return []
    supported = ", ".join(f'"{a}"' for a in allowed)
    return [f'{path}: Unsupported value: "{value}": supported values: {supported}']


# --------------------------------------------------------------------------------------------- cert-manager


def certificate(old: Obj | None, new: Obj) -> list[str]:
    try:
        cert_manager.Certificate.model_validate(new)
    except pydantic.ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            path = ".".join(str(part) for part in error["loc"])
            if error["type"] == "missing":
                problems.append(f"{path}: Required value")
            else:
                problems.append(
                    f"{path}: Invalid value: {json.dumps(error.get('input'), default=str)}: {error['msg']}"
                )
        return problems
    return []


# --------------------------------------------------------------------------------------------- external-dns

_ENDPOINT_STRINGS = ("dnsName", "recordType", "setIdentifier")


def dnsendpoint(old: Obj | None, new: Obj) -> list[str]:
    spec = new.get("spec")
    problems = _check_type("spec", spec, "object")
    if not isinstance(spec, dict):
        return problems
    endpoints = spec.get("endpoints")
    problems += _check_type("spec.endpoints", endpoints, "array")
    for index, item in enumerate(endpoints if isinstance(endpoints, list) else []):
        path = f"spec.endpoints[{index}]"
        if not isinstance(item, dict):
            problems += _check_type(path, item, "object")
            continue
        for field in _ENDPOINT_STRINGS:
            problems += _check_type(f"{path}.{field}", item.get(field), "string")
        problems += _check_type(f"{path}.recordTTL", item.get("recordTTL"), "integer")
        targets = item.get("targets")
        problems += _check_type(f"{path}.targets", targets, "array")
        for t, target in enumerate(targets if isinstance(targets, list) else []):
            problems += _check_type(f"{path}.targets[{t}]", target, "string")
        labels = item.get("labels")
        problems += _check_type(f"{path}.labels", labels, "object")
        for key, value in (labels if isinstance(labels, dict) else {}).items():
            problems += _check_type(f"{path}.labels.{key}", value, "string")
        specific = item.get("providerSpecific")
        problems += _check_type(f"{path}.providerSpecific", specific, "array")
        for p, prop in enumerate(specific if isinstance(specific, list) else []):
            problems += _check_type(f"{path}.providerSpecific[{p}]", prop, "object")
            if isinstance(prop, dict):
                for field in ("name", "value"):
                    problems += _check_type(
                        f"{path}.providerSpecific[{p}].{field}", prop.get(field), "string"
                    )
    status = new.get("status")
    if isinstance(status, dict):
        problems += _check_type("status.observedGeneration", status.get("observedGeneration"), "integer")
    return problems


# --------------------------------------------------------------------------------------------- KubeAI

_URL_SCHEMES = ("hf://", "pvc://", "ollama://", "s3://", "gs://", "oss://")
_CACHE_SCHEMES = ("hf://", "s3://", "gs://", "oss://")
_ADAPTER_SCHEMES = ("hf://", "s3://", "gs://", "oss://")
_ENGINES = ("OLlama", "VLLM", "FasterWhisper", "Infinity")
_FEATURES = ("TextGeneration", "TextEmbedding", "Reranking", "SpeechToText")


def _rule(ok: bool, path: str, message: str) -> list[str]:
    return [] if ok else [f'{path}: Invalid value: "object": {message}']


def model(old: Obj | None, new: Obj) -> list[str]:
    name = (new.get("metadata") or {}).get("name") or ""
    problems = _rule(len(name) <= 40, "<nil>", "name must not exceed 40 characters.")
    spec = new.get("spec")
    if not isinstance(spec, dict):
        return [*problems, "spec: Required value"]
    problems += _required("spec", spec, "url", "engine", "features")
    problems += _enum("spec.engine", spec.get("engine"), _ENGINES)
    for index, feature in enumerate(spec.get("features") or []):
        problems += _enum(f"spec.features[{index}]", feature, _FEATURES)
    strategy = (spec.get("loadBalancing") or {}).get("strategy")
    problems += _enum("spec.loadBalancing.strategy", strategy, ("LeastLoad", "PrefixHash"))
    for field, minimum in (("minReplicas", 0), ("maxReplicas", 1), ("targetRequests", 1)):
        value = spec.get(field)
        if isinstance(value, int) and value < minimum:
            problems.append(
                f"spec.{field}: Invalid value: {value}: spec.{field} in body should be >= {minimum}"
            )
    url = spec.get("url")
    if not isinstance(url, str):
        return problems
    cached = "cacheProfile" in spec
    problems += _rule(
        url.startswith(_URL_SCHEMES),
        "spec.url",
        'url must start with "hf://", "pvc://", "ollama://", "s3://", "gs://", or "oss://" and not be empty.',
    )
    problems += _rule(
        not cached or url.startswith(_CACHE_SCHEMES),
        "spec",
        'cacheProfile is only supported with urls of format "hf://...", "s3://...", "gs://...", or '
        '"oss://..." at the moment.',
    )
    problems += _rule(
        not url.startswith("gs://") or cached,
        "spec",
        'urls of format "gs://..." only supported when using a cacheProfile',
    )
    problems += _rule(
        not url.startswith("oss://") or cached,
        "spec",
        'urls of format "oss://..." only supported when using a cacheProfile',
    )
    if "maxReplicas" in spec:
        problems += _rule(
            int(spec.get("minReplicas") or 0) <= int(spec["maxReplicas"]),
            "spec",
            "minReplicas should be less than or equal to maxReplicas.",
        )
    problems += _rule(
        "adapters" not in spec or spec.get("engine") == "VLLM",
        "spec",
        "adapters only supported with VLLM engine.",
    )
    for index, adapter in enumerate(spec.get("adapters") or []):
        problems += _rule(
            str(adapter.get("url", "")).startswith(_ADAPTER_SCHEMES),
            f"spec.adapters[{index}].url",
            'adapter url must start with "hf://", "s3://", "gs://", or "oss://".',
        )
    if old is not None:  # transition rules: evaluated on update, with oldSelf
        before = old.get("spec") or {}
        problems += _rule(
            "cacheProfile" not in before or url == before.get("url"),
            "spec",
            "url is immutable when using cacheProfile.",
        )
        if "cacheProfile" in before and "cacheProfile" in spec:
            problems += _rule(
                spec["cacheProfile"] == before["cacheProfile"],
                "spec.cacheProfile",
                "cacheProfile is immutable.",
            )
    return problems


# --------------------------------------------------------------------------------------------- Argo


def workflow(old: Obj | None, new: Obj) -> list[str]:
    problems = [f"{field}: Required value" for field in ("metadata", "spec") if new.get(field) is None]
    spec = new.get("spec")
    problems += _check_type("spec", spec, "object")
    if not isinstance(spec, dict):
        return problems
    ref = spec.get("workflowTemplateRef")
    problems += _check_type("spec.workflowTemplateRef", ref, "object")
    if isinstance(ref, dict):
        problems += _check_type("spec.workflowTemplateRef.name", ref.get("name"), "string")
        problems += _check_type("spec.workflowTemplateRef.clusterScope", ref.get("clusterScope"), "boolean")
    parameters = (spec.get("arguments") or {}).get("parameters")
    problems += _check_type("spec.arguments.parameters", parameters, "array")
    for index, parameter in enumerate(parameters if isinstance(parameters, list) else []):
        path = f"spec.arguments.parameters[{index}]"
        if not isinstance(parameter, dict):
            problems += _check_type(path, parameter, "object")
            continue
        problems += _required(path, parameter, "name")
        problems += _check_type(f"{path}.value", parameter.get("value"), "string")
    for field in ("entrypoint", "serviceAccountName"):
        problems += _check_type(f"spec.{field}", spec.get(field), "string")
    return problems


#: Resource (as the conftest names it) -> its validators.
VALIDATORS: dict[str, list[Callable[[Obj | None, Obj], list[str]]]] = {
    "cert-manager.io/v1/certificates": [certificate],
    "externaldns.k8s.io/v1alpha1/dnsendpoints": [dnsendpoint],
    "kubeai.org/v1/models": [model],
    "argoproj.io/v1alpha1/workflows": [workflow],
}
