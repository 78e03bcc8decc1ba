"""What the daemon says as it starts: each client with its target, each route live or dry-run; and
``execution.dryRun`` / ``glue run --dry-run`` make every route plan only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from glue import app
from tests import support

ROOT = Path(__file__).resolve().parents[1]

KUBECONFIG = """
apiVersion: v1
kind: Config
current-context: prod
clusters:
  - name: prod-cluster
    cluster: {server: "https://prod.example:6443"}
  - name: dev-cluster
    cluster: {server: "https://dev.example:6443"}
contexts:
  - name: prod
    context: {cluster: prod-cluster, user: admin}
  - name: dev
    context: {cluster: dev-cluster, user: admin}
users:
  - name: admin
    user: {token: do-not-log-me}
"""


@pytest.fixture
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A laptop with a kubeconfig whose current context is production."""
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    path = home / ".kube" / "config"
    path.write_text(KUBECONFIG)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return path


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[bytes]]]:
    """An HTTP server that keeps what is POSTed to it."""
    received: list[bytes] = []

    async def take(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(status=204)

    application = web.Application()
    application.router.add_post("/hook", take)
    runner = web.AppRunner(application)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/hook", received
    finally:
        await runner.cleanup()


ROUTES = [
    {"name": "restart-api", "handler": "kubernetes.restart", "params": {"namespace": "a", "name": "api"}},
]


def lines(logs: Sequence[Mapping[str, Any]], event: str) -> dict[str, Mapping[str, Any]]:
    return {str(e.get("client") or e.get("route")): e for e in logs if e["event"] == event}


async def test_start_names_the_cluster_and_each_route_mode(tmp_path: Path, kubeconfig: Path) -> None:
    config = support.daemon_settings(tmp_path, routes=ROUTES, clients={"kubernetes": {"context": "dev"}})
    app.load_plugins(config)
    with capture_logs() as logs:
        async with support.running(config):
            pass
    clients = lines(logs, "client")
    assert clients["kubernetes"]["target"] == f"https://dev.example:6443 (context dev, {kubeconfig})"
    assert lines(logs, "route")["restart-api"]["mode"] == "live"
    assert "do-not-log-me" not in json.dumps(logs, default=str)


async def test_current_context_is_named_when_none_is_configured(tmp_path: Path, kubeconfig: Path) -> None:
    config = support.daemon_settings(tmp_path, routes=ROUTES)
    app.load_plugins(config)
    with capture_logs() as logs:
        async with support.running(config):
            pass
    assert (
        lines(logs, "client")["kubernetes"]["target"]
        == f"https://prod.example:6443 (context prod, {kubeconfig})"
    )


async def test_openbao_line_names_address_and_auth_method(tmp_path: Path) -> None:
    config = support.daemon_settings(
        tmp_path,
        clients={
            "openbao": {
                "address": "https://bao.example:8200",
                "auth": {"method": "token", "tokenEnv": "BAO_TOKEN"},
            }
        },
    )
    app.load_plugins(config)
    with capture_logs() as logs:
        async with support.running(config):
            pass
    assert lines(logs, "client")["openbao"]["target"] == "https://bao.example:8200/ (auth token)"


@pytest.mark.parametrize("dry_run", [False, True], ids=["live", "execution.dryRun"])
async def test_execution_dry_run_makes_every_route_plan_only(
    tmp_path: Path, receiver: tuple[str, list[bytes]], dry_run: bool
) -> None:
    url, received = receiver
    config = support.daemon_settings(
        tmp_path,
        execution={"pollSeconds": 0.05, "dryRun": dry_run},
        endpoints=[{"name": "events", "path": "/events", "format": "cloudevents"}],
        routes=[{"name": "forward", "handler": "http", "params": {"url": url}}],
    )
    app.load_plugins(config)
    event = {"specversion": "1.0", "id": "1", "source": "/t", "type": "t"}
    with capture_logs() as logs:
        async with support.running(config) as daemon, aiohttp.ClientSession() as session:
            headers = {"Content-Type": "application/cloudevents+json"}
            async with session.post(
                support.base_url(daemon) + "/events", json=event, headers=headers
            ) as answer:
                assert answer.status == 202
            dispatched = await support.eventually(
                lambda: next((e for e in logs if e["event"] == "dispatched"), None)
            )
    route = lines(logs, "route")["forward"]
    if dry_run:
        assert (route["mode"], route["reason"]) == ("dry-run", "execution.dryRun (glue run --dry-run)")
        assert dispatched["outcome"] == "planned" and received == []
    else:
        assert route["mode"] == "live"
        assert dispatched["outcome"] == "done" and len(received) == 1


def test_glue_run_dry_run_flag(tmp_path: Path, kubeconfig: Path) -> None:
    config = tmp_path / "glue.yaml"
    config.write_text(
        "server: {host: 127.0.0.1, port: 0}\n"
        f"journal: {{path: {tmp_path / 'j.db'}}}\n"
        "logging: {format: json}\n"
        "routes:\n"
        "  - {name: restart-api, handler: kubernetes.restart, params: {namespace: a, name: api}}\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "glue.cli", "run", "--dry-run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.stderr is not None
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    try:
        for text in process.stderr:
            found.append(json.loads(text))
            if found[-1]["event"] == "started" or time.monotonic() > deadline:
                break
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)
    route = lines(found, "route")["restart-api"]
    assert (route["mode"], route["reason"]) == ("dry-run", "execution.dryRun (glue run --dry-run)")
    assert lines(found, "client")["kubernetes"]["target"].startswith(
        "https://prod.example:6443 (context prod"
    )
