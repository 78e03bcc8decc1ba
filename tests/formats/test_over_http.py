"""The decoders behind the real webhook intake: what a sender is answered and what the journal holds."""

from __future__ import annotations

import orjson

from glue import events
from tests.formats import payloads as p
from tests.formats.conftest import Glue


async def test_harbor_push_in_both_forms_is_journaled_with_one_type(glue: Glue) -> None:
    default = p.body(p.harbor_default())
    status, answer = await glue.post("/hooks/harbor", default, p.HARBOR_JSON)
    assert (status, answer) == (202, {"ids": [events.digest(p.harbor_default())]})
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
