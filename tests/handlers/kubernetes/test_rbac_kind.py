"""``glue rbac`` grants the workload kind a ``kubernetes.restart`` route asks for, in a Role when its
namespace is literal; every kind, in a ClusterRole, only when they come from the event. The chart renders
the same objects (tests/deploy compares them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from glue import cli


def rbac(tmp_path: Path, capsys: pytest.CaptureFixture[str], routes: list[dict[str, Any]]) -> dict[Any, Any]:
    path = tmp_path / "glue.yaml"
    path.write_text(yaml.safe_dump({"routes": routes}))
    assert cli.main(["rbac", "--config", str(path)]) == 0
    objects = list(yaml.safe_load_all(capsys.readouterr().out))
    return {(o["kind"], o["metadata"].get("namespace")): o["rules"] for o in objects}


def restart(name: str, **params: str) -> dict[str, Any]:
    return {"name": name, "handler": "kubernetes.restart", "params": {"name": "x", **params}}


def test_a_deployment_in_a_literal_namespace_gets_a_role_for_deployments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    found = rbac(tmp_path, capsys, [restart("api", namespace="apps", kind="Deployment")])
    assert found == {
        ("Role", "apps"): [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "patch"]}]
    }


def test_each_kind_is_granted_where_it_is_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    found = rbac(
        tmp_path,
        capsys,
        [
            restart("db", namespace="data", kind="StatefulSet"),
            restart("agent", namespace="ops", kind="DaemonSet"),
        ],
    )
    assert found[("Role", "data")][0]["resources"] == ["statefulsets"]
    assert found[("Role", "ops")][0]["resources"] == ["daemonsets"]


def test_a_kind_from_the_event_keeps_every_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    found = rbac(tmp_path, capsys, [restart("any", namespace="{{ data.ns }}", kind="{{ data.kind }}")])
    [rule] = found[("ClusterRole", None)]
    assert rule["resources"] == ["daemonsets", "deployments", "statefulsets"]


def rotate(name: str, restarts: Any) -> dict[str, Any]:
    return {"name": name, "handler": "openbao.kv.rotate", "params": {"path": "a/b", "restart": restarts}}


def test_an_openbao_rotation_is_granted_the_kind_of_each_restart_in_its_namespace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    restarts = [
        {"kind": "StatefulSet", "namespace": "db", "name": "pg"},
        {"namespace": "db", "name": "api"},  # kind: Deployment by default
        {"kind": "DaemonSet", "namespace": "ops", "name": "agent"},
    ]
    found = rbac(tmp_path, capsys, [rotate("rotate", restarts)])
    assert found == {
        ("Role", "db"): [
            {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets"], "verbs": ["get", "patch"]}
        ],
        ("Role", "ops"): [{"apiGroups": ["apps"], "resources": ["daemonsets"], "verbs": ["get", "patch"]}],
    }


def test_an_openbao_restart_from_the_event_is_granted_anywhere_and_no_restart_needs_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    routes = [
        rotate("templated", [{"kind": "StatefulSet", "namespace": "{{ data.ns }}", "name": "pg"}]),
        rotate("quiet", []),
    ]
    found = rbac(tmp_path, capsys, routes)
    assert found == {
        ("ClusterRole", None): [
            {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["get", "patch"]}
        ]
    }
