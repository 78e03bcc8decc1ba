"""Fixtures for the deployment tests: the chart rendered by Helm's own engine (helm-python-sdk, the Go
SDK as a C library), value profiles, and helpers to run the ``glue`` command line on what it renders.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from glue import cli

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "runtime-glue"
RELEASE = "glue"
NAMESPACE = "platform"
FULLNAME = "glue-runtime-glue"
KUBE_VERSION = "1.30.0"

Objects = list[dict[str, Any]]

# --- value profiles ---------------------------------------------------------------------------------------

WEBHOOKS: list[dict[str, Any]] = [
    {
        "name": "harbor",
        "path": "/hooks/harbor",
        "format": "harbor",
        "auth": {"type": "header", "secret": {"file": "{secrets}/harbor-auth"}},
    },
    {
        "name": "gitlab",
        "path": "/hooks/gitlab",
        "format": "gitlab",
        "auth": {"type": "gitlab-token", "secret": {"file": "{secrets}/gitlab-token"}},
    },
    {"name": "events", "path": "/events", "format": "cloudevents"},
]
SECRET_FILES = {
    "harbor-auth": {"secretName": "glue-webhooks", "key": "harbor"},
    "gitlab-token": {"secretName": "glue-webhooks", "key": "gitlab"},
}


def endpoints(secrets: str) -> list[dict[str, Any]]:
    """The webhook endpoints, their secret files under ``secrets`` (the chart's secretsMountPath)."""
    result = []
    for endpoint in WEBHOOKS:
        endpoint = {**endpoint}
        if "auth" in endpoint:
            secret = {"file": endpoint["auth"]["secret"]["file"].format(secrets=secrets)}
            endpoint["auth"] = {**endpoint["auth"], "secret": secret}
        result.append(endpoint)
    return result


def sqlite_profile(secrets: str = "/var/run/secrets/glue") -> dict[str, Any]:
    """One replica on the SQLite journal, Ingress with cert-manager, Prometheus Operator objects."""
    return {
        "secretsMountPath": secrets,
        "secretFiles": SECRET_FILES,
        "config": {
            "endpoints": endpoints(secrets),
            "routes": [
                {"name": "audit", "match": "true", "handler": "log"},
                {
                    "name": "restart-on-push",
                    "match": 'type == "harbor.artifact.pushed"',
                    "handler": "kubernetes.restart",
                    "params": {
                        "namespace": "{{ data.repository.namespace }}",
                        "name": "{{ data.repository.name }}",
                    },
                },
            ],
        },
        "ingress": {"enabled": True, "className": "nginx", "certManager": {"clusterIssuer": "letsencrypt"}},
        "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
    }


def postgres_profile(secrets: str = "/var/run/secrets/glue") -> dict[str, Any]:
    """Three replicas sharing a PostgreSQL journal, a Gateway API route, RBAC in the routes' namespaces."""
    return {
        "replicaCount": 3,
        "secretsMountPath": secrets,
        "secretFiles": SECRET_FILES,
        "journal": {
            "backend": "postgres",
            "postgres": {"dsnSecret": {"name": "glue-journal", "key": "dsn"}},
            "settings": {"poolSize": 16},
        },
        "config": {
            "endpoints": endpoints(secrets),
            "routes": [
                {
                    "name": "restart-on-push",
                    "match": 'type == "harbor.artifact.pushed"',
                    "handler": "kubernetes.restart",
                    "params": {"namespace": "apps", "name": "{{ data.repository.name }}"},
                },
                {
                    "name": "reload-model",
                    "match": 'type == "harbor.artifact.pushed"',
                    "handler": "kubeai.reload",
                    "params": {"namespace": "ml", "name": "{{ data.repository.name }}"},
                },
                {
                    "name": "restart-ml",
                    "match": 'type == "harbor.artifact.pushed"',
                    "handler": "kubernetes.restart",
                    "params": {
                        "namespace": "ml",
                        "name": "{{ data.repository.name }}",
                        "kind": "StatefulSet",
                    },
                },
                {
                    "name": "disabled-anywhere",
                    "enabled": False,
                    "handler": "kubernetes.restart",
                    "params": {"namespace": "{{ data.namespace }}", "name": "x"},
                },
            ],
        },
        "httpRoute": {
            "enabled": True,
            "hostnames": ["hooks.example.com"],
            "parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "https"}],
        },
        "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
    }


def minio_archive_profile(secrets: str = "/var/run/secrets/glue") -> dict[str, Any]:
    """MinIO listen source with credentials and CA from Secrets, the archive, an enriched route, and the
    execution, server and SQLite journal settings an operator tunes."""
    return {
        "secretsMountPath": secrets,
        "secretFiles": {
            **SECRET_FILES,
            "minio-access-key": {"secretName": "glue-minio", "key": "accesskey"},
            "minio-secret-key": {"secretName": "glue-minio", "key": "secretkey"},
            "minio-ca.crt": {"secretName": "minio-tls", "key": "ca.crt"},
        },
        "journal": {"settings": {"synchronous": "normal", "retentionDays": 3}},
        "terminationGracePeriodSeconds": 45,
        "config": {
            "server": {"eventLoop": "asyncio", "maxBacklog": 50000, "shutdownTimeout": 15},
            "execution": {"concurrency": 8, "batch": 50, "leaseSeconds": 120, "drainSeconds": 20},
            "endpoints": endpoints(secrets),
            "sources": {
                "minio": {
                    "endpoint": "minio.storage.svc:9000",
                    "caFile": f"{secrets}/minio-ca.crt",
                    "accessKey": {"file": f"{secrets}/minio-access-key"},
                    "secretKey": {"file": f"{secrets}/minio-secret-key"},
                    "timeout": 20,
                    "buckets": [
                        {
                            "name": "models",
                            "prefix": "llm/",
                            "suffix": ".safetensors",
                            "events": ["s3:ObjectCreated:*"],
                        }
                    ],
                }
            },
            "archive": {
                "bucket": "glue-archive",
                "prefix": "prod",
                "recordings": True,
                "deadLetters": True,
                "flushSeconds": 30,
            },
            "routes": [
                {
                    "name": "reload-model",
                    "match": 'type.startsWith("minio.ObjectCreated:") && object.json != null',
                    "enrich": {"json": "model.json"},
                    "handler": "kubeai.reload",
                    "params": {"namespace": "ml", "name": "{{ object.json.name }}"},
                }
            ],
        },
        "networkPolicy": {
            "egress": {
                "minio": {
                    "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "storage"}}}]
                }
            }
        },
    }


def kafka_profile(secrets: str = "/var/run/secrets/glue") -> dict[str, Any]:
    """Two replicas in one consumer group on a PostgreSQL journal: SASL/SCRAM over mutual TLS, every
    certificate and password from Secrets, outcomes published back to Kafka."""
    return {
        "replicaCount": 2,
        "secretsMountPath": secrets,
        "secretFiles": {
            "kafka-password": {"secretName": "glue-kafka-user", "key": "password"},
            "kafka-ca.crt": {"secretName": "kafka-cluster-ca-cert", "key": "ca.crt"},
            "kafka-client.crt": {"secretName": "glue-kafka-user", "key": "user.crt"},
            "kafka-client.key": {"secretName": "glue-kafka-user", "key": "user.key"},
        },
        "journal": {
            "backend": "postgres",
            "postgres": {"dsnSecret": {"name": "glue-journal", "key": "dsn"}},
            "settings": {"poolSize": 12, "durableExecutionCommits": True, "groupCommitMs": 5},
        },
        "config": {
            "execution": {"concurrency": 64},
            "sources": {
                "kafka": {
                    "bootstrapServers": "kafka-0.kafka.kafka.svc:9093, kafka-1.kafka.kafka.svc:9093",
                    "groupId": "runtime-glue-prod",
                    "topics": [
                        {"name": "model-events", "format": "cloudevents"},
                        {"name": "minio-events", "format": "minio"},
                        {
                            "name": "argo-triggers",
                            "format": "argo",
                            "type": "io.argoproj.sensor.trigger",
                            "source": "argo-events",
                        },
                    ],
                    "sasl": {
                        "mechanism": "SCRAM-SHA-512",
                        "username": "glue",
                        "password": {"file": f"{secrets}/kafka-password"},
                    },
                    "tls": {
                        "caFile": f"{secrets}/kafka-ca.crt",
                        "certFile": f"{secrets}/kafka-client.crt",
                        "keyFile": f"{secrets}/kafka-client.key",
                    },
                    "autoOffsetReset": "latest",
                    "maxBatch": 1000,
                    "output": {"topic": "glue-outcomes", "outcomes": True},
                }
            },
            "routes": [
                {
                    "name": "restart-on-model",
                    "match": 'type == "io.argoproj.sensor.trigger"',
                    "handler": "kubernetes.restart",
                    "params": {"namespace": "ml", "name": "{{ data.name }}"},
                }
            ],
        },
        "networkPolicy": {
            "egress": {
                "kafka": {
                    "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kafka"}}}]
                },
                "postgres": {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}]},
            }
        },
    }


def listener_tls_profile(secrets: str = "/var/run/secrets/glue") -> dict[str, Any]:
    """HTTPS on the listener from a cert-manager Certificate the chart creates, one endpoint taking only
    senders with a client certificate, the hostile-input limits tuned, the ServiceMonitor scraping HTTPS."""
    profile = sqlite_profile(secrets)
    profile["ingress"] = {"enabled": False}
    profile["tls"] = {
        "enabled": True,
        "certificate": {"issuerRef": {"name": "platform-ca", "kind": "ClusterIssuer"}},
        "clientCa": {"secretName": "webhook-senders-ca", "key": "ca.crt"},
    }
    profile["config"]["endpoints"].append(
        {"name": "mtls", "path": "/hooks/mtls", "format": "cloudevents", "clientCert": {"names": ["harbor"]}}
    )
    profile["config"]["server"] = {
        "maxHeaders": 64,
        "idleTimeout": 20,
        "bodyTimeout": 15,
        "trustedProxies": ["10.0.0.0/8"],
        "lockout": {"failures": 20, "seconds": 600},
    }
    return profile


def registered_handlers() -> dict[str, Any]:
    """Every handler the daemon ships (the built-in handler modules register on import)."""
    from glue import app, contract
    from glue import settings as settings_mod

    app.load_plugins(settings_mod.from_mapping({}), everything=True)
    # Only the shipped modules: other test areas register test handlers in the same process.
    return {
        name: entry
        for name, entry in contract.registry.handlers.items()
        if entry.fn.__module__.startswith("handlers.")
    }


def all_handlers_profile(secrets: str = "/var/run/secrets/glue") -> dict[str, Any]:
    """A route for every registered handler; required params are templates filled from the event."""
    routes = []
    for index, (name, entry) in enumerate(sorted(registered_handlers().items())):
        params = {
            (info.alias or field): "{{ data." + field + " }}"
            for field, info in entry.params.model_fields.items()
            if info.is_required()
        }
        routes.append({"name": f"route-{index}", "match": "true", "handler": name, "params": params})
    profile = sqlite_profile(secrets)
    profile["config"]["routes"] = routes
    profile["config"]["tracing"] = {  # every handler's calls traced, to the collector of the cluster
        "endpoint": "http://otel-collector.observability:4318",
        "sampler": "parentbased_traceidratio",
        "samplerArg": 0.25,
        "linkTemplate": "https://tempo.example/trace/{trace_id}",
    }
    return profile


PROFILES = {
    "default": lambda secrets="/var/run/secrets/glue": {},
    "sqlite": sqlite_profile,
    "postgres-3-replicas": postgres_profile,
    "every-handler": all_handlers_profile,
    "minio-archive": minio_archive_profile,
    "kafka": kafka_profile,
    "listener-tls": listener_tls_profile,
}

# --- rendering ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any] | None = None) -> Objects:
    """The objects Helm would install, in template order."""
    manifests = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects: Objects = []
    for path in sorted(manifests):
        if not path.endswith((".yaml", ".yml")):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(manifests[path]) if doc)
    return objects


def one(objects: Objects, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def kinds(objects: Objects) -> list[str]:
    return sorted(o["kind"] for o in objects)


def glue_config(objects: Objects) -> dict[str, Any]:
    """The glue config the chart writes into its ConfigMap."""
    config_map = one(objects, "ConfigMap", FULLNAME)
    loaded: dict[str, Any] = yaml.safe_load(config_map["data"]["config.yaml"])
    return loaded


# --- the glue command line -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def glue(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """Run ``glue ARGS`` through its entry point (in this process: the handler modules import once)."""
    for name in list(os.environ):
        if name.startswith("GLUE_"):
            monkeypatch.delenv(name)

    def run(*args: str) -> Result:
        capsys.readouterr()
        code = cli.main(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def write_secret_files(directory: Path, objects: Objects) -> None:
    """Put a placeholder in every file the Deployment's projected secrets volume would hold."""
    deployment = one(objects, "Deployment")
    for volume in deployment["spec"]["template"]["spec"]["volumes"]:
        for source in volume.get("projected", {}).get("sources", []):
            for item in source["secret"]["items"]:
                (directory / item["path"]).write_text(f"placeholder-for-{item['path']}\n")
