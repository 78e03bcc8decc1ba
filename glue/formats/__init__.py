"""Wire payload -> CloudEvents, one module per producer.

A decoder takes one :class:`glue.events.Delivery` and the endpoint's :class:`Options` and returns one or
more CloudEvents whose ``(source, id)`` is the event's identity (see :mod:`glue.events`). It raises
:class:`DecodeError` (HTTP 400) or :class:`UnsupportedMediaType` (HTTP 415) with a reason a sender can
act on; it never raises anything else for bad input (the fuzz tests hold it to that).

The same decoders serve HTTP, Kafka, the MinIO listen stream and replay.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from glue import events

__all__ = ["DECODERS", "DecodeError", "Options", "UnsupportedMediaType", "decode", "register"]


class DecodeError(Exception):
    """The delivery is malformed; ``reason`` is safe to send back to the caller."""

    status = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnsupportedMediaType(DecodeError):
    status = 415


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    """What an endpoint or topic adds to a format: defaults for bodies that do not carry them."""

    type: str | None = None  # argo: CloudEvent type of a plain JSON body
    source: str | None = None  # argo / harbor: CloudEvent source where the body has none
    id_header: str | None = None  # argo: header (lower case) whose value is the event id


Decoder = Callable[[events.Delivery, Options], list[events.CloudEvent]]

DECODERS: dict[str, Decoder] = {}


def register(name: str) -> Callable[[Decoder], Decoder]:
    def wrap(fn: Decoder) -> Decoder:
        DECODERS[name] = fn
        return fn

    return wrap


#: For formats and callers that configure nothing.
NO_OPTIONS = Options()


def decode(delivery: events.Delivery, options: Options = NO_OPTIONS) -> list[events.CloudEvent]:
    """Decode through the delivery's format. Raises DecodeError with a reason."""
    try:
        decoder = DECODERS[delivery.format]
    except KeyError:
        raise DecodeError(f"unknown format {delivery.format!r}") from None
    result = decoder(delivery, options)
    if not result:
        raise DecodeError("the delivery holds no event")
    return result


# The built-in decoders register themselves on import.
from glue.formats import argo, cloudevents, gitlab, harbor, minio  # noqa: E402, F401
