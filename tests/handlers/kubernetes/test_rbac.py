"""glue rbac: the least Role/ClusterRole for the handlers a configuration's routes use.

The printed objects are checked against the Kubernetes 1.37 schemas (kubernetes-validate) and read back
the way kubectl would apply them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from glue import cli

CONFIG = """
routes:
  - name: dns
    match: type == "platform.endpoint.announced"
    handler: externaldns.endpoint
    params:
      namespace: "{{ data.namespace }}"
      name: "{{ data.name }}"
      endpoints: "{{ data.endpoints }}"
  - name: cert
    handler: certmanager.renew
    params: {namespace: web, name: shop-tls}
  - name: model
    handler: kubeai.reload
    params: {namespace: ai, name: llama, url: "s3://models/{{ data.key }}"}
  - name: restart
    handler: kubernetes.restart
    params: {namespace: ai, name: web}
  - name: wf
    handler: argo.submit
    params: {namespace: ci, template: build}
  - name: legacy-restart
    enabled: false
    handler: kubernetes.restart
    params: {namespace: legacy, name: old}
"""


def rbac(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: str, *extra: str
) -> tuple[int, str, str]:
    path = tmp_path / "glue.yaml"
    path.write_text(config)
    code = cli.main(["rbac", "--config", str(path), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def by_kind(objects: list[dict[str, Any]]) -> dict[tuple[str, str | None], dict[str, Any]]:
    return {(o["kind"], o["metadata"].get("namespace")): o for o in objects}


def test_roles_per_literal_namespace_and_a_cluster_role_for_templated_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = rbac(tmp_path, capsys, CONFIG)

    assert code == 0
    objects = list(yaml.safe_load_all(out))
    for obj in objects:
        kubernetes_validate.validate(obj, "1.37.0", strict=True)
    found = by_kind(objects)
    assert set(found) == {("ClusterRole", None), ("Role", "web"), ("Role", "ai"), ("Role", "ci")}
    assert found["ClusterRole", None]["rules"] == [
        # argo.submit reads the (Cluster)WorkflowTemplate before creating (the Argo Server's checks)
        {"apiGroups": ["argoproj.io"], "resources": ["clusterworkflowtemplates"], "verbs": ["get"]},
        {
            "apiGroups": ["externaldns.k8s.io"],
            "resources": ["dnsendpoints"],
            "verbs": ["get", "create", "patch", "delete"],
        },
    ]
    assert found["Role", "ci"]["rules"] == [
        {"apiGroups": ["argoproj.io"], "resources": ["workflowtemplates"], "verbs": ["get"]},
        {"apiGroups": ["argoproj.io"], "resources": ["workflows"], "verbs": ["get", "create"]},
    ]
    assert found["Role", "web"]["rules"] == [
        {"apiGroups": ["cert-manager.io"], "resources": ["certificates"], "verbs": ["get", "patch"]},
        {"apiGroups": ["cert-manager.io"], "resources": ["certificates/status"], "verbs": ["update"]},
    ]
    assert found["Role", "ai"]["rules"] == [  # the restart names no kind: a Deployment, deployments only
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "patch"]},
        {"apiGroups": ["kubeai.org"], "resources": ["models"], "verbs": ["get", "patch"]},
    ]
    assert found["Role", "ai"]["metadata"]["annotations"]["runtime-glue.io/routes"] == "model,restart"
    assert ("Role", "legacy") not in found  # a disabled route needs nothing


def test_merging_verbs_and_what_the_cluster_role_already_grants(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = """
routes:
  - {name: a, handler: certmanager.certificate, params: {namespace: "{{ data.ns }}", name: x}}
  - {name: b, handler: certmanager.renew, params: {namespace: web, name: x}}
"""
    code, out, _ = rbac(tmp_path, capsys, config, "--name", "glue-x")
    found = by_kind(list(yaml.safe_load_all(out)))
    assert code == 0
    assert found["ClusterRole", None]["metadata"]["name"] == "glue-x"
    assert found["ClusterRole", None]["rules"] == [
        {
            "apiGroups": ["cert-manager.io"],
            "resources": ["certificates"],
            "verbs": ["get", "create", "patch", "delete"],
        }
    ]
    # the renew route in "web" needs certificates get/patch (granted cluster-wide) and the status update
    assert found["Role", "web"]["rules"] == [
        {"apiGroups": ["cert-manager.io"], "resources": ["certificates/status"], "verbs": ["update"]}
    ]


def test_bindings_for_a_service_account(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = rbac(tmp_path, capsys, CONFIG, "--service-account", "platform/runtime-glue")
    objects = list(yaml.safe_load_all(out))
    bindings = [o for o in objects if o["kind"].endswith("Binding")]
    assert code == 0 and len(bindings) == 4
    for binding in bindings:
        kubernetes_validate.validate(binding, "1.37.0", strict=True)
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "namespace": "platform", "name": "runtime-glue"}
        ]
        assert binding["roleRef"]["kind"] == binding["kind"].removesuffix("Binding")


def test_no_kubernetes_routes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = rbac(tmp_path, capsys, "routes: []\n")
    assert code == 0 and out.startswith("# the configured routes need no Kubernetes permissions")


def test_bad_input_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = rbac(tmp_path, capsys, "routes: [{name: x, handler: kubeai.nope, params: {}}]\n")
    assert code == 2 and out == ""
    assert "routes[0] (x).handler" in err and "unknown handler 'kubeai.nope'" in err
    assert "Traceback" not in err

    code, _, err = rbac(tmp_path, capsys, CONFIG, "--service-account", "no-slash")
    assert code == 2 and "NAMESPACE/NAME" in err


CANCELLING = """
routes:
  - name: release
    handler: argo.submit
    params: {namespace: ci, template: build-release}
    concurrencyGroup: {key: "{{ data.ref }}", onConflict: cancel}
  - name: nightly
    handler: argo.submit
    params: {namespace: nightly, template: build-nightly}
    concurrencyGroup: {key: "{{ data.ref }}", onConflict: supersede}
"""


def test_only_a_route_that_cancels_may_patch_workflows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = rbac(tmp_path, capsys, CANCELLING)

    assert code == 0
    found = by_kind(list(yaml.safe_load_all(out)))
    verbs = {
        namespace: sorted(
            verb
            for rule in found["Role", namespace]["rules"]
            if "workflows" in rule["resources"]
            for verb in rule["verbs"]
        )
        for namespace in ("ci", "nightly")
    }
    assert verbs == {"ci": ["create", "get", "patch"], "nightly": ["create", "get"]}  # argo stop: patch
