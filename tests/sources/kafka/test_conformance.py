"""CloudEvents 1.0 conformance of Kafka intake, written from the spec's sentences: the Kafka binding
(bindings/kafka-protocol-binding.md, v1.0.2 and the current text) in binary and structured mode, and
the rules of spec.md and the JSON format where a Kafka record carries them.

Most cases decode a record as the Kafka source hands it to the decoders (a kafka Delivery) and read
what the journal would store, or the reason the record is rejected with; the broker cases at the end
go through a real broker and daemon (the fixtures of tests/sources).

MUSTs that bind a sender, not a receiver:
- 3.1 Key Mapping: "Every implementation MUST, by default, map the user provided record key to the
  Kafka record key", and a key mapper "MUST NOT modify the CloudEvent" (the receiving side, the key
  as ``partitionkey``, is the SDK's rule and tested).
- 2 / 3: "Implementations that use Kafka 0.10.x.x and below MUST only use structured mode" binds a
  sender (a structured record without headers is taken: tested).
- 3.2.2 and 3.3.1: "The data byte-sequence MUST be used as the value", "content-type MUST be set to
  the media type of an event format" bind a sender; the receiver reads them so (tested).
- 3.2.3: "header keys ... MUST be encoded as UTF-8": a key that is not UTF-8 never names an attribute
  (the ``ce_`` prefix is ASCII); the values are held to it (tested over the broker).
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

import aiokafka
import orjson
import pytest

from glue import app, events, formats
from tests.sources.kafka.support import Broker, committed, create_topic, kafka_config, produce, wait_for

CE_JSON = "application/cloudevents+json; charset=UTF-8"

BINARY = {
    "ce_specversion": "1.0",
    "ce_type": "com.example.someevent",
    "ce_source": "/mycontext/subcontext",
    "ce_id": "1234-1234-1234",
    "ce_time": "2018-04-05T03:56:24Z",
    "content-type": "application/avro",
}


def structured(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "specversion": "1.0",
        "type": "com.example.someevent",
        "source": "/mycontext",
        "id": "C234-1234-1234",
        "time": "2018-04-05T17:31:00Z",
        "datacontenttype": "application/json",
        "data": {"appinfoA": "abc"},
    }
    for name, value in changes.items():
        if value is ...:
            document.pop(name, None)
        else:
            document[name] = value
    return document


def record(headers: dict[str, str], value: bytes, key: bytes | None = None) -> events.Delivery:
    """A record as the Kafka source hands it to the decoders."""
    return events.Delivery("kafka", "events", "cloudevents", headers, value, key=key)


def journaled(delivery: events.Delivery) -> dict[str, Any]:
    """The one event of a record, as the journal stores it (``glue events show``)."""
    (event,) = formats.decode(delivery)
    return events.to_dict(event)


def rejected(delivery: events.Delivery) -> str:
    """The reason a record is rejected with (``glue dlq rejected``)."""
    with pytest.raises(formats.DecodeError) as info:
        formats.decode(delivery)
    return info.value.reason


# -- 3: content modes ------------------------------------------------------------------------------


def test_a_cloudevents_content_type_selects_structured_mode_case_insensitively() -> None:
    """3 (current text): "If the header is present and its value is prefixed with the CloudEvents media
    type application/cloudevents (matched case-insensitively) ... the receiver uses structured mode"."""
    for content_type in (CE_JSON, "Application/CloudEvents+JSON"):
        headers = {"content-type": content_type, "ce_id": "from-a-header"}
        row = journaled(record(headers, orjson.dumps(structured())))
        assert (row["id"], row["data"]) == ("C234-1234-1234", {"appinfoA": "abc"})


def test_otherwise_binary_mode() -> None:
    """3: "otherwise it defaults to binary mode": ce_ headers carry the attributes."""
    row = journaled(record({**BINARY, "content-type": "application/json"}, b'{"x": 1}'))
    assert (row["id"], row["source"], row["data"]) == ("1234-1234-1234", "/mycontext/subcontext", {"x": 1})


def test_an_event_format_glue_cannot_handle_is_unsupported() -> None:
    """3: a CloudEvents media type "with an event format that it cannot handle": glue does not
    forward, so it rejects the record (the binding's MAY to treat it as binary does not apply)."""
    error = rejected(record({"content-type": "application/cloudevents+avro"}, b"\x00"))
    assert "'application/cloudevents+avro' is not supported" in error


def test_batch_mode_is_not_a_kafka_mode() -> None:
    """current text, 1: "The Kafka protocol binding does not currently support the batch content mode"."""
    delivery = record({"content-type": "application/cloudevents-batch+json"}, b"[]")
    with pytest.raises(formats.UnsupportedMediaType) as info:
        formats.decode(delivery)
    assert "the Kafka binding carries one event per record" in info.value.reason


# -- 3.1: key mapping (the SDK's rule on the receiving side) --------------------------------------


def test_the_record_key_is_the_partitionkey_attribute_in_both_modes() -> None:
    """3.1 with the Partitioning extension: the SDK's bindings map the key to ``partitionkey``."""
    binary = journaled(record(BINARY, b"\x00", key=b"tenant-7"))
    struct = journaled(record({"content-type": CE_JSON}, orjson.dumps(structured()), key=b"tenant-7"))
    assert binary["partitionkey"] == struct["partitionkey"] == "tenant-7"
    assert "partitionkey" not in journaled(record(BINARY, b"\x00"))


# -- 3.2: binary content mode ----------------------------------------------------------------------


def test_content_type_is_datacontenttype_and_the_value_is_the_data() -> None:
    """3.2.1: content-type "MUST be mapped directly to the CloudEvents datacontenttype attribute";
    3.2.2: the value is the data byte-sequence; 3.2.3: every other attribute is its own ce_ header."""
    row = journaled(record({**BINARY, "ce_comexampleextension1": "value"}, b"\x80\x01avro"))
    assert row["datacontenttype"] == "application/avro"
    assert base64.b64decode(row["data_base64"]) == b"\x80\x01avro"
    assert row["comexampleextension1"] == "value"


def test_content_type_must_be_an_rfc2046_media_type() -> None:
    """spec datacontenttype: "MUST adhere to the format specified in RFC 2046"."""
    error = rejected(record({**BINARY, "content-type": "xyz"}, b"x"))
    assert error == (
        "header 'content-type' (attribute 'datacontenttype'): 'xyz' is not an RFC 2046 media type "
        "(type/subtype, then ;name=value parameters)"
    )


def test_without_content_type_the_value_is_kept_as_bytes() -> None:
    """JSON 3.1.2 (current text): without datacontenttype no JSON is assumed; the value is the data."""
    headers = {name: value for name, value in BINARY.items() if name != "content-type"}
    row = journaled(record(headers, b'{ "xyz": 123 }'))
    assert base64.b64decode(row["data_base64"]) == b'{ "xyz": 123 }'
    assert "datacontenttype" not in row
    assert base64.b64decode(journaled(record(headers, b"\xff\x00"))["data_base64"]) == b"\xff\x00"


def test_a_record_without_a_value_is_an_event_without_data() -> None:
    """3.2.2 (current text): "the Kafka representation of a CloudEvent with no data is a Kafka message
    with no value"."""
    row = journaled(record(BINARY, b""))
    assert "data" not in row and "data_base64" not in row


def test_json_data_is_parsed_for_any_json_subtype() -> None:
    """JSON 3.1 via 3.2.1: a */json or */*+json content type (any case) declares JSON data."""
    for content_type in ("application/json", "text/json", "application/vnd.example+json", "Application/JSON"):
        assert journaled(record({**BINARY, "content-type": content_type}, b"[1.5]"))["data"] == [1.5]
    error = rejected(record({**BINARY, "content-type": "application/json"}, b"{not json"))
    assert error.startswith("body is not valid JSON")


def test_header_values_are_taken_as_they_are() -> None:
    """3.2.4.2: a header value is the attribute's Kafka representation: no HTTP percent-decoding or
    quote removal (those are HTTP binding rules)."""
    row = journaled(record({**BINARY, "ce_subject": '"a%20b"'}, b""))
    assert row["subject"] == '"a%20b"'


def test_attributes_from_headers_keep_the_spec_rules() -> None:
    """spec REQUIRED attributes, specversion, naming and String rules, as ce_ headers carry them."""
    cases: dict[str, tuple[str | None, str]] = {
        "ce_type": (None, "missing required attribute 'type'"),
        "ce_specversion": ("0.3", "specversion '0.3' is not supported"),
        "ce_source": ("my context", "attribute 'source' is 'my context', not an RFC 3986 URI-reference"),
        "ce_dataschema": ("/relative", "attribute 'dataschema' is '/relative', not an absolute URI"),
        "ce_time": ("2018-04-05", "header 'ce_time' is not an RFC 3339 timestamp"),
        "ce_subject": ("a\u0085b", "attribute 'subject' holds U+0085"),
        "ce_com_example": ("v", "extension attribute 'com_example' is not a valid name"),
        "ce_data": ("v", "the attribute name 'data' is reserved"),
    }
    for header, (value, reason) in cases.items():
        headers = dict(BINARY)
        if value is None:
            del headers[header]
        else:
            headers[header] = value
        assert reason in rejected(record(headers, b"")), header


# -- 3.3: structured content mode ------------------------------------------------------------------


def test_structured_mode_without_a_content_type_header() -> None:
    """3.3.1: "If present, the ... content-type MUST be set to the media type of an event format"; a
    record without headers (Kafka 0.10, which MUST use structured mode) is a structured event."""
    row = journaled(record({}, orjson.dumps(structured())))
    assert (row["id"], row["data"]) == ("C234-1234-1234", {"appinfoA": "abc"})


def test_structured_events_keep_the_type_system() -> None:
    """spec Type System and JSON 2.2, in a structured record: Integer is signed 32 bits without a
    fraction; datacontenttype is an RFC 2046 media type; null is unset."""

    def reason(**changes: Any) -> str:
        return rejected(record({"content-type": CE_JSON}, orjson.dumps(structured(**changes))))

    assert "'comexampleothervalue' is 2.5: a CloudEvents Integer has no fraction" in reason(
        comexampleothervalue=2.5
    )
    assert "outside the CloudEvents Integer range" in reason(comexampleothervalue=2**31)
    assert "'datacontenttype': 'xyz' is not an RFC 2046 media type" in reason(datacontenttype="xyz")
    assert reason(id=None) == "missing required attribute 'id'"
    row = journaled(
        record({"content-type": CE_JSON}, orjson.dumps(structured(comexampleothervalue=-(2**31))))
    )
    assert row["comexampleothervalue"] == -(2**31)


# -- over a real broker ----------------------------------------------------------------------------


async def test_over_a_broker_valid_records_are_journaled_and_bad_ones_rejected_with_the_reason(
    broker: Broker,
    producer: aiokafka.AIOKafkaProducer,
    start_daemon: Callable[..., Awaitable[app.Daemon]],
) -> None:
    """Both modes through the real consumer: binary without content-type keeps the bytes (JSON
    3.1.2), structured is chosen case-insensitively (3); a ce_ header that is not UTF-8 (3.2.3), a
    fraction in an Integer, a content-type that is no media type and an attribute sent twice (current
    spec: "Each context attribute MUST only appear at most once") are rejected with the reason."""
    await create_topic(broker.bootstrap, "ce")
    untyped = [(name, value.encode()) for name, value in BINARY.items() if name != "content-type"]
    records = [
        (b"tenant-7", b'{ "xyz": 123 }', untyped),
        (None, orjson.dumps(structured()), [("content-type", b"Application/CloudEvents+JSON")]),
        (None, b"", [*untyped, ("ce_subject", b"caf\xe9")]),
        (None, orjson.dumps(structured(id="f", x=1.5)), [("content-type", CE_JSON.encode())]),
        (None, b"x", [*untyped, ("content-type", b"xyz")]),
        (None, b"", [*untyped, ("CE_ID", b"other")]),
    ]
    await produce(producer, "ce", records)
    daemon = await start_daemon(kafka_config(broker.bootstrap, [{"name": "ce", "format": "cloudevents"}]))

    async def all_done() -> bool:
        offsets = await committed(broker.bootstrap, "glue-test", "ce")
        return offsets[0] == len(records)

    await wait_for(all_done, what="every record committed")
    rows = {row.id: orjson.loads(row.cloudevent) for row in await daemon.journal.list()}
    assert sorted(rows) == ["1234-1234-1234", "C234-1234-1234"]
    binary = rows["1234-1234-1234"]
    assert base64.b64decode(binary["data_base64"]) == b'{ "xyz": 123 }'
    assert "datacontenttype" not in binary and binary["partitionkey"] == "tenant-7"
    assert rows["C234-1234-1234"]["data"] == {"appinfoA": "abc"}
    reasons = [r.reason for r in sorted(await daemon.journal.rejected(), key=lambda r: r.delivery_id)]
    assert reasons == [
        "header 'ce_subject' is not valid UTF-8 (Kafka binding 3.2.3)",
        "attribute 'x' is 1.5: a CloudEvents Integer has no fraction or exponent (send a whole number, "
        "or a string)",
        "header 'content-type' (attribute 'datacontenttype'): 'xyz' is not an RFC 2046 media type "
        "(type/subtype, then ;name=value parameters)",
        "header 'ce_id' appears more than once: an attribute is sent at most once",
    ]
