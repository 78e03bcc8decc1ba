"""The Helm chart, rendered by Helm's own engine: valid objects, lint, values schema, and the properties
a platform team relies on (least privilege, hardening, only webhook paths published, no secret values).
"""

from __future__ import annotations

import copy
import json
import shutil
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


def test_secret_values_never_reach_the_rendered_objects(chart: helm.Chart) -> None:
    objects = render(chart, PROFILES["postgres-3-replicas"]())
    assert "Secret" not in kinds(objects)
    text = json.dumps(objects)
    assert "glue-webhooks" in text  # referenced by name ...
    for endpoint in glue_config(objects)["endpoints"]:
        if "auth" in endpoint:  # ... and read from a mounted file
            assert set(endpoint["auth"]["secret"]) == {"file"}


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


# --- RBAC ------------------------------------------------------------------------------------------------


def test_no_routes_means_no_rbac_and_no_token(chart: helm.Chart) -> None:
    objects = render(chart)
    assert not {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"} & set(kinds(objects))
    assert one(objects, "ServiceAccount")["automountServiceAccountToken"] is False
    assert pod_spec(objects)["automountServiceAccountToken"] is False


def test_rbac_follows_the_routes_and_their_namespaces(chart: helm.Chart) -> None:
    restart = [
        {
            "apiGroups": ["apps"],
            "resources": ["daemonsets", "deployments", "statefulsets"],
            "verbs": ["get", "patch"],
        }
    ]
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
        "GlueBacklogAge",
        "GlueKafkaConsumerLag",
        "GlueHandlerErrorRate",
    }
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
