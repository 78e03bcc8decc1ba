"""CloudEvents 1.0 in every content mode: binary, structured and batch, over HTTP and Kafka.

Attributes are kept exactly as sent; ``(source, id)`` is the identity. The SDK's Kafka binding
(``cloudevents.core.bindings``) reads Kafka headers; HTTP binary mode is read here by the rules of its
HTTP binding; :class:`glue.formats._common.Format` parses the JSON with orjson and reports bad input
as DecodeError.

- Structured: ``Content-Type: application/cloudevents+json``, the event is the JSON body.
- Batch: ``application/cloudevents-batch+json``, a JSON array of structured events; an empty array
  is a valid batch that carries no event.
- Binary: ``ce-*`` headers (``ce_*`` on Kafka) carry the attributes, Content-Type the data's type.
  HTTP header values are unescaped as the HTTP binding (section 3.1.3.2) says: double-quoted strings
  first, then one round of percent-decoding whose bytes must be UTF-8. Without a Content-Type the data
  is kept as the bytes sent: no content type is inferred.
- No Content-Type and no ``ce-`` headers: the body is read as a structured event.

An event sent without ``time`` is dated at its arrival (the SDK requires a time).
"""

from __future__ import annotations

import typing
import urllib.parse
from typing import Any

from cloudevents.core.bindings import kafka as ce_kafka

from glue import events
from glue.formats import _common, base

__all__ = ["decode", "from_message"]


def _batch(delivery: events.Delivery, build: _common.Factory) -> list[events.CloudEvent]:
    value = _common.load_json(delivery.body)
    if not isinstance(value, list):
        raise base.DecodeError(f"a CloudEvents batch must be a JSON array, got {_common.kind(value)}")
    result = []
    for index, item in enumerate(value):
        try:
            result.append(_common.structured(item, build))
        except base.DecodeError as exc:
            raise base.DecodeError(f"event {index}: {exc.reason}") from None
    return result


def _check_time(value: str | None, header: str) -> None:
    """Hold a binary-mode time header to RFC 3339 before the binding parses it (more leniently)."""
    if value is not None:
        _common.parse_time(value, f"header {header!r}")


def _check_specversion(value: str | None) -> None:
    """Refuse another CloudEvents version before its body is read by the rules of 1.0."""
    if value is not None and value != "1.0":
        raise base.DecodeError(f"specversion {_common.clip(value)} is not supported: send CloudEvents 1.0")


def _check_content_type(value: str | None, header: str) -> None:
    """Binary mode: the content type header is the ``datacontenttype`` attribute (RFC 2046)."""
    if value is not None:
        problem = _common.media_type_problem(value)
        if problem:
            raise base.DecodeError(f"header {header!r} (attribute 'datacontenttype'): {problem}")


def _kafka(delivery: events.Delivery, build: _common.Factory, binary: bool) -> events.CloudEvent:
    if binary:
        _check_specversion(delivery.headers.get("ce_specversion"))
        _check_time(delivery.headers.get("ce_time"), "ce_time")
        _check_content_type(delivery.headers.get("content-type"), "content-type")
    key = delivery.key
    if key is not None:
        try:
            key.decode("utf-8")
        except UnicodeDecodeError:
            key = None  # a binary key (a hash, say) cannot be the 'partitionkey' attribute: not mapped
    message = ce_kafka.KafkaMessage(
        headers={name: value.encode("utf-8", "replace") for name, value in delivery.headers.items()},
        key=key,
        value=delivery.body,
    )
    try:
        if binary:
            event = ce_kafka.from_binary(message, _common.FORMAT, build)
        else:
            event = ce_kafka.from_structured(message, _common.FORMAT, build)
    except (ValueError, OverflowError):
        # The binding's own parsing: ce_time (checked above, so not expected) and the key's UTF-8.
        raise base.DecodeError("header 'ce_time' is not an RFC 3339 timestamp") from None
    return typing.cast(events.CloudEvent, event)  # built by our factory


def _unquote(header: str, value: str) -> str:
    """RFC 7230 section 3.2.6: the value with each double-quoted string replaced by its content
    (backslash escapes resolved); text outside quotes is kept as it is."""
    out = []
    quoted = escaped = False
    for char in value:
        if escaped:
            out.append(char)
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        else:
            out.append(char)
    if quoted:
        raise base.DecodeError(f"header {header!r} opens a double-quoted string and does not close it")
    return "".join(out)


def _header_value(header: str, value: str) -> str:
    """HTTP binding 3.1.3.2, receiving: unescape double-quoted strings, then one round of
    percent-decoding; percent-encoded bytes that are not UTF-8 (overlong forms, say) are refused."""
    if '"' in value:
        value = _unquote(header, value)
    if "%" in value:
        try:
            value = urllib.parse.unquote(value, errors="strict")
        except UnicodeDecodeError:
            raise base.DecodeError(
                f"header {header!r} (attribute {header[3:]!r}) percent-encodes bytes that are not valid UTF-8"
            ) from None
    return value


def _http_binary(delivery: events.Delivery, build: _common.Factory) -> events.CloudEvent | None:
    """Binary mode as the HTTP binding reads it (``ce-`` header values unescaped, Content-Type as
    ``datacontenttype``, the body read by the format), in one pass over headers that are lower case
    already: this is the busiest decoder of the intake. None without ``ce-`` headers."""
    attributes: dict[str, Any] = {}
    content_type = None
    for name, value in delivery.headers.items():
        if name.startswith("ce-"):
            # Printable ASCII without quotes or percent signs (nearly every value) is taken as it is.
            attributes[name[3:]] = (
                value if "%" not in value and '"' not in value else _header_value(name, value)
            )
        elif name == "content-type":
            content_type = value
    if not attributes:
        return None
    if "datacontenttype" in attributes:
        raise base.DecodeError(
            "header 'ce-datacontenttype' must not be sent: in binary mode the Content-Type header "
            "is the 'datacontenttype' attribute (HTTP binding 3.1.1)"
        )
    if content_type is not None:
        if content_type not in _common.ACCEPTED_MEDIA_TYPES:
            _check_content_type(content_type, "Content-Type")
        attributes["datacontenttype"] = content_type
    _check_specversion(attributes.get("specversion"))
    if "time" in attributes:
        attributes["time"] = _common.parse_time(attributes["time"], "header 'ce-time'")
    return build(attributes, _common.FORMAT.read_data(delivery.body, content_type))


def from_message(delivery: events.Delivery) -> list[events.CloudEvent] | None:
    """The CloudEvents a delivery carries in any content mode; None if it is not a CloudEvents message.

    A message is a CloudEvent when its Content-Type is a CloudEvents JSON type or when it has
    ``ce-`` headers (``ce_`` for Kafka). Other formats (argo, harbor) fall back on their own shapes.
    """
    mt = _common.media_type(delivery.headers)
    build = _common.factory(delivery)
    kafka = delivery.transport == "kafka" or delivery.key is not None
    if mt == _common.CE_BATCH:
        if kafka:
            raise base.UnsupportedMediaType(
                f"{_common.CE_BATCH} is an HTTP mode; the Kafka binding carries one event per record"
            )
        return _batch(delivery, build)
    if mt == _common.CE_JSON:
        if kafka:
            return [_kafka(delivery, build, binary=False)]
        return [_common.structured(_common.load_json(delivery.body), build)]
    if mt is not None and mt.startswith("application/cloudevents"):
        raise base.UnsupportedMediaType(
            f"content type {_common.clip(mt)} is not supported: CloudEvents are taken as "
            f"{_common.CE_JSON}, {_common.CE_BATCH} or in binary mode"
        )
    if not kafka:
        event = _http_binary(delivery, build)
        return [event] if event is not None else None
    if any(name.startswith("ce_") for name in delivery.headers):
        return [_kafka(delivery, build, binary=True)]
    return None


@base.register("cloudevents")
def decode(delivery: events.Delivery, options: base.Options) -> list[events.CloudEvent]:
    found = from_message(delivery)
    if found is not None:
        return found
    mt = _common.media_type(delivery.headers)
    if mt is None:
        return [_common.structured(_common.load_json(delivery.body), _common.factory(delivery))]
    if delivery.transport == "kafka" or delivery.key is not None:
        raise base.UnsupportedMediaType(
            f"content type {_common.clip(mt)} and no ce_ headers: not a CloudEvent: send "
            f"{_common.CE_JSON}, or binary mode with the ce_specversion, ce_id, ce_source and ce_type headers"
        )
    raise base.UnsupportedMediaType(
        f"content type {_common.clip(mt)} without ce- headers is not a CloudEvent: send "
        f"{_common.CE_JSON}, {_common.CE_BATCH}, or binary mode with the ce-specversion, ce-id, "
        "ce-source and ce-type headers"
    )
