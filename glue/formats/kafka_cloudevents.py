"""CloudEvents over Kafka (the CloudEvents Kafka protocol binding), decoded with the SDK's binding.

The binding (cloudevents/spec ``bindings/kafka-protocol-binding.md``) has two modes, told apart by the
``content-type`` header:

- structured: ``content-type`` starts with ``application/cloudevents`` and the record value is the whole
  event (only the JSON event format, ``application/cloudevents+json``, is accepted here);
- binary: attributes in ``ce_<name>`` headers, ``content-type`` is ``datacontenttype``, the value is
  the data.

In both modes a record key becomes the ``partitionkey`` extension. The identity of the event is its
``(source, id)``; both must be present in the record (the SDK would otherwise invent a random id, and
a redelivery would no longer be recognised).
"""

from __future__ import annotations

from typing import Any

import orjson
from cloudevents.core import exceptions as ce_exceptions
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat

from glue import events, formats

NAME = "cloudevents-kafka"

_FORMAT = JSONFormat()
_REQUIRED = ("specversion", "id", "source", "type")


def _missing(present: set[str]) -> list[str]:
    return [name for name in _REQUIRED if name not in present]


def _structured(delivery: events.Delivery, content_type: str, key: bytes | None) -> events.CloudEvent:
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/cloudevents-batch+json":
        raise formats.UnsupportedMediaType("the Kafka binding has no batch mode: send one event per record")
    if media not in ("application/cloudevents+json", "application/cloudevents"):
        raise formats.UnsupportedMediaType(f"structured event format {media!r} is not supported (only JSON)")
    try:
        document: Any = orjson.loads(delivery.body)
    except orjson.JSONDecodeError as exc:
        raise formats.DecodeError(f"structured CloudEvent is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise formats.DecodeError("structured CloudEvent must be a JSON object")
    missing = _missing(set(document))
    if missing:
        raise formats.DecodeError(f"structured CloudEvent lacks {', '.join(missing)}")
    message = ce_kafka.KafkaMessage(headers={}, key=key, value=delivery.body)
    event = ce_kafka.from_structured(message, _FORMAT, events.CloudEvent)
    assert isinstance(event, events.CloudEvent)
    return event


def _binary(delivery: events.Delivery, key: bytes | None) -> events.CloudEvent:
    attributes = {name[3:] for name in delivery.headers if name.startswith(ce_kafka.CE_PREFIX)}
    if not attributes:
        raise formats.UnsupportedMediaType(
            "not a CloudEvents record: no ce_ headers and content-type is not application/cloudevents+json"
        )
    missing = _missing(attributes)
    if missing:
        names = ", ".join("ce_" + name for name in missing)
        raise formats.DecodeError(f"binary-mode CloudEvent lacks header {names}")
    headers = {name: value.encode() for name, value in delivery.headers.items()}
    message = ce_kafka.KafkaMessage(headers=headers, key=key, value=delivery.body)
    event = ce_kafka.from_binary(message, _FORMAT, events.CloudEvent)
    assert isinstance(event, events.CloudEvent)
    return event


@formats.register(NAME)
def decode(delivery: events.Delivery, options: formats.Options) -> list[events.CloudEvent]:
    """One Kafka record -> one CloudEvent. A key that is not UTF-8 cannot be a string attribute and is
    not mapped to ``partitionkey``."""
    key = delivery.key
    if key is not None:
        try:
            key.decode("utf-8")
        except UnicodeDecodeError:
            key = None
    content_type = delivery.headers.get("content-type", "")
    try:
        if content_type.lower().startswith("application/cloudevents"):
            return [_structured(delivery, content_type, key)]
        return [_binary(delivery, key)]
    except formats.DecodeError:
        raise
    except (ce_exceptions.BaseCloudEventException, ValueError, TypeError) as exc:
        # The SDK reports bad attributes (wrong specversion, bad time, non-string id) this way.
        reason = str(exc).replace("Failed to create CloudEvent due to the validation errors::", "").strip()
        raise formats.DecodeError(f"invalid CloudEvent: {reason}") from None
