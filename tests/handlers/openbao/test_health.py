"""Client health as an operator sees it: the daemon checks its clients at start and every
``execution.clientCheckSeconds``, and ``/readyz`` (its ``clients``), ``glue_client_up{client}``, the log and
``Health.down(handler)`` say which client cannot work and why.

The clients talk to the doubles over real HTTP: the Kubernetes API double (tests/handlers/kubernetes/
apiserver.py, kmock based; its authorization reviews follow kubernetes/api authorization/v1 types.go and
pkg/registry/authorization/selfsubjectrulesreview/rest.go) and the OpenBao double (double.py; a refused
Kubernetes login is 403 ``permission denied``, api/auth/kubernetes.mdx).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from glue import app, cli, settings
from tests import support
from tests.handlers.kubernetes.apiserver import ApiServer
from tests.handlers.openbao.conftest import JWT
from tests.handlers.openbao.double import OpenBaoDouble

RESTART = {
    "name": "restart-api",
    "handler": "kubernetes.restart",
    "params": {"namespace": "apps", "name": "api"},
}
ROTATE = {"name": "rotate-db", "handler": "openbao.kv.rotate", "params": {"path": "apps/db"}}


def config(tmp_path: Path, routes: list[dict[str, Any]], **clients: Any) -> settings.Settings:
    loaded = support.daemon_settings(
        tmp_path,
        execution={"pollSeconds": 0.05, "clientCheckSeconds": 0.1},
        routes=routes,
        clients=clients,
    )
    app.load_plugins(loaded)
    return loaded


async def readyz(daemon: app.Daemon) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(support.base_url(daemon) + "/readyz") as answer,
    ):
        return answer.status, await answer.json()


async def test_kubernetes_permissions_the_routes_need_and_lack(
    tmp_path: Path, apiserver: ApiServer, kubeconfig: Path
) -> None:
    apiserver.granted = {"apps": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}]}
    loaded = config(tmp_path, [RESTART], kubernetes={"kubeconfig": str(kubeconfig)})
    with capture_logs() as logs:
        async with support.running(loaded) as daemon:
            status, body = await readyz(daemon)
            assert status == 200, "a client that is down does not stop intake"
            kubernetes = body["clients"]["kubernetes"]
            assert kubernetes["up"] is False
            assert kubernetes["reason"] == "not granted: patch deployments.apps in apps"
            assert kubernetes["target"].startswith(str(apiserver.url).rstrip("/"))
            assert support.metric("glue_client_up", client="kubernetes") == 0
            assert daemon.pipeline is not None
            assert daemon.pipeline.health.down("kubernetes.restart") == "kubernetes"
            assert daemon.pipeline.health.down("log") is None
            assert {"kind": "selfsubjectrulesreviews", "spec": {"namespace": "apps"}} in apiserver.reviews

            apiserver.granted["apps"][0]["verbs"].append("patch")  # the Role is fixed
            await support.eventually(lambda: support.metric("glue_client_up", client="kubernetes") == 1)
            _, body = await readyz(daemon)
            assert (
                body["clients"]["kubernetes"]["up"] is True
                and body["clients"]["kubernetes"]["reason"] is None
            )
            assert daemon.pipeline.health.down("kubernetes.restart") is None
    down = [e for e in logs if e["event"] == "client down"]
    assert down and down[0]["client"] == "kubernetes" and "patch deployments.apps" in down[0]["reason"]
    assert any(e["event"] == "client up" and e["client"] == "kubernetes" for e in logs)


async def test_kubernetes_refusing_the_credentials_and_a_cluster_wide_need(
    tmp_path: Path, apiserver: ApiServer, kubeconfig: Path
) -> None:
    anywhere = {**RESTART, "params": {"namespace": "{{ data.ns }}", "name": "api"}}  # a ClusterRole
    apiserver.refuse_credentials = True
    loaded = config(tmp_path, [anywhere], kubernetes={"kubeconfig": str(kubeconfig)})
    async with support.running(loaded) as daemon:
        _, body = await readyz(daemon)
        assert body["clients"]["kubernetes"]["up"] is False
        assert body["clients"]["kubernetes"]["reason"].startswith("the API server answered 401 Unauthorized")
        assert "not-a-real-token" not in str(body), "the credential is never shown"

        apiserver.refuse_credentials = False
        apiserver.granted = {"apps": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["*"]}]}

        async def reason_now() -> str | None:
            reason: str | None = (await readyz(daemon))[1]["clients"]["kubernetes"]["reason"]
            return reason if reason and not reason.startswith("the API server answered 401") else None

        reason = await support.eventually(reason_now)
        assert reason == (
            "not granted: get deployments.apps in every namespace, patch deployments.apps in every namespace"
        ), "a Role in one namespace does not grant what every namespace needs"


async def test_an_openbao_login_refused_is_shown_and_then_recovered(
    tmp_path: Path, bao: OpenBaoDouble, bao_config: dict[str, Any]
) -> None:
    bao.kubernetes_roles["kubernetes"]["runtime-glue"] = set()  # the role no longer accepts our token
    loaded = config(tmp_path, [ROTATE], openbao=bao_config)
    async with support.running(loaded) as daemon:
        status, body = await readyz(daemon)
        assert status == 200
        openbao = body["clients"]["openbao"]
        assert openbao["up"] is False and "refused" in openbao["reason"] and "403" in openbao["reason"]
        assert JWT not in str(body)
        assert support.metric("glue_client_up", client="openbao") == 0
        assert daemon.pipeline is not None
        assert daemon.pipeline.health.down("openbao.kv.rotate") == "openbao"

        bao.kubernetes_roles["kubernetes"]["runtime-glue"] = {JWT}
        await support.eventually(lambda: support.metric("glue_client_up", client="openbao") == 1)
        assert daemon.pipeline.health.down("openbao.kv.rotate") is None
        assert bao.count("GET", "auth/token/lookup-self") >= 1


async def test_a_rotation_waits_held_while_openbao_is_down_and_runs_once_it_is_up(
    tmp_path: Path, bao: OpenBaoDouble, bao_config: dict[str, Any]
) -> None:
    """The health check's verdict reaches the dispatcher: the invocation waits ``held``,
    ``client-down``, uses no attempt and is not dead-lettered, then runs once the login works."""
    bao.kubernetes_roles["kubernetes"]["runtime-glue"] = set()
    loaded = support.daemon_settings(
        tmp_path,
        execution={"pollSeconds": 0.05, "clientCheckSeconds": 0.1},
        endpoints=[{"name": "events", "path": "/events", "format": "cloudevents"}],
        routes=[{**ROTATE, "params": {"path": "apps/db", "create": True}}],
        clients={"openbao": bao_config},
    )
    app.load_plugins(loaded)
    async with support.running(loaded) as daemon, aiohttp.ClientSession() as session:
        event = {"specversion": "1.0", "id": "r1", "source": "/t", "type": "t", "data": {"x": 1}}
        headers = {"Content-Type": "application/cloudevents+json"}
        async with session.post(support.base_url(daemon) + "/events", json=event, headers=headers) as answer:
            assert answer.status == 202

        async def held() -> bool:
            found = await daemon.journal.invocations(state="held")
            return [(i.wait_reason, i.attempt) for i in found] == [("client-down", 0)]

        await support.eventually(held)
        assert await daemon.journal.invocations(state="dead") == []
        assert written(bao) == 0

        bao.kubernetes_roles["kubernetes"]["runtime-glue"] = {JWT}

        async def done() -> bool:
            return [i.attempt for i in await daemon.journal.invocations(state="done")] == [1]

        await support.eventually(done)
        assert await daemon.journal.invocations(state="held") == []
        assert written(bao) == 1  # the secret rotated once


def written(bao: OpenBaoDouble) -> int:
    return bao.count("POST", r".*/data/apps/db") + bao.count("PUT", r".*/data/apps/db")


def write(tmp_path: Path, document: dict[str, Any]) -> str:
    import yaml

    path = tmp_path / "glue.yaml"
    path.write_text(yaml.safe_dump(document))
    return str(path)


async def test_glue_check_runs_the_same_checks_once_unless_offline(
    tmp_path: Path, bao: OpenBaoDouble, bao_config: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    bao.kubernetes_roles["kubernetes"]["runtime-glue"] = set()
    with socket_listening() as open_port:
        path = write(
            tmp_path,
            {
                "routes": [ROTATE],
                "clients": {"openbao": bao_config},
                "sources": {
                    "kafka": {
                        "bootstrapServers": [f"127.0.0.1:{open_port}"],
                        "topics": [{"name": "t", "format": "cloudevents"}],
                    },
                    "minio": {"endpoint": f"127.0.0.1:{closed_port()}", "secure": False},
                },
            },
        )
        code = await asyncio.to_thread(cli.main, ["check", "--config", path])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert "client kafka (127.0.0.1:" in captured.out and ": up" in captured.out
    lines = captured.err.splitlines()
    assert any(
        line.startswith("client openbao (") and "down: " in line and "refused" in line for line in lines
    )
    assert any(line.startswith("client minio (http://127.0.0.1:") and "unreachable" in line for line in lines)
    assert JWT not in captured.out + captured.err

    assert await asyncio.to_thread(cli.main, ["check", "--offline", "--config", path]) == 0
    assert "ok" in capsys.readouterr().out


def closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class socket_listening:
    """A loopback TCP port that takes connections, for the block."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        port: int = self.sock.getsockname()[1]
        return port

    def __exit__(self, *_: object) -> None:
        self.sock.close()
