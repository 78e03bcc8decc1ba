"""The chart with sources.jetstream: its auth and CA files must be mounted (a typo fails the render), and
the NetworkPolicy opens the ports named in its URLs."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

from tests.deploy.conftest import one, render

PLATFORM = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "platform"}}}


def values(**source: Any) -> dict[str, Any]:
    return {
        "secretFiles": {"nats-auth": {"secretName": "nats-client", "key": "auth.yaml"}},
        "config": {
            "sources": {
                "jetstream": {
                    "url": "nats://nats.platform.svc:4222",
                    "auth": {"file": "/var/run/secrets/glue/nats-auth"},
                    "stream": "platform",
                    "subjects": [{"subject": "ce.>", "format": "cloudevents"}],
                    **source,
                }
            }
        },
        "networkPolicy": {"egress": {"jetstream": {"to": [PLATFORM]}}},
    }


def egress(objects: list[dict[str, Any]]) -> list[tuple[list[int], list[Any]]]:
    policy = one(objects, "NetworkPolicy")
    return [([p["port"] for p in rule["ports"]], rule.get("to", [])) for rule in policy["spec"]["egress"]]


def test_the_stream_port_is_opened_to_its_namespace(chart: helm.Chart) -> None:
    rules = egress(render(chart, values()))
    assert rules[-1] == ([4222], [PLATFORM])
    several = egress(render(chart, values(url="nats://a:4222, tls://b:4333, nats://c")))
    assert several[-1][0] == [4222, 4333]


def test_an_unmounted_auth_file_fails_the_render(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmRenderError) as caught:
        render(chart, values(auth={"file": "/var/run/secrets/glue/nats-creds"}))
    assert "config.sources.jetstream.auth.file: /var/run/secrets/glue/nats-creds is not mounted" in str(
        caught.value
    )
