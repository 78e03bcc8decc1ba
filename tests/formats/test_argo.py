"""What an Argo Events Sensor HTTP trigger sends (reference formats.md section 4: triggers/http/http.go,
triggers/params.go: no Content-Type or CloudEvents headers unless configured, body from `payload`)."""

from __future__ import annotations

import datetime as dt

import pytest
from cloudevents.core.bindings import http as ce_http

from glue import events, formats, settings
from tests.formats import payloads as p
from tests.formats.helpers import decode, digest_id, rejected, roundtrip

WRAP = {"type": "org.example.argo.sensor", "source": "argo/sensor/models"}


def test_binary_cloudevent_keeps_its_attributes() -> None:
    context = p.argo_context()
    headers = {f"ce-{name}": value for name, value in context.items() if name != "datacontenttype"}
    headers["content-type"] = "application/json"
    [event] = decode(p.delivery("argo", {"ref": "refs/heads/main"}, headers), **WRAP)
    assert events.identity(event) == "gitlab-events 5d1f0e3c2b4a49688f7e6d5c4b3a2910"
    assert (event.get_type(), event.get_subject()) == ("webhook", "push")
    assert event.get_time() == dt.datetime(2025, 11, 28, tzinfo=dt.UTC)
    assert event.get_data() == {"ref": "refs/heads/main"}


def test_structured_cloudevent_with_or_without_a_content_type() -> None:
    structured = p.argo_context() | {"data": {"ref": "refs/heads/main"}}
    labelled = p.delivery("argo", structured, {"content-type": "application/cloudevents+json"})
    unlabelled = p.delivery("argo", structured, {})  # the trigger adds no Content-Type by default
    for delivery in (labelled, unlabelled):
        [event] = decode(delivery, **WRAP)
        assert events.identity(event) == "gitlab-events 5d1f0e3c2b4a49688f7e6d5c4b3a2910"
        assert event.get_type() == "webhook"
        assert event.get_data() == {"ref": "refs/heads/main"}


def test_plain_json_is_wrapped_with_the_endpoint_options() -> None:
    body = {"model": "llama-3-8b", "replicas": "2"}  # without useRawData values arrive as strings
    [event] = decode(p.delivery("argo", body, {}), **WRAP)
    assert event.get_type() == "org.example.argo.sensor"
    assert event.get_source() == "argo/sensor/models"
    assert event.get_id() == digest_id(body, p.RECEIVED_AT)
    assert event.get_data() == body
    assert roundtrip(event).get_data() == body


def test_plain_json_id_comes_from_the_configured_header() -> None:
    headers = {"x-event-id": "5d1f0e3c2b4a49688f7e6d5c4b3a2910"}
    [event] = decode(p.delivery("argo", {"a": 1}, headers), id_header="x-event-id", **WRAP)
    assert event.get_id() == "5d1f0e3c2b4a49688f7e6d5c4b3a2910"
    [fallback] = decode(p.delivery("argo", {"a": 1}, {}), id_header="x-event-id", **WRAP)
    assert fallback.get_id() == digest_id({"a": 1}, p.RECEIVED_AT)


def test_plain_json_identity_follows_the_body() -> None:
    [a1] = decode(p.delivery("argo", b'{"a": 1, "b": 2}', {}), **WRAP)
    [a2] = decode(p.delivery("argo", b'{"b":2,"a":1}', {}), **WRAP)
    [b] = decode(p.delivery("argo", b'{"a": 2, "b": 2}', {}), **WRAP)
    assert events.identity(a1) == events.identity(a2) != events.identity(b)


@pytest.mark.parametrize("value", [[1, 2, 3], "a string", 42, True])
def test_any_json_value_is_data(value: object) -> None:
    [event] = decode(p.delivery("argo", value, {"content-type": "application/json"}), **WRAP)
    assert event.get_data() == value


@pytest.mark.parametrize(
    ("options", "missing"),
    [({}, "'type' and 'source'"), ({"type": "t"}, "'source'"), ({"source": "s"}, "'type'")],
)
def test_plain_json_needs_type_and_source(options: dict[str, str], missing: str) -> None:
    error = rejected(p.delivery("argo", {"a": 1}, {}), **options)
    assert error.status == 400
    assert f"needs the endpoint's {missing} option" in error.reason


def test_an_empty_body_is_rejected() -> None:
    error = rejected(p.delivery("argo", b"", {}), **WRAP)
    assert (error.status, error.reason) == (400, "body is empty")


def test_a_binary_event_missing_an_attribute_is_rejected() -> None:
    message = ce_http.HTTPMessage(headers={"ce-specversion": "1.0", "ce-id": "1", "ce-type": "t"}, body=b"{}")
    error = rejected(p.delivery("argo", message.body, message.headers), **WRAP)
    assert (error.status, error.reason) == (400, "missing required attribute 'source'")


def test_non_json_plain_bodies_are_unsupported() -> None:
    error = rejected(p.delivery("argo", b"model=llama", {"content-type": "text/plain"}), **WRAP)
    assert error.status == 415
    assert "text/plain" in error.reason


def test_plain_json_id_comes_from_the_configured_body_field() -> None:
    """The Kafka trigger sends static headers only: a payload parameter with ``dest: event.id`` and
    ``src.contextKey: id`` carries the event's id in the body instead."""
    body = {"event": {"id": "5d1f0e3c2b4a49688f7e6d5c4b3a2910"}, "tag": "v1"}
    [event] = decode(p.delivery("argo", body, transport="kafka"), id_field=("event", "id"), **WRAP)
    assert event.get_id() == "5d1f0e3c2b4a49688f7e6d5c4b3a2910"
    assert not isinstance(event, events.Digested)
    [numbered] = decode(p.delivery("argo", {"n": 42}), id_field=("n",), **WRAP)
    assert numbered.get_id() == "42"
    headers = {"x-event-id": "from-header"}
    [both] = decode(
        p.delivery("argo", body, headers), id_header="x-event-id", id_field=("event", "id"), **WRAP
    )
    assert both.get_id() == "from-header"


@pytest.mark.parametrize("body", [{"tag": "v1"}, {"event": {"id": ""}}, {"event": {"id": {"a": 1}}}, [1, 2]])
def test_a_body_without_the_configured_id_field_is_refused(body: object) -> None:
    error = rejected(p.delivery("argo", body), id_field=("event", "id"), **WRAP)
    assert error.status == 400
    assert error.reason.startswith("the body has no event id at 'event.id' (the endpoint's idField)")


def test_options_of_a_topic_read_the_id_field_and_window() -> None:
    topic = settings.KafkaTopic.model_validate(
        {
            "name": "argo",
            "format": "argo",
            "type": "t",
            "source": "s",
            "idField": "event.id",
            "dedupWindow": 60,
        }
    )
    assert formats.Options.of(topic) == formats.Options(
        type="t", source="s", id_field=("event", "id"), dedup_window=60.0
    )
