"""Helpers of the decoder tests: decode, the error a sender sees, the journal round trip."""

from __future__ import annotations

from typing import Any

import pytest

from glue import events, formats


def decode(delivery: events.Delivery, **options: Any) -> list[events.CloudEvent]:
    return formats.decode(delivery, formats.Options(**options))


def rejected(delivery: events.Delivery, **options: Any) -> formats.DecodeError:
    """The error a sender would be answered with (status and reason)."""
    with pytest.raises(formats.DecodeError) as info:
        formats.decode(delivery, formats.Options(**options))
    return info.value


def digest_id(payload: Any, received_at: float) -> str:
    """The id of an event its producer gave none: the payload's digest and when it arrived."""
    return events.Digested.id_for(events.digest(payload), received_at)


def roundtrip(event: events.CloudEvent) -> events.CloudEvent:
    """What the journal stores and reads back (structured JSON)."""
    return events.from_json(events.to_json(event))
