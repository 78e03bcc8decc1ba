"""Harbor webhooks, Default and CloudEvents payload formats (reference formats.md section 1)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from glue import events
from glue.formats import harbor
from tests import support
from tests.formats import payloads as p
from tests.formats.helpers import decode, digest_id, rejected, roundtrip

DOCUMENTED_TYPES = {
    "PUSH_ARTIFACT": "harbor.artifact.pushed",
    "PULL_ARTIFACT": "harbor.artifact.pulled",
    "DELETE_ARTIFACT": "harbor.artifact.deleted",
    "SCANNING_COMPLETED": "harbor.scan.completed",
    "SCANNING_FAILED": "harbor.scan.failed",
    "SCANNING_STOPPED": "harbor.scan.stopped",
    "QUOTA_EXCEED": "harbor.quota.exceeded",
    "QUOTA_WARNING": "harbor.quota.warned",
    "REPLICATION": "harbor.replication.status.changed",
    "TAG_RETENTION": "harbor.tag_retention.finished",
}


@pytest.mark.parametrize(("kind", "ce_type"), sorted(DOCUMENTED_TYPES.items()))
def test_default_format_yields_the_cloudevents_type_name(kind: str, ce_type: str) -> None:
    payload = p.harbor_default(kind, repo="platform/models/llama")
    [event] = decode(p.delivery("harbor", payload, p.HARBOR_JSON))
    assert event.get_type() == ce_type
    assert event.get_source() == "harbor"
    assert event.get_id() == digest_id(payload, p.RECEIVED_AT)
    assert event.get_subject() == "platform/models/llama"
    assert event.get_time() == dt.datetime(2025, 11, 28, 0, 2, 3, tzinfo=dt.UTC)
    assert event.get_extension("operator") == "ci-robot"
    assert event.get_data() == payload["event_data"]


def test_every_documented_type_is_mapped() -> None:
    assert harbor.TYPES == DOCUMENTED_TYPES


def test_default_format_source_comes_from_the_endpoint() -> None:
    [event] = decode(p.delivery("harbor", p.harbor_default(), p.HARBOR_JSON), source="harbor-prod")
    assert event.get_source() == "harbor-prod"


def test_default_and_cloudevents_forms_of_one_push_look_alike() -> None:
    [default] = decode(p.delivery("harbor", p.harbor_default("PUSH_ARTIFACT"), p.HARBOR_JSON))
    [cloud] = decode(p.delivery("harbor", p.harbor_ce("harbor.artifact.pushed"), p.HARBOR_CE_JSON))
    assert default.get_type() == cloud.get_type() == "harbor.artifact.pushed"
    assert default.get_data() == cloud.get_data()
    assert default.get_extension("operator") == cloud.get_extension("operator") == "ci-robot"
    assert default.get_datacontenttype() == cloud.get_datacontenttype() == "application/json"


def test_cloudevents_form_keeps_the_attributes_as_sent() -> None:
    payload = p.harbor_ce("harbor.scan.completed", event_id="0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e")
    [event] = decode(p.delivery("harbor", payload, p.HARBOR_CE_JSON), source="ignored-for-ce")
    assert events.identity(event) == f"{p.HARBOR_CE_SOURCE} 0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e"
    assert event.get_type() == "harbor.scan.completed"
    assert event.get_extension("requestid") == payload["requestid"]
    assert event.get_extension("operator") == "ci-robot"
    assert event.get_time() == dt.datetime(2025, 11, 28, 0, 2, 3, tzinfo=dt.UTC)
    assert event.get_subject() is None


def test_redelivery_has_the_same_identity_however_it_is_serialised() -> None:
    payload = p.harbor_default()
    compact = p.delivery("harbor", payload, p.HARBOR_JSON)
    pretty = p.delivery("harbor", json.dumps(payload, indent=4, sort_keys=True).encode(), p.HARBOR_JSON)
    [first], [second] = decode(compact), decode(pretty)
    assert events.identity(first) == events.identity(second)


def test_distinct_events_have_distinct_identities() -> None:
    [push] = decode(p.delivery("harbor", p.harbor_default(occur_at=1_764_288_123), p.HARBOR_JSON))
    [later] = decode(p.delivery("harbor", p.harbor_default(occur_at=1_764_288_124), p.HARBOR_JSON))
    [other] = decode(p.delivery("harbor", p.harbor_default(tag="v2"), p.HARBOR_JSON))
    assert len({events.identity(e) for e in (push, later, other)}) == 3


def test_quota_event_with_empty_operator_and_no_tag() -> None:
    payload = p.harbor_default("QUOTA_EXCEED", operator="")
    del payload["event_data"]["resources"][0]["tag"]
    del payload["event_data"]["repository"]["date_created"]
    payload["event_data"]["custom_attributes"] = {"Details": "adding 2.1 MiB will exceed 10.0 MiB"}
    [event] = decode(p.delivery("harbor", payload, p.HARBOR_JSON))
    assert event.get_type() == "harbor.quota.exceeded"
    assert event.get_extension("operator") == ""
    assert support.json_data(event)["custom_attributes"]["Details"].startswith("adding")


def test_unlabelled_bodies_are_read_as_json_in_either_form() -> None:
    [default] = decode(p.delivery("harbor", p.harbor_default(), {}))
    [cloud] = decode(p.delivery("harbor", p.harbor_ce(), {}))
    assert default.get_source() == "harbor"
    assert cloud.get_source() == p.HARBOR_CE_SOURCE


def test_decoded_events_survive_the_journal_round_trip() -> None:
    for payload, headers in ((p.harbor_default(), p.HARBOR_JSON), (p.harbor_ce(), p.HARBOR_CE_JSON)):
        [event] = decode(p.delivery("harbor", payload, headers))
        back = roundtrip(event)
        assert events.identity(back) == events.identity(event)
        assert back.get_attributes() == event.get_attributes()
        assert back.get_data() == event.get_data()


def test_unknown_default_type_is_rejected_naming_it() -> None:
    error = rejected(p.delivery("harbor", p.harbor_default("PUSH_CHART"), p.HARBOR_JSON))
    assert error.status == 400
    assert "unknown Harbor event type 'PUSH_CHART'" in error.reason
    assert "PUSH_ARTIFACT" in error.reason


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (
            b'{"type": "PUSH_ARTIFACT", "occur_at": 17',
            "body is not valid JSON: unexpected end of data: line 1",
        ),
        (b"", "body is empty"),
        (b"[1, 2]", "body must be a JSON object, got array"),
        (b'{"type": "PUSH_ARTIFACT", "occur_at": "yesterday"}', "'occur_at' must be a Unix time in seconds"),
        (b'{"type": 7, "occur_at": 1}', "'type' must be a string, got number"),
        (
            b'{"type": "PUSH_ARTIFACT", "occur_at": 99999999999999999}',
            "'occur_at' 99999999999999999 is out of range",
        ),
        (b'{"type": "PUSH_ARTIFACT", "occur_at": 1, "event_data": []}', "'event_data' must be an object"),
    ],
)
def test_malformed_default_bodies_are_rejected_with_a_reason(raw: bytes, reason: str) -> None:
    error = rejected(p.delivery("harbor", raw, p.HARBOR_JSON))
    assert error.status == 400
    assert reason in error.reason


def test_cloudevents_form_without_an_id_is_rejected() -> None:
    payload = p.harbor_ce()
    del payload["id"]
    error = rejected(p.delivery("harbor", payload, p.HARBOR_CE_JSON))
    assert (error.status, error.reason) == (400, "missing required attribute 'id'")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
def test_other_content_types_are_unsupported(content_type: str) -> None:
    error = rejected(p.delivery("harbor", p.harbor_default(), {"content-type": content_type}))
    assert error.status == 415
    assert content_type in error.reason
    assert "application/cloudevents+json" in error.reason
