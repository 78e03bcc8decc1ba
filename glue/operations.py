"""Operator actions, shared by the CLI (on the journal it opens) and the admin API (on the daemon's
journal): list routes, pause and resume, approve and deny, read the audit trail, and the dead-letter
queue (list, show, retry, purge).

Every action that changes something is recorded in the journal's audit trail with who did it (the OS
user for the CLI, the token's name for the API), when, on what and why. Results are JSON-able dicts.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Sequence
from typing import Any, Literal

import orjson

from glue import journal, rails, routing

__all__ = [
    "DLQ_DONE",
    "STATES",
    "Actor",
    "DlqAction",
    "OperationError",
    "approve",
    "audit_entries",
    "dead_letter_rows",
    "dead_letters",
    "dlq_change",
    "invocation_detail",
    "pause",
    "resume",
    "routes_list",
    "with_delivery",
]

#: States counted per route by ``routes list``, in the order shown.
STATES = ("pending", "running", "held", "awaiting-approval", "done", "planned", "dead")


class OperationError(Exception):
    """An action that cannot be done as asked: ``status`` is its HTTP status (the CLI exits 1 or 2)."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True, slots=True)
class Actor:
    """Who acts, and the clock the action is stamped with."""

    who: str
    clock: Callable[[], float]


def _route_names(router: routing.Router | None, route: str) -> None:
    if route != rails.GLOBAL and router is not None and route not in router.by_name:
        known = ", ".join(sorted(router.by_name)) or "none"
        raise OperationError(f"no route {route!r} in the config (routes: {known})", status=404)


async def pause(
    store: journal.Journal,
    router: routing.Router | None,
    route: str,
    actor: Actor,
    *,
    reason: str | None,
    seconds: float | None,
) -> dict[str, Any]:
    """Pause ``route`` (``*``: every route) until resumed, or for ``seconds``."""
    _route_names(router, route)
    now = actor.clock()
    until = now + seconds if seconds is not None else None
    await store.set_pause(route, paused=True, reason=reason, until=until, by=actor.who, now=now)
    await store.record_audit(
        actor.who,
        "pause",
        route=route,
        reason=reason,
        detail={"until": until} if until is not None else {},
        now=now,
    )
    return {"route": route, "paused": True, "reason": reason, "until": until, "by": actor.who}


async def resume(
    store: journal.Journal,
    router: routing.Router | None,
    route: str,
    actor: Actor,
    *,
    reason: str | None = None,
) -> dict[str, Any]:
    """Resume ``route`` (``*``: lift the global pause); what it held for the pause runs at once."""
    _route_names(router, route)
    if route != rails.GLOBAL and router is not None and router.by_name[route].route.paused:
        raise OperationError(
            f"route {route!r} is paused by its config (paused: true): change the config to resume it"
        )
    now = actor.clock()
    released = await store.set_pause(route, paused=False, reason=None, until=None, by=actor.who, now=now)
    await store.record_audit(
        actor.who, "resume", route=route, reason=reason, detail={"released": released}, now=now
    )
    return {"route": route, "paused": False, "released": released, "by": actor.who}


async def approve(
    store: journal.Journal, invocation_id: int, actor: Actor, *, yes: bool, note: str | None
) -> dict[str, Any]:
    """Approve (it runs now) or deny (it is dead-lettered) an invocation awaiting approval."""
    item = await store.invocation(invocation_id)
    if item is None:
        raise OperationError(f"no invocation {invocation_id}", status=404)
    if item.state != "awaiting-approval":
        raise OperationError(f"invocation {invocation_id} is {item.state}, not awaiting approval")
    by = actor.who if not note else f"{actor.who}: {note}"
    now = actor.clock()
    if not await store.decide(invocation_id, approve=yes, by=by, now=now):
        raise OperationError(f"invocation {invocation_id} is no longer awaiting approval")
    action = "approve" if yes else "deny"
    await store.record_audit(
        actor.who,
        action,
        route=item.route,
        target=str(invocation_id),
        reason=note,
        detail={"plan": dict(item.plan or {})},
        now=now,
    )
    return {"invocation": invocation_id, "route": item.route, "state": "pending" if yes else "dead", "by": by}


async def audit_entries(
    store: journal.Journal, *, since: float | None, route: str | None, limit: int = 1000
) -> list[dict[str, Any]]:
    """The audit trail in order, from ``since``, of ``route`` (and the actions on every route)."""
    return [entry.summary() for entry in await store.audit(since=since, route=route, limit=limit)]


def _budget_use(route: routing.Route, starts: dict[str, dict[str, int]]) -> str | None:
    """Each budget's fullest key as ``used/max per``, e.g. ``2/5 per 1h`` (starts: by budget index,
    then by rendered key)."""
    if route.budget is None:
        return None
    parts = []
    for index, budget in enumerate(route.budgets):
        used = max(starts.get(str(index), {}).values(), default=0)
        parts.append(f"{used}/{budget.max} per {_span(budget.per)}")
    return ", ".join(parts)


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


async def routes_list(store: journal.Journal, router: routing.Router, now: float) -> list[dict[str, Any]]:
    """Each configured route: its state, invocations by state, budget use, breaker, next window."""
    states = await store.route_states()
    found = await store.rails()
    everything = found.get(rails.GLOBAL)
    rows: list[dict[str, Any]] = []
    for compiled in router.routes:
        route = compiled.route
        rail = found.get(compiled.name)
        state, why = "live", None
        if everything is not None and everything.paused_at(now):
            state, why = (
                "paused",
                f"all routes: {everything.reason or 'no reason given'} (by {everything.by})",
            )
        elif rail is not None and rail.paused_at(now):
            state, why = "paused", f"{rail.reason or 'no reason given'} (by {rail.by})"
        elif route.paused:
            state, why = "paused", "config (paused: true)"
        elif not route.enabled:
            state = "disabled"
        counts = states.get(compiled.name, {})
        by_key: dict[str, dict[str, int]] = {}
        if route.budget is not None:
            longest = max(b.per for b in route.budgets)
            for key, n in (await store.starts(compiled.name, since=now - longest)).items():
                index, _, rendered = key.partition(" ")
                by_key.setdefault(index, {})[rendered] = n
        rows.append(
            {
                "route": compiled.name,
                "state": state,
                "why": why,
                **{name: counts.get(name, 0) for name in STATES},
                "budget": _budget_use(route, by_key),
                "breaker": _breaker(route, rail, now),
                "nextWindow": _next_window(route, now),
            }
        )
    return rows


def _breaker(route: routing.Route, rail: journal.Rail | None, now: float) -> str | None:
    if route.breaker is None:
        return None
    if rail is None or rail.breaker_open_until is None:
        return "closed"
    if now < rail.breaker_open_until:
        return f"open for {_span(round(rail.breaker_open_until - now))}"
    return "half-open"


def _next_window(route: routing.Route, now: float) -> str | None:
    if route.window is None and route.blackout is None:
        return None
    if route.blackout is not None:
        ends = route.blackout.open_at(now)
        if ends is not None:
            return f"blackout until {_iso(ends)}"
    if route.window is not None:
        closes = route.window.open_at(now)
        if closes is not None:
            return f"open until {_iso(closes)}"
        return f"opens {_iso(route.window.next_open(now))}"
    return "open"


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat(timespec="minutes")


# -- the dead-letter queue

DlqAction = Literal["retry", "purge"]
#: What each action did to the invocations, as its result names them.
DLQ_DONE: dict[DlqAction, str] = {"retry": "retried", "purge": "purged"}


async def dead_letters(
    store: journal.Journal,
    *,
    ids: Sequence[int] = (),
    route: str | None = None,
    since: float | None = None,
    limit: int | None = None,
) -> list[journal.Invocation]:
    """Dead invocations: those ``ids`` (each must be dead), else those of ``route`` dead since
    ``since`` (all when neither), oldest first, at most ``limit``."""
    if ids:
        found = [await store.invocation(i) for i in ids]
        missing = [i for i, row in zip(ids, found, strict=True) if row is None or row.state != "dead"]
        if missing:
            raise OperationError(f"not in the dead-letter queue: {', '.join(map(str, missing))}", status=404)
        return [row for row in found if row is not None]
    selected: list[journal.Invocation] = []
    after = 0
    while limit is None or len(selected) < limit:
        batch = await store.invocations(state="dead", route=route, since=since, after=after, limit=500)
        if not batch:
            break
        selected.extend(batch)
        after = batch[-1].id
    return selected if limit is None else selected[:limit]


async def dead_letter_rows(
    store: journal.Journal, invocations: list[journal.Invocation]
) -> list[dict[str, Any]]:
    """A row per dead invocation, with its event's id and type and when it died (unix seconds)."""
    rows = []
    for item in invocations:
        stored = await store.get(item.event_seq)
        rows.append(
            {
                **item.summary(),
                "event": stored.id if stored is not None else None,
                "type": stored.type if stored is not None else None,
                "deadAt": item.updated_at,
            }
        )
    return rows


async def with_delivery(store: journal.Journal, stored: journal.StoredEvent) -> dict[str, Any]:
    """A journaled event's CloudEvent and the raw delivery it came in (None if pruned)."""
    delivery = await store.delivery(stored.delivery_id)
    return {
        "cloudevent": orjson.loads(stored.cloudevent),
        "delivery": delivery.to_record() if delivery is not None else None,
    }


async def invocation_detail(store: journal.Journal, item: journal.Invocation) -> dict[str, Any]:
    """An invocation whole: its summary (state, and the plan of a planned one), its params and every
    attempt that ended, oldest first."""
    return {
        **item.summary(),
        "params": dict(item.params),
        "attempts": [attempt.summary() for attempt in await store.attempts(item.id)],
    }


async def dlq_change(
    store: journal.Journal,
    actor: Actor,
    action: DlqAction,
    *,
    ids: Sequence[int] = (),
    route: str | None = None,
    since: float | None = None,
    everything: bool = False,
) -> dict[str, Any]:
    """Retry (run again, same id and idempotency key) or purge (delete) dead invocations: those ids,
    or those a filter selects, or all; ``{"retried"|"purged": [ids], "routes": [...]}``."""
    if not (ids or route or since is not None or everything):
        raise OperationError("give invocation ids, or a filter (route, since) or all", status=400)
    selected = await dead_letters(store, ids=ids, route=route, since=since)
    chosen = [item.id for item in selected]
    now = actor.clock()
    changed = await store.redrive(chosen, now=now) if action == "retry" else await store.purge(chosen)
    done = set(changed)
    await store.record_audit(
        actor.who,
        f"dlq {action}",
        route=route,
        target=",".join(map(str, changed)) or None,
        detail={"invocations": list(changed), "since": since, "all": everything},
        now=now,
    )
    return {
        DLQ_DONE[action]: list(changed),
        "routes": sorted({item.route for item in selected if item.id in done}),
    }
