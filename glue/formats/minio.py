"""MinIO bucket notifications: webhook and Kafka targets, and the ListenBucketNotification stream.

Targets send ``{"EventName", "Key", "Records": [one record]}``; a listen-stream line is
``{"Records": [...]}`` (``{"Records": null}`` is a keep-alive). One CloudEvent per record:

- ``type``: ``minio.`` + the record's ``eventName`` without ``s3:`` (``minio.ObjectCreated:Put``);
- ``source``: ``minio:<bucket>``; ``subject``: the object key, unescaped;
- ``id``: a digest of (bucket, key, eventName, versionId) and what tells one event from another (below);
- ``data``: the fields rules want (bucket, key, size, eTag, versionId, sequencer, requestId, contentType,
  userMetadata, eventName, eventTime) plus ``record``, the record as sent; ``time``: ``eventTime``.

What tells events apart (minio ``cmd/event-notification.go``, ``eventArgs.ToEvent``). MinIO builds a
record twice, once for listeners and once for its targets, each with its own clock reading for
``eventTime``; the ``sequencer`` is the object's ModTime in ns (``%X``), that clock reading only when
ModTime is zero. So the sequencer is not per event: a second PutTagging, DeleteTagging, GET or restore
of one object version carries the sequencer of the first, and where ModTime is zero (DeleteObjects,
PutRetention, PutLegalHold, ObjectRemoved:NoOP) the two records of one event carry different
sequencers and times. What is per event and the same in both records is ``responseElements``
``x-amz-request-id``, the request's id (``%X`` of the time the request arrived, in ns, set in
``cmd/generic-handlers.go``; ``cmd/api-headers.go`` mustGetRequestID), with ``x-amz-id-2``, the node that
served it: both are copied from the response headers (``extractRespElements``) into every record of the
request. Events MinIO makes itself (lifecycle expiry and transition, replication, scanner) have no
request; for them the identity takes the sequencer and ``eventTime``, as they are the only fields
that differ between two such events (a redelivery of one record keeps both). One exception: where the
sequencer is the record's own clock reading (it names the instant ``eventTime`` shows, so ModTime was
zero: a lifecycle expiry, ``cmd/bucket-lifecycle.go`` and ``cmd/object-handlers-common.go``) of a
named version, that version's removal happens once, and its identity is the version alone, the same
on every path. Replication events on a version may repeat (``cmd/bucket-replication.go``): they keep
the time.

Targets escape the key with Go's ``url.QueryEscape`` (``+`` for space); the listen stream does not
(minio ``cmd/event-notification.go``: ``ToEvent(escape)``), hence ``escaped`` below.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from typing import Any

from glue import events
from glue.formats import _common, base

__all__ = ["LISTEN_TRANSPORT", "decode", "events_from_records"]

#: The transport name of the listen-stream source; its keys are not escaped.
LISTEN_TRANSPORT = "minio-listen"

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
#: Events that remove a version: each happens once per version (replication events may repeat).
_REMOVALS = ("s3:ObjectRemoved:", "s3:LifecycleDelMarkerExpiration:")


def _optional_str(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise base.DecodeError(f"'{name}' must be a string, got {_common.kind(value)}")


def _identity(
    bucket: str,
    key: str,
    event_name: str,
    version_id: str | None,
    sequencer: str | None,
    request_id: str | None,
    node_id: str | None,
    event_time: Any,
) -> str:
    """The event's identity (the module docstring says why these parts)."""
    if request_id:
        return events.digest(bucket, key, event_name, version_id or "", "request", request_id, node_id or "")
    if version_id and event_name.startswith(_REMOVALS) and _clock_reading(sequencer, event_time):
        return events.digest(bucket, key, event_name, version_id, "version")
    return events.digest(bucket, key, event_name, version_id or "", sequencer or "", event_time)


def _clock_reading(sequencer: str | None, event_time: Any) -> bool:
    """Whether the sequencer (``%X`` of UnixNano) is the instant ``eventTime`` shows, to the
    millisecond (``event.AMZTimeFormat``): the record's own clock reading, ModTime being zero."""
    if not sequencer or not isinstance(event_time, str):
        return False
    try:
        instant = _EPOCH + dt.timedelta(milliseconds=int(sequencer, 16) // 1_000_000)
    except (ValueError, OverflowError):
        return False
    return instant.strftime("%Y-%m-%dT%H:%M:%S.") + f"{instant.microsecond // 1000:03d}Z" == event_time


def _request(record: dict[str, Any]) -> tuple[str | None, str | None]:
    """(x-amz-request-id, x-amz-id-2) of the record's responseElements; None where absent or empty."""
    elements = record.get("responseElements")
    if elements is None:
        return None, None
    if not isinstance(elements, dict):
        raise base.DecodeError(f"'responseElements' must be an object, got {_common.kind(elements)}")
    request_id = _optional_str(elements.get("x-amz-request-id"), "responseElements.x-amz-request-id")
    node_id = _optional_str(elements.get("x-amz-id-2"), "responseElements.x-amz-id-2")
    return request_id or None, node_id or None


def _event(record: Any, escaped: bool) -> events.CloudEvent:
    if not isinstance(record, dict):
        raise base.DecodeError(f"a record must be a JSON object, got {_common.kind(record)}")
    event_name = record.get("eventName")
    if not isinstance(event_name, str) or not event_name:
        raise base.DecodeError("missing 'eventName'")
    bucket = _common.path(record, "s3", "bucket", "name")
    if not isinstance(bucket, str) or not bucket:
        raise base.DecodeError("missing 's3.bucket.name'")
    obj = _common.path(record, "s3", "object")
    if not isinstance(obj, dict):
        raise base.DecodeError("missing 's3.object'")
    raw_key = obj.get("key")
    if not isinstance(raw_key, str):
        raise base.DecodeError(f"'s3.object.key' must be a string, got {_common.kind(raw_key)}")
    key = urllib.parse.unquote_plus(raw_key) if escaped and ("%" in raw_key or "+" in raw_key) else raw_key
    version_id = _optional_str(obj.get("versionId"), "s3.object.versionId")
    sequencer = _optional_str(obj.get("sequencer"), "s3.object.sequencer")
    request_id, node_id = _request(record)
    event_time = record.get("eventTime")
    time = _common.parse_time(event_time, "'eventTime'")
    if time.tzinfo is None:
        time = time.replace(tzinfo=dt.UTC)  # MinIO writes UTC ("...Z"); be lenient with relays
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": _identity(bucket, key, event_name, version_id, sequencer, request_id, node_id, event_time),
        "source": f"minio:{bucket}",
        "type": f"minio.{event_name.removeprefix('s3:')}",
        "time": time,
        "datacontenttype": _common.JSON,
    }
    if key:
        # S3 keys may hold control characters, which CloudEvents strings may not: the subject
        # percent-encodes them, the data keeps the key as it is.
        attributes["subject"] = (
            _common.DISALLOWED.sub(
                lambda found: urllib.parse.quote(found.group(), errors="surrogatepass"), key
            )
            if _common.disallowed(key)
            else key
        )
    data = {
        "bucket": bucket,
        "key": key,
        "size": obj.get("size"),
        "eTag": obj.get("eTag"),
        "versionId": version_id,
        "sequencer": sequencer,
        "requestId": request_id,
        "contentType": obj.get("contentType"),
        "userMetadata": obj.get("userMetadata"),
        "eventName": event_name,
        "eventTime": event_time,
        "record": record,
    }
    return _common.cloudevent(attributes, data)


def events_from_records(records: Any, *, escaped: bool) -> list[events.CloudEvent]:
    """One CloudEvent per S3 event record. ``escaped``: keys are query-escaped (targets, not listen).

    Raises DecodeError naming the record for a malformed one; ``None`` or ``[]`` gives no event.
    """
    if records is None:
        return []
    if not isinstance(records, list):
        raise base.DecodeError(f"'Records' must be an array, got {_common.kind(records)}")
    result = []
    for index, record in enumerate(records):
        try:
            result.append(_event(record, escaped))
        except base.DecodeError as exc:
            raise base.DecodeError(f"record {index}: {exc.reason}") from None
    return result


@base.register("minio")
def decode(delivery: events.Delivery, options: base.Options) -> list[events.CloudEvent]:
    mt = _common.media_type(delivery.headers)
    listen = delivery.transport == LISTEN_TRANSPORT
    if not _common.is_json(mt) and not (listen and mt in ("text/event-stream", "application/x-ndjson")):
        raise base.UnsupportedMediaType(
            f"content type {_common.clip(mt)} is not a MinIO notification: expected {_common.JSON}"
        )
    body = _common.load_object(delivery.body)
    if "Records" not in body:
        raise base.DecodeError("missing 'Records': not a MinIO bucket notification")
    result = events_from_records(body["Records"], escaped=not listen)
    if not result:
        raise base.DecodeError("no records (a keep-alive line carries no event)")
    return result
