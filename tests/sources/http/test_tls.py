"""HTTPS on the webhook listener, over real TLS sockets, with certificates made by ``trustme``.

The files are laid out as a cert-manager Secret mount (``tls.crt``, ``tls.key``, ``ca.crt``) and
replaced the way the kubelet updates one: new files renamed into place (a new inode).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from cryptography import x509
from structlog.testing import capture_logs

from glue import cli, settings
from tests import support
from tests.sources.http.conftest import Running, StartDaemon

BODY = b'{"name": "model-a"}'
RELOAD = 0.2


def cloudevent(event_id: str) -> str:
    return (
        f"ce-specversion: 1.0\r\nce-id: {event_id}\r\nce-source: /tls\r\nce-type: com.example.tls\r\n"
        "content-type: application/json\r\n"
    )


def replace(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` as a new file renamed over the old one (as a Secret mount changes)."""
    fresh = path.with_name(path.name + ".new")
    fresh.write_bytes(data)
    os.replace(fresh, path)


def install(directory: Path, cert: trustme.LeafCert) -> None:
    replace(directory / "tls.key", cert.private_key_pem.bytes())
    replace(directory / "tls.crt", b"".join(pem.bytes() for pem in cert.cert_chain_pems))


@pytest.fixture
def mount(tmp_path: Path) -> Path:
    directory = tmp_path / "tls"
    directory.mkdir()
    return directory


def tls_server(mount: Path, clients: trustme.CA | None = None) -> dict[str, Any]:
    tls: dict[str, Any] = {
        "certFile": str(mount / "tls.crt"),
        "keyFile": str(mount / "tls.key"),
        "reloadSeconds": RELOAD,
    }
    if clients is not None:
        clients.cert_pem.write_to_path(str(mount / "ca.crt"))
        tls["clientCaFile"] = str(mount / "ca.crt")
    return {"host": "127.0.0.1", "port": 0, "tls": tls}


def port_of(glue: Running) -> int:
    assert glue.daemon.pipeline is not None and glue.daemon.pipeline.http.port is not None
    return glue.daemon.pipeline.http.port


def client_context(ca: trustme.CA, cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if cert is not None:
        cert.configure_cert(context)
    return context


class Connection:
    """One TLS connection, kept open across requests (keep-alive)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, context: ssl.SSLContext) -> Connection:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="localhost"
        )
        return cls(reader, writer)

    def server_serial(self) -> int:
        der = self.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number

    async def post(self, path: str, event_id: str) -> tuple[int, bytes]:
        head = f"POST {path} HTTP/1.1\r\nHost: localhost\r\n{cloudevent(event_id)}"
        self.writer.write(f"{head}content-length: {len(BODY)}\r\n\r\n".encode() + BODY)
        status_line = await self.reader.readline()
        if not status_line:  # TLS 1.3: a refused client certificate ends the connection after the handshake
            raise ConnectionError("closed without an answer")
        status = int(status_line.split()[1])
        length = 0
        while (line := await self.reader.readline()) != b"\r\n":
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await self.writer.wait_closed()


def serial(cert: trustme.LeafCert) -> int:
    return x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes()).serial_number


ENDPOINT = {"name": "ce", "path": "/events", "format": "cloudevents"}


async def test_the_certificate_is_reloaded_without_a_restart(start_daemon: StartDaemon, mount: Path) -> None:
    ca = trustme.CA()
    first, second = ca.issue_cert("localhost"), ca.issue_cert("localhost")
    install(mount, first)
    glue = await start_daemon({"endpoints": [ENDPOINT], "server": tls_server(mount)})
    port, trust = port_of(glue), client_context(ca)
    before = await Connection.open(port, trust)
    assert before.server_serial() == serial(first)
    assert (await before.post("/events", "a"))[0] == 202
    with capture_logs() as logs:
        install(mount, second)

        async def new_handshake_sees_the_new_certificate() -> bool:
            connection = await Connection.open(port, trust)
            try:
                return connection.server_serial() == serial(second)
            finally:
                await connection.close()

        await support.eventually(new_handshake_sees_the_new_certificate, within=5)
    assert any(line["event"] == "listener certificate reloaded" for line in logs)
    # A connection opened before the change goes on with the certificate it was handshaken with.
    assert (await before.post("/events", "b"))[0] == 202
    await before.close()
    assert {event.id for event in await glue.events()} == {"a", "b"}


async def test_a_half_written_pair_keeps_the_last_good_certificate(
    start_daemon: StartDaemon, mount: Path
) -> None:
    ca = trustme.CA()
    first, second = ca.issue_cert("localhost"), ca.issue_cert("localhost")
    install(mount, first)
    glue = await start_daemon({"endpoints": [ENDPOINT], "server": tls_server(mount)})
    port, trust = port_of(glue), client_context(ca)
    with capture_logs() as logs:
        replace(mount / "tls.key", second.private_key_pem.bytes())  # the key of a certificate not yet there
        await support.eventually(
            lambda: any(line["event"] == "listener certificate not reloaded" for line in logs)
        )
    connection = await Connection.open(port, trust)
    assert connection.server_serial() == serial(first)
    assert (await connection.post("/events", "still-served"))[0] == 202
    await connection.close()
    replace(mount / "tls.crt", b"".join(pem.bytes() for pem in second.cert_chain_pems))  # the pair completes

    async def served_second() -> bool:
        fresh = await Connection.open(port, trust)
        try:
            return fresh.server_serial() == serial(second)
        finally:
            await fresh.close()

    await support.eventually(served_second, within=5)


async def test_client_certificates_per_endpoint(start_daemon: StartDaemon, mount: Path) -> None:
    servers, clients, strangers = trustme.CA(), trustme.CA(), trustme.CA()
    install(mount, servers.issue_cert("localhost"))
    endpoints = [
        {**ENDPOINT, "name": "mtls", "path": "/mtls", "clientCert": {}},
        {**ENDPOINT, "name": "gitlab-only", "path": "/gitlab", "clientCert": {"names": ["gitlab.example"]}},
        ENDPOINT,
    ]
    glue = await start_daemon({"endpoints": endpoints, "server": tls_server(mount, clients)})
    port = port_of(glue)

    anonymous = await Connection.open(port, client_context(servers))
    assert await anonymous.post("/mtls", "no-cert") == (401, b'{"error":"client certificate required"}')
    await anonymous.close()
    anonymous = await Connection.open(port, client_context(servers))
    assert (await anonymous.post("/events", "plain"))[0] == 202  # endpoints without clientCert serve anyone
    await anonymous.close()

    harbor = client_context(servers, clients.issue_cert("harbor.example"))
    connection = await Connection.open(port, harbor)
    assert (await connection.post("/mtls", "harbor"))[0] == 202
    status, body = await connection.post("/gitlab", "harbor-on-gitlab")
    assert status == 403 and b"harbor.example is not allowed on this endpoint" in body
    await connection.close()

    gitlab = await Connection.open(port, client_context(servers, clients.issue_cert("gitlab.example")))
    assert (await gitlab.post("/gitlab", "gitlab"))[0] == 202
    await gitlab.close()

    # A certificate the client CA did not sign fails the handshake itself.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        stranger = await Connection.open(
            port, client_context(servers, strangers.issue_cert("harbor.example"))
        )
        await stranger.post("/mtls", "stranger")
    assert {event.id for event in await glue.events()} == {"plain", "harbor", "gitlab"}

    # After the server certificate is reloaded, client certificates are still asked for and checked.
    renewed = servers.issue_cert("localhost")
    install(mount, renewed)

    async def renewed_served() -> bool:
        fresh = await Connection.open(port, harbor)
        try:
            return fresh.server_serial() == serial(renewed) and (await fresh.post("/mtls", "after"))[0] == 202
        finally:
            await fresh.close()

    await support.eventually(renewed_served, within=5)
    anonymous = await Connection.open(port, client_context(servers))
    assert (await anonymous.post("/mtls", "no-cert-after"))[0] == 401
    await anonymous.close()


def test_a_client_certificate_endpoint_needs_a_client_ca(tmp_path: Path) -> None:
    with pytest.raises(settings.ConfigError, match=r"clientCert: it needs server\.tls with clientCaFile"):
        settings.from_mapping(
            {"endpoints": [{**ENDPOINT, "clientCert": {}}], "journal": {"path": str(tmp_path / "j.db")}},
            "glue.yaml",
        )


def test_check_names_tls_files_that_do_not_load(
    tmp_path: Path, mount: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = trustme.CA()
    install(mount, ca.issue_cert("localhost"))
    (mount / "tls.key").write_bytes(ca.issue_cert("localhost").private_key_pem.bytes())  # not its key
    config = tmp_path / "glue.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server": tls_server(mount),
                "journal": {"path": str(tmp_path / "j.db")},
                "endpoints": [ENDPOINT],
            }
        )
    )
    assert cli.main(["check", "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert f"server.tls: cannot load {mount / 'tls.crt'}, {mount / 'tls.key'}:" in error
    assert "KEY_VALUES_MISMATCH" in error or "key values mismatch" in error


async def test_a_new_client_ca_is_taken_without_a_restart(start_daemon: StartDaemon, mount: Path) -> None:
    servers, old_clients, new_clients = trustme.CA(), trustme.CA(), trustme.CA()
    install(mount, servers.issue_cert("localhost"))
    endpoints = [{**ENDPOINT, "name": "mtls", "path": "/mtls", "clientCert": {}}]
    glue = await start_daemon({"endpoints": endpoints, "server": tls_server(mount, old_clients)})
    port = port_of(glue)
    old_sender = client_context(servers, old_clients.issue_cert("sender.example"))
    new_sender = client_context(servers, new_clients.issue_cert("sender.example"))

    async def answered(context: ssl.SSLContext, event_id: str) -> int | None:
        try:
            connection = await Connection.open(port, context)
            try:
                return (await connection.post("/mtls", event_id))[0]
            finally:
                await connection.close()
        except (ssl.SSLError, ConnectionError):
            return None  # the handshake refused the certificate

    assert await answered(old_sender, "old-1") == 202
    assert await answered(new_sender, "new-0") is None
    replace(mount / "ca.crt", new_clients.cert_pem.bytes())
    await support.eventually(lambda: answered(new_sender, "new-1"), within=5)
    assert await answered(old_sender, "old-2") is None  # the old CA is no longer trusted
    assert {event.id for event in await glue.events()} == {"old-1", "new-1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow
async def test_glue_run_serves_tls_client_certificates_and_limits(tmp_path: Path, mount: Path) -> None:
    """``glue run`` itself (on uvloop, its default loop): TLS, a client certificate, a slow sender cut off."""
    servers, clients = trustme.CA(), trustme.CA()
    install(mount, servers.issue_cert("localhost"))
    port = free_port()
    server = {**tls_server(mount, clients), "port": port, "idleTimeout": 1}
    config = tmp_path / "glue.yaml"
    endpoints = [{**ENDPOINT, "name": "mtls", "path": "/mtls", "clientCert": {}}]
    config.write_text(
        yaml.safe_dump(
            {"server": server, "journal": {"path": str(tmp_path / "j.db")}, "endpoints": endpoints}
        )
    )
    process = await support.spawn_glue(config, tmp_path / "glue.log")
    try:
        sender = client_context(servers, clients.issue_cert("sender.example"))

        async def answered() -> int | None:
            try:
                connection = await Connection.open(port, sender)
            except OSError:
                return None  # not listening yet
            try:
                return (await connection.post("/mtls", "run-1"))[0]
            finally:
                await connection.close()

        assert await support.eventually(answered, within=30) == 202
        anonymous = await Connection.open(port, client_context(servers))
        assert (await anonymous.post("/mtls", "run-2"))[0] == 401
        await anonymous.close()
        slow = await Connection.open(port, client_context(servers))
        slow.writer.write(b"POST /mtls HTTP/1.1\r\nX-Slow: ")
        started = time.monotonic()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            async with asyncio.timeout(5):
                while await slow.reader.read(1024):
                    pass
        assert time.monotonic() - started < 3
        await slow.close()
    finally:
        process.terminate()
        await process.wait()
    assert "Traceback" not in (tmp_path / "glue.log").read_text()
