"""What every decoder shares: the errors it raises, the options it takes, and the registry that
finds a delivery's decoder by its format name. The decoders import this module, never the package,
so the package can import them all (see :mod:`glue.formats`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

from glue import events

__all__ = [
    "DECODERS",
    "DEDUP_WINDOW",
    "DecodeError",
    "Defaults",
    "Options",
    "UnsupportedMediaType",
    "decode",
    "id_path",
    "register",
]

#: Seconds within which equal payloads without a producer id are one event (``dedupWindow``'s
#: default): longer than Harbor's retries of a failed delivery and an Argo trigger's retryStrategy
#: as commonly set, short enough that a Sensor or a schedule sending the same body again is heard.
DEDUP_WINDOW = 900.0


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
    id_field: tuple[str, ...] | None = None  # argo: path to the event id in a JSON body
    dedup_window: float = DEDUP_WINDOW  # seconds: see events.Digested

    @classmethod
    def of(cls, spec: Defaults) -> Options:
        """The options an endpoint or a topic of the settings (or the command line) gives its format."""
        window = spec.dedup_window
        return cls(
            type=spec.type,
            source=spec.source,
            id_header=(spec.id_header or "").lower() or None,
            id_field=id_path(spec.id_field) if spec.id_field else None,
            dedup_window=DEDUP_WINDOW if window is None else window,
        )


def id_path(field: str) -> tuple[str, ...]:
    """``idField`` as keys: ``context.id`` -> ("context", "id"), as an Argo trigger parameter's
    ``dest`` names the place it writes to."""
    return tuple(field.split("."))


class Defaults(Protocol):
    """What an endpoint or a topic says about bodies that do not carry their own type, source or id."""

    @property
    def type(self) -> str | None: ...

    @property
    def source(self) -> str | None: ...

    @property
    def id_header(self) -> str | None: ...

    @property
    def id_field(self) -> str | None: ...

    @property
    def dedup_window(self) -> float | None: ...


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
    """Decode through the delivery's format. Raises DecodeError with a reason.

    An empty list is a delivery that validly carries no event (an empty CloudEvents batch); a
    format whose deliveries always carry one raises instead."""
    try:
        decoder = DECODERS[delivery.format]
    except KeyError:
        raise DecodeError(f"unknown format {delivery.format!r}") from None
    return decoder(delivery, options)
