"""The chart with sources.argoEvents: Argo's Secrets mounted as files (a typo fails the render), and the
NetworkPolicy opens the EventBus port named in the URL."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

from tests.deploy.conftest import one, render

BUS = "nats://eventbus-default-js-svc.argo-events.svc:4222"


def values(**source: Any) -> dict[str, Any]:
    return {
        "secretFiles": {
            "eventbus-auth": {"secretName": "eventbus-default-js-client-auth", "key": "client-auth"},
            "eventbus-ca": {"secretName": "eventbus-default-js-server", "key": "ca-cert"},
        },
        "config": {
            "sources": {
                "argoEvents": {
                    "url": BUS,
                    "auth": {"file": "/var/run/secrets/glue/eventbus-auth"},
                    "tls": {"caFile": "/var/run/secrets/glue/eventbus-ca"},
                    "eventSources": [{"name": "gitlab-hooks", "unwrap": "gitlab"}, "*"],
                    **source,
                }
            }
        },
        "networkPolicy": {
            "egress": {
                "argoEvents": {
                    "to": [
                        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "argo-events"}}}
                    ]
                }
            }
        },
    }


def egress(objects: list[dict[str, Any]]) -> list[tuple[list[int], list[Any]]]:
    policy = one(objects, "NetworkPolicy")
    return [([p["port"] for p in rule["ports"]], rule.get("to", [])) for rule in policy["spec"]["egress"]]


def test_the_eventbus_port_is_opened_to_argos_namespace(chart: helm.Chart) -> None:
    rules = egress(render(chart, values()))
    assert rules[-1] == (
        [4222],
        [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "argo-events"}}}],
    )
    several = egress(render(chart, values(url="nats://a.bus:4222, tls://b.bus:4333, nats://c.bus")))
    assert several[-1][0] == [4222, 4333]


def test_an_unmounted_auth_file_fails_the_render(chart: helm.Chart) -> None:
    broken = values(auth={"file": "/var/run/secrets/glue/eventbus-client-auth"})
    with pytest.raises(helm.HelmRenderError) as caught:
        render(chart, broken)
    assert (
        "config.sources.argoEvents.auth.file: /var/run/secrets/glue/eventbus-client-auth is not mounted"
        in str(caught.value)
    )
