"""Strict checks of the custom resources the chart renders, which kubernetes-validate has no schema for.

- ServiceMonitor and PrometheusRule (monitoring.coreos.com/v1): the prometheus-operator models of
  ``cloudcoil-models-prometheus-operator``, generated from the operator's CRDs. Those models ignore
  unknown fields, so an object is accepted only if it survives a round trip unchanged: a misspelt or
  misplaced field is dropped by the model and shows up as a difference.
- Certificate (cert-manager.io/v1): the models of ``cloudcoil-models-cert-manager``, generated from
  cert-manager's CRDs, with the same round trip.
- HTTPRoute (gateway.networking.k8s.io/v1): a JSON schema of the fields this chart uses, written from the
  Gateway API v1 reference (HTTPRoute, ParentReference, HTTPRouteMatch, HTTPPathMatch, HTTPBackendRef),
  with its enums and list bounds; unknown fields are rejected.
"""

from __future__ import annotations

from typing import Any

import jsonschema
from cloudcoil.models.cert_manager import v1 as cert_manager
from cloudcoil.models.prometheus_operator import v1 as monitoring

_NAME = {"type": "string", "minLength": 1, "maxLength": 253}
_HOSTNAME = {
    "type": "string",
    "maxLength": 253,
    "pattern": r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
}
_PORT = {"type": "integer", "minimum": 1, "maximum": 65535}

HTTPROUTE_V1: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "gateway.networking.k8s.io/v1"},
        "kind": {"const": "HTTPRoute"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "parentRefs": {
                    "type": "array",
                    "maxItems": 32,
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "additionalProperties": False,
                        "properties": {
                            "group": {"type": "string"},
                            "kind": {"type": "string"},
                            "namespace": _NAME,
                            "name": _NAME,
                            "sectionName": _NAME,
                            "port": _PORT,
                        },
                    },
                },
                "hostnames": {"type": "array", "maxItems": 16, "items": _HOSTNAME},
                "rules": {
                    "type": "array",
                    "maxItems": 16,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "name": _NAME,
                            "matches": {
                                "type": "array",
                                "maxItems": 64,
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "path": {
                                            "type": "object",
                                            "additionalProperties": False,
                                            "properties": {
                                                "type": {
                                                    "enum": ["Exact", "PathPrefix", "RegularExpression"]
                                                },
                                                "value": {
                                                    "type": "string",
                                                    "maxLength": 1024,
                                                    "pattern": "^/",
                                                },
                                            },
                                        },
                                        "method": {
                                            "enum": [
                                                "GET",
                                                "HEAD",
                                                "POST",
                                                "PUT",
                                                "DELETE",
                                                "CONNECT",
                                                "OPTIONS",
                                                "TRACE",
                                                "PATCH",
                                            ]
                                        },
                                    },
                                },
                            },
                            "backendRefs": {
                                "type": "array",
                                "maxItems": 16,
                                "items": {
                                    "type": "object",
                                    "required": ["name"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "group": {"type": "string"},
                                        "kind": {"type": "string"},
                                        "name": _NAME,
                                        "namespace": _NAME,
                                        "port": _PORT,
                                        "weight": {"type": "integer", "minimum": 0, "maximum": 1000000},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}

_MODELS: dict[tuple[str, str], Any] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): monitoring.ServiceMonitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): monitoring.PrometheusRule,
    ("cert-manager.io/v1", "Certificate"): cert_manager.Certificate,
}


def supported(obj: dict[str, Any]) -> bool:
    return (obj["apiVersion"], obj["kind"]) in _MODELS or obj["kind"] == "HTTPRoute"


def validate(obj: dict[str, Any]) -> None:
    """Raise AssertionError or jsonschema.ValidationError naming what is wrong with ``obj``."""
    if obj["kind"] == "HTTPRoute":
        jsonschema.Draft202012Validator(HTTPROUTE_V1).validate(obj)
        return
    model = _MODELS[(obj["apiVersion"], obj["kind"])]
    parsed = model.model_validate(obj)
    again = parsed.model_dump(by_alias=True, exclude_unset=True, mode="json")
    assert _without_metadata(again) == _without_metadata(obj), (
        f"{obj['kind']} has fields its CRD does not know"
    )


def _without_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in obj.items() if key != "metadata"}
