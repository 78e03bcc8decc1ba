"""Wire payload -> CloudEvents, one module per producer.

A decoder takes one :class:`glue.events.Delivery` and the endpoint's :class:`Options` and returns the
CloudEvents it carries (one or more; none only for an empty CloudEvents batch), each with ``(source,
id)`` as its identity (see :mod:`glue.events`). It raises
:class:`DecodeError` (HTTP 400) or :class:`UnsupportedMediaType` (HTTP 415) with a reason a sender can
act on; it never raises anything else for bad input (the fuzz tests hold it to that).

The same decoders serve HTTP, Kafka, the MinIO listen stream and replay.
"""

from __future__ import annotations

from glue.formats.base import (
    DECODERS,
    DEDUP_WINDOW,
    NO_OPTIONS,
    DecodeError,
    Decoder,
    Defaults,
    Options,
    UnsupportedMediaType,
    decode,
    id_path,
    register,
)

__all__ = [
    "DECODERS",
    "DEDUP_WINDOW",
    "NO_OPTIONS",
    "DecodeError",
    "Decoder",
    "Defaults",
    "Options",
    "UnsupportedMediaType",
    "decode",
    "id_path",
    "register",
]

# The built-in decoders register themselves on import.
from glue.formats import argo, argo_eventbus, cloudevents, gitlab, harbor, minio  # noqa: F401
