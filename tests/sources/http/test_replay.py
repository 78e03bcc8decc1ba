"""Replayed signatures on HMAC-signed endpoints, over a real socket.

gitlab-signature follows Standard Webhooks as GitLab's signing token uses it
(shared/reference/formats.md: ``webhook-id`` = ``Idempotency-Key``, ``webhook-timestamp``,
``webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>``): a resend of an event
keeps its id and is signed again with a new timestamp, so only a copy of the same bytes is a replay.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from typing import Any

from glue import listener
from tests import support
from tests.sources.http.conftest import StartDaemon

KEY = b"0123456789abcdef0123456789abcdef"
SECRET = "whsec_" + base64.b64encode(KEY).decode()
BODY = b'{"name": "model-a"}'


def cloudevent(event_id: str) -> dict[str, str]:
    return {
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-source": "/replay",
        "ce-type": "com.example.replay",
        "content-type": "application/json",
    }


def signed(msg_id: str, stamp: int, body: bytes = BODY) -> dict[str, str]:
    content = f"{msg_id}.{stamp}.".encode() + body
    signature = base64.b64encode(hmac.new(KEY, content, hashlib.sha256).digest()).decode()
    return {"webhook-id": msg_id, "webhook-timestamp": str(stamp), "webhook-signature": f"v1,{signature}"}


def endpoint(auth: dict[str, Any]) -> dict[str, Any]:
    return {"name": "signed", "path": "/events", "format": "cloudevents", "auth": auth}


async def test_a_copied_standard_webhooks_request_is_refused(start_daemon: StartDaemon) -> None:
    auth = {"type": "gitlab-signature", "secret": {"value": SECRET}, "toleranceSeconds": 60}
    glue = await start_daemon({"endpoints": [endpoint(auth)]})
    now = int(time.time())
    headers = {**cloudevent("evt-1"), **signed("m1", now)}
    assert (await glue.post("/events", BODY, headers))[0] == 202
    before = support.metric("glue_deliveries_total", endpoint="signed", outcome="replayed")
    assert await glue.post("/events", BODY, headers) == (
        401,
        {"error": "signature already seen within the tolerance (a replay)"},
    )
    assert support.metric("glue_deliveries_total", endpoint="signed", outcome="replayed") == before + 1
    # Extra signatures in the header do not make the same signed content new.
    padded = {**headers, "webhook-signature": "v1,AAAA " + headers["webhook-signature"]}
    assert (await glue.post("/events", BODY, padded))[0] == 401
    # Outside the tolerance the timestamp refuses it, whether seen or not.
    stale = {**cloudevent("evt-2"), **signed("m2", now - 120)}
    assert await glue.post("/events", BODY, stale) == (
        401,
        {"error": "webhook-timestamp outside the tolerance"},
    )
    # The sender's resend: the same id signed again at a later second is not a replay (200: the same event).
    resend = {**cloudevent("evt-1"), **signed("m1", now + 1)}
    assert (await glue.post("/events", BODY, resend))[0] == 200
    assert [event.id for event in await glue.events()] == ["evt-1"]


async def test_a_replayed_body_signature_is_refused_and_can_be_allowed(start_daemon: StartDaemon) -> None:
    refusing = {"type": "hmac-sha256", "secret": {"value": "k1"}, "toleranceSeconds": 60}
    allowing = {**refusing, "refuseReplays": False}
    glue = await start_daemon(
        {"endpoints": [endpoint(refusing), {**endpoint(allowing), "name": "lenient", "path": "/lenient"}]}
    )
    headers = {
        **cloudevent("evt-h"),
        "X-Signature-256": "sha256=" + hmac.new(b"k1", BODY, hashlib.sha256).hexdigest(),
    }
    assert (await glue.post("/events", BODY, headers))[0] == 202
    assert (await glue.post("/events", BODY, headers))[0] == 401
    assert (await glue.post("/lenient", BODY, headers))[0] == 200  # the journal knows the event
    assert (await glue.post("/lenient", BODY, headers))[0] == 200


async def test_a_signature_not_taken_for_a_503_may_be_sent_again(start_daemon: StartDaemon) -> None:
    # An intake-only daemon whose backlog bound is one event: the second delivery is answered 503.
    auth = {"type": "gitlab-signature", "secret": {"value": SECRET}, "toleranceSeconds": 60}
    glue = await start_daemon(
        {
            "endpoints": [endpoint(auth)],
            "server": {"host": "127.0.0.1", "port": 0, "maxBacklog": 1},
            "execution": {"enabled": False},
        }
    )
    now = int(time.time())
    assert (await glue.post("/events", BODY, {**cloudevent("a"), **signed("m-a", now)}))[0] == 202
    retried = {**cloudevent("b"), **signed("m-b", now)}
    assert (await glue.post("/events", BODY, retried))[0] == 503
    # The same signed bytes again (a sender that does not re-sign its retries) meet the same 503, not 401.
    assert (await glue.post("/events", BODY, retried))[0] == 503


def test_the_seen_signatures_are_bounded_in_memory() -> None:
    cache = listener.ReplayCache(window=300, entries=1000)
    keys = [uuid.uuid4().bytes for _ in range(5000)]
    assert all(cache.claim(key) for key in keys)
    assert len(cache) == 1000
    assert not cache.claim(keys[-1])  # the newest are still remembered
    assert cache.claim(keys[0])  # the oldest were forgotten to stay within the bound


def test_seen_signatures_expire_with_the_window() -> None:
    cache = listener.ReplayCache(window=0.05)
    assert cache.claim(b"k")
    assert not cache.claim(b"k")
    time.sleep(0.06)
    assert cache.claim(b"k")


def test_a_signature_is_remembered_for_as_long_as_it_could_be_accepted() -> None:
    # A timestamp ahead of glue's clock stays valid for longer than the tolerance after receipt.
    cache = listener.ReplayCache(window=0.05)
    assert cache.claim(b"ahead", ttl=0.2)
    assert cache.claim(b"now")
    time.sleep(0.06)
    assert cache.claim(b"now")  # its window passed
    assert not cache.claim(b"ahead")  # still within its own
