"""MinIO bucket notifications: target envelope (webhook, Kafka) and the listen stream
(reference formats.md section 3: internal/event/event.go, target/webhook.go, target/kafka.go)."""

from __future__ import annotations

import copy
import datetime as dt
import urllib.parse
from collections.abc import Callable
from typing import Any

import pytest

from glue import events
from glue.formats import minio
from tests import support
from tests.formats import payloads as p
from tests.formats.helpers import decode, rejected, roundtrip

JSON = {"content-type": "application/json"}


def _listen(record_line: bytes) -> events.Delivery:
    return p.delivery("minio", record_line, {}, transport=minio.LISTEN_TRANSPORT)


def test_webhook_body_decodes_to_one_event_per_record() -> None:
    record = p.minio_record("models/llama/weights.safetensors")
    [event] = decode(p.delivery("minio", p.minio_envelope(record), JSON))
    assert event.get_type() == "minio.ObjectCreated:Put"
    assert event.get_source() == "minio:models"
    assert event.get_subject() == "models/llama/weights.safetensors"
    assert event.get_id() == events.digest(
        "models",
        "models/llama/weights.safetensors",
        "s3:ObjectCreated:Put",
        "1",
        "request",
        "187C3D4A5B6C7D8E",
        "dd9025bab4ad464b049177c95eb6ebf374d3b3fd1af9251148b658df7ac2e3e8",
    )
    assert event.get_time() == dt.datetime(2025, 11, 28, 0, 1, 2, 345000, tzinfo=dt.UTC)
    data = event.get_data()
    assert isinstance(data, dict)
    assert {k: v for k, v in data.items() if k != "record"} == {
        "bucket": "models",
        "key": "models/llama/weights.safetensors",
        "size": 4_200_000,
        "eTag": "d41d8cd98f00b204e9800998ecf8427e",
        "versionId": "1",
        "sequencer": "187C3D4A5B6C7D8E",
        "requestId": "187C3D4A5B6C7D8E",
        "contentType": "application/octet-stream",
        "userMetadata": {"content-type": "application/octet-stream"},
        "eventName": "s3:ObjectCreated:Put",
        "eventTime": "2025-11-28T00:01:02.345Z",
    }
    assert data["record"] == record


def test_escaped_keys_are_decoded_on_targets() -> None:
    record = p.minio_record()
    record["s3"]["object"]["key"] = "Tile_%2B002+x"  # url.QueryEscape("Tile_+002 x")
    [event] = decode(p.delivery("minio", p.minio_envelope(record), JSON))
    assert event.get_subject() == "Tile_+002 x"
    assert support.json_data(event)["key"] == "Tile_+002 x"
    assert support.json_data(event)["record"]["s3"]["object"]["key"] == "Tile_%2B002+x"


def test_control_characters_of_a_key_are_percent_encoded_in_the_subject_only() -> None:
    record = p.minio_record()
    record["s3"]["object"]["key"] = "logs/a%0Ab%09c.txt"  # url.QueryEscape("logs/a\nb\tc.txt")
    [event] = decode(p.delivery("minio", p.minio_envelope(record), JSON))
    assert event.get_subject() == "logs/a%0Ab%09c.txt"  # a CloudEvents string holds no control character
    assert support.json_data(event)["key"] == "logs/a\nb\tc.txt"


def test_listen_stream_keys_are_taken_as_they_are() -> None:
    [event] = decode(_listen(p.minio_listen_line(p.minio_record("Tile_+002 x", escaped=False))))
    assert event.get_subject() == "Tile_+002 x"


def test_one_object_event_has_one_identity_on_every_path() -> None:
    key = "Tile_+002 x/100% done.obj"
    webhook = p.delivery("minio", p.minio_envelope(p.minio_record(key)), JSON)
    kafka = p.delivery(
        "minio", p.minio_envelope(p.minio_record(key)), {}, transport="kafka", key=f"models/{key}".encode()
    )
    listen = _listen(p.minio_listen_line(p.minio_record(key, escaped=False)))
    identities = {events.identity(e) for d in (webhook, kafka, listen) for e in decode(d)}
    assert len(identities) == 1


def test_versions_event_names_and_requests_are_part_of_the_identity() -> None:
    base = p.minio_record()
    variants = [
        base,
        p.minio_record(version_id="2"),
        p.minio_record(request_id="187C3D4A5B6C7D8F"),
        p.minio_record(event_name="s3:ObjectCreated:CompleteMultipartUpload"),
    ]
    identities = {
        events.identity(decode(p.delivery("minio", p.minio_envelope(r), JSON))[0]) for r in variants
    }
    assert len(identities) == 4


def _identity(record: dict[str, Any], *, path: str = "webhook") -> str:
    if path == "listen":
        listen = copy.deepcopy(record)
        listen["s3"]["object"]["key"] = urllib.parse.unquote_plus(listen["s3"]["object"]["key"])
        [event] = decode(_listen(p.minio_listen_line(listen)))
    else:
        [event] = decode(p.delivery("minio", p.minio_envelope(record), JSON))
    return events.identity(event)


@pytest.mark.parametrize(
    "event_name",
    [
        "s3:ObjectCreated:PutTagging",
        "s3:ObjectCreated:DeleteTagging",
        "s3:ObjectAccessed:Get",
        "s3:ObjectAccessed:Head",
        "s3:ObjectRestore:Post",
    ],
)
def test_two_requests_on_one_object_version_are_two_events(event_name: str) -> None:
    """MinIO's sequencer is the object's ModTime (cmd/event-notification.go ToEvent), which tagging,
    reads and restores leave as it was: two such events on one version share it and differ only in
    the request id (x-amz-request-id, per request, cmd/generic-handlers.go)."""
    first = p.minio_record(
        event_name=event_name, request_id="187C3D4A5B6C7D90", event_time="2025-11-28T00:01:03.000Z"
    )
    second = p.minio_record(
        event_name=event_name, request_id="187C3D4A9E0F1A2B", event_time="2025-11-28T00:01:09.500Z"
    )
    assert first["s3"]["object"]["sequencer"] == second["s3"]["object"]["sequencer"]
    assert _identity(first) != _identity(second)
    assert _identity(first) == _identity(copy.deepcopy(first))  # a redelivery of one event is one event


@pytest.mark.parametrize(
    "event_name",
    [
        "s3:ObjectRemoved:Delete",  # one of a multi-object DeleteObjects
        "s3:ObjectRemoved:NoOP",
        "s3:ObjectCreated:PutRetention",
        "s3:ObjectCreated:PutLegalHold",
    ],
)
def test_an_event_without_mod_time_has_one_identity_on_every_path(event_name: str) -> None:
    """Where the object info has no ModTime, ToEvent takes its own clock reading for sequencer and
    eventTime, once for listeners and once for targets (cmd/event-notification.go sendEvent, then
    EventNotifier.Send): the two records differ there and share the request's id."""
    target = p.minio_record(
        "models/a b+c.bin",
        event_name=event_name,
        sequencer="187C3D4A5B6C7D8E",
        event_time="2025-11-28T00:01:02.345Z",
    )
    listen = p.minio_record(
        "models/a b+c.bin",
        event_name=event_name,
        sequencer="187C3D4A5B6D0F11",
        event_time="2025-11-28T00:01:02.346Z",
    )
    assert _identity(target) == _identity(listen, path="listen")


def test_events_minio_makes_itself_are_told_apart_by_time() -> None:
    """Lifecycle, replication and scanner events come from no request: x-amz-request-id is empty
    (cmd/bucket-lifecycle.go, cmd/bucket-replication.go send no RespElements). Two failures to
    replicate one version share its ModTime sequencer and differ in eventTime; a redelivered record
    keeps both."""
    name = "s3:Replication:OperationFailedReplication"
    first = p.minio_record(event_name=name, request_id=None, event_time="2025-11-28T00:01:02.345Z")
    again = p.minio_record(event_name=name, request_id=None, event_time="2025-11-28T00:06:02.345Z")
    assert _identity(first) != _identity(again)
    assert _identity(first) == _identity(copy.deepcopy(first))


def test_removed_events_have_no_size_etag_or_metadata() -> None:
    record = p.minio_record("Tile_+002_+002.mtl", event_name="s3:ObjectRemoved:Delete", version_id=None)
    [event] = decode(p.delivery("minio", p.minio_envelope(record), JSON))
    assert event.get_type() == "minio.ObjectRemoved:Delete"
    data = event.get_data()
    assert isinstance(data, dict)
    assert (data["size"], data["eTag"], data["versionId"], data["userMetadata"]) == (None, None, None, None)
    assert data["key"] == "Tile_+002_+002.mtl"


def test_a_listen_line_may_carry_several_records() -> None:
    records = [p.minio_record(f"a/{n}", escaped=False) for n in range(3)]
    line = p.body({"Records": records})
    decoded = decode(_listen(line))
    assert [e.get_subject() for e in decoded] == ["a/0", "a/1", "a/2"]


def test_events_from_records_serves_other_sources() -> None:
    record = p.minio_record("a b", escaped=False)
    [event] = minio.events_from_records([record], escaped=False)
    assert event.get_subject() == "a b"
    assert minio.events_from_records(None, escaped=False) == []


def test_a_keep_alive_line_is_no_event() -> None:
    error = rejected(_listen(b'{"Records":null}\n'))
    assert error.status == 400
    assert "no records" in error.reason


def test_decoded_events_survive_the_journal_round_trip() -> None:
    [event] = decode(p.delivery("minio", p.minio_envelope(p.minio_record()), JSON))
    back = roundtrip(event)
    assert back.get_attributes() == event.get_attributes()
    assert back.get_data() == event.get_data()


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda r: r["s3"]["bucket"].pop("name"), "record 0: missing 's3.bucket.name'"),
        (lambda r: r.pop("eventName"), "record 0: missing 'eventName'"),
        (lambda r: r["s3"]["object"].update(key=5), "record 0: 's3.object.key' must be a string, got number"),
        (lambda r: r.update(eventTime="last tuesday"), "record 0: 'eventTime' is not an RFC 3339 timestamp"),
        (lambda r: r["s3"].pop("object"), "record 0: missing 's3.object'"),
    ],
)
def test_malformed_records_are_rejected_naming_the_record(
    mutate: Callable[[dict[str, Any]], object], reason: str
) -> None:
    record = p.minio_record()
    mutate(record)
    error = rejected(p.delivery("minio", {"EventName": "s3:ObjectCreated:Put", "Records": [record]}, JSON))
    assert error.status == 400
    assert error.reason.startswith(reason)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"EventName": "s3:ObjectCreated:Put", "Records": [', "body is not valid JSON"),
        (b'{"EventName": "s3:ObjectCreated:Put"}', "missing 'Records'"),
        (b'{"Records": {}}', "'Records' must be an array, got object"),
        (b" ", "body is empty"),
    ],
)
def test_malformed_bodies_are_rejected(raw: bytes, reason: str) -> None:
    error = rejected(p.delivery("minio", raw, JSON))
    assert error.status == 400
    assert error.reason.startswith(reason)


def test_event_stream_content_type_is_taken_only_from_the_listen_source() -> None:
    line = p.minio_listen_line(p.minio_record(escaped=False))
    headers = {"content-type": "text/event-stream"}
    assert decode(p.delivery("minio", line, headers, transport=minio.LISTEN_TRANSPORT))
    error = rejected(p.delivery("minio", line, headers))
    assert error.status == 415


def _clock(at: str) -> tuple[str, str]:
    """(sequencer, eventTime) of a record built at ``at`` for an object without ModTime: both from one
    clock reading (cmd/event-notification.go ToEvent), the sequencer to the nanosecond."""
    instant = dt.datetime.fromisoformat(at.replace("Z", "+00:00"))
    nanos = (instant - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1) * 1000 + 417
    return f"{nanos:X}", at


def test_a_lifecycle_expiry_of_a_version_has_one_identity_on_every_path() -> None:
    """ILM expiry sends ObjectInfo{Name, VersionID} (cmd/bucket-lifecycle.go, cmd/object-handlers-common.go):
    no ModTime, no request. The listen record and the target record each carry their own clock reading."""
    name, version = "s3:ObjectRemoved:Delete", "8f3a9c2e-1b7d-4e5f-a6c8-0d9e1f2a3b4c"
    seq_t, at_t = _clock("2025-11-28T00:01:02.345Z")
    seq_l, at_l = _clock("2025-11-28T00:01:02.346Z")
    target = p.minio_record(
        "models/a.bin", event_name=name, version_id=version, request_id=None, sequencer=seq_t, event_time=at_t
    )
    listen = p.minio_record(
        "models/a.bin", event_name=name, version_id=version, request_id=None, sequencer=seq_l, event_time=at_l
    )
    assert _identity(target) == _identity(listen, path="listen")
    other = p.minio_record(
        "models/a.bin", event_name=name, version_id="2", request_id=None, sequencer=seq_t, event_time=at_t
    )
    assert _identity(other) != _identity(target)


def test_a_lifecycle_expiry_without_a_version_is_told_apart_by_time() -> None:
    """Without a version, one key may be expired again after it is written again: time tells them apart."""
    name = "s3:ObjectRemoved:Delete"
    first = p.minio_record(
        "models/a.bin",
        event_name=name,
        version_id=None,
        request_id=None,
        sequencer=_clock("2025-11-28T00:01:02.345Z")[0],
        event_time="2025-11-28T00:01:02.345Z",
    )
    later = p.minio_record(
        "models/a.bin",
        event_name=name,
        version_id=None,
        request_id=None,
        sequencer=_clock("2025-11-29T00:01:02.345Z")[0],
        event_time="2025-11-29T00:01:02.345Z",
    )
    assert _identity(first) != _identity(later)


def test_a_repeated_replication_event_on_a_version_is_not_taken_for_a_removal() -> None:
    """cmd/bucket-replication.go sends OperationNotTracked with ObjectInfo{Name, VersionID} (no ModTime)
    each time a delete's replication cannot be tracked: two of them are two events."""
    name, version = "s3:Replication:OperationNotTracked", "8f3a9c2e-1b7d-4e5f-a6c8-0d9e1f2a3b4c"
    records = [
        p.minio_record(event_name=name, version_id=version, request_id=None, sequencer=seq, event_time=at)
        for seq, at in (_clock("2025-11-28T00:01:02.345Z"), _clock("2025-11-28T00:09:02.345Z"))
    ]
    assert _identity(records[0]) != _identity(records[1])
