"""CloudEvents 1.0: binary, structured and batch modes over HTTP, binary and structured over Kafka
(reference formats.md section 5: cloudevents/spec bindings/http-protocol-binding.md,
bindings/kafka-protocol-binding.md, formats/json-format.md)."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from cloudevents.core.formats.json import JSONFormat

from glue import events
from tests.formats import payloads as p
from tests.formats.helpers import decode, rejected, roundtrip

STRUCTURED = {"content-type": "application/cloudevents+json; charset=utf-8"}
BATCH = {"content-type": "application/cloudevents-batch+json"}


def test_structured_event_keeps_its_attributes() -> None:
    sent = p.ce_structured(comexampleextension1="value", comexampleothervalue=5, subject="llama")
    [event] = decode(p.delivery("cloudevents", sent, STRUCTURED))
    assert events.identity(event) == "/platform/registry evt-0001"
    assert event.get_type() == "org.example.model.published"
    assert event.get_subject() == "llama"
    assert event.get_time() == dt.datetime(2025, 11, 28, tzinfo=dt.UTC)
    assert event.get_extension("comexampleextension1") == "value"
    assert event.get_extension("comexampleothervalue") == 5
    assert event.get_data() == {"model": "llama-3-8b", "version": 3}


def test_null_attributes_are_absent() -> None:
    """json-format.md: an attribute with a null value is treated as absent."""
    sent = p.ce_structured(subject=None, unsetextension=None)
    [event] = decode(p.delivery("cloudevents", sent, STRUCTURED))
    assert event.get_subject() is None
    assert "unsetextension" not in event.get_attributes()


def test_data_base64_is_binary_data() -> None:
    sent = p.ce_structured(datacontenttype="application/octet-stream")
    del sent["data"]
    sent["data_base64"] = base64.b64encode(b"\x00\xffweights").decode()
    [event] = decode(p.delivery("cloudevents", sent, STRUCTURED))
    assert event.get_data() == b"\x00\xffweights"
    assert roundtrip(event).get_data() == b"\x00\xffweights"


def test_binary_mode_reads_the_headers() -> None:
    headers = p.ce_binary_headers(**{"ce-subject": "models%2Fllama%20v3", "ce-partition": "7"})
    [event] = decode(p.delivery("cloudevents", {"model": "llama"}, headers))
    assert events.identity(event) == "/platform/registry evt-0001"
    assert event.get_subject() == "models/llama v3"  # percent-decoded (http binding 3.1.3.2)
    assert event.get_extension("partition") == "7"
    assert event.get_datacontenttype() == "application/json"
    assert event.get_data() == {"model": "llama"}


def test_binary_mode_with_non_json_data() -> None:
    xml = p.ce_binary_headers(**{"content-type": "application/xml"})
    [text] = decode(p.delivery("cloudevents", b'<much wow="xml"/>', xml))
    assert text.get_data() == '<much wow="xml"/>'
    raw = p.ce_binary_headers(**{"content-type": "application/vnd.apache.thrift.binary"})
    [binary] = decode(p.delivery("cloudevents", b"\x80\x01\x00\xff", raw))
    assert binary.get_data() == b"\x80\x01\x00\xff"


def test_batch_mode_yields_every_event() -> None:
    batch = [p.ce_structured(event_id=f"evt-{n}") for n in range(3)]
    decoded = decode(p.delivery("cloudevents", batch, BATCH))
    assert [e.get_id() for e in decoded] == ["evt-0", "evt-1", "evt-2"]


def test_an_empty_batch_carries_no_event() -> None:
    """json-format.md 4.3: ``[]`` is a valid batch."""
    assert decode(p.delivery("cloudevents", [], BATCH)) == []


def test_a_bad_batch_element_is_named() -> None:
    batch = [p.ce_structured(), p.ce_structured(event_id="evt-2")]
    del batch[1]["source"]
    error = rejected(p.delivery("cloudevents", batch, BATCH))
    assert (error.status, error.reason) == (400, "event 1: missing required attribute 'source'")


def test_a_batch_must_be_an_array() -> None:
    error = rejected(p.delivery("cloudevents", p.ce_structured(), BATCH))
    assert (error.status, error.reason) == (400, "a CloudEvents batch must be a JSON array, got object")


def test_unlabelled_body_is_read_as_a_structured_event() -> None:
    [event] = decode(p.delivery("cloudevents", p.ce_structured(), {}))
    assert events.identity(event) == "/platform/registry evt-0001"


def test_undated_events_are_dated_at_arrival() -> None:
    sent = p.ce_structured()
    del sent["time"]
    delivery = p.delivery("cloudevents", sent, STRUCTURED)
    [event] = decode(delivery)
    assert event.get_time() == dt.datetime.fromtimestamp(delivery.received_at, dt.UTC)


def test_kafka_binary_mode_maps_the_key_to_partitionkey() -> None:
    headers = {
        "ce_specversion": "1.0",
        "ce_id": "evt-9",
        "ce_source": "/platform/kafka",
        "ce_type": "org.example.model.published",
        "content-type": "application/json",
    }
    delivery = p.delivery("cloudevents", {"model": "llama"}, headers, transport="kafka", key=b"llama")
    [event] = decode(delivery)
    assert events.identity(event) == "/platform/kafka evt-9"
    assert event.get_extension("partitionkey") == "llama"
    assert event.get_data() == {"model": "llama"}


def test_kafka_structured_mode() -> None:
    delivery = p.delivery("cloudevents", p.ce_structured(), STRUCTURED, transport="kafka")
    [event] = decode(delivery)
    assert events.identity(event) == "/platform/registry evt-0001"


def test_decoded_events_survive_the_journal_round_trip() -> None:
    [event] = decode(p.delivery("cloudevents", p.ce_structured(comexampleothervalue=5), STRUCTURED))
    back = roundtrip(event)
    assert back.get_attributes() == event.get_attributes()
    assert back.get_data() == event.get_data()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"source": ...}, "missing required attribute 'source'"),
        ({"id": ...}, "missing required attribute 'id'"),
        ({"specversion": ...}, "missing required attribute 'specversion'"),
        ({"specversion": "0.3"}, "specversion '0.3' is not supported: send CloudEvents 1.0"),
        ({"id": ""}, "invalid CloudEvent: attribute 'id' is invalid"),
        ({"id": 17}, "invalid CloudEvent: attribute 'id' must be a string"),
        ({"time": "28/11/2025"}, "attribute 'time' is not an RFC 3339 timestamp: '28/11/2025'"),
        ({"time": "2025-11-28T00:00:00"}, "invalid CloudEvent: attribute 'time' is invalid"),
        ({"Model": "llama"}, "invalid CloudEvent: extension attribute 'Model' is not a valid name"),
        ({"model-name": "x"}, "invalid CloudEvent: extension attribute 'model-name' is not a valid name"),
        ({"subject": ""}, "invalid CloudEvent: attribute 'subject' is invalid"),
        ({"dataschema": ""}, "invalid CloudEvent: attribute 'dataschema' is invalid"),
        ({"labels": {"a": "b"}}, "attribute 'labels' must be a string, integer or boolean, got object"),
        ({"data_base64": "!!"}, "an event carries either 'data' or 'data_base64', not both"),
        # CloudEvents 1.0 type system: a String holds no control character, surrogate or noncharacter.
        ({"id": "evt\u0000"}, "attribute 'id' holds U+0000, a character CloudEvents 1.0 does not allow"),
        ({"subject": "a\nb"}, "attribute 'subject' holds U+000A"),
        ({"source": "/x\u0085"}, "attribute 'source' holds U+0085"),
        ({"comexamplenote": "\ufffe"}, "attribute 'comexamplenote' holds U+FFFE"),
    ],
)
def test_invalid_structured_events_are_rejected_naming_the_attribute(
    change: dict[str, object], reason: str
) -> None:
    sent = p.ce_structured()
    for name, value in change.items():
        if value is ...:
            del sent[name]
        else:
            sent[name] = value
    error = rejected(p.delivery("cloudevents", sent, STRUCTURED))
    assert error.status == 400
    assert error.reason.startswith(reason)


def test_invalid_base64_data_is_rejected() -> None:
    sent = p.ce_structured()
    del sent["data"]
    sent["data_base64"] = "not base64!"
    error = rejected(p.delivery("cloudevents", sent, STRUCTURED))
    assert (error.status, error.reason) == (400, "'data_base64' is not valid base64")


def test_binary_mode_with_a_bad_time_header_is_rejected() -> None:
    error = rejected(p.delivery("cloudevents", {}, p.ce_binary_headers(**{"ce-time": "soon"})))
    assert (error.status, error.reason) == (400, "header 'ce-time' is not an RFC 3339 timestamp: 'soon'")


def test_binary_mode_declaring_json_must_carry_json() -> None:
    error = rejected(p.delivery("cloudevents", b"{not json", p.ce_binary_headers()))
    assert error.status == 400
    assert error.reason.startswith("body is not valid JSON: ")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (
            b'{"specversion": "1.0", "id": "1"',
            "body is not valid JSON: unexpected end of data: line 1 column 33",
        ),
        (b'"an event"', "a structured CloudEvent must be a JSON object, got string"),
        (b"\xff\xfe{}", "body is not valid JSON: str is not valid UTF-8"),
    ],
)
def test_malformed_structured_bodies_are_rejected(raw: bytes, reason: str) -> None:
    error = rejected(p.delivery("cloudevents", raw, STRUCTURED))
    assert error.status == 400
    assert error.reason.startswith(reason)


@pytest.mark.parametrize(
    ("content_type", "hint"),
    [
        ("application/json", "without ce- headers is not a CloudEvent"),
        ("text/plain", "without ce- headers is not a CloudEvent"),
        ("application/cloudevents+avro", "CloudEvents are taken as application/cloudevents+json"),
    ],
)
def test_other_content_types_are_unsupported(content_type: str, hint: str) -> None:
    error = rejected(p.delivery("cloudevents", p.ce_structured(), {"content-type": content_type}))
    assert error.status == 415
    assert hint in error.reason


@pytest.mark.parametrize(
    "sent_time",
    [
        "2025-11-28T10:20:30Z",
        "2025-11-28T10:20:30.000001Z",
        "2025-11-28T10:20:30.5+02:00",
        "2025-11-28T10:20:30-05:30",
    ],
)
def test_the_journal_writes_an_event_as_the_sdk_does(sent_time: str) -> None:
    """The journal's JSON (events.to_json, with orjson) is the SDK's JSON format, time included."""
    sent = p.ce_structured(time=sent_time, comexampleothervalue=5, subject="llama")
    [event] = decode(p.delivery("cloudevents", sent, STRUCTURED))
    ours = json.loads(events.to_json(event))
    assert ours == json.loads(JSONFormat().write(event))
    assert ours["time"] == sent_time.replace(".5+", ".500000+")  # Python writes fractions in microseconds
