"""What MinIO's webhook target sends as credentials, and which endpoint auth accepts it.

minio internal/event/target/webhook.go (send): ``strings.Fields(auth_token)``; one field: the header
``Authorization: Bearer <token>``; two fields: ``Authorization: <auth_token>`` as configured; any other
count: no Authorization header at all. The target posts the envelope with
``Content-Type: application/json``."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.formats import payloads
from tests.sources.http.conftest import StartDaemon


def minio_sends(auth_token: str) -> dict[str, str]:
    """The headers MinIO's webhook target sets for this ``auth_token`` (webhook.go, above)."""
    headers = {"Content-Type": "application/json"}
    fields = auth_token.split()
    if len(fields) == 1:
        headers["Authorization"] = "Bearer " + auth_token
    elif len(fields) == 2:
        headers["Authorization"] = auth_token
    return headers


def _endpoint(auth: dict[str, Any]) -> dict[str, Any]:
    return {"name": "minio", "path": "/minio", "format": "minio", "auth": auth}


@pytest.mark.parametrize(
    ("auth_token", "auth"),
    [
        ("s3cr3t-token", {"type": "bearer", "secret": {"value": "s3cr3t-token"}}),
        ("Bearer s3cr3t-token", {"type": "bearer", "secret": {"value": "s3cr3t-token"}}),
        ("Token s3cr3t-token", {"type": "header", "secret": {"value": "Token s3cr3t-token"}}),
    ],
    ids=["one-word", "bearer-two-words", "other-scheme"],
)
async def test_the_documented_token_forms_are_accepted(
    start_daemon: StartDaemon, auth_token: str, auth: dict[str, Any]
) -> None:
    glue = await start_daemon({"endpoints": [_endpoint(auth)]})
    body = orjson.dumps(payloads.minio_envelope(payloads.minio_record()))
    status, _ = await glue.post("/minio", body, minio_sends(auth_token))
    assert status == 202
    assert len(await glue.events()) == 1


async def test_a_token_of_three_words_is_never_sent_so_every_delivery_is_refused(
    start_daemon: StartDaemon,
) -> None:
    """MinIO drops the header for such a token; without queue_dir the event is then lost (README)."""
    glue = await start_daemon({"endpoints": [_endpoint({"type": "bearer", "secret": {"value": "a b c"}})]})
    body = orjson.dumps(payloads.minio_envelope(payloads.minio_record()))
    headers = minio_sends("a b c")
    assert "Authorization" not in headers
    assert await glue.post("/minio", body, headers) == (401, {"error": "missing or wrong credentials"})
