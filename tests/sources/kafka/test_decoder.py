"""The cloudevents decoder on Kafka records: the CloudEvents Kafka binding (cloudevents/spec,
bindings/kafka-protocol-binding.md): modes, key mapping, and clear reasons for bad records. Bad input
only ever raises DecodeError."""

from __future__ import annotations

import hypothesis
import orjson
import pytest
from hypothesis import strategies as st

from glue import events, formats

BINARY = {
    "ce_specversion": "1.0",
    "ce_id": "42",
    "ce_source": "/tenants/a",
    "ce_type": "com.example.thing.changed",
    "ce_time": "2026-11-27T10:00:00Z",
    "ce_tenant": "a",
    "content-type": "application/json",
}


def record(headers: dict[str, str], body: bytes, key: bytes | None = None) -> events.Delivery:
    return events.Delivery("kafka", "things", "cloudevents", headers, body, key=key)


def decode(delivery: events.Delivery) -> events.CloudEvent:
    (event,) = formats.decode(delivery)
    return event


def test_binary_mode_maps_headers_to_attributes_and_the_key_to_partitionkey() -> None:
    event = decode(record(BINARY, b'{"size": 3}', key=b"thing-9"))
    assert events.identity(event) == "/tenants/a 42"
    assert event.get_type() == "com.example.thing.changed"
    time = event.get_time()
    assert time is not None and time.isoformat() == "2026-11-27T10:00:00+00:00"
    assert event.get_datacontenttype() == "application/json"
    assert event.get_extension("tenant") == "a"
    assert event.get_extension("partitionkey") == "thing-9"
    assert event.get_data() == {"size": 3}


def test_binary_mode_keeps_non_json_data_as_bytes() -> None:
    headers = {**BINARY, "content-type": "application/octet-stream"}
    assert decode(record(headers, b"\x00\x01\xff")).get_data() == b"\x00\x01\xff"


def test_structured_mode_is_chosen_by_content_type_even_with_ce_headers() -> None:
    document = {"specversion": "1.0", "id": "s-1", "source": "/s", "type": "t", "data": {"x": 1}}
    # The binding lets a structured record carry ce_ headers too; the value is authoritative.
    headers = {"content-type": "application/cloudevents+json; charset=UTF-8", "ce_id": "other"}
    event = decode(record(headers, orjson.dumps(document), key=b"k"))
    assert events.identity(event) == "/s s-1"
    assert event.get_data() == {"x": 1}
    assert event.get_extension("partitionkey") == "k"


def test_a_key_that_is_not_utf8_is_not_mapped() -> None:
    event = decode(record(BINARY, b"{}", key=b"\xff\xfe"))
    assert event.get_extension("partitionkey") is None


@pytest.mark.parametrize(
    ("headers", "body", "status", "reason"),
    [
        ({"content-type": "application/json"}, b"{}", 415, "no ce_ headers"),
        ({k: v for k, v in BINARY.items() if k != "ce_id"}, b"{}", 400, "missing required attribute 'id'"),
        ({**BINARY, "ce_specversion": "0.3"}, b"{}", 400, "specversion"),
        ({**BINARY, "ce_time": "yesterday"}, b"{}", 400, "'ce_time' is not an RFC 3339 timestamp"),
        ({"content-type": "application/cloudevents+json"}, b"{not json", 400, "not valid JSON"),
        ({"content-type": "application/cloudevents+json"}, b"[1, 2]", 400, "JSON object"),
        (
            {"content-type": "application/cloudevents+json"},
            b'{"specversion": "1.0", "id": "1"}',
            400,
            "source",
        ),
        ({"content-type": "application/cloudevents+avro"}, b"\x00", 415, "is not supported"),
        ({"content-type": "application/cloudevents-batch+json"}, b"[]", 415, "batch"),
    ],
)
def test_bad_records_get_a_reason(headers: dict[str, str], body: bytes, status: int, reason: str) -> None:
    with pytest.raises(formats.DecodeError) as caught:
        formats.decode(record(headers, body))
    assert caught.value.status == status
    assert reason in caught.value.reason


header_names = st.sampled_from(
    ["ce_id", "ce_source", "ce_type", "ce_specversion", "ce_time", "content-type", "ce_x"]
)
values = st.one_of(
    st.text(max_size=20), st.sampled_from(["1.0", "application/json", "application/cloudevents+json"])
)


@hypothesis.given(
    headers=st.dictionaries(header_names, values, max_size=7),
    body=st.one_of(
        st.binary(max_size=64), st.builds(orjson.dumps, st.dictionaries(st.text(max_size=8), values))
    ),
    key=st.one_of(st.none(), st.binary(max_size=8)),
)
@hypothesis.settings(max_examples=100, deadline=None)
def test_arbitrary_records_decode_or_raise_decode_error(
    headers: dict[str, str], body: bytes, key: bytes | None
) -> None:
    try:
        result = formats.decode(record(headers, body, key))
    except formats.DecodeError:
        return
    assert len(result) == 1
    events.to_json(result[0])  # what the journal stores


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.text(max_size=10)
    | st.sampled_from(["1.0", "2026-11-27T10:00:00Z"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
attribute_names = st.sampled_from(
    ["specversion", "id", "source", "type", "time", "data", "data_base64", "datacontenttype", "subject", "x"]
)


@hypothesis.given(document=st.dictionaries(attribute_names, json_values, max_size=10))
@hypothesis.settings(max_examples=100, deadline=None)
def test_arbitrary_structured_events_decode_or_raise_decode_error(document: dict[str, object]) -> None:
    headers = {"content-type": "application/cloudevents+json"}
    try:
        result = formats.decode(record(headers, orjson.dumps(document)))
    except formats.DecodeError:
        return
    events.to_json(result[0])
