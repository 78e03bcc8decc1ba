"""Argo Events' EventBus: the CloudEvent an EventSource publishes, and what it wraps.

An EventSource publishes one structured CloudEvent per event (argo-events
``pkg/eventsources/eventing.go``) on JetStream subject ``default.<eventSource>.<eventName>``
(``pkg/eventbus/jetstream/eventsource/source_conn.go``) or as the value of a Kafka record keyed
``<eventSource>.<eventName>`` (``pkg/eventbus/kafka/eventsource/source_conn.go``):

- attributes as sent: ``id`` (new for every dispatch), ``source`` = the EventSource name, ``subject``
  = the event name, ``type`` = the event-source type (``webhook``, ``gitlab``, ``minio``, ...);
- the data in ``data_base64`` (sdk-go's ``SetData`` with a byte slice), decoded here to JSON.

Decoder ``argo-eventbus`` keeps that event. Decoders ``argo-eventbus+gitlab``, ``+harbor`` and
``+minio`` unwrap what the EventSource wrapped (``pkg/eventsources/events/event-data.go``) and run it
through glue's own decoder of that producer, so the event and its identity are the producer's, as if it
had posted to glue: ``{"header"|"headers": {name: [values]}, "body": ...}`` (webhook and gitlab event
sources) is the delivery's headers and body; ``{"notification": [records]}`` (minio event source, read
from MinIO's listen API, keys not escaped) is a listen line.

Argo's header map carries every request header, credentials included: :func:`scrub` removes them from
a bus message before anything keeps it, and the decoders never put one in an event.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import re
from collections.abc import Iterable
from typing import Any, Final

import orjson

from glue import events
from glue.formats import _common, base
from glue.formats import minio as minio_format

__all__ = ["DECODER", "UNWRAPS", "Selection", "Selector", "decoder_name", "scrub"]

#: The decoder of the bus's CloudEvent as it is; ``<DECODER>+<unwrap>`` unwraps it.
DECODER: Final = "argo-eventbus"
#: Producers whose wrapped deliveries can be unwrapped (``unwrap:`` of an eventSources entry).
UNWRAPS: Final = ("gitlab", "harbor", "minio")
#: The header maps of Argo's webhook (``header``) and gitlab (``headers``) event-source data.
_HEADER_KEYS: Final = ("header", "headers")


def decoder_name(unwrap: str | None) -> str:
    """The decoder of bus messages with this ``unwrap`` (None: the bus's CloudEvent as it is)."""
    return DECODER if unwrap is None else f"{DECODER}+{unwrap}"


@dataclasses.dataclass(frozen=True, slots=True)
class Selection:
    """What an ``eventSources`` entry says about the messages it matches."""

    pattern: str  # "*", "<eventSource>" or "<eventSource>.<eventName>"
    decoder: str


class Selector:
    """The ``eventSources`` entries of a bus source, in order: the first that matches applies."""

    def __init__(self, entries: Iterable[tuple[str, str | None]]) -> None:
        self.entries = tuple(Selection(pattern, decoder_name(unwrap)) for pattern, unwrap in entries)
        self._cache: dict[tuple[str, str], Selection | None] = {}

    def select(self, event_source: str, event_name: str) -> Selection | None:
        """The entry for messages of this EventSource and event, or None when no entry takes them."""
        key = (event_source, event_name)
        try:
            return self._cache[key]
        except KeyError:
            pass
        found = None
        for entry in self.entries:
            if entry.pattern in ("*", event_source, f"{event_source}.{event_name}"):
                found = entry
                break
        if len(self._cache) < 10_000:  # EventSource and event names come from the cluster's specs
            self._cache[key] = found
        return found

    def subjects(self, prefix: str = "default") -> list[str]:
        """JetStream filter subjects covering every entry (one wildcard if an entry is ``*``)."""
        if any(entry.pattern == "*" for entry in self.entries):
            return [f"{prefix}.*.*"]
        subjects: list[str] = []
        for entry in self.entries:
            subject = f"{prefix}.{entry.pattern}" if "." in entry.pattern else f"{prefix}.{entry.pattern}.*"
            if subject not in subjects:
                subjects.append(subject)
        # An entry for one event of an EventSource also listed whole is covered by the latter.
        return [s for s in subjects if s.endswith(".*") or f"{s.rsplit('.', 1)[0]}.*" not in subjects]


def _without_credentials(value: Any) -> tuple[Any, bool]:
    """Event data with the credential headers of its header map removed; True if one was."""
    if not isinstance(value, dict):
        return value, False
    changed = False
    for key in _HEADER_KEYS:
        headers = value.get(key)
        if isinstance(headers, dict):
            kept = {name: v for name, v in headers.items() if name.lower() not in events.SENSITIVE_HEADERS}
            if len(kept) != len(headers):
                value = {**value, key: kept}
                changed = True
    return value, changed


#: In lower-cased JSON: a credential header's name as a string, or an escape of a character header
#: names are made of (a letter, a digit, '-'), which could spell one. Go escapes only '<', '>', '&'
#: and control characters, so Argo's messages hold no such escape.
_CREDENTIAL: Final = re.compile(
    b'"(?:'
    + b"|".join(re.escape(name.encode()) for name in sorted(events.SENSITIVE_HEADERS))
    + rb')"|\\u00(?:2d|3[0-9]|[46][1-9a-f]|[57][0-9a])'
)


def _may_hold_credentials(text: bytes) -> bool:
    """False when JSON ``text`` surely has no credential header in it: none's name appears, in any
    case, no escape could spell one, and it is ASCII (``str.lower`` folds a few other letters to
    ASCII ones, the Kelvin sign to 'k')."""
    return not text.isascii() or _CREDENTIAL.search(text.lower()) is not None


def scrub(body: bytes) -> bytes:
    """A bus message without the credentials its event's header map carries (the same bytes when it
    carries none, or when it is not a CloudEvent whose data can be read: the decoder rejects it).

    Nearly every message carries none: its data is searched for their names before it is parsed."""
    if b"data" not in body:
        return body
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(message, dict):
        return body
    encoded = message.get("data_base64")
    if isinstance(encoded, str):
        try:
            raw = base64.b64decode(encoded, validate=True)
            if not _may_hold_credentials(raw):
                return body
            data = orjson.loads(raw)
        except (binascii.Error, ValueError):
            return body
        data, changed = _without_credentials(data)
        if not changed:
            return body
        message["data_base64"] = base64.b64encode(orjson.dumps(data)).decode()
    else:
        if not _may_hold_credentials(body):
            return body
        data, changed = _without_credentials(message.get("data"))
        if not changed:
            return body
        message["data"] = data
    return orjson.dumps(message)


def _parts(attributes: dict[str, Any], data: Any) -> tuple[dict[str, Any], Any]:
    """What the JSON event format read, before an event is built of it."""
    return attributes, data


def _bus_event(delivery: events.Delivery) -> tuple[dict[str, Any], Any]:
    """The bus CloudEvent's attributes (checked when the event is built) and its data as JSON,
    credentials removed."""
    value = _common.load_json(delivery.body, "message")
    if not isinstance(value, dict) or "specversion" not in value:
        raise base.DecodeError(
            "the message is not a CloudEvent: expected a JSON object with 'specversion', "
            f"got {_common.kind(value)}"
        )
    # The attributes are checked once, when the event that is kept is built.
    attributes, data = _common.structured(value, _parts)  # type: ignore[type-var]
    if isinstance(data, bytes):
        clean = not _may_hold_credentials(data)  # as every message scrub() has seen
        data = _common.load_json(data, "'data_base64'")
        if clean:
            return attributes, data
    data, _ = _without_credentials(data)
    return attributes, data


@base.register(DECODER)
def decode(delivery: events.Delivery, options: base.Options) -> list[events.CloudEvent]:
    attributes, data = _bus_event(delivery)
    attributes["datacontenttype"] = _common.JSON
    default_time = None if "time" in attributes else _common.received_time(delivery)  # Argo sends it
    return [_common.cloudevent(attributes, data, default_time=default_time)]


def _headers(data: dict[str, Any], unwrap: str) -> dict[str, str]:
    """The wrapped request's headers, lower case, one value each, credentials removed."""
    found = next((data[key] for key in _HEADER_KEYS if key in data), None)
    if found is None:
        return {}
    if not isinstance(found, dict):
        raise base.DecodeError(
            f"unwrap {unwrap}: the header map must be an object, got {_common.kind(found)}"
        )
    headers: dict[str, str] = {}
    for name, values in found.items():
        if isinstance(values, list):
            values = ", ".join(v for v in values if isinstance(v, str))
        if not isinstance(values, str):
            raise base.DecodeError(
                f"unwrap {unwrap}: header {_common.clip(name)} must be a list of strings, "
                f"got {_common.kind(values)}"
            )
        headers[name.lower()] = values
    return events.scrub_headers(headers)


def _wrapped(bus: events.Delivery, attributes: dict[str, Any], data: Any, unwrap: str) -> events.Delivery:
    """The producer's delivery that the EventSource wrapped, dated when the EventSource received it."""
    if not isinstance(data, dict):
        raise base.DecodeError(f"unwrap {unwrap}: the event data must be an object, got {_common.kind(data)}")
    when = attributes.get("time")  # parsed by the JSON event format; naive without an offset
    received_at = when.timestamp() if isinstance(when, dt.datetime) and when.tzinfo else bus.received_at
    if unwrap == "minio" and "notification" in data:
        return events.Delivery(
            transport=minio_format.LISTEN_TRANSPORT,  # read from MinIO's listen API: keys not escaped
            endpoint=bus.endpoint,
            format="minio",
            headers={"content-type": _common.JSON},
            body=orjson.dumps({"Records": data["notification"]}),
            received_at=received_at,
        )
    if "body" not in data:
        expected = "'notification' or 'body'" if unwrap == "minio" else "'body'"
        raise base.DecodeError(
            f"unwrap {unwrap}: the event data has no {expected}: not what an Argo {unwrap} or webhook "
            "event source sends"
        )
    return events.Delivery(
        transport=bus.transport,
        endpoint=bus.endpoint,
        format=unwrap,
        headers=_headers(data, unwrap),
        body=orjson.dumps(data["body"]),
        received_at=received_at,
    )


def _unwrapping(unwrap: str) -> base.Decoder:
    def decode_wrapped(delivery: events.Delivery, options: base.Options) -> list[events.CloudEvent]:
        attributes, data = _bus_event(delivery)
        inner = _wrapped(delivery, attributes, data, unwrap)
        try:
            return base.decode(inner, options)
        except base.DecodeError as exc:
            raise type(exc)(f"unwrap {unwrap}: {exc.reason}") from None

    return decode_wrapped


for _unwrap in UNWRAPS:
    base.register(decoder_name(_unwrap))(_unwrapping(_unwrap))
