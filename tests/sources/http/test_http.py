"""The webhook intake over a real socket: answers, authentication, limits, dedup, health and metrics."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from tests.sources.http.conftest import Running, StartDaemon


def cloudevent(event_id: str | None = None, source: str = "/tests") -> tuple[bytes, dict[str, str]]:
    """A binary-mode CloudEvent (HTTP binding): attributes in ce- headers, data in the body."""
    headers = {
        "ce-specversion": "1.0",
        "ce-id": event_id or str(uuid.uuid4()),
        "ce-source": source,
        "ce-type": "com.example.object.created",
        "content-type": "application/json",
    }
    return b'{"name": "model-a"}', headers


def endpoint(auth: dict[str, Any] | None = None, **extra: object) -> dict[str, Any]:
    return {
        "name": "ce",
        "path": "/events",
        "format": "cloudevents",
        "auth": auth or {"type": "none"},
        **extra,
    }


async def test_accepted_event_is_journaled_and_answered_with_its_id(start_daemon: StartDaemon) -> None:
    glue: Running = await start_daemon({"endpoints": [endpoint()]})
    body, headers = cloudevent("evt-1")
    status, answer = await glue.post("/events", body, headers)
    assert (status, answer) == (202, {"ids": ["evt-1"]})
    [stored] = await glue.events()
    assert (stored.id, stored.source, stored.type) == ("evt-1", "/tests", "com.example.object.created")
    assert orjson.loads(stored.cloudevent)["data"] == {"name": "model-a"}


async def test_redelivery_is_answered_200_and_journaled_once(start_daemon: StartDaemon) -> None:
    glue = await start_daemon({"endpoints": [endpoint()]})
    body, headers = cloudevent("evt-dup")
    first = await glue.post("/events", body, headers)
    second = await glue.post("/events", body, headers)
    assert first == (202, {"ids": ["evt-dup"]})
    assert second == (200, {"ids": ["evt-dup"]})
    assert len(await glue.events()) == 1


async def test_delivery_keeps_headers_without_secrets(start_daemon: StartDaemon) -> None:
    glue = await start_daemon(
        {"endpoints": [endpoint({"type": "bearer", "secret": {"value": "s3cret-token"}})]}
    )
    body, headers = cloudevent("evt-scrub")
    with capture_logs() as logs:
        status, _ = await glue.post("/events", body, {**headers, "Authorization": "Bearer s3cret-token"})
    assert status == 202
    [stored] = await glue.events()
    delivery = await glue.daemon.journal.delivery(stored.delivery_id)
    assert delivery is not None
    assert "authorization" not in delivery.headers
    assert delivery.headers["ce-id"] == "evt-scrub"
    assert delivery.body == body
    assert "s3cret-token" not in repr(logs)


@pytest.mark.parametrize(
    ("auth", "good", "bad"),
    [
        (
            {"type": "header", "secret": {"value": "Basic aGFyYm9yOnB3"}},
            {"Authorization": "Basic aGFyYm9yOnB3"},
            {"Authorization": "Basic aGFyYm9yOnB4"},
        ),
        (
            {"type": "bearer", "secret": {"value": "minio-token"}},
            {"Authorization": "Bearer minio-token"},
            {"Authorization": "Bearer minio-tokex"},
        ),
        (
            {"type": "gitlab-token", "secret": {"value": "gl-token"}},
            {"X-Gitlab-Token": "gl-token"},
            {"X-Gitlab-Token": "gl-tokeN"},
        ),
    ],
    ids=["harbor-header", "minio-bearer", "gitlab-token"],
)
async def test_header_credentials(
    start_daemon: StartDaemon, auth: dict[str, Any], good: dict[str, str], bad: dict[str, str]
) -> None:
    glue = await start_daemon({"endpoints": [endpoint(auth)]})
    body, headers = cloudevent()
    assert (await glue.post("/events", body, headers))[0] == 401
    status, answer = await glue.post("/events", body, {**headers, **bad})
    assert (status, answer) == (401, {"error": "missing or wrong credentials"})
    assert await glue.events() == []
    assert (await glue.post("/events", body, {**headers, **good}))[0] == 202


async def test_previous_secret_is_accepted_during_a_rotation(
    start_daemon: StartDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "current").write_text("new-token\n")
    monkeypatch.setenv("OLD_TOKEN", "old-token")
    auth = {"type": "bearer", "secret": {"file": str(tmp_path / "current"), "previousEnv": "OLD_TOKEN"}}
    glue = await start_daemon({"endpoints": [endpoint(auth)]})
    for token, expected in (("new-token", 202), ("old-token", 202), ("other", 401)):
        body, headers = cloudevent()
        assert (await glue.post("/events", body, {**headers, "Authorization": f"Bearer {token}"}))[
            0
        ] == expected


def _hmac_headers(secret: bytes, body: bytes) -> dict[str, str]:
    return {"X-Signature-256": "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()}


async def test_hmac_of_the_body(start_daemon: StartDaemon) -> None:
    glue = await start_daemon({"endpoints": [endpoint({"type": "hmac-sha256", "secret": {"value": "k1"}})]})
    body, headers = cloudevent("evt-hmac")
    assert (await glue.post("/events", body, {**headers, **_hmac_headers(b"k2", body)}))[0] == 401
    tampered = body.replace(b"model-a", b"model-b")
    assert (await glue.post("/events", tampered, {**headers, **_hmac_headers(b"k1", body)}))[0] == 401
    assert (await glue.post("/events", body, {**headers, **_hmac_headers(b"k1", body)}))[0] == 202
    [stored] = await glue.events()
    delivery = await glue.daemon.journal.delivery(stored.delivery_id)
    assert delivery is not None and "x-signature-256" not in delivery.headers


def _standard_webhook(key: bytes, msg_id: str, stamp: int, body: bytes) -> dict[str, str]:
    signed = f"{msg_id}.{stamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {"webhook-id": msg_id, "webhook-timestamp": str(stamp), "webhook-signature": f"v1,{signature}"}


async def test_gitlab_signing_token(start_daemon: StartDaemon) -> None:
    key = b"0123456789abcdef0123456789abcdef"
    secret = "whsec_" + base64.b64encode(key).decode()
    auth = {"type": "gitlab-signature", "secret": {"value": secret}, "toleranceSeconds": 60}
    glue = await start_daemon({"endpoints": [endpoint(auth)]})
    body, headers = cloudevent()
    now = int(time.time())
    assert (await glue.post("/events", body, {**headers, **_standard_webhook(key, "m1", now, body)}))[
        0
    ] == 202
    stale = _standard_webhook(key, "m2", now - 3600, body)
    assert await glue.post("/events", body, {**headers, **stale}) == (
        401,
        {"error": "webhook-timestamp outside the tolerance"},
    )
    wrong = _standard_webhook(b"x" * 32, "m3", now, body)
    assert (await glue.post("/events", body, {**headers, **wrong}))[0] == 401
    assert len(await glue.events()) == 1


async def test_body_over_the_limit_is_413(start_daemon: StartDaemon) -> None:
    glue = await start_daemon({"endpoints": [endpoint(maxBodyBytes=64)]})
    _, headers = cloudevent()
    big = json.dumps({"blob": "x" * 200}).encode()
    status, answer = await glue.post("/events", big, headers)
    assert status == 413 and "64 bytes" in answer["error"]
    assert await glue.events() == []


async def test_backlog_over_its_bound_is_503_with_retry_after(start_daemon: StartDaemon) -> None:
    # An intake-only daemon: its events wait for another replica's executor to route them.
    glue = await start_daemon(
        {
            "endpoints": [endpoint()],
            "server": {"host": "127.0.0.1", "port": 0, "maxBacklog": 1},
            "execution": {"enabled": False},
        }
    )
    body, headers = cloudevent()
    assert (await glue.post("/events", body, headers))[0] == 202
    body, headers = cloudevent()
    async with glue.session.post(glue.base + "/events", data=body, headers=headers) as response:
        assert response.status == 503
        assert response.headers["Retry-After"] == "5"
        assert (await response.json())["error"] == "backlog over its bound (server.maxBacklog), retry later"
    assert len(await glue.events()) == 1


async def test_health_readiness_and_metrics(start_daemon: StartDaemon) -> None:
    glue = await start_daemon({"endpoints": [endpoint()]})
    body, headers = cloudevent()
    await glue.post("/events", body, headers)
    await glue.post("/events", body, headers)
    assert (await glue.post("/events", b'{"id": 1', {"content-type": "application/cloudevents+json"}))[
        0
    ] == 400
    assert (await glue.post("/events", b"{}", {"content-type": "text/plain"}))[0] == 415
    async with glue.session.get(glue.base + "/healthz") as response:
        assert response.status == 200
    async with glue.session.get(glue.base + "/readyz") as response:
        assert response.status == 200
    async with glue.session.get(glue.base + "/metrics") as response:
        text = await response.text()
    assert 'glue_deliveries_total{endpoint="ce",outcome="accepted"}' in text
    assert 'glue_deliveries_total{endpoint="ce",outcome="duplicate"}' in text
    assert 'glue_deliveries_total{endpoint="ce",outcome="rejected"}' in text
    assert 'glue_deliveries_total{endpoint="ce",outcome="unsupported"}' in text
    assert "glue_journal_write_seconds_bucket" in text
    assert "glue_backlog_events" in text


async def test_one_log_line_per_delivery(start_daemon: StartDaemon) -> None:
    glue = await start_daemon({"endpoints": [endpoint()]})
    body, headers = cloudevent("evt-log")
    with capture_logs() as logs:
        await glue.post("/events", body, headers)
    [line] = [entry for entry in logs if entry["event"] == "delivery"]
    assert line["endpoint"] == "ce" and line["outcome"] == "accepted" and line["ids"] == ["evt-log"]
    assert isinstance(line["ms"], float)
