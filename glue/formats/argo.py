"""What an Argo Events Sensor's HTTP (or Kafka) trigger sends.

A trigger sends only the headers configured on it and a body built from its ``payload``
(argo-events ``pkg/sensors/triggers/http/http.go``, ``params.go``); there is no Content-Type unless
configured. So:

- a CloudEvent, in binary mode (``ce-`` headers) or structured mode (``application/cloudevents+json``,
  or an unlabelled JSON object with ``specversion``), keeps its attributes exactly as sent;
- any other JSON body is wrapped: ``type`` and ``source`` come from the endpoint's options (both
  required), ``data`` is the parsed JSON, and ``id`` is the producer's own when the endpoint says where
  it is: the header named by ``idHeader`` (an HTTP trigger's ``dynamicHeaders`` entry whose ``src`` has
  ``contextKey: id``), else the body field at ``idField`` (a ``payload`` parameter with that ``dest``:
  the only way for the Kafka trigger, whose headers are static). A body without that field is refused.
  Without either (or when the header is absent) the id is a digest of the body that deduplicates only
  within ``dedupWindow`` (:class:`glue.events.Digested`).
"""

from __future__ import annotations

from typing import Any

from glue import events
from glue.formats import _common, _digest, base
from glue.formats import cloudevents as ce_format

__all__ = ["decode"]


def _plain(value: Any, delivery: events.Delivery, options: base.Options) -> events.CloudEvent:
    missing = [name for name in ("type", "source") if not getattr(options, name)]
    if missing:
        raise base.DecodeError(
            f"a plain JSON body needs the endpoint's {' and '.join(repr(m) for m in missing)} "
            "option (not configured); or send a CloudEvent (ce- headers or application/cloudevents+json)"
        )
    event_id = delivery.headers.get(options.id_header) if options.id_header else None
    if not event_id and options.id_field:
        event_id = _common.scalar(_common.path(value, *options.id_field))
        if event_id is None:
            raise base.DecodeError(
                f"the body has no event id at {'.'.join(options.id_field)!r} (the endpoint's idField): "
                "a string or an integer expected there"
            )
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "source": options.source,
        "type": options.type,
        "datacontenttype": _common.JSON,
    }
    default_time = _common.received_time(delivery)
    if not event_id:
        return _digest.event(attributes, value, delivery, options, default_time=default_time)
    attributes["id"] = event_id
    return _common.cloudevent(attributes, value, default_time=default_time)


@base.register("argo")
def decode(delivery: events.Delivery, options: base.Options) -> list[events.CloudEvent]:
    found = ce_format.from_message(delivery)
    if found is not None:
        return found
    mt = _common.media_type(delivery.headers)
    if not _common.is_json(mt):
        raise base.UnsupportedMediaType(
            f"content type {_common.clip(mt)} is not taken: send JSON (application/json or no "
            "Content-Type) or a CloudEvent"
        )
    value = _common.load_json(delivery.body)
    if mt is None and isinstance(value, dict) and "specversion" in value:
        return [_common.structured(value, _common.factory(delivery))]
    return [_plain(value, delivery, options)]
