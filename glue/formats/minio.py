"""MinIO bucket notifications: webhook and Kafka targets, and the ListenBucketNotification stream.

Targets send ``{"EventName", "Key", "Records": [one record]}``; a listen-stream line is
``{"Records": [...]}`` (``{"Records": null}`` is a keep-alive). One CloudEvent per record:

- ``type``: ``minio.`` + the record's ``eventName`` without ``s3:`` (``minio.ObjectCreated:Put``);
- ``source``: ``minio:<bucket>``; ``subject``: the object key, unescaped;
- ``id``: a digest of (bucket, key, eventName, versionId, sequencer), so one object event seen
  through a webhook, Kafka and the listen stream has one identity;
- ``data``: the fields rules want (bucket, key, size, eTag, versionId, sequencer, contentType,
  userMetadata, eventName, eventTime) plus ``record``, the record as sent; ``time``: ``eventTime``.

Targets escape the key with Go's ``url.QueryEscape`` (``+`` for space); the listen stream does not
(minio ``cmd/event-notification.go``: ``ToEvent(escape)``), hence ``escaped`` below.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from typing import Any

from glue import events, formats
from glue.formats import _common

__all__ = ["LISTEN_TRANSPORT", "decode", "events_from_records"]

#: The transport name of the listen-stream source; its keys are not escaped.
LISTEN_TRANSPORT = "minio-listen"


def _optional_str(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise formats.DecodeError(f"'{name}' must be a string, got {_common.kind(value)}")


def _event(record: Any, escaped: bool) -> events.CloudEvent:
    if not isinstance(record, dict):
        raise formats.DecodeError(f"a record must be a JSON object, got {_common.kind(record)}")
    event_name = record.get("eventName")
    if not isinstance(event_name, str) or not event_name:
        raise formats.DecodeError("missing 'eventName'")
    bucket = _common.path(record, "s3", "bucket", "name")
    if not isinstance(bucket, str) or not bucket:
        raise formats.DecodeError("missing 's3.bucket.name'")
    obj = _common.path(record, "s3", "object")
    if not isinstance(obj, dict):
        raise formats.DecodeError("missing 's3.object'")
    raw_key = obj.get("key")
    if not isinstance(raw_key, str):
        raise formats.DecodeError(f"'s3.object.key' must be a string, got {_common.kind(raw_key)}")
    key = urllib.parse.unquote_plus(raw_key) if escaped and ("%" in raw_key or "+" in raw_key) else raw_key
    version_id = _optional_str(obj.get("versionId"), "s3.object.versionId")
    sequencer = _optional_str(obj.get("sequencer"), "s3.object.sequencer")
    event_time = record.get("eventTime")
    time = _common.parse_time(event_time, "'eventTime'")
    if time.tzinfo is None:
        time = time.replace(tzinfo=dt.UTC)  # MinIO writes UTC ("...Z"); be lenient with relays
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": events.digest(bucket, key, event_name, version_id or "", sequencer or ""),
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
        raise formats.DecodeError(f"'Records' must be an array, got {_common.kind(records)}")
    result = []
    for index, record in enumerate(records):
        try:
            result.append(_event(record, escaped))
        except formats.DecodeError as exc:
            raise formats.DecodeError(f"record {index}: {exc.reason}") from None
    return result


@formats.register("minio")
def decode(delivery: events.Delivery, options: formats.Options) -> list[events.CloudEvent]:
    mt = _common.media_type(delivery.headers)
    listen = delivery.transport == LISTEN_TRANSPORT
    if not _common.is_json(mt) and not (listen and mt in ("text/event-stream", "application/x-ndjson")):
        raise formats.UnsupportedMediaType(
            f"content type {_common.clip(mt)} is not a MinIO notification: expected {_common.JSON}"
        )
    body = _common.load_object(delivery.body)
    if "Records" not in body:
        raise formats.DecodeError("missing 'Records': not a MinIO bucket notification")
    result = events_from_records(body["Records"], escaped=not listen)
    if not result:
        raise formats.DecodeError("no records (a keep-alive line carries no event)")
    return result
