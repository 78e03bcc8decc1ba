"""harbor decoder (placeholder until the decoder lands)."""

from __future__ import annotations

from glue import events, formats


@formats.register("harbor")
def decode(delivery: events.Delivery, options: formats.Options) -> list[events.CloudEvent]:
    raise formats.DecodeError("the harbor decoder is not implemented yet")
