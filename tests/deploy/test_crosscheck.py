"""The chart against the daemon it installs: the rendered config passes ``glue check``, the rendered RBAC is
what ``glue rbac`` prints for the same handlers, and the dashboard and alerts query only metric names a
running ``glue run`` exports on /metrics.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import trustme
import yaml

from tests.deploy import handler_rules
from tests.deploy.conftest import (
    CHART,
    FULLNAME,
    PROFILES,
    Objects,
    Result,
    glue_config,
    one,
    render,
    write_secret_files,
)
from tests.deploy.test_chart import validate
from tests.sources.kafka import support as kafka_support

Glue = Callable[..., Result]
RBAC_KINDS = ("Role", "ClusterRole")


def grants(objects: Objects) -> list[tuple[str, str | None, str, list[dict[str, Any]]]]:
    """Each Role/ClusterRole as (kind, namespace, routes it serves, rules); names and labels left out."""
    return sorted(
        (
            obj["kind"],
            obj["metadata"].get("namespace"),
            obj["metadata"].get("annotations", {}).get("runtime-glue.io/routes", ""),
            obj["rules"],
        )
        for obj in objects
        if obj["kind"] in RBAC_KINDS
    )


def rendered(chart: helm.Chart, profile: str, secrets: Path) -> tuple[Objects, Path]:
    """Render a profile with its secret files under ``secrets``; write the glue config next to them."""
    objects = render(chart, PROFILES[profile](str(secrets)))
    write_secret_files(secrets, objects)
    config = secrets / "config.yaml"
    settings = glue_config(objects)
    if "tls" in settings["server"]:
        settings["server"]["tls"] = listener_tls_files(secrets / "glue-tls", settings["server"]["tls"])
    config.write_text(yaml.safe_dump(settings))
    return objects, config


def listener_tls_files(directory: Path, tls: dict[str, Any]) -> dict[str, Any]:
    """The listener's certificate, key and client CA as cert-manager and the kubelet would put them in
    the pod (trustme makes them), at the file names the chart's config gives, under ``directory``."""
    directory.mkdir()
    ca = trustme.CA()
    leaf = ca.issue_cert(f"{FULLNAME}.platform.svc")
    contents = {
        "certFile": b"".join(pem.bytes() for pem in leaf.cert_chain_pems),
        "keyFile": leaf.private_key_pem.bytes(),
        "clientCaFile": trustme.CA().cert_pem.bytes(),
    }
    moved = dict(tls)
    for key, data in contents.items():
        if key in tls:
            path = directory / Path(tls[key]).name
            path.write_bytes(data)
            moved[key] = str(path)
    return moved


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_rendered_config_passes_glue_check(
    chart: helm.Chart, glue: Glue, profile: str, tmp_path: Path
) -> None:
    _, config = rendered(chart, profile, tmp_path)
    result = glue("check", "--offline", "--config", str(config))
    assert result.code == 0, result.err
    assert f"{config}: ok" in result.out


def test_glue_check_rejects_a_rendered_config_with_a_missing_secret(
    chart: helm.Chart, glue: Glue, tmp_path: Path
) -> None:
    _, config = rendered(chart, "sqlite", tmp_path)
    (tmp_path / "gitlab-token").unlink()
    result = glue("check", "--config", str(config))
    assert result.code == 2
    assert "endpoints[1].auth.secret" in result.err and "cannot read secret file" in result.err


def glue_rbac(glue: Glue, config: Path) -> Objects:
    result = glue("rbac", "--config", str(config))
    assert result.code == 0, result.err
    return [doc for doc in yaml.safe_load_all(result.out) if doc]


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_rendered_rbac_equals_glue_rbac(chart: helm.Chart, glue: Glue, profile: str, tmp_path: Path) -> None:
    objects, config = rendered(chart, profile, tmp_path)
    printed = glue_rbac(glue, config)
    assert grants(objects) == grants(printed)
    if profile != "default":
        assert grants(objects), "the profile should need some permissions"


# --- metrics ---------------------------------------------------------------------------------------------

METRIC = re.compile(r"\bglue_[a-z0-9_]+")
_SUFFIXES = ("_bucket", "_count", "_sum", "_created")


def exported_names(exposition: str) -> set[str]:
    """Every series name /metrics offers, including families that have no sample yet."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith(("# HELP ", "# TYPE ")):
            family = line.split()[2]
            names.add(family)
            names.update(family + suffix for suffix in _SUFFIXES)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def queried_names(objects: Objects) -> dict[str, set[str]]:
    """The glue_* names each dashboard panel and alert rule queries."""
    queried: dict[str, set[str]] = {}
    dashboard = json.loads(one(objects, "ConfigMap", f"{FULLNAME}-dashboard")["data"]["runtime-glue.json"])
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queried.setdefault(f"panel {panel['title']!r}", set()).update(METRIC.findall(target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if isinstance(variable.get("query"), dict):
            queried.setdefault(f"variable {variable['name']}", set()).update(
                METRIC.findall(variable["query"]["query"])
            )
    rule = one(objects, "PrometheusRule")
    for group in rule["spec"]["groups"]:
        for alert in group["rules"]:
            queried[f"alert {alert['alert']}"] = set(METRIC.findall(alert["expr"]))
    return queried


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def scrape(port: int, deadline: float, process: subprocess.Popen[str]) -> str:
    url = f"http://127.0.0.1:{port}"
    while True:
        assert process.poll() is None, f"glue run exited: {process.communicate()[1]}"
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                pass
            with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
                text: str = response.read().decode()
                return text
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture
def running_daemon_metrics(chart: helm.Chart, tmp_path: Path) -> Iterator[set[str]]:
    """Start ``glue run`` on the chart's config with every source on, and read the names on /metrics.

    The Kafka source consumes from a real Tansu broker; the MinIO listen source points at a closed
    loopback port (it keeps reconnecting, which is all its metrics need). Journal: SQLite in tmp_path.
    """
    broker = kafka_support.start_broker(tmp_path)
    try:
        values = PROFILES["sqlite"](str(tmp_path))
        values["config"]["sources"] = {
            "kafka": {
                "bootstrapServers": [broker.bootstrap],
                "topics": [{"name": "glue-events", "format": "cloudevents"}],
            },
            "minio": {
                "endpoint": f"127.0.0.1:{free_port()}",
                "secure": False,
                "buckets": [{"name": "models"}],
            },
        }
        objects = render(chart, values)
        write_secret_files(tmp_path, objects)
        config = glue_config(objects)
        port = free_port()
        config["server"] = {**config["server"], "host": "127.0.0.1", "port": port}
        config["journal"] = {**config["journal"], "path": str(tmp_path / "glue.db")}
        config_path = tmp_path / "config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        process = subprocess.Popen(
            [sys.executable, "-m", "glue.cli", "run", "--config", str(config_path)],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            exposition = scrape(port, time.monotonic() + 30, process)
        finally:
            process.terminate()
            try:
                process.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
        yield exported_names(exposition)
    finally:
        kafka_support.stop_broker(broker)


def test_dashboard_and_alerts_query_only_exported_metrics(
    chart: helm.Chart, running_daemon_metrics: set[str]
) -> None:
    objects = render(chart, PROFILES["sqlite"]())
    queried = queried_names(objects)
    assert any(queried.values())
    unknown = {where: sorted(names - running_daemon_metrics) for where, names in queried.items()}
    assert {where: names for where, names in unknown.items() if names} == {}
    assert "glue_deliveries_total" in running_daemon_metrics  # the scrape really reached the daemon


def test_chart_knows_the_rules_of_every_handler_and_no_other(chart: helm.Chart) -> None:
    """rbac.handlerRules holds what each handler declares (python -m tests.deploy.handler_rules)."""
    assert chart.values["rbac"]["handlerRules"] == handler_rules.handler_rules()


def test_the_shipped_example_values_render_and_pass_glue_check(
    chart: helm.Chart, glue: Glue, tmp_path: Path
) -> None:
    """charts/runtime-glue/values-example.yaml: valid for the schema and the Kubernetes schemas, and its
    config passes `glue check` with the secret files the chart mounts."""
    values = yaml.safe_load((CHART / "values-example.yaml").read_text())
    chart.validate_schema(values)
    objects = render(chart, values)
    for obj in objects:
        validate(obj)
    write_secret_files(tmp_path, objects)
    text = yaml.safe_dump(glue_config(objects)).replace(chart.values["secretsMountPath"], str(tmp_path))
    config = tmp_path / "config.yaml"
    config.write_text(text)
    result = glue("check", "--offline", "--config", str(config))
    assert result.code == 0, result.err
    assert f"{config}: ok (3 endpoints, 3 routes)" in result.out
    assert {obj["kind"] for obj in objects} >= {"Deployment", "ConfigMap", "Role"}


def test_openbao_restarts_render_the_rbac_glue_rbac_prints(
    chart: helm.Chart, glue: Glue, tmp_path: Path
) -> None:
    """An OpenBao rotation's restarts: the kind of each, in its literal namespace (a Role), anywhere
    when the namespace comes from the event; a rotation that restarts nothing needs no RBAC."""
    values = PROFILES["sqlite"](str(tmp_path))
    values["config"]["routes"] = [
        {
            "name": "rotate-db",
            "handler": "openbao.kv.rotate",
            "params": {
                "path": "db/creds",
                "restart": [
                    {"kind": "StatefulSet", "namespace": "db", "name": "pg"},
                    {"namespace": "db", "name": "api"},
                    {"kind": "DaemonSet", "namespace": "{{ data.ns }}", "name": "agent"},
                ],
            },
        },
        {"name": "rotate-quiet", "handler": "openbao.transit.rotate", "params": {"key": "k"}},
    ]
    objects = render(chart, values)
    write_secret_files(tmp_path, objects)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(glue_config(objects)))
    assert grants(objects) == grants(glue_rbac(glue, config))
    apps = [
        (kind, namespace, rule["resources"])
        for kind, namespace, _, rules in grants(objects)
        for rule in rules
    ]
    assert apps == [("ClusterRole", None, ["daemonsets"]), ("Role", "db", ["deployments", "statefulsets"])]


def notes(chart: helm.Chart, values: dict[str, Any]) -> str:
    manifests = chart.render(values, name="glue", namespace="platform", is_install=True)
    return next(text for path, text in manifests.items() if path.endswith("/NOTES.txt"))


def test_the_notes_print_the_openbao_policy_glue_policy_openbao_prints(
    chart: helm.Chart, glue: Glue, tmp_path: Path
) -> None:
    values = PROFILES["sqlite"](str(tmp_path))
    values["config"]["clients"] = {"openbao": {"ledger": {"mount": "kv", "prefix": "glue/ledger"}}}
    values["config"]["routes"] = [
        {"name": "rotate-db", "handler": "openbao.kv.rotate", "params": {"path": "apps/db"}},
        {
            "name": "rotate-any",
            "handler": "openbao.kv.rotate",
            "params": {"mount": "kv", "path": "{{ data.path }}"},
        },
        {
            "name": "rotate-role",
            "handler": "openbao.database.rotate-role",
            "params": {"role": "{{ data.role }}"},
        },
        {"name": "rotate-key", "handler": "openbao.transit.rotate", "params": {"key": "models"}},
        {
            "name": "off",
            "handler": "openbao.database.rotate-root",
            "params": {"connection": "pg"},
            "enabled": False,
        },
        {"name": "note", "handler": "log", "params": {"message": "x"}},
    ]
    objects = render(chart, values)
    write_secret_files(tmp_path, objects)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(glue_config(objects)))
    printed = glue("policy", "openbao", "--config", str(config))
    assert printed.code == 0, printed.err
    assert 'path "secret/data/apps/db" {' in printed.out and 'path "kv/data/*" {' in printed.out
    assert 'path "database/static-roles/*" {' in printed.out and "rotate-root" not in printed.out
    text = notes(chart, values)
    assert printed.out.strip() in text, text
    assert "OpenBao" not in notes(chart, PROFILES["sqlite"](str(tmp_path))), "no OpenBao route: no policy"


def test_the_chart_knows_the_openbao_paths_of_every_handler(chart: helm.Chart) -> None:
    """rbac.openbaoPaths holds what each OpenBao handler declares (python -m tests.deploy.handler_rules
    --openbao)."""
    assert chart.values["rbac"]["openbaoPaths"] == handler_rules.openbao_paths()
