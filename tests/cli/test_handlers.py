"""``glue handlers [NAME]``: every handler with its params and what it needs; an unknown handler in a
route is refused with the name of every handler, loaded or not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from glue import cli

ROOT = Path(__file__).resolve().parents[2]


def test_handlers_lists_every_built_in_handler(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["handlers"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    names = [row["name"] for row in rows]
    assert names == sorted(names)
    assert {"log", "http", "kubernetes.restart", "openbao.kv.rotate", "argo.submit"} <= set(names)
    restart = next(row for row in rows if row["name"] == "kubernetes.restart")
    assert restart["clients"] == "kubernetes" and restart["description"].startswith("Rollout-restart")


def test_a_handler_with_a_cancel_step_says_so_and_what_only_it_needs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["handlers", "argo.submit"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["cancelStep"].startswith("Stop the Workflow this invocation submitted")
    assert {
        "verbs": ["get", "patch"],
        "resources": ["argoproj.io/workflows"],
        "only": "routes whose concurrencyGroup cancels",
    } in shown["needs"]["kubernetes"]
    assert cli.main(["handlers", "kubernetes.restart"]) == 0
    assert json.loads(capsys.readouterr().out)["cancelStep"] is None


def test_one_handler_shows_params_and_kubernetes_needs(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["handlers", "kubernetes.restart"]) == 0
    shown = json.loads(capsys.readouterr().out)
    params = {row["name"]: row for row in shown["params"]}
    assert params["namespace"] == {
        "name": "namespace",
        "type": "string",
        "required": True,
        "default": None,
        "description": params["namespace"]["description"],
    }
    assert (params["kind"]["required"], params["kind"]["default"]) == (False, "Deployment")
    assert params["kind"]["type"] == '"Deployment" | "StatefulSet" | "DaemonSet"'
    assert "waitForTarget" in params  # the name a route writes, not the Python attribute
    [rule] = shown["needs"]["kubernetes"]
    assert rule["verbs"] == ["get", "patch"] and "apps/deployments" in rule["resources"]
    assert shown["needs"]["openbao"] == []


def test_openbao_handler_shows_policy_paths(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["handlers", "openbao.transit.rotate"]) == 0
    shown = json.loads(capsys.readouterr().out)
    paths = {item["path"]: item["capabilities"] for item in shown["needs"]["openbao"]}
    assert paths["{mount}/keys/{key}/rotate"] == ["update"]
    assert paths["{mount}/keys/{key}"] == ["read"]
    params = {row["name"]: row for row in shown["params"]}
    assert (params["key"]["required"], params["mount"]["default"]) == (True, "transit")


def test_unknown_name_lists_the_handlers(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["handlers", "kubernetes.restrat"]) == 1
    err = capsys.readouterr().err
    assert "unknown handler 'kubernetes.restrat'" in err and "kubernetes.restart" in err


def test_unknown_handler_in_a_route_names_every_handler(tmp_path: Path) -> None:
    """In a fresh process, where no handler module is loaded yet."""
    config = tmp_path / "glue.yaml"
    config.write_text("routes:\n  - {name: r, handler: kubernetes.restrat}\n")
    result = subprocess.run(
        [sys.executable, "-m", "glue.cli", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown handler 'kubernetes.restrat'" in result.stderr
    for name in ("log", "http", "kubernetes.restart", "openbao.kv.rotate", "argo.submit"):
        assert name in result.stderr
    assert "Traceback" not in result.stderr
