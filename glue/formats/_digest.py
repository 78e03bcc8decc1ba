"""Events whose producer gives no id: identified by a digest of the payload within a window.

See :class:`glue.events.Digested`: the id is the digest and the delivery's receive time, and the
journal takes an event as a duplicate of one with the same payload that arrived within the endpoint's
``dedupWindow`` of it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from glue import events
from glue.formats import _common, base

__all__ = ["event"]


def event(
    attributes: dict[str, Any],
    data: _common.Data,
    delivery: events.Delivery,
    options: base.Options,
    *,
    payload: Any = None,
    default_time: dt.datetime | None = None,
) -> events.Digested:
    """The event of ``attributes`` (without ``id``) and ``data``, identified by the digest of
    ``payload`` (by default ``data``) within ``options.dedup_window``."""
    payload_digest = events.digest(data if payload is None else payload)
    attributes["id"] = events.Digested.id_for(payload_digest, delivery.received_at)
    checked = _common.cloudevent(attributes, data, default_time=default_time)  # errors as for any event
    return events.Digested(
        dict(checked.get_attributes()),
        checked.get_data(),
        key=f"{checked.get_source()} {payload_digest}",
        window=options.dedup_window,
        received_at=delivery.received_at,
    )
