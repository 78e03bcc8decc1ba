"""TLS and basic auth as Argo's JetStream EventBus sets them up (argo-events
``pkg/reconciler/eventbus/installer/jetstream.go``): a server certificate from a private CA (a
generated one here, with trustme) and the client-auth Secret mounted as a YAML file of
``username``/``password``. The password never shows in readiness, logs or the journal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
import trustme

from tests.sources.argo_events import bus
from tests.support import daemon_settings, eventually, metric, running

USER, PASSWORD = "argo-events", "Zq8-js-client-pass"


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[bus.Server, Path]]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = tmp_path / "server.pem", tmp_path / "server-key.pem", tmp_path / "ca-cert"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    server = bus.start_server(
        tmp_path,
        "--tls",
        "--tlscert",
        str(cert_file),
        "--tlskey",
        str(key_file),
        "--user",
        USER,
        "--pass",
        PASSWORD,
    )
    yield server, ca_file
    bus.stop_server(server)


def auth_file(directory: Path, password: str) -> Path:
    path = directory / "auth.yaml"
    path.write_text(f"username: {USER}\npassword: {password}\n")  # the Secret's client-auth value
    return path


async def test_tls_and_basic_auth_from_argos_secret(
    tls_server: tuple[bus.Server, Path], tmp_path: Path
) -> None:
    server, ca_file = tls_server
    source = {
        "url": server.url,
        "auth": {"file": str(auth_file(tmp_path, PASSWORD))},
        "tls": {"caFile": str(ca_file)},
        "reconnectInitial": 0.05,
        "reconnectMax": 0.2,
    }
    config = daemon_settings(tmp_path, sources={"argoEvents": source})
    async with (
        bus.Publisher(server.url, tls=_client_tls(ca_file), user=USER, password=PASSWORD) as publisher,
        running(config) as daemon,
    ):
        await eventually(lambda: metric("glue_source_up", source="argo-events") == 1)
        msg = bus.message("calendar", "tick", "calendar", {"n": 1})
        await publisher.publish(msg)
        found = await eventually(lambda: daemon.journal.get(f"calendar {msg.event_id}"))
        assert found.event().get_data() == {"n": 1}


async def test_a_wrong_password_is_reported_without_the_password(
    tls_server: tuple[bus.Server, Path], tmp_path: Path
) -> None:
    server, ca_file = tls_server
    wrong = "not-the-" + PASSWORD
    source = {
        "url": server.url,
        "auth": {"file": str(auth_file(tmp_path, wrong))},
        "tls": {"caFile": str(ca_file)},
        "reconnectInitial": 0.05,
        "reconnectMax": 0.2,
    }
    config = daemon_settings(tmp_path, sources={"argoEvents": source})
    with structlog.testing.capture_logs() as logs:
        async with running(config) as daemon:
            pipeline = daemon.pipeline
            assert pipeline is not None
            [bus_source] = pipeline.sources
            reason = await eventually(lambda: _failure(bus_source))
            assert "authorization violation" in reason.lower()
            assert metric("glue_source_up", source="argo-events") == 0
    assert wrong not in reason and PASSWORD not in reason
    assert not [entry for entry in logs if wrong in repr(entry) or PASSWORD in repr(entry)]


async def test_a_server_certificate_from_another_ca_is_refused(
    tls_server: tuple[bus.Server, Path], tmp_path: Path
) -> None:
    server, _ = tls_server
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    source = {
        "url": server.url,
        "auth": {"file": str(auth_file(tmp_path, PASSWORD))},
        "tls": {"caFile": str(other_ca)},
        "reconnectInitial": 0.05,
        "reconnectMax": 0.2,
    }
    async with running(daemon_settings(tmp_path, sources={"argoEvents": source})) as daemon:
        assert daemon.pipeline is not None
        [bus_source] = daemon.pipeline.sources
        reason = await eventually(lambda: _failure(bus_source))
        assert "certificate verify failed" in reason.lower()


def _client_tls(ca_file: Path) -> object:
    import ssl

    return ssl.create_default_context(cafile=str(ca_file))


async def _failure(source: object) -> str | None:
    """Why the source is down, once it has tried to connect."""
    reason: str | None = await source.readiness()  # type: ignore[attr-defined]
    return None if reason is None or reason.endswith("not connected yet") else reason
