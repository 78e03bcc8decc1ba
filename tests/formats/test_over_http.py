"""The decoders behind the real webhook intake: what a sender is answered and what the journal holds."""

from __future__ import annotations

import asyncio

import orjson
from structlog.testing import capture_logs

from glue import events
from tests import support
from tests.formats import payloads as p
from tests.formats.conftest import Glue


async def test_harbor_push_in_both_forms_is_journaled_with_one_type(glue: Glue) -> None:
    default = p.body(p.harbor_default())
    status, answer = await glue.post("/hooks/harbor", default, p.HARBOR_JSON)
    assert status == 202
    [digest_id] = answer["ids"]
    assert digest_id.startswith(events.digest(p.harbor_default()) + "-")
    status, answer = await glue.post("/hooks/harbor", p.body(p.harbor_ce()), p.HARBOR_CE_JSON)
    assert (status, answer) == (202, {"ids": [p.harbor_ce()["id"]]})
    rows = await glue.journaled()
    assert [(r.type, r.source) for r in rows] == [
        ("harbor.artifact.pushed", "harbor"),
        ("harbor.artifact.pushed", p.HARBOR_CE_SOURCE),
    ]
    assert rows[0].subject == "platform/models/llama"
    stored = [orjson.loads(r.cloudevent)["data"] for r in rows]
    assert stored[0] == stored[1]


async def test_a_harbor_retry_is_recognised(glue: Glue) -> None:
    """Harbor retries a slow (> 3 s) delivery with the same body: one journal row, answered 200."""
    body = p.body(p.harbor_default("SCANNING_COMPLETED"))
    first = await glue.post("/hooks/harbor", body, p.HARBOR_JSON)
    retry = await glue.post("/hooks/harbor", body, p.HARBOR_JSON)
    assert (first[0], retry[0]) == (202, 200)
    assert len(await glue.journaled()) == 1


async def test_a_gitlab_resend_is_recognised(glue: Glue) -> None:
    body = p.body(p.gitlab_merge_request())
    first = await glue.post("/hooks/gitlab", body, p.gitlab_headers("Merge Request Hook"))
    resend_headers = p.gitlab_headers("Merge Request Hook", x_gitlab_webhook_uuid="another-attempt")
    resend = await glue.post("/hooks/gitlab", body, resend_headers)
    assert first == (202, {"ids": ["b6f7b1c2-9a43-4d7e-8f3a-1c2d3e4f5a6b"]})
    assert resend[0] == 200
    [row] = await glue.journaled()
    assert (row.type, row.source, row.subject) == ("gitlab.merge_request", p.PROJECT_URL, "17")


async def test_minio_escaped_key_is_journaled_decoded(glue: Glue) -> None:
    record = p.minio_record()
    record["s3"]["object"]["key"] = "Tile_%2B002+x"
    status, _ = await glue.post(
        "/hooks/minio", p.body(p.minio_envelope(record)), {"content-type": "application/json"}
    )
    assert status == 202
    [row] = await glue.journaled()
    assert (row.type, row.source, row.subject) == ("minio.ObjectCreated:Put", "minio:models", "Tile_+002 x")


async def test_argo_trigger_without_content_type(glue: Glue) -> None:
    status, answer = await glue.post("/hooks/argo", b'{"model": "llama"}', {"X-Event-Id": "5d1f0e3c"})
    assert (status, answer) == (202, {"ids": ["5d1f0e3c"]})
    [row] = await glue.journaled()
    assert (row.type, row.source) == ("org.example.argo.sensor", "argo/sensor/models")


async def test_cloudevents_batch_is_journaled_whole(glue: Glue) -> None:
    batch = [p.ce_structured(event_id="b-1"), p.ce_structured(event_id="b-2")]
    headers = {"content-type": "application/cloudevents-batch+json"}
    assert await glue.post("/events", p.body(batch), headers) == (202, {"ids": ["b-1", "b-2"]})
    assert [r.id for r in await glue.journaled()] == ["b-1", "b-2"]


async def test_bad_input_is_answered_with_the_reason_and_not_journaled(glue: Glue) -> None:
    truncated = p.body(p.gitlab_push())[:40]
    status, answer = await glue.post("/hooks/gitlab", truncated, p.gitlab_headers())
    assert status == 400
    assert answer["error"].startswith("body is not valid JSON: unexpected end of data")
    status, answer = await glue.post(
        "/hooks/harbor", p.body(p.harbor_default()), {"content-type": "text/plain"}
    )
    assert status == 415
    assert "'text/plain' is not a Harbor payload format" in answer["error"]
    status, answer = await glue.post("/hooks/harbor", p.body(p.harbor_default("PUSH_CHART")), p.HARBOR_JSON)
    assert (status, answer["error"].startswith("unknown Harbor event type 'PUSH_CHART'")) == (400, True)
    assert await glue.journaled() == []


async def test_gitlab_events_sharing_the_recursion_detection_uuid_are_two_events(glue: Glue) -> None:
    """Before Idempotency-Key (GitLab 17.4), two events one request fires at a hook, or that a bot's
    API call passes the header on to, share X-Gitlab-Event-UUID but not X-Gitlab-Webhook-UUID."""
    shared = {"idempotency_key": None, "x_gitlab_event_uuid": "7a8b9c0d-1e2f-4a3b-9c4d-5e6f7a8b9c0d"}
    body = p.body(p.gitlab_push())
    first = await glue.post("/hooks/gitlab", body, p.gitlab_headers(**shared))  # type: ignore[arg-type]
    second_headers = p.gitlab_headers(**shared, x_gitlab_webhook_uuid="1e2f3a4b-5c6d-4e7f-8a9b-0c1d2e3f4a5b")  # type: ignore[arg-type]
    second = await glue.post("/hooks/gitlab", body, second_headers)
    assert (first[0], second[0]) == (202, 202)
    assert first[1] != second[1]
    assert len(await glue.journaled()) == 2


async def test_an_equal_body_without_an_id_is_one_event_within_the_window(glue: Glue) -> None:
    before = support.metric("glue_duplicate_events_total", endpoint="argo-digest", identity="digest")
    body = b'{"repository": "models", "tag": "v1"}'
    first = await glue.post("/hooks/argo-digest", body, {})
    with capture_logs() as logs:
        retry = await glue.post("/hooks/argo-digest", body, {})
    assert (first[0], retry) == (202, (200, first[1]))
    assert len(await glue.journaled()) == 1
    [line] = [line for line in logs if line["event"] == "duplicate by digest"]
    assert line["log_level"] == "info"
    assert (line["endpoint"], line["first_id"]) == ("argo-digest", first[1]["ids"][0])
    assert 0 <= line["age"] < 60
    after = support.metric("glue_duplicate_events_total", endpoint="argo-digest", identity="digest")
    assert after == before + 1


async def test_an_equal_body_after_the_window_is_a_new_event(glue: Glue) -> None:
    body = b'{"schedule": "hourly"}'
    first = await glue.post("/hooks/argo-short", body, {})
    await asyncio.sleep(0.2)  # the endpoint's dedupWindow is 0.05 s
    later = await glue.post("/hooks/argo-short", body, {})
    assert (first[0], later[0]) == (202, 202)
    assert first[1] != later[1]
    assert len(await glue.journaled()) == 2


async def test_a_producer_duplicate_is_counted_as_such(glue: Glue) -> None:
    before = support.metric("glue_duplicate_events_total", endpoint="cloudevents", identity="producer")
    body = p.body(p.ce_structured(event_id="dup-1"))
    headers = {"content-type": "application/cloudevents+json"}
    assert [(await glue.post("/events", body, headers))[0] for _ in range(2)] == [202, 200]
    after = support.metric("glue_duplicate_events_total", endpoint="cloudevents", identity="producer")
    assert after == before + 1


async def test_the_id_comes_from_the_configured_body_field(glue: Glue) -> None:
    body = b'{"event": {"id": "5d1f0e3c2b4a49688f7e6d5c4b3a2910"}, "tag": "v1"}'
    assert await glue.post("/hooks/argo-field", body, {}) == (
        202,
        {"ids": ["5d1f0e3c2b4a49688f7e6d5c4b3a2910"]},
    )
    status, answer = await glue.post("/hooks/argo-field", b'{"tag": "v1"}', {})
    assert status == 400
    assert answer["error"].startswith("the body has no event id at 'event.id' (the endpoint's idField)")
