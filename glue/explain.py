"""What operators read about one journaled event, shared by the CLI (``glue explain --event``,
``glue events show``, ``glue dlq show``) and the console: each route's decision in words (the false
sub-expression and the values it saw, or the rendered params), what flow shaping did to an
invocation, and the event's trace.

The explanation is the router's own (:meth:`glue.routing.Router.decide` with ``explain=True``);
this module only puts it in words and joins it to what the journal holds.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from glue import events, journal, routing
from glue import settings as settings_mod

__all__ = ["decision_row", "shaping", "stored_rows", "trace_fields"]


def decision_row(event: events.CloudEvent, decision: routing.Decision) -> dict[str, Any]:
    """One route's decision on ``event``, with ``why`` in words."""
    row: dict[str, Any] = {"event": event.get_id(), "type": event.get_type(), **decision.to_dict()}
    if not decision.matched:
        row["why"] = (
            f"{decision.condition} is false"
            if decision.error is None
            else f"{decision.condition}: {decision.error}"
        )
    elif not decision.enabled:
        row["why"] = "route disabled"
    elif decision.params_error is not None:
        row["why"] = f"params: {decision.params_error}"
    else:
        row["why"] = "matched"
    return row


def stored_rows(
    router: routing.Router,
    stored: journal.StoredEvent,
    invocations: Iterable[journal.Invocation],
    *,
    only: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Each route's decision on a journaled event, joined to the invocation it made (its id, state,
    last error, plan, and what shaping did to it)."""
    ran = {item.route: item for item in invocations}
    event = stored.event()
    rows = []
    for decision in router.decide(event, explain=True, only=only):
        row = decision_row(event, decision)
        invocation = ran.get(decision.route)
        if invocation is not None:
            row.update(invocation=invocation.id, state=invocation.state, lastError=invocation.last_error)
            if invocation.plan is not None:
                row["plan"] = invocation.plan
            row.update(shaping(invocation))
        rows.append(row)
    return rows


def shaping(invocation: journal.Invocation) -> dict[str, Any]:
    """What flow shaping did to an invocation, in words: which invocation took a coalesced or
    superseded one (or cancels it), and why a pending one waits."""
    found: dict[str, Any] = {}
    if invocation.taken_by is not None:
        found["takenBy"] = invocation.taken_by
        found["why"] = {
            "coalesced": f"coalesced into invocation {invocation.taken_by} (it runs for this event too)",
            "superseded": f"superseded by invocation {invocation.taken_by} (newer in its concurrency group)",
        }.get(invocation.state, f"cancelled by invocation {invocation.taken_by}")
    if invocation.state == "pending" and invocation.wait_reason is not None:
        found["waiting"] = f"{invocation.wait_reason} until {_when(invocation.due_at)}"
    elif invocation.state == "pending" and invocation.due_at > time.time():
        found["waiting"] = f"due {_when(invocation.due_at)}"
    return found


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def trace_fields(tracing: settings_mod.Tracing, event: events.CloudEvent) -> dict[str, str]:
    """The trace an event belongs to (its ``traceparent`` extension) and, with
    ``tracing.linkTemplate``, where to see it; empty for an event without one."""
    trace_id = events.trace_id(event)
    if trace_id is None:
        return {}
    link = tracing.link(trace_id)
    return {"traceId": trace_id, "traceLink": link} if link else {"traceId": trace_id}
