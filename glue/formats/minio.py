"""minio decoder (placeholder until the decoder lands)."""

from __future__ import annotations

from glue import events, formats


@formats.register("minio")
def decode(delivery: events.Delivery, options: formats.Options) -> list[events.CloudEvent]:
    raise formats.DecodeError("the minio decoder is not implemented yet")
