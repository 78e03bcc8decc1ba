"""The Helm chart, rendered by Helm's own engine: valid objects, lint, values schema, and the properties
a platform team relies on (least privilege, hardening, only webhook paths published, no secret values).
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest

from tests.deploy import crds
from tests.deploy.conftest import CHART, FULLNAME, KUBE_VERSION, PROFILES, glue_config, kinds, one, render

#: The oldest Kubernetes the chart supports (Chart.yaml kubeVersion), the one CI lints against, the newest.
KUBE_VERSIONS = ("1.27.0", KUBE_VERSION, kubernetes_validate.utils.latest_version())


def validate(obj: dict[str, Any]) -> None:
    if crds.supported(obj):
        crds.validate(obj)
        return
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_rendered_object_is_valid_in_strict_mode(chart: helm.Chart, profile: str) -> None:
    assert chart.metadata["kubeVersion"] == ">=1.27.0-0"
    objects = render(chart, PROFILES[profile]())
    assert objects
    for obj in objects:
        validate(obj)


def test_strict_validation_catches_an_unknown_field(chart: helm.Chart) -> None:
    deployment = one(render(chart), "Deployment")
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)
    monitor = one(render(chart, PROFILES["sqlite"]()), "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["scrapeIntervall"] = "5s"
    with pytest.raises(AssertionError, match="fields its CRD does not know"):
        validate(monitor)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_strict_lint_reports_no_errors_or_warnings(profile: str) -> None:
    report = helm.lint(
        CHART, PROFILES[profile](), strict=True, namespace="platform", kube_version=f"v{KUBE_VERSION}"
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


def test_lint_would_report_a_broken_chart(tmp_path: Path) -> None:
    broken = tmp_path / "runtime-glue"
    shutil.copytree(CHART, broken)
    (broken / "templates" / "service.yaml").write_text("{{ .Values.service.port | nosuchfunction }}\n")
    report = helm.lint(broken, strict=True)
    assert report["errors"] or any(m["severity"] >= 3 for m in report["messages"])


def test_profiles_install_what_they_promise(chart: helm.Chart) -> None:
    assert kinds(render(chart)) == [
        "ConfigMap",
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    ]
    sqlite = render(chart, PROFILES["sqlite"]())
    assert {"Ingress", "ServiceMonitor", "PrometheusRule", "ClusterRole", "PersistentVolumeClaim"} <= set(
        kinds(sqlite)
    )
    postgres = render(chart, PROFILES["postgres-3-replicas"]())
    assert "PersistentVolumeClaim" not in kinds(postgres)
    assert {"HTTPRoute", "Role", "RoleBinding"} <= set(kinds(postgres))
    assert "ClusterRole" not in kinds(postgres)


# --- values.schema.json and the template's own checks -----------------------------------------------------

SCHEMA_REJECTS = [
    ({"replicaCount": 0}, "/replicaCount", "minimum"),
    ({"journal": {"backend": "mysql"}}, "/journal/backend", "'sqlite', 'postgres'"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy", "Always"),
    ({"service": {"port": 70000}}, "/service/port", "maximum"),
    ({"replicas": 3}, "", "additional properties 'replicas' not allowed"),
    (
        {
            "config": {
                "endpoints": [
                    {
                        "name": "g",
                        "path": "/g",
                        "format": "gitlab",
                        "auth": {"type": "gitlab-token", "secret": {"value": "s3cret"}},
                    }
                ]
            }
        },
        "/config/endpoints/0/auth/secret",
        "additional properties 'value' not allowed",
    ),
    (
        {"config": {"endpoints": [{"name": "g", "path": "hooks", "format": "gitlab"}]}},
        "/config/endpoints/0/path",
        "",
    ),
    (
        {"config": {"endpoints": [{"name": "x", "path": "/x", "format": "jenkins"}]}},
        "/config/endpoints/0/format",
        "",
    ),
    (
        {"metrics": {"prometheusRule": {"handlerErrorRatio": 5}}},
        "/metrics/prometheusRule/handlerErrorRatio",
        "",
    ),
    ({"config": {"sourcse": {}}}, "/config", "additional properties 'sourcse' not allowed"),
    (
        {"config": {"endpoints": [{"name": "g", "path": "/g", "format": "gitlab", "auth": {"secret": {}}}]}},
        "/config/endpoints/0/auth/secret",
        "missing property 'file'",
    ),
    (
        {"config": {"sources": {"minio": {"endpoint": "m:9000", "accessKey": {"file": "access-key"}}}}},
        "/config/sources/minio/accessKey/file",
        "does not match pattern '^/'",
    ),
    # sources.minio: credentials only from mounted files or the environment, the endpoint without scheme.
    (
        {"config": {"sources": {"minio": {"endpoint": "https://minio.storage:9000"}}}},
        "/config/sources/minio/endpoint",
        "does not match pattern",
    ),
    (
        {"config": {"sources": {"minio": {"endpoint": "m:9000", "secretKey": {"value": "s3cret"}}}}},
        "/config/sources/minio/secretKey",
        "additional properties 'value' not allowed",
    ),
    (
        {"config": {"sources": {"minio": {"endpoint": "m:9000", "accessKey": {"env": "MINIO_ACCESS_KEY"}}}}},
        "/config/sources/minio",
        "properties 'secretKey' required, if 'accessKey' exists",
    ),
    (
        {"config": {"sources": {"minio": {"endpoint": "m:9000", "buckets": [{"name": "Models_1"}]}}}},
        "/config/sources/minio/buckets/0/name",
        "does not match pattern",
    ),
    (
        {
            "config": {
                "sources": {
                    "minio": {"endpoint": "m:9000", "buckets": [{"name": "models", "events": ["put"]}]}
                }
            }
        },
        "/config/sources/minio/buckets/0/events/0",
        "does not match pattern",
    ),
    ({"config": {"archive": {"prefix": "prod"}}}, "/config/archive", "missing property 'bucket'"),
    (
        {"config": {"archive": {"bucket": "glue-archive", "flushSeconds": 0}}},
        "/config/archive/flushSeconds",
        "",
    ),
    # sources.kafka
    (
        {"config": {"sources": {"kafka": {"bootstrapServers": "PLAINTEXT://kafka:9092", "topics": []}}}},
        "/config/sources/kafka/bootstrapServers",
        "does not match pattern",
    ),
    (
        {"config": {"sources": {"kafka": {"bootstrapServers": ["kafka:9092"]}}}},
        "/config/sources/kafka",
        "missing property 'topics'",
    ),
    (
        {
            "config": {
                "sources": {
                    "kafka": {"bootstrapServers": ["k:9092"], "topics": [{"name": "t", "format": "avro"}]}
                }
            }
        },
        "/config/sources/kafka/topics/0/format",
        "'cloudevents', 'minio', 'argo'",
    ),
    (
        {
            "config": {
                "sources": {
                    "kafka": {
                        "bootstrapServers": ["k:9092"],
                        "topics": [{"name": "t", "format": "cloudevents"}],
                        "sasl": {
                            "mechanism": "GSSAPI",
                            "username": "glue",
                            "password": {"env": "KAFKA_PASSWORD"},
                        },
                    }
                }
            }
        },
        "/config/sources/kafka/sasl/mechanism",
        "'PLAIN', 'SCRAM-SHA-256', 'SCRAM-SHA-512'",
    ),
    (
        {
            "config": {
                "sources": {
                    "kafka": {
                        "bootstrapServers": ["k:9092"],
                        "topics": [{"name": "t", "format": "cloudevents"}],
                        "tls": {"certFile": "/var/run/secrets/glue/client.crt"},
                    }
                }
            }
        },
        "/config/sources/kafka/tls",
        "properties 'keyFile' required, if 'certFile' exists",
    ),
    # server, execution, journal tuning
    ({"config": {"server": {"eventLoop": "trio"}}}, "/config/server/eventLoop", "'uvloop', 'asyncio'"),
    ({"config": {"execution": {"concurrency": 0}}}, "/config/execution/concurrency", "minimum"),
    ({"config": {"execution": {"owner": "glue-0"}}}, "/config/execution", "additional properties 'owner'"),
    (
        {"journal": {"backend": "postgres", "settings": {"poolSize": 500}}},
        "/journal/settings/poolSize",
        "maximum",
    ),
    (
        {"journal": {"backend": "postgres", "settings": {"durableExecutionCommits": "yes"}}},
        "/journal/settings/durableExecutionCommits",
        "want boolean",
    ),
    (
        {"networkPolicy": {"egress": {"kafka": {"ports": [0]}}}},
        "/networkPolicy/egress/kafka/ports/0",
        "minimum",
    ),
    # the listener: TLS and hostile-input limits
    ({"config": {"server": {"idleTimeout": 0}}}, "/config/server/idleTimeout", "exclusiveMinimum"),
    (  # the chart sets it from tls
        {"config": {"server": {"tls": {"certFile": "/x", "keyFile": "/y"}}}},
        "/config/server",
        "additional properties 'tls' not allowed",
    ),
    (
        {"config": {"server": {"lockout": {"failures": 5, "window": 60}}}},
        "/config/server/lockout",
        "additional properties 'window'",
    ),
    (
        {"tls": {"certificate": {"privateKey": {"algorithm": "DSA"}}}},
        "/tls/certificate/privateKey/algorithm",
        "'RSA', 'ECDSA', 'Ed25519'",
    ),
]


@pytest.mark.parametrize(("values", "where", "reason"), SCHEMA_REJECTS)
def test_values_schema_rejects_wrong_values(
    chart: helm.Chart, values: dict[str, Any], where: str, reason: str
) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        render(chart, values)
    message = str(caught.value)
    assert f"at '{where}'" in message and reason in message, message


def test_default_values_pass_the_schema(chart: helm.Chart) -> None:
    chart.validate_schema(chart.values)
    assert chart.schema is not None and chart.schema["additionalProperties"] is False


TEMPLATE_REJECTS = [
    ({"replicaCount": 3}, "replicaCount 3 needs journal.backend=postgres"),
    ({"journal": {"backend": "postgres"}}, "needs journal.postgres.dsnSecret.name"),
    ({"config": {"journal": {"backend": "sqlite"}}}, "config.journal is managed by the chart"),
    (
        {"config": {"routes": [{"name": "r", "handler": "no.such.handler"}]}},
        'route handler "no.such.handler" has no entry in rbac.handlerRules',
    ),
    ({"ingress": {"enabled": True}}, "ingress.enabled needs at least one webhook"),
    (
        {
            "httpRoute": {"enabled": True},
            "config": {"endpoints": [{"name": "e", "path": "/e", "format": "cloudevents"}]},
        },
        "httpRoute.enabled needs httpRoute.parentRefs",
    ),
    ({"config": {"archive": {"bucket": "glue-archive"}}}, "config.archive needs config.sources.minio"),
    (
        {
            "config": {
                "sources": {"minio": {"endpoint": "m:9000", "secure": False, "caFile": "/etc/ssl/ca.crt"}}
            }
        },
        "config.sources.minio.caFile needs secure: true",
    ),
    (
        {
            "secretFiles": {"minio-access-key": {"secretName": "glue-minio", "key": "accesskey"}},
            "config": {
                "sources": {
                    "minio": {
                        "endpoint": "m:9000",
                        "accessKey": {"file": "/var/run/secrets/glue/minio-access-key"},
                        "secretKey": {"file": "/var/run/secrets/glue/minio-secret-key"},
                    }
                }
            },
        },
        "config.sources.minio.secretKey.file: /var/run/secrets/glue/minio-secret-key is not mounted: "
        'add "minio-secret-key" to secretFiles',
    ),
    (
        {
            "config": {
                "sources": {
                    "kafka": {
                        "bootstrapServers": ["k:9093"],
                        "topics": [{"name": "t", "format": "cloudevents"}],
                        "tls": {"caFile": "/var/run/secrets/glue/kafka-ca.crt"},
                    }
                }
            }
        },
        "config.sources.kafka.tls.caFile: /var/run/secrets/glue/kafka-ca.crt is not mounted",
    ),
    (
        {
            "journal": {"backend": "postgres", "postgres": {"dsnSecret": {"name": "glue-journal"}}},
            "secretFiles": {"journal-dsn": {"secretName": "other", "key": "dsn"}},
        },
        "secretFiles: journal-dsn is the file the chart mounts",
    ),
    (
        {"journal": {"settings": {"poolSize": 4}}},
        "journal.settings.poolSize applies to journal.backend=postgres",
    ),
    (
        {
            "journal": {
                "backend": "postgres",
                "postgres": {"dsnSecret": {"name": "glue-journal"}},
                "settings": {"synchronous": "normal"},
            }
        },
        "journal.settings.synchronous applies to journal.backend=sqlite",
    ),
    (
        {"config": {"execution": {"drainSeconds": 60}}},
        "terminationGracePeriodSeconds 30 is not longer than the drain "
        "(config.server.shutdownTimeout + config.execution.drainSeconds = 70s)",
    ),
    (
        {"config": {"endpoints": [{"name": "m", "path": "/m", "format": "cloudevents", "clientCert": {}}]}},
        "an endpoint has clientCert: it needs tls.enabled",
    ),
    ({"tls": {"enabled": True}}, "tls.certificate.create needs tls.certificate.issuerRef.name"),
]


@pytest.mark.parametrize(("values", "reason"), TEMPLATE_REJECTS)
def test_inconsistent_values_fail_with_a_reason(
    chart: helm.Chart, values: dict[str, Any], reason: str
) -> None:
    with pytest.raises(helm.HelmRenderError) as caught:
        render(chart, values)
    assert reason in str(caught.value)


# --- the pod --------------------------------------------------------------------------------------------


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def test_pod_is_hardened(chart: helm.Chart) -> None:
    spec = pod_spec(render(chart, PROFILES["sqlite"]()))
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = spec["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["args"] == ["run", "--config", "/etc/glue/config.yaml"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert {c["topologyKey"] for c in spec["topologySpreadConstraints"]} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    # Writable paths on a read-only root: the journal volume and /tmp, nothing else.
    writable = sorted(path for path, m in mounts.items() if not m.get("readOnly"))
    assert writable == ["/tmp", "/var/lib/glue"]


def test_sqlite_journal_is_one_replica_on_a_claim(chart: helm.Chart) -> None:
    objects = render(chart, PROFILES["sqlite"]())
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    claim = one(objects, "PersistentVolumeClaim")
    volumes = {v["name"]: v for v in pod_spec(objects)["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert glue_config(objects)["journal"] == {"backend": "sqlite", "path": "/var/lib/glue/glue.db"}


def test_postgres_journal_reads_the_dsn_from_a_secret(chart: helm.Chart) -> None:
    objects = render(chart, PROFILES["postgres-3-replicas"]())
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    journal = glue_config(objects)["journal"]
    assert journal == {
        "backend": "postgres",
        "dsn": {"file": "/var/run/secrets/glue/journal-dsn"},
        "poolSize": 16,
    }
    volumes = {v["name"]: v for v in pod_spec(objects)["volumes"]}
    assert "data" not in volumes
    sources = volumes["secrets"]["projected"]["sources"]
    assert {"secret": {"name": "glue-journal", "items": [{"key": "dsn", "path": "journal-dsn"}]}} in sources


#: Config keys holding a secretRef, and keys naming a certificate or key file.
SECRET_KEYS = {"secret", "password", "keyPassword", "accessKey", "secretKey", "sessionToken", "dsn"}
FILE_KEYS = {"caFile", "certFile", "keyFile"}


def files_read(node: Any, where: str = "config") -> Iterator[tuple[str, str]]:
    """(setting, path) of every secret and certificate file the glue config reads."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from files_read(item, f"{where}[{index}]")
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in SECRET_KEYS and isinstance(value, dict):
                assert set(value) == {"file"}, f"{where}.{key} is not read from a file: {value}"
                yield f"{where}.{key}", value["file"]
            elif key in FILE_KEYS:
                yield f"{where}.{key}", value
            else:
                yield from files_read(value, f"{where}.{key}")


@pytest.mark.parametrize("profile", ["postgres-3-replicas", "minio-archive", "kafka"])
def test_secret_values_never_reach_the_rendered_objects(chart: helm.Chart, profile: str) -> None:
    """Secrets and certificates are keys of existing Secrets, mounted as files the config names."""
    values = PROFILES[profile]()
    objects = render(chart, values)
    assert "Secret" not in kinds(objects)
    (volume,) = [v for v in pod_spec(objects)["volumes"] if v["name"] == "secrets"]
    mounted = {
        f"/var/run/secrets/glue/{item['path']}": (source["secret"]["name"], item["key"])
        for source in volume["projected"]["sources"]
        for item in source["secret"]["items"]
    }
    read = dict(files_read(glue_config(objects)))
    assert read and {where: path for where, path in read.items() if path not in mounted} == {}
    assert set(mounted) == set(read.values())  # nothing mounted that the config does not read
    if profile == "minio-archive":
        minio = "config.sources.minio"
        assert mounted[read[f"{minio}.accessKey"]] == ("glue-minio", "accesskey")
        assert mounted[read[f"{minio}.secretKey"]] == ("glue-minio", "secretkey")
        assert mounted[read[f"{minio}.caFile"]] == ("minio-tls", "ca.crt")


def test_a_config_change_rolls_the_pods(chart: helm.Chart) -> None:
    def checksum(values: dict[str, Any]) -> str:
        annotations = one(render(chart, values), "Deployment")["spec"]["template"]["metadata"]["annotations"]
        return str(annotations["checksum/config"])

    base = PROFILES["sqlite"]()
    changed = PROFILES["sqlite"]()
    changed["config"]["logging"] = {"level": "debug"}
    unrelated = PROFILES["sqlite"]()
    unrelated["resources"] = {"requests": {"cpu": "1"}}
    assert checksum(base) == checksum(unrelated)
    assert checksum(base) != checksum(changed)


# --- network ---------------------------------------------------------------------------------------------


def test_ingress_publishes_only_the_webhook_paths(chart: helm.Chart) -> None:
    objects = render(chart, PROFILES["sqlite"]())
    ingress = one(objects, "Ingress")
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert ingress["spec"]["tls"][0]["secretName"] == f"{FULLNAME}-tls"
    paths = [p["path"] for p in ingress["spec"]["rules"][0]["http"]["paths"]]
    assert paths == [e["path"] for e in glue_config(objects)["endpoints"]]
    assert "/metrics" not in paths


def test_httproute_publishes_only_the_webhook_paths(chart: helm.Chart) -> None:
    objects = render(chart, PROFILES["postgres-3-replicas"]())
    route = one(objects, "HTTPRoute")
    (rule,) = route["spec"]["rules"]
    assert [m["path"]["value"] for m in rule["matches"]] == [
        e["path"] for e in glue_config(objects)["endpoints"]
    ]
    assert {m["method"] for m in rule["matches"]} == {"POST"}
    assert rule["backendRefs"] == [{"name": FULLNAME, "port": 8080}]


def test_service_and_network_policy_open_only_the_daemon_port(chart: helm.Chart) -> None:
    objects = render(chart)
    service = one(objects, "Service")
    assert [(p["name"], p["targetPort"]) for p in service["spec"]["ports"]] == [("http", "http")]
    policy = one(objects, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == ["http"]
    assert glue_config(objects)["server"] == {"host": "0.0.0.0", "port": 8080}


Rule = tuple[list[int], list[dict[str, Any]]]


def egress_rules(objects: list[dict[str, Any]]) -> list[Rule]:
    """The NetworkPolicy's egress rules as (TCP/UDP ports, peers), in order."""
    policy = one(objects, "NetworkPolicy")
    validate(policy)
    return [([p["port"] for p in rule["ports"]], rule.get("to", [])) for rule in policy["spec"]["egress"]]


DNS: Rule = ([53, 53], [])
KUBERNETES_API: Rule = ([443, 6443], [])


def namespace(name: str) -> list[dict[str, Any]]:
    return [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}]


def test_egress_opens_only_the_services_the_config_uses(chart: helm.Chart) -> None:
    assert egress_rules(render(chart)) == [DNS]
    # kubeai.reload needs the Kubernetes API; MinIO's port from its endpoint, narrowed to its namespace.
    assert egress_rules(render(chart, PROFILES["minio-archive"]())) == [
        DNS,
        KUBERNETES_API,
        ([9000], namespace("storage")),
    ]
    # One rule for both brokers' port; the journal's database by address.
    assert egress_rules(render(chart, PROFILES["kafka"]())) == [
        DNS,
        KUBERNETES_API,
        ([9093], namespace("kafka")),
        ([5432], [{"ipBlock": {"cidr": "10.20.0.0/16"}}]),
    ]


def test_egress_ports_come_from_the_addresses_in_the_config(chart: helm.Chart) -> None:
    def http_route(name: str, url: str, enabled: bool = True) -> dict[str, Any]:
        return {"name": name, "handler": "http", "enabled": enabled, "params": {"url": url}}

    values: dict[str, Any] = {
        "config": {
            "clients": {
                "openbao": {"address": "https://openbao.openbao.svc:8200"},
                "argo-server": {"url": "http://argo-server.argo:2746"},
            },
            "sources": {
                "kafka": {
                    "bootstrapServers": ["kafka-a.kafka", "kafka-b.kafka:9094"],
                    "topics": [{"name": "events", "format": "cloudevents"}],
                },
                "minio": {"endpoint": "minio.storage", "secure": False},
            },
            "routes": [
                http_route("notify", "https://hooks.example.com:8443/glue"),
                http_route("callback", "{{ data.callback }}"),
                http_route("off", "https://old.example.com:9999/", enabled=False),
            ],
        },
        "networkPolicy": {"egress": {"kafka": {"ports": [9095]}}, "egressPorts": [25]},
    }
    assert egress_rules(render(chart, values)) == [
        DNS,
        ([8200], []),  # OpenBao (clients.openbao.address); its Kubernetes auth needs no API access
        ([2746], []),  # the Argo Server
        (
            [9092, 9094, 9095],
            [],
        ),  # Kafka: default port, the bootstrap list's, networkPolicy.egress.kafka.ports
        ([80], []),  # MinIO without TLS, no port named
        ([8443, 80, 443], []),  # the literal URL's port; a templated URL may be any http(s) address
        ([25], []),  # networkPolicy.egressPorts
    ]
    values["config"]["clients"]["kubernetes"] = {}
    values["networkPolicy"]["egress"]["kubernetesApi"] = {
        "ports": [6443],
        "to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}],
    }
    assert egress_rules(render(chart, values))[1] == ([6443], [{"ipBlock": {"cidr": "10.0.0.1/32"}}])


def test_the_otlp_endpoint_is_a_value_that_names_the_pod_and_opens_its_port(chart: helm.Chart) -> None:
    values: dict[str, Any] = {
        "config": {"tracing": {"endpoint": "http://otel-collector.observability:4318"}},
        "networkPolicy": {"egress": {"tracing": {"to": namespace("observability")}}},
    }
    objects = render(chart, values)
    assert glue_config(objects)["tracing"] == {"endpoint": "http://otel-collector.observability:4318"}
    [container] = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert env["OTEL_RESOURCE_ATTRIBUTES"]["value"] == (
        "k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(POD_NAME)"
    )
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert list(env).index("POD_NAME") < list(env).index("OTEL_RESOURCE_ATTRIBUTES")  # $(...) order
    assert egress_rules(objects) == [DNS, ([4318], namespace("observability"))]
    # Off (no endpoint): no variable, no rule.
    [container] = one(render(chart), "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "env" not in container


# --- RBAC ------------------------------------------------------------------------------------------------


def test_no_routes_means_no_rbac_and_no_token(chart: helm.Chart) -> None:
    objects = render(chart)
    assert not {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"} & set(kinds(objects))
    assert one(objects, "ServiceAccount")["automountServiceAccountToken"] is False
    assert pod_spec(objects)["automountServiceAccountToken"] is False


def test_rbac_follows_the_routes_and_their_namespaces(chart: helm.Chart) -> None:
    # The restart routes name no kind: a Deployment, so only deployments are granted (not every workload).
    restart = [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "patch"]}]
    # The sqlite profile's restart route takes its namespace from the event: it may act anywhere.
    objects = render(chart, PROFILES["sqlite"]())
    assert one(objects, "ClusterRole")["rules"] == restart
    assert "Role" not in kinds(objects)
    binding = one(objects, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": "platform"}]
    assert pod_spec(objects)["automountServiceAccountToken"] is True
    # The postgres profile's routes name their namespaces: Roles there only; a disabled route grants nothing.
    objects = render(chart, PROFILES["postgres-3-replicas"]())
    assert "ClusterRole" not in kinds(objects)
    roles = {o["metadata"]["namespace"]: o for o in objects if o["kind"] == "Role"}
    assert set(roles) == {"apps", "ml"}
    assert roles["apps"]["rules"] == restart
    assert roles["ml"]["metadata"]["annotations"]["runtime-glue.io/routes"] == "reload-model,restart-ml"
    bindings = [o for o in objects if o["kind"] == "RoleBinding"]
    assert {b["metadata"]["namespace"] for b in bindings} == {"apps", "ml"}
    # Only the log handler: no permissions at all.
    values = PROFILES["sqlite"]()
    values["config"]["routes"] = [r for r in values["config"]["routes"] if r["handler"] == "log"]
    assert not {"Role", "ClusterRole"} & set(kinds(render(chart, values)))


# --- observability ---------------------------------------------------------------------------------------


def test_alerts_cover_what_the_issue_asks(chart: helm.Chart) -> None:
    rule = one(render(chart, PROFILES["sqlite"]()), "PrometheusRule")
    alerts = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    assert set(alerts) == {
        "GlueDeadLettersGrowing",
        "GlueAuthLockouts",
        "GlueBacklogAge",
        "GlueKafkaConsumerLag",
        "GlueHandlerErrorRate",
        "GlueBreakerOpen",
        "GluePausedAll",
        "GlueApprovalsWaiting",
    }
    assert alerts["GluePausedAll"]["for"] == "1h", "a global pause older than an hour"
    for alert in alerts.values():
        assert 'namespace="platform"' in alert["expr"] and f'job="{FULLNAME}"' in alert["expr"]
        assert alert["annotations"]["summary"] and alert["labels"]["severity"]


def test_dashboard_is_valid_json_for_the_grafana_sidecar(chart: helm.Chart) -> None:
    config_map = one(render(chart), "ConfigMap", f"{FULLNAME}-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["runtime-glue.json"])
    assert dashboard["uid"] == "runtime-glue"
    targets = [t for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert targets and all(t["expr"] for t in targets)


# --- TLS on the listener --------------------------------------------------------------------------------


def test_listener_tls_from_a_certificate_the_chart_creates(chart: helm.Chart) -> None:
    objects = render(chart, PROFILES["listener-tls"]())
    secret = f"{FULLNAME}-listener-tls"
    certificate = one(objects, "Certificate")
    assert certificate["spec"]["secretName"] == secret
    assert certificate["spec"]["issuerRef"] == {
        "name": "platform-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    service = f"{FULLNAME}.platform"
    assert certificate["spec"]["dnsNames"] == [
        FULLNAME,
        service,
        f"{service}.svc",
        f"{service}.svc.cluster.local",
    ]
    assert certificate["spec"]["privateKey"]["rotationPolicy"] == "Always"
    # The files the config names are the ones the volume mounts (a volume, so renewals reach the pod).
    spec = pod_spec(objects)
    (volume,) = [v for v in spec["volumes"] if v["name"] == "tls"]
    (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "tls"]
    assert "subPath" not in mount
    mounted = {
        f"{mount['mountPath']}/{item['path']}": (source["secret"]["name"], item["key"])
        for source in volume["projected"]["sources"]
        for item in source["secret"]["items"]
    }
    tls = glue_config(objects)["server"]["tls"]
    assert mounted == {
        tls["certFile"]: (secret, "tls.crt"),
        tls["keyFile"]: (secret, "tls.key"),
        tls["clientCaFile"]: ("webhook-senders-ca", "ca.crt"),
    }
    container = spec["containers"][0]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
    assert one(objects, "Service")["spec"]["ports"][0]["appProtocol"] == "https"
    (endpoint,) = one(objects, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"]["ca"]["secret"] == {"name": secret, "key": "ca.crt"}
    assert endpoint["tlsConfig"]["serverName"] == f"{service}.svc"


def test_listener_tls_from_an_existing_secret(chart: helm.Chart) -> None:
    values = PROFILES["listener-tls"]()
    values["tls"] = {"enabled": True, "secretName": "glue-serving", "certificate": {"create": False}}
    objects = render(chart, values)
    assert "Certificate" not in kinds(objects)
    (volume,) = [v for v in pod_spec(objects)["volumes"] if v["name"] == "tls"]
    (source,) = volume["projected"]["sources"]
    # Without a separate client CA, senders' certificates are checked against the Secret's own ca.crt.
    assert source["secret"]["name"] == "glue-serving"
    assert [item["key"] for item in source["secret"]["items"]] == ["tls.crt", "tls.key", "ca.crt"]


def test_without_tls_the_listener_speaks_http(chart: helm.Chart) -> None:
    objects = render(chart, PROFILES["sqlite"]())
    assert "tls" not in glue_config(objects)["server"]
    assert "Certificate" not in kinds(objects)
    assert "scheme" not in pod_spec(objects)["containers"][0]["readinessProbe"]["httpGet"]
    assert one(objects, "ServiceMonitor")["spec"]["endpoints"][0]["scheme"] == "http"


def test_the_admin_api_gets_a_port_a_service_and_a_policy_rule_of_its_own(chart: helm.Chart) -> None:
    admin = {"tokens": {"ops": {"file": "/var/run/secrets/glue/ops-token"}}, "viewers": ["ops"]}
    objects = render(chart, {"config": {"admin": admin}})
    [container] = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [("http", 8080), ("admin", 8081)]
    service = one(objects, "Service", f"{FULLNAME}-admin")
    validate(service)
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("admin", 8081, "admin")
    ]
    assert one(objects, "Service", FULLNAME)["spec"]["ports"][0]["name"] == "http"  # webhooks only
    policy = one(objects, "NetworkPolicy")
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == ["http", "admin"]
    # in the pod it listens on the pod's address (the Service and port-forward reach it), on its port
    assert glue_config(objects)["admin"] == {**admin, "host": "0.0.0.0", "port": 8081}
    # a port and host of the operator's own are kept; narrowing who may reach it
    objects = render(
        chart,
        {
            "config": {"admin": {**admin, "host": "127.0.0.1", "port": 9090}},
            "networkPolicy": {"adminFrom": [{"podSelector": {"matchLabels": {"app": "ops"}}}]},
        },
    )
    assert glue_config(objects)["admin"]["host"] == "127.0.0.1"
    assert one(objects, "Service", f"{FULLNAME}-admin")["spec"]["ports"][0]["port"] == 9090
    [_, rule] = one(objects, "NetworkPolicy")["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app": "ops"}}}]
    # without config.admin: no port, no Service
    objects = render(chart)
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Service"] == [FULLNAME]
